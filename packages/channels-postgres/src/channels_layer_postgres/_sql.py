"""Every SQL statement the layer runs; values always travel as parameters.

Only identifiers derived from the validated namespace and the layer's own
channel names are spliced in, always through `quote_ident`.
"""

# ruff: noqa: S608 - identifiers come from the validated namespace, always quote_ident-ed

from __future__ import annotations

from collections.abc import Iterable

from ._names import ChannelNames, quote_ident

__all__ = ["Statements", "listen_batch"]


class Statements:
    """The layer's statements for one namespace.

    Publishing notifies the group's channel and, only while some listener
    has a pattern subscription (a row in the pattern-listeners table), the
    firehose channel too: one statement, one round trip either way.
    """

    def __init__(self, names: ChannelNames) -> None:
        payloads = quote_ident(names.payloads_table)
        patterns = quote_ident(names.patterns_table)
        created_index = quote_ident(names.payloads_table + "_created")
        self.lock_key = f"channels-layer-postgres:{names.namespace}"
        # Unlogged: both tables hold short-lived data that need not survive a crash.
        self.create_schema = [
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {payloads} ("
            " id bigserial PRIMARY KEY,"
            " created timestamptz NOT NULL DEFAULT now(),"
            " body bytea NOT NULL,"
            " grp text)",  # the group, when it is too long for the NOTIFY
            # Tables made before `grp` existed get it (a no-op otherwise).
            f"ALTER TABLE {payloads} ADD COLUMN IF NOT EXISTS grp text",
            f"CREATE INDEX IF NOT EXISTS {created_index} ON {payloads} (created)",
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {patterns} ("
            " pid integer PRIMARY KEY,"
            " since timestamptz NOT NULL DEFAULT now())",
        ]
        firehose_if_needed = (
            f"CASE WHEN EXISTS (SELECT FROM {patterns}) THEN pg_notify($3, {{}}) END"
        )
        #: $1 channel, $2 envelope, $3 firehose channel.
        self.publish = f"SELECT pg_notify($1, $2), {firehose_if_needed.format('$2')}"
        #: $1 channel, $2 envelope head, $3 firehose channel, $4 payload, $5 group or NULL.
        self.publish_large = (
            f"WITH stored AS (INSERT INTO {payloads} (body, grp) VALUES ($4, $5) RETURNING id) "
            "SELECT pg_notify($1, $2 || stored.id::text), "
            f"{firehose_if_needed.format('$2 || stored.id::text')} FROM stored"
        )
        #: $1 row id.
        self.fetch_payload = f"SELECT body, grp FROM {payloads} WHERE id = $1"
        #: $1 age in seconds. Rows another publisher is deleting are skipped, not waited for.
        self.expire_payloads = (
            f"DELETE FROM {payloads} WHERE id IN (SELECT id FROM {payloads}"
            " WHERE created < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED)"
        )
        # Run on the listening connection, whose backend pid is the key.
        self.register_patterns = (
            f"DELETE FROM {patterns} WHERE pid NOT IN (SELECT pid FROM pg_stat_activity); "
            f"INSERT INTO {patterns} (pid) VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING"
        )
        self.unregister_patterns = f"DELETE FROM {patterns} WHERE pid = pg_backend_pid()"


def listen_batch(listen: Iterable[str], unlisten: Iterable[str]) -> str:
    """One simple-query batch of LISTEN/UNLISTEN statements (one round trip)."""
    statements = [f"UNLISTEN {quote_ident(channel)}" for channel in unlisten]
    statements += [f"LISTEN {quote_ident(channel)}" for channel in listen]
    return "; ".join(statements)
