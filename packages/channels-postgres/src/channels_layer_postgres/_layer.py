"""`PostgreSQLChannelLayer`: channels-core's layer protocol over LISTEN/NOTIFY (asyncpg).

Pieces: `_names` maps groups to channels, `_envelope` frames payloads for
NOTIFY, `_sql` holds every statement, `_history` the log's keys and what a
read of it proves, `_listener` keeps the one LISTEN
connection alive, `_publisher` runs statements on a pool or the
application's connection, `_options` and `_url` read the configuration.
This module ties them to the core's protocol.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

import anyio

from channels_core import (
    BrokerUnavailableError,
    ChannelClosedError,
    ChannelLayer,
    Inbox,
    NotSupportedError,
    background_tasks,
    call_with_deadline,
    redact_url,
    retry_until,
    url_secrets,
)
from channels_core.history import HistoryRead, parse_position
from channels_core.serializers import Serializer

from ._connection import CONNECTION_ERRORS, connect_kwargs, errors_translated, is_refusal
from ._envelope import (
    POSITION_ROOM,
    EnvelopeWriter,
    Reference,
    load_stored_group,
    split_for_position,
    stored_group,
)
from ._history import UnloggedWatch, group_key, new_epoch, read_result
from ._lane import Lane
from ._listener import Listener
from ._names import ChannelNames
from ._options import PostgreSQLLayerOptions
from ._publisher import Publisher
from ._router import Router
from ._sql import Statements
from ._stats import Counters, PostgreSQLLayerStats
from ._url import DEFAULT_URL, SCHEMES, check_url, split_options

__all__ = ["PostgreSQLChannelLayer"]

logger = logging.getLogger("channels_layer_postgres")

_CHANNEL_CACHE = 1024  # groups whose channel name a layer keeps


class PostgreSQLChannelLayer(ChannelLayer):
    """Cross-process publish/subscribe through PostgreSQL LISTEN/NOTIFY (asyncio only).

    `url` is a libpq-style URL (``postgresql://user:password@host:5432/db?sslmode=require``);
    `options` are `PostgreSQLLayerOptions` fields, as keywords or query
    parameters (see the README: timeouts, health checks, reconnect backoff,
    payload limits, namespace, ...). Publishing uses a pool the layer opens,
    or the application's own asyncpg `pool` or `connection` (never closed by
    the layer); listening always uses one dedicated connection built from `url`.

    With ``history_size`` > 0 every publish is also logged, in the same
    statement as its NOTIFY (see `_history`), for ``since=``,
    `Channel.history` and the recovery after a reconnect.
    """

    url_schemes = SCHEMES
    asyncio_only = True  # asyncpg is asyncio-only
    supports_multi_group = True
    supports_patterns = True
    supports_publish_many = True
    supports_history = True

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pool: Any = None,
        connection: Any = None,
        **options: Any,
    ) -> None:
        dsn, query = split_options(check_url(url), PostgreSQLLayerOptions.names())
        self._shown = redact_url(url)
        self._secrets = url_secrets(url)
        self.options = PostgreSQLLayerOptions.from_options(options, query=query)
        self.max_payload_bytes: int = self.options.max_payload_bytes
        self._counters = Counters()
        self._names = ChannelNames(self.options.namespace)
        self._sql = Statements(self._names, self.options.history_size, self.options.history_ttl)
        self._connect_kwargs = connect_kwargs(dsn, self.options)
        self._publisher = Publisher(
            self._connect_kwargs, self.options.pool_size, pool=pool, connection=connection
        )
        self._writer = EnvelopeWriter()
        self._router = Router(self._names, self._counters, self.options.max_backlog)
        self._listener: Listener | None = None
        #: The connected channel's inbox (`publish_in` encodes with it), None when not connected.
        self._inbox: Inbox | None = None
        #: With history on, the inbox while connected: which groups heard unlogged messages.
        self._watch: UnloggedWatch | None = None
        self._next_expiry = 0.0
        self._next_history_expiry = 0.0
        self._channels: dict[str, str] = {}  # group -> channel, see `_channel`
        #: Whether publishes delete expired history (`_expire_if_due`).
        self._expiring_history = self.options.history_ttl is not None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A layer for a ``postgres://`` or ``postgresql://`` URL; unknown options: TypeError."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"<PostgreSQLChannelLayer {self._shown} namespace={self.options.namespace!r}>"

    @property
    def url(self) -> str:
        """The URL with every secret masked."""
        return self._shown

    def stats(self) -> PostgreSQLLayerStats:
        listener = self._listener
        pid = None if listener is None else listener.pid
        return self._counters.snapshot(connected=pid is not None, listener_pid=pid)

    @property
    def settings(self) -> PostgreSQLLayerOptions:
        """Deprecated: `options`."""
        warnings.warn(
            "PostgreSQLChannelLayer.settings is deprecated: use .options",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.options

    @property
    def counters(self) -> PostgreSQLLayerStats:
        """Deprecated: `stats()`, a frozen snapshot (``undecodable`` and ``misrouted``
        are now counted together as ``skipped``)."""
        warnings.warn(
            "PostgreSQLChannelLayer.counters is deprecated: use .stats()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.stats()

    @property
    def listener_pid(self) -> int | None:
        """Deprecated: ``stats().listener_pid``."""
        warnings.warn(
            "PostgreSQLChannelLayer.listener_pid is deprecated: use .stats().listener_pid",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.stats().listener_pid

    async def listening_channels(self) -> list[str]:
        """The channels the LISTEN connection listens to, as the server reports them.

        Waits first for the LISTEN/UNLISTEN changes requested so far (leaving
        a subscription returns before its UNLISTEN has run).
        """
        return [] if self._listener is None else await self._listener.listening_channels()

    def channel_name(self, group: str) -> str:
        """The PostgreSQL NOTIFY channel that carries `group`."""
        return self._names.channel(group)

    async def check(self, timeout: float) -> None:
        """``SELECT 1`` on a publishing connection, and the listening connection is up.

        Raises:
            BrokerUnavailableError: no answer within `timeout`, or the
                listening connection is down (the layer is reconnecting).
            BrokerRefusedError: the server refused the query.
            ChannelClosedError: the layer is not connected.
        """
        listener = self._connected_listener()
        if listener.pid is None:
            raise BrokerUnavailableError(
                f"the listening connection to {self._shown} is down; the layer is reconnecting"
            )
        publishing = self._publisher.publishing
        with errors_translated(f"check {self._shown}", self._secrets), anyio.fail_after(timeout):
            if publishing is not None:
                await publishing.call("SELECT 1", (), publishing.clock() + timeout)
                return
            async with self._publisher.acquire() as conn:
                await conn.fetchval("SELECT 1", timeout=timeout)

    # -- lifecycle ----------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        """Open the publishing pool and the LISTEN connection; background tasks run inside.

        Startup errors (BrokerUnavailableError, BrokerRefusedError, ...) and
        the body's own exceptions come out as they are, never wrapped in an
        exception group.
        """
        if self.keeps_history:
            inbox = self._watch = UnloggedWatch(inbox)
        listener = Listener(
            connect_kwargs=self._connect_kwargs,
            settings=self.options,
            describe=self._shown,
            desired=self._router.desired_channels,
            wants=self._router.wants,
            on_notification=self._router.on_notification,
            on_restored=inbox.messages_lost,
            counters=self._counters,
            share=self._share_listening,
        )
        self._listener = listener
        try:
            async with self._publisher.open():
                with errors_translated(f"connect to {self._shown}", self._secrets):
                    await self._prepare_schema()
                    await listener.start()
                try:
                    async with background_tasks() as tasks:
                        tasks.start_soon(listener.run)
                        tasks.start_soon(self._router.run, inbox, self._fetch)
                        self._inbox = inbox
                        yield
                finally:
                    await listener.close()
        finally:
            self._router.clear()
            self._listener = self._inbox = self._watch = None

    async def _prepare_schema(self) -> None:
        """Create or update the layer's tables if, and only if, they are not as expected.

        Tables of the right shape are used as they are, so a role with only
        the privileges the README lists can connect; creating needs more.
        """

        async def attempt() -> Exception | None:
            """Returns the server's refusal to create the tables (retrying cannot cure it)."""
            timeout = self.options.command_timeout
            async with self._publisher.setup() as conn:
                # Shielded (each statement bounded): a cancelled transaction
                # must not go back to the pool half-done.
                with anyio.CancelScope(shield=True):
                    encoding = await conn.fetchval("SHOW server_encoding", timeout=timeout)
                    if not await self._schema_as_expected(conn, timeout):
                        try:
                            await self._create_schema(conn, timeout)
                        except Exception as exc:
                            if is_refusal(exc):
                                return exc
                            raise
            self._writer.ascii_only = str(encoding).upper() not in ("UTF8", "UTF-8")
            return None

        refusal = await retry_until(
            attempt,
            timeout=self.options.connect_timeout,
            retry_on=CONNECTION_ERRORS,
            what=f"connect to {self._shown}",
            backoff=self.options.reconnect_backoff,
        )
        if refusal is not None:
            with errors_translated(
                f"create or update the tables of namespace {self.options.namespace!r} "
                "(they are missing or of an older shape; connect once with a role that "
                "may create them)"
            ):
                raise refusal

    async def _schema_as_expected(self, conn: Any, timeout: float) -> bool:
        """Whether every table, column and index exists, with the expected types."""
        expected = self._sql.expected_shape
        rows = await conn.fetch(self._sql.schema_shape, list(expected), timeout=timeout)
        found: dict[str, dict[str, str]] = {}
        for row in rows:
            columns = found.setdefault(row["relation"], {})
            if row["col"] is not None:
                columns[row["col"]] = row["type"]
        return all(
            relation in found and columns.items() <= found[relation].items()
            for relation, columns in expected.items()
        )

    async def _create_schema(self, conn: Any, timeout: float) -> None:
        """Create or migrate the tables (serialised by an advisory lock)."""
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", self._sql.lock_key, timeout=timeout
            )
            for statement in self._sql.create_schema:
                await conn.execute(statement, timeout=timeout)

    def _share_listening(self, lane: Lane | None) -> None:
        """Let publishes run on the listening connection while it is idle (`_publishing`).

        Only those that only NOTIFY, and none with history on: a statement
        that writes a table (a large payload's, or history's with its row
        locks) may wait for a lock an application holds for long (its
        transaction in `publish_in`, a ``LOCK TABLE``), and one waiting on
        the listening connection holds up its notifications and its health
        check.
        """
        publishing = self._publisher.publishing
        if publishing is not None and not self.keeps_history:
            publishing.share(lane, self._sql.notify_only)

    def _connected_listener(self) -> Listener:
        if self._listener is None:
            raise ChannelClosedError("the PostgreSQL layer is not connected")
        return self._listener

    # -- publishing -----------------------------------------------------------------

    async def publish(self, group: str, payload: bytes) -> None:
        """NOTIFY once; only if that fails, retry until `publish_timeout` has passed."""
        if self._listener is None:
            self._connected_listener()
        query, arguments, large = self._prepare(group, payload)
        publishing = self._publisher.publishing
        if publishing is None:
            await self._send_with_retry(query, arguments, self._publish_what(group))
        else:  # `_send_with_retry`'s first try, one coroutine fewer on the way
            deadline = publishing.clock() + self.options.publish_timeout
            try:
                await publishing.call(query, arguments, deadline)
            except Exception as exc:
                await self._retry(query, arguments, self._publish_what(group), exc, deadline)
        self._counters.published += 1
        if large:
            self._counters.large_published += 1
        if large or self._expiring_history:
            await self._expire_if_due(large)

    def _publish_what(self, group: str) -> str:
        """What a publish to `group` was doing, as its errors say (made only when needed)."""
        return f"publish to group {group[:80]!r} on {self._shown}"

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """NOTIFY every item in one statement (one round trip), retried as one like `publish`.

        With history on, the statement logs them all too (`_prepare_logged_batch`).
        Without, a batch holding a message too large for a NOTIFY goes
        message by message (`publish`), so that the order stays the order given.
        """
        self._connected_listener()
        what = f"publish {len(items)} message(s) on {self._shown}"
        if self.keeps_history:
            query, arguments, large = self._prepare_logged_batch(items)
            await self._send_with_retry(query, arguments, what)
            self._counters.published += len(items)
            self._counters.large_published += large
            await self._expire_if_due(bool(large))
            return
        envelopes = [self._writer.inline(group, payload) for group, payload in items]
        if None in envelopes:
            # Large messages go through the payloads table: the per-message path.
            await super().publish_many(items)
            return
        channels = [self._channel(group) for group, _ in items]
        arguments = (channels, envelopes)
        await self._send_with_retry(self._sql.publish_many, arguments, what)
        self._counters.published += len(items)

    async def _send_with_retry(self, query: str, arguments: Sequence[Any], what: str) -> None:
        """Run `query` once; only if the connection failed, retry until `publish_timeout`.

        The layer's own publishing connections bound each call with their
        deadline timer, so the first try costs no retry machinery; pooled
        tries (the application's pool or connection) and retries run
        within what is left of `publish_timeout`. A try cut by the deadline
        fails at once: `BrokerUnavailableError` from its TimeoutError.
        """
        publishing = self._publisher.publishing
        if publishing is not None:
            deadline = publishing.clock() + self.options.publish_timeout
            try:
                await publishing.call(query, arguments, deadline)
            except Exception as exc:
                await self._retry(query, arguments, what, exc, deadline)
            return
        publisher = self._publisher

        async def attempt() -> None:
            async with publisher.acquire() as conn:
                await conn.execute(query, *arguments)

        with errors_translated(what, self._secrets):
            await call_with_deadline(
                attempt,
                timeout=self.options.publish_timeout,
                retry_on=CONNECTION_ERRORS,
                what=f"publish to {self._shown}",
                backoff=self.options.reconnect_backoff,
            )

    async def _retry(
        self, query: str, arguments: Sequence[Any], what: str, error: Exception, deadline: float
    ) -> None:
        """After a first try on the publishing connections failed with `error`: translate
        it, or (a lost connection) retry until `deadline`."""
        publishing = self._publisher.publishing
        with errors_translated(what, self._secrets):
            timeout = 0.0 if publishing is None else round(deadline - publishing.clock(), 3)
            if not isinstance(error, CONNECTION_ERRORS) or timeout <= 0:
                raise error

            async def attempt() -> None:
                current = self._publisher.publishing
                if current is None or current is not publishing:  # the layer left meanwhile
                    raise ChannelClosedError("the PostgreSQL layer is not connected") from error
                await current.call(query, arguments, deadline)

            await call_with_deadline(
                attempt,
                timeout=timeout,
                retry_on=CONNECTION_ERRORS,
                what=f"publish to {self._shown}",
                backoff=self.options.reconnect_backoff,
            )

    async def _expire_if_due(self, large: bool) -> None:
        """After a publish: delete expired large payloads (if it stored any) and events, if due."""
        if large and anyio.current_time() >= self._next_expiry:
            await self._expire_large_payloads()
        if (
            self.options.history_ttl is not None
            and anyio.current_time() >= self._next_history_expiry
        ):
            await self._expire_history()

    async def _expire_large_payloads(self) -> None:
        """Delete expired large payloads; at most twice per TTL, best effort, never raises.

        Only `publish` does it, never `publish_in`: row locks taken inside
        the application's transaction would hold up other publishers.
        """
        ttl = self.options.large_payload_ttl
        self._next_expiry = anyio.current_time() + ttl / 2
        try:
            with anyio.fail_after(self.options.command_timeout):
                async with self._publisher.acquire() as conn:
                    await conn.execute(self._sql.expire_payloads, ttl)
        except Exception as exc:
            logger.warning(
                "could not delete expired large payloads (%s: %s)", type(exc).__name__, exc
            )

    async def _expire_history(self) -> None:
        """Delete events older than `history_ttl` (reads skip them anyway); best effort.

        At most twice per TTL and once a second, from `publish` only, as
        `_expire_large_payloads`.
        """
        ttl = self.options.history_ttl
        assert ttl is not None
        self._next_history_expiry = anyio.current_time() + max(ttl / 2, 1.0)
        try:
            with anyio.fail_after(self.options.command_timeout):
                async with self._publisher.acquire() as conn:
                    await conn.execute(self._sql.expire_history)
        except Exception as exc:
            logger.warning("could not delete expired history (%s: %s)", type(exc).__name__, exc)

    async def publish_in(
        self,
        connection: Any,
        group: str,
        message: Any,
        *,
        serializer: str | Serializer | None = None,
    ) -> None:
        """Publish `message` through the application's `connection`, inside its transaction.

        Subscribers receive it when that transaction commits, never if it
        rolls back. The layer must be connected (its `Channel` entered): the
        message is encoded and checked exactly as that channel's `publish`
        does (`Inbox.encode`: its serializer, the group check, the size limit).
        `serializer=` is deprecated and ignored: the channel's serializer is used.

        Raises:
            ChannelClosedError: the layer is not connected.
            TypeError, ValueError: `group` is not a usable group name.
            SerializationError, PayloadTooLargeError: the message cannot be carried.
        """
        inbox = self._inbox
        if inbox is None:
            raise ChannelClosedError(
                "connect this layer (enter its Channel) before publish_in: the message "
                "is encoded with the channel's serializer, and large ones travel through "
                "the tables the layer creates"
            )
        if serializer is not None:
            # It had to be the channel's own serializer for subscribers to decode
            # the message, so using the channel's encoding changes nothing.
            warnings.warn(
                "PostgreSQLChannelLayer.publish_in(serializer=...) is deprecated: the message "
                "is encoded with the connected channel's serializer; drop the argument",
                DeprecationWarning,
                stacklevel=2,
            )
        query, arguments, large = self._prepare(group, inbox.encode(group, message))
        with errors_translated(f"publish to group {group[:80]!r} in the application's transaction"):
            await connection.execute(query, *arguments)
        if large:
            self._counters.large_published += 1

    def _prepare(self, group: str, payload: bytes) -> tuple[str, tuple[Any, ...], bool]:
        """The statement publishing `payload`, its arguments, and whether it goes through
        the payloads table.

        Prepared once per message (the envelope's sequence number with it),
        then run on whichever connection, as many times as retries need.
        With history on the statement also logs the message (still one
        round trip); the position is only known there, so it goes into the
        envelope there, between the two halves made here.
        """
        channel = self._channel(group)
        logged = self.keeps_history
        reserve = POSITION_ROOM if logged else 0
        envelope = self._writer.inline(group, payload, reserve)
        query: str
        arguments: tuple[Any, ...]
        if envelope is not None:
            large = False
            if logged:
                head, rest = split_for_position(envelope)
                query = self._sql.publish_logged
                arguments = (channel, head, rest, group_key(group), new_epoch(), payload)
            else:
                query, arguments = self._sql.publish, (channel, envelope)
        else:
            large = True
            reference, names_group, token = self._writer.reference_head(group, reserve)
            stored = (payload, None if names_group else stored_group(group), token)
            if logged:
                head, rest = split_for_position(reference)
                query = self._sql.publish_large_logged
                arguments = (channel, head, *stored, rest, group_key(group), new_epoch())
            else:
                query, arguments = self._sql.publish_large, (channel, reference, *stored)
        return query, arguments, large

    def _channel(self, group: str) -> str:
        """`ChannelNames.channel`, remembered: a publisher sends to the same few groups."""
        channel = self._channels.get(group)
        if channel is None:
            if len(self._channels) >= _CHANNEL_CACHE:
                self._channels.clear()
            channel = self._channels[group] = self._names.channel(group)
        return channel

    def _prepare_logged_batch(
        self, items: Sequence[tuple[str, bytes]]
    ) -> tuple[str, tuple[Any, ...], int]:
        """The one statement logging and publishing `items` (history on), its arguments,
        and how many go through the payloads table; as `_prepare` does for one message."""
        channels, heads, rests, keys, bodies = [], [], [], [], []
        tokens: list[int | None] = []
        stored_groups: list[str | None] = []
        for group, payload in items:
            envelope = self._writer.inline(group, payload, POSITION_ROOM)
            token: int | None = None
            stored: str | None = None
            if envelope is None:
                envelope, names_group, token = self._writer.reference_head(group, POSITION_ROOM)
                stored = None if names_group else stored_group(group)
            head, rest = split_for_position(envelope)
            channels.append(self._channel(group))
            heads.append(head)
            rests.append(rest)
            keys.append(group_key(group))
            bodies.append(payload)
            tokens.append(token)
            stored_groups.append(stored)
        large = sum(token is not None for token in tokens)
        arguments = (
            channels,
            heads,
            rests,
            keys,
            bodies,
            tokens,
            stored_groups,
            new_epoch(),
        )
        return self._sql.publish_many_logged, arguments, large

    # -- history ------------------------------------------------------------------------

    @property
    def keeps_history(self) -> bool:
        """True with ``history_size`` > 0: every publish is logged."""
        return self.options.history_size > 0

    async def read_history(self, group: str, after: str | None, limit: int | None) -> HistoryRead:
        """Read `group`'s log in one statement (one snapshot); see `ChannelLayer.read_history`.

        A group without a counter row gets one first (one more statement,
        once per group): its epoch is then fixed, so the head read before its
        first event is a position of its log, and a reset log is told apart.
        A group that received a message without a position (a publisher with
        history off) reads as incomplete while subscribed: the log misses it.

        Raises:
            BrokerUnavailableError: no answer within `publish_timeout` (retried).
            BrokerRefusedError: the server refused the read (permissions).
            ChannelClosedError: the layer is not connected.
            NotSupportedError: history is off.
        """
        self._connected_listener()
        if not self.keeps_history:
            raise NotSupportedError(
                f"{type(self).__name__} keeps no history here: set history_size"
            )
        key = group_key(group)
        since = None if after is None else parse_position(after, "after")
        # One more than asked when only the head is wanted: whether the event
        # right after `since` is still there tells whether the log reaches it.
        fetched = None if limit is None else max(limit, 1 if since is not None else 0)

        async def read(conn: Any) -> list[Any]:
            timeout = self.options.command_timeout
            if since is None:
                rows: list[Any] = await conn.fetch(
                    self._sql.read_newest, key, fetched, timeout=timeout
                )
            else:
                offset = since.offset[0] if len(since.offset) == 1 else 0
                rows = await conn.fetch(
                    self._sql.read_after, key, since.epoch, offset, fetched, timeout=timeout
                )
            return rows

        async def attempt() -> list[Any]:
            with anyio.fail_after(self.options.command_timeout):
                async with self._publisher.acquire() as conn:
                    rows = await read(conn)
                    if not rows:
                        await conn.execute(self._sql.start_log, key, new_epoch())
                        rows = await read(conn)
                    return rows

        with errors_translated(
            f"read the history of group {group[:80]!r} on {self._shown}", self._secrets
        ):
            rows = await retry_until(
                attempt,
                timeout=self.options.publish_timeout,
                retry_on=CONNECTION_ERRORS,
                what=f"read history from {self._shown}",
                backoff=self.options.reconnect_backoff,
            )
        result = read_result(rows, since, limit, fetched)
        watch = self._watch
        if since is not None and result.complete and watch and group in watch.unlogged:
            # A message reached the group without a position: the log misses it.
            return HistoryRead(result.events, False, result.head)
        return result

    # -- subscribing ------------------------------------------------------------------

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        """LISTEN several groups in one round trip; returns once the server has them."""
        listener = self._connected_listener()
        await listener.follow(self._router.add_groups(groups), wait=True)

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        """Returns at once; the UNLISTEN follows (or the next connection leaves it out)."""
        touched = self._router.remove_groups(groups)
        if self._watch is not None:
            self._watch.unlogged.difference_update(groups)
        if self._listener is not None:
            await self._listener.follow(touched, wait=False)

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        """Start receiving every group matching the glob patterns (LISTENing every bucket)."""
        listener = self._connected_listener()
        await listener.follow(self._router.add_patterns(patterns), wait=True)

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        touched = self._router.remove_patterns(patterns)
        if self._listener is not None:
            await self._listener.follow(touched, wait=False)

    # -- receiving ----------------------------------------------------------------------

    async def _fetch(self, reference: Reference) -> tuple[str | None, bytes] | None:
        """A large payload (and its group, if stored) from the payloads table, or None if gone.

        The row must carry the reference's token too: ids restart after a
        TRUNCATE or a crash, and a row of the same id may be another message.
        """
        row_id = reference.row

        async def attempt() -> Any:
            with anyio.fail_after(self.options.command_timeout):
                async with self._publisher.acquire() as conn:
                    return await conn.fetchrow(self._sql.fetch_payload, row_id, reference.token)

        try:
            row = await retry_until(
                attempt,
                timeout=self.options.publish_timeout,
                retry_on=CONNECTION_ERRORS,
                what=f"fetch a large message from {self._shown}",
                backoff=self.options.reconnect_backoff,
            )
        except Exception as exc:
            row, reason = None, f"{type(exc).__name__}: {exc}"
        else:
            reason = "it expired (raise large_payload_ttl?)"
        fetched: tuple[str | None, bytes] | None = None
        if row is not None:
            try:
                group = None if row["grp"] is None else load_stored_group(row["grp"])
            except ValueError as exc:
                reason = f"its stored group is damaged ({exc})"
            else:
                fetched = (group, bytes(row["body"]))
        if fetched is None:
            self._counters.large_missing += 1
            logger.warning("skipped large message #%d: %s", row_id, reason)
            if self.keeps_history and self._inbox is not None:
                # A gap the log can fill: the channel recovers it from there.
                self._inbox.messages_lost("expired", 1)
            return None
        self._counters.large_fetched += 1
        return fetched
