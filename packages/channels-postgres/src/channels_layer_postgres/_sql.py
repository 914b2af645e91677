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
        created_index = names.payloads_table + "_created"
        self.lock_key = f"channels-layer-postgres:{names.namespace}"
        #: What `schema_shape` must find, else `create_schema` runs: table -> column -> type.
        self.expected_shape = {
            names.payloads_table: {
                "id": "bigint",
                "created": "timestamp with time zone",
                "body": "bytea",
                "grp": "text",
                "token": "bigint",
            },
            names.patterns_table: {"pid": "integer", "since": "timestamp with time zone"},
            created_index: {},
        }
        #: $1 the relation names. Rows of (relation, col, type) for those that
        #: exist; an index comes once, with NULLs. Reads only the catalogs, so
        #: any role that can connect can run it.
        self.schema_shape = (
            "SELECT r.name AS relation, a.attname::text AS col,"
            " format_type(a.atttypid, a.atttypmod) AS type"
            " FROM unnest($1::text[]) AS r(name)"
            " JOIN pg_catalog.pg_class c ON c.oid = to_regclass(quote_ident(r.name))"
            " LEFT JOIN pg_catalog.pg_attribute a"
            " ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " AND c.relkind <> 'i'"
        )
        # Unlogged: both tables hold short-lived data that need not survive a crash.
        # Run only when `schema_shape` finds something missing: they need CREATE
        # on the schema, and the ALTERs ownership of the table.
        self.create_schema = [
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {payloads} ("
            " id bigserial PRIMARY KEY,"
            " created timestamptz NOT NULL DEFAULT now(),"
            " body bytea NOT NULL,"
            " grp text,"  # the group, when it is too long for the NOTIFY
            " token bigint)",  # random, checked on fetch: ids restart after a crash
            # Tables made by older versions get the newer columns.
            f"ALTER TABLE {payloads} ADD COLUMN IF NOT EXISTS grp text",
            f"ALTER TABLE {payloads} ADD COLUMN IF NOT EXISTS token bigint",
            f"CREATE INDEX IF NOT EXISTS {quote_ident(created_index)} ON {payloads} (created)",
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {patterns} ("
            " pid integer PRIMARY KEY,"
            " since timestamptz NOT NULL DEFAULT now())",
        ]
        firehose_if_needed = (
            f"CASE WHEN EXISTS (SELECT FROM {patterns}) THEN pg_notify($3, {{}}) END"
        )
        #: $1 channel, $2 envelope, $3 firehose channel.
        self.publish = f"SELECT pg_notify($1, $2), {firehose_if_needed.format('$2')}"
        #: $1 channels, $2 envelopes (arrays, notified in this order), $3 firehose channel.
        self.publish_many = (
            "SELECT pg_notify(m.channel, m.envelope), "
            f"{firehose_if_needed.format('m.envelope')}"
            " FROM unnest($1::text[], $2::text[]) AS m(channel, envelope)"
        )
        #: $1 channel, $2 envelope head, $3 firehose channel, $4 payload, $5 group or NULL,
        #: $6 token.
        self.publish_large = (
            f"WITH stored AS (INSERT INTO {payloads} (body, grp, token) VALUES ($4, $5, $6)"
            " RETURNING id) "
            "SELECT pg_notify($1, $2 || stored.id::text), "
            f"{firehose_if_needed.format('$2 || stored.id::text')} FROM stored"
        )
        #: $1 row id, $2 token (a row of the same id but another token is another message).
        self.fetch_payload = f"SELECT body, grp FROM {payloads} WHERE id = $1 AND token = $2"
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
