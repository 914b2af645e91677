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

    Publishing notifies the group's channel (its bucket, `_names`) and
    nothing else: a pattern subscriber LISTENs every bucket, so a publish
    never asks who might be listening. With history on (`history_size` >
    0) the same statement also counts and logs the message (see
    `_history`), and the NOTIFY carries its position.
    """

    def __init__(
        self, names: ChannelNames, history_size: int = 0, history_ttl: float | None = None
    ) -> None:
        payloads = quote_ident(names.payloads_table)
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
        # Unlogged: the table holds short-lived data that need not survive a crash.
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
        ]
        #: $1 channel, $2 envelope.
        self.publish = "SELECT pg_notify($1, $2)"
        #: $1 channels, $2 envelopes (arrays, notified in this order).
        self.publish_many = (
            "SELECT pg_notify(m.channel, m.envelope)"
            " FROM unnest($1::text[], $2::text[]) AS m(channel, envelope)"
        )
        #: $1 channel, $2 envelope head, $3 payload, $4 group or NULL, $5 token.
        self.publish_large = (
            f"WITH stored AS (INSERT INTO {payloads} (body, grp, token) VALUES ($3, $4, $5)"
            " RETURNING id) "
            "SELECT pg_notify($1, $2 || stored.id::text) FROM stored"
        )
        #: The statements that only NOTIFY: they touch no table, so they never wait
        #: for a lock an application holds, and may run on the listening connection.
        self.notify_only = frozenset((self.publish, self.publish_many))
        #: $1 row id, $2 token (a row of the same id but another token is another message).
        self.fetch_payload = f"SELECT body, grp FROM {payloads} WHERE id = $1 AND token = $2"
        #: $1 age in seconds. Rows another publisher is deleting are skipped, not waited for.
        self.expire_payloads = (
            f"DELETE FROM {payloads} WHERE id IN (SELECT id FROM {payloads}"
            " WHERE created < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED)"
        )
        if history_size:
            self._add_history(names, history_size, history_ttl)

    def _add_history(self, names: ChannelNames, size: int, ttl: float | None) -> None:
        """The tables and statements of history (`_history` explains the design)."""
        heads, log = quote_ident(names.heads_table), quote_ident(names.history_table)
        payloads = quote_ident(names.payloads_table)
        self.expected_shape[names.heads_table] = {"grp": "bytea", "epoch": "text", "n": "bigint"}
        self.expected_shape[names.history_table] = {
            "grp": "bytea",
            "epoch": "text",
            "n": "bigint",
            "created": "timestamp with time zone",
            "body": "bytea",
        }
        # Unlogged too: a crash empties them, which the epoch tells apart.
        self.create_schema += [
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {heads} ("
            " grp bytea PRIMARY KEY,"  # SHA-256 of the group name
            " epoch text NOT NULL,"
            " n bigint NOT NULL)",  # the number of the group's newest event
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {log} ("
            " grp bytea NOT NULL,"
            " epoch text NOT NULL,"
            " n bigint NOT NULL,"
            " created timestamptz NOT NULL DEFAULT clock_timestamp(),"
            " body bytea NOT NULL,"
            " PRIMARY KEY (grp, epoch, n))",
        ]
        # The counter row is locked until commit: numbers are dense and in commit
        # order. `created` is taken after the lock, so it grows with `n` too. The
        # size trim deletes the one event that falls out, in the same statement:
        # a point lookup, whatever dead rows vacuum has yet to remove (a range
        # would step over all of them). Its key comes from scalar subqueries, so
        # that even the generic plan of a table planned while small looks it up
        # by the whole primary key (a join on `head` was planned as a scan of
        # the group's every row: a publish slower with each event logged).
        count_and_log = (
            f"WITH head AS (INSERT INTO {heads} AS h (grp, epoch, n) VALUES ({{key}}, {{epoch}}, 1)"
            " ON CONFLICT (grp) DO UPDATE SET n = h.n + 1 RETURNING h.epoch, h.n), "
            f"logged AS (INSERT INTO {log} (grp, epoch, n, body)"
            " SELECT {key}, epoch, n, {body} FROM head RETURNING epoch || '-' || n AS position), "
            f"trimmed AS (DELETE FROM {log} WHERE grp = {{key}}"
            f" AND epoch = (SELECT epoch FROM head) AND n = (SELECT n FROM head) - {int(size)}) "
        )
        inline = "$2 || '@' || logged.position || $3"
        #: $1 channel, $2 envelope head up to the position, $3 the rest of the
        #: envelope, $4 group key, $5 a new epoch, $6 payload.
        self.publish_logged = count_and_log.format(
            key="$4::bytea", epoch="$5::text", body="$6::bytea"
        ) + (f"SELECT pg_notify($1, {inline}) FROM logged")
        large = "$2 || '@' || logged.position || $6 || stored.id::text"
        #: As `publish_large`, and $6 the rest of the envelope head, $7 group key, $8 a new epoch.
        self.publish_large_logged = (
            count_and_log.format(key="$7::bytea", epoch="$8::text", body="$3::bytea")
            + f", stored AS (INSERT INTO {payloads} (body, grp, token) VALUES ($3, $4, $5)"
            " RETURNING id) "
            f"SELECT pg_notify($1, {large}) FROM logged, stored"
        )
        # A batch: each group's counter row is bumped once by the batch's count
        # (a statement may update a row only once), in key order (concurrent
        # batches lock rows in one order: no deadlock); each message takes the
        # next number of its group in batch order. A message that the batch's
        # own later ones push out of the log at once is not logged at all (a
        # statement cannot delete what it inserts); the others trim one event
        # each, as a publish does: a join on the whole primary key, planned
        # (measured, generic plan) as one index lookup per message once the
        # log holds a few thousand rows, a hash over a log still small. Large
        # messages go to the payloads table, found again by their token;
        # NOTIFYs follow the batch order (the sorted subquery).
        batch_notify = (
            "m.before || '@' || m.epoch || '-' || m.n || m.after || coalesce(s.id::text, '')"
        )
        #: $1 channels, $2 envelope heads up to the position, $3 the rests (a
        #: reference's without the row id), $4 group keys, $5 payloads, $6 tokens
        #: (NULL: inline), $7 stored groups (or NULL), $8 a new epoch.
        self.publish_many_logged = (
            "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[],"
            " $5::bytea[], $6::bigint[], $7::text[]) WITH ORDINALITY"
            " AS m(channel, before, after, key, body, token, stored_grp, i)), "
            "counts AS (SELECT key, count(*) AS k FROM m GROUP BY key), "
            f"bumped AS (INSERT INTO {heads} AS h (grp, epoch, n)"
            " SELECT key, $8::text, k FROM counts ORDER BY key"
            " ON CONFLICT (grp) DO UPDATE SET n = h.n + excluded.n RETURNING h.grp, h.epoch, h.n), "
            "numbered AS (SELECT m.*, b.epoch, b.n AS newest,"
            " b.n - c.k + row_number() OVER (PARTITION BY m.key ORDER BY m.i) AS n"
            " FROM m JOIN counts c ON c.key = m.key JOIN bumped b ON b.grp = m.key), "
            f"logged AS (INSERT INTO {log} (grp, epoch, n, body)"
            f" SELECT key, epoch, n, body FROM numbered WHERE n > newest - {int(size)}), "
            f"trimmed AS (DELETE FROM {log} l USING numbered d"
            f" WHERE l.grp = d.key AND l.epoch = d.epoch AND l.n = d.n - {int(size)}), "
            f"stored AS (INSERT INTO {payloads} (body, grp, token)"
            " SELECT body, stored_grp, token FROM m WHERE token IS NOT NULL RETURNING id, token) "
            "SELECT pg_notify(o.channel, o.envelope)"
            f" FROM (SELECT m.channel, {batch_notify} AS envelope FROM numbered m"
            " LEFT JOIN stored s ON s.token = m.token ORDER BY m.i) AS o"
        )
        retained = f"grp = h.grp AND epoch = h.epoch AND n > h.n - {int(size)}"
        if ttl is not None:
            retained += f" AND created >= now() - make_interval(secs => {float(ttl)!r})"
        #: $1 group key, $2 epoch and $3 number of the position read after, $4 limit
        #: (NULL: all). Rows: the counter row's epoch and head, and each event's n
        #: and body after the position (from the oldest retained if it is of another
        #: epoch); n NULL if none. No row at all: the group has no counter row yet.
        self.read_after = (
            "SELECT h.epoch, h.n AS head, l.n, l.body"
            f" FROM {heads} h LEFT JOIN LATERAL (SELECT n, body FROM {log}"
            f" WHERE {retained} AND n > CASE WHEN h.epoch = $2 THEN $3 ELSE 0 END"
            " ORDER BY n LIMIT $4) l ON true WHERE h.grp = $1 ORDER BY l.n"
        )
        #: $1 group key, $2 limit (NULL: all): the newest events, as `read_after` does.
        self.read_newest = (
            "SELECT h.epoch, h.n AS head, l.n, l.body"
            f" FROM {heads} h LEFT JOIN LATERAL (SELECT n, body FROM {log}"
            f" WHERE {retained} ORDER BY n DESC LIMIT $2) l ON true WHERE h.grp = $1"
            " ORDER BY l.n"
        )
        #: $1 group key, $2 a new epoch: give a group without one a counter row, so
        #: that the head read before its first event is a position of its log.
        self.start_log = (
            f"INSERT INTO {heads} (grp, epoch, n) VALUES ($1, $2, 0) ON CONFLICT (grp) DO NOTHING"
        )
        #: Delete events older than the TTL (reads skip them already). Rows a
        #: publisher is trimming are skipped, not waited for.
        self.expire_history = (
            f"DELETE FROM {log} WHERE (grp, epoch, n) IN (SELECT grp, epoch, n FROM {log}"
            f" WHERE created < now() - make_interval(secs => {float(ttl or 0)!r})"
            " FOR UPDATE SKIP LOCKED)"
        )


def listen_batch(listen: Iterable[str], unlisten: Iterable[str]) -> str:
    """One simple-query batch of LISTEN/UNLISTEN statements (one round trip)."""
    statements = [f"UNLISTEN {quote_ident(channel)}" for channel in unlisten]
    statements += [f"LISTEN {quote_ident(channel)}" for channel in listen]
    return "; ".join(statements)
