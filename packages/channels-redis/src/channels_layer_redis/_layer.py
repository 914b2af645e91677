"""`RedisPubSubChannelLayer`: channels-core's layer protocol over Redis pub/sub (redis-py).

One pub/sub connection (see `_pubsub`) carries every subscription of the
layer; publishing goes through connections of its own (`_publishing`: the
layer writes the commands and reads the replies); other commands use a
redis-py pool. When the server speaks RESP3 (``HELLO 3``), a publish finding
the pub/sub connection idle runs there instead (`_call`): one read then
brings both the reply and the process's own message. The layer keeps
the set of groups and patterns it should be subscribed to; after a lost
connection it reconnects with backoff, subscribes all of them again,
unsubscribes what was left in the meantime, and tells the channel that
messages may have been missed.
Messages travel in an envelope (`_envelope`) that lets receivers drop a
retried PUBLISH that Redis had already run. redis-py's exceptions are
translated at this boundary, with one mapping (`REDIS_ERRORS`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

import anyio
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ChannelClosedError,
    ChannelLayer,
    ChannelsError,
    ErrorMapping,
    Inbox,
    LayerStats,
    NotSupportedError,
    PayloadTooLargeError,
    background_tasks,
    call_with_deadline,
    reconnect_forever,
    retry_until,
    translate_errors,
)
from channels_core.discovery import registered_as
from channels_core.history import HistoryRead

from ._envelope import MAX_REMEMBERED, DuplicateFilter, Outbox
from ._history import StreamLog
from ._limits import DEFAULT_PUBSUB_HARD_LIMIT, payload_limit, pubsub_hard_limit
from ._pools import (
    close_pool,
    open_pool,
    publishing_connections,
    pubsub_connection,
    run_until_lost,
)
from ._publishing import PublishingConnections
from ._pubsub import TRANSIENT_ERRORS, ConnectionLost, Message, PubSubConnection
from ._sentinel import SentinelPool
from ._url import DEFAULT_URL, SCHEMES, RedisConfig, parse_config
from ._wire import WireNames, pack_command, pack_publish

__all__ = ["REDIS_ERRORS", "RedisLayerStats", "RedisPubSubChannelLayer"]

logger = logging.getLogger("channels_layer_redis")

#: redis-py's exceptions -> what the application sees (`from` the original).
REDIS_ERRORS: ErrorMapping = {
    RedisConnectionError: BrokerUnavailableError,
    RedisTimeoutError: BrokerUnavailableError,
    TimeoutError: BrokerUnavailableError,
    AuthenticationError: BrokerRefusedError,
    NoPermissionError: BrokerRefusedError,
    ResponseError: BrokerRefusedError,
    RedisError: ChannelsError,
}

#: The payload limit when the server's configuration cannot be read (Redis's defaults).
DEFAULT_MAX_PAYLOAD_BYTES = payload_limit(DEFAULT_PUBSUB_HARD_LIMIT)

#: Why reading the server's configuration may fail (not permitted, or no answer).
_CONFIG_ERRORS: tuple[type[BaseException], ...] = (ResponseError, *TRANSIENT_ERRORS)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisLayerStats(LayerStats):
    """The shared counters (`connection_losses`: pub/sub connections lost), and the layer's own."""

    #: Groups the layer is subscribed to (or will subscribe again after a reconnect).
    groups: int
    #: Patterns the layer is subscribed to (likewise).
    patterns: int
    #: Tries to open a new pub/sub connection after a loss, failed ones included.
    reconnect_attempts: int
    #: Messages skipped because their channel name was not a UTF-8 group
    #: name under the layer's namespace.
    skipped: int
    #: Messages dropped because they had been delivered already (a retried
    #: PUBLISH that Redis had run).
    duplicates: int
    #: The server's CLIENT ID of the pub/sub connection while it is up.
    pubsub_client_id: int | None


class RedisPubSubChannelLayer(ChannelLayer):
    """Cross-process, fire-and-forget delivery through Redis SUBSCRIBE/PSUBSCRIBE.

    Build it with ``RedisPubSubChannelLayer.from_url(url, **options)`` or
    ``Channel.from_url(url, **options)``; see the package README for the
    URL forms and options (`RedisLayerOptions`, and redis-py's connection
    options). Runs on asyncio only (redis-py is asyncio-based). With
    `history_size` > 0 every publish is also logged (`_history`).
    """

    url_schemes = SCHEMES
    asyncio_only = True
    supports_multi_group = True
    supports_patterns = True
    supports_publish_many = True
    supports_history = True

    #: The command `publish` sends (cluster mode: SPUBLISH).
    _PUBLISH = "PUBLISH"
    #: Whether channel names carry a hash tag (a cluster picks a slot by it).
    _HASH_TAGS = False

    def __new__(cls, url: str = DEFAULT_URL, **options: Any) -> Self:
        """A ``redis+cluster://`` URL builds the cluster mode's class (its own capabilities)."""
        from ._cluster_layer import RedisClusterChannelLayer, is_cluster_url

        if (
            isinstance(url, str)
            and is_cluster_url(url)
            and not issubclass(cls, RedisClusterChannelLayer)
        ):
            if cls is not RedisPubSubChannelLayer:
                raise ValueError(
                    f"{cls.__name__} cannot serve a Redis Cluster URL: derive it from "
                    "RedisClusterChannelLayer for redis+cluster:// and rediss+cluster://"
                )
            return RedisClusterChannelLayer.__new__(RedisClusterChannelLayer)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._config: RedisConfig = parse_config(
            url, options, alias=lambda scheme: registered_as(type(self), scheme)
        )
        self.options = self._config.options
        self._wire = WireNames(self.options.namespace, hash_tags=self._HASH_TAGS)
        #: The history, with history on (else None: publishing stays a plain PUBLISH).
        self._log = (
            StreamLog(self.options, self._wire, self._PUBLISH)
            if self.options.history_size
            else None
        )
        #: Set at connect from the server's pub/sub output buffer limit, unless configured.
        self.max_payload_bytes: int = self.options.max_payload_bytes or DEFAULT_MAX_PAYLOAD_BYTES
        self._outbox = Outbox()
        self._filter = DuplicateFilter(self._unknown_if_delivered)
        self._groups: set[str] = set()
        self._patterns: dict[bytes, str] = {}  # wire pattern -> pattern as subscribed
        self._inbox: Inbox | None = None
        self._client: Redis | RedisCluster | None = None
        self._pool: BlockingConnectionPool | None = None
        #: Where PUBLISH and the history script go (one server; None in cluster mode).
        self._publish_connections: PublishingConnections | None = None
        self._pubsub: PubSubConnection | None = None
        self._reconnected: anyio.Event | None = None  # set on each reconnect, then replaced
        self._published = 0
        self._received = 0
        self._losses = 0
        self._reconnects = 0
        self._attempts = 0
        self._skipped = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``redis://[[user]:password@]host[:port][/db][?option=value...]`` and friends.

        Also ``rediss://`` (TLS, with redis-py's ``ssl_*`` options),
        ``unix:///path/to/socket?db=N`` and ``redis+unix://`` (the same). Options
        are the layer's (`RedisLayerOptions`) or redis-py connection options;
        anything else raises `TypeError` naming it.
        """
        return cls(url, **options)

    @property
    def url(self) -> str:
        """The server URL, with any password replaced by ``***``."""
        return self._config.display_url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    def stats(self) -> RedisLayerStats:
        pubsub = self._pubsub
        return RedisLayerStats(
            connected=pubsub is not None,
            published=self._published,
            received=self._received,
            connection_losses=self._losses,
            reconnects=self._reconnects,
            groups=len(self._groups),
            patterns=len(self._patterns),
            reconnect_attempts=self._attempts,
            skipped=self._skipped,
            duplicates=self._filter.duplicates,
            pubsub_client_id=None if pubsub is None else pubsub.client_id,
        )

    async def check(self, timeout: float) -> None:
        """PING on a publishing connection, then on the pub/sub connection, within `timeout`.

        Raises:
            BrokerUnavailableError: no answer within `timeout`, or the pub/sub
                connection is down (the layer is reconnecting).
            BrokerRefusedError: the server refused the PING (ACL).
            ChannelClosedError: the layer is not connected.
        """
        client, pubsub = self._client, self._pubsub
        if client is None:
            raise ChannelClosedError("the Redis layer is not connected")
        if pubsub is None:
            raise BrokerUnavailableError(
                f"the pub/sub connection to {self.url} is down; the layer is reconnecting"
            )
        publishing = self._publish_connections
        assert publishing is not None  # set with the client (the cluster layer has its own check)
        with self._translated(f"check {self.url}"), anyio.fail_after(timeout):
            await publishing.execute(anyio.current_time() + timeout, "PING")  # as publishes go
            # A PING on the subscribing connection, answered in order after
            # anything queued on it: this connection, not only the server, is alive.
            await pubsub.call("PING", [])

    # -- lifecycle --------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        self._inbox = inbox
        self._reconnected = anyio.Event()
        pool = self._pool = open_pool(
            self._config,
            max_connections=self.options.pool_size,
            timeout=self._config.pool_timeout,
            # No socket timeouts of the layer's own: `publish_timeout` bounds each
            # publish as a whole, pool wait included.
            **self._connection_kwargs(health_check_interval=self.options.health_check_interval),
        )
        try:
            self._pubsub, early = await retry_until(
                self._open_pubsub,
                timeout=self.options.connect_timeout,
                retry_on=(BrokerUnavailableError,),  # a refusal fails at once
                what=f"connect to {self.url}",
                backoff=self.options.reconnect_backoff,
            )
            self._client = Redis(connection_pool=pool)
            self._publish_connections = publishing_connections(pool, self.options.pool_size)
            self.max_payload_bytes = await self._payload_limit(self._client)
            self._deliver_all(early)
            async with background_tasks() as tasks:
                tasks.start_soon(self._keep_reading, inbox)
                yield
        finally:
            with anyio.CancelScope(shield=True):
                if self._pubsub is not None:
                    await self._pubsub.aclose()
                if self._publish_connections is not None:
                    self._publish_connections.close()
                await close_pool(pool)
            self._inbox = self._client = self._pubsub = self._reconnected = self._pool = None
            self._publish_connections = None
            self._groups.clear()
            self._patterns.clear()
            self._filter.clear()
            if self._log is not None:
                self._log.unlogged.clear()

    async def _open_pubsub(self) -> tuple[PubSubConnection, list[Message]]:
        """A new pub/sub connection, subscribed to every group and pattern we need.

        Raises `BrokerRefusedError` if the server refuses the credentials,
        the connection or a subscription (ACL), else `BrokerUnavailableError`.
        """
        name = self._config.connection_kwargs.get("client_name") or "channels-pubsub"
        assert self._pool is not None
        connection = pubsub_connection(
            self._config, self._pool, self._connection_kwargs(protocol=2, client_name=name)
        )
        with self._translated(f"open the pub/sub connection to {self.url}"):
            pubsub, early = await PubSubConnection.open(
                connection,
                self._on_message,
                [self._wire.channel(group) for group in self._groups],
                list(self._patterns),
                timeout=self.options.connect_timeout,
                resp3=self.options.share_pubsub,
            )
        pubsub.demoted_is_lost = isinstance(self._pool, SentinelPool)
        return pubsub, early

    def _translated(self, what: str) -> AbstractContextManager[None]:
        """redis-py's exceptions inside as `ChannelsError`s, with no secret in their message."""
        return translate_errors(REDIS_ERRORS, what=what, secrets=self._config.secrets)

    async def _payload_limit(self, client: Redis | RedisCluster) -> int:
        """The configured limit, else derived from the server's pub/sub output buffer limit.

        Falls back to the limit for Redis's defaults when CONFIG is not
        permitted (ACL, managed services) or does not answer in time.
        """
        if self.options.max_payload_bytes is not None:
            return self.options.max_payload_bytes
        hard_limit: int | None = None
        try:
            with anyio.move_on_after(self.options.connect_timeout):
                config = await client.config_get("client-output-buffer-limit")
                hard_limit = pubsub_hard_limit(config)
        except _CONFIG_ERRORS as exc:
            logger.info("could not read client-output-buffer-limit from %s: %s", self.url, exc)
        if hard_limit is None:
            logger.info(
                "max_payload_bytes is %d, the limit for Redis's default configuration",
                DEFAULT_MAX_PAYLOAD_BYTES,
            )
            return DEFAULT_MAX_PAYLOAD_BYTES
        return payload_limit(hard_limit)

    def _connection_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for one connection; retries are the layer's job, not redis-py's.

        RESP2 unless the URL asks otherwise: redis-py 8 would open each
        connection with ``HELLO 3``, which a server may refuse (HELLO renamed
        away or denied by its ACL, Redis < 6); the pub/sub connection asks for
        RESP3 itself, and nothing else the layer runs needs it.
        """
        return {
            "protocol": 2,
            **self._config.connection_kwargs,
            "retry": Retry(NoBackoff(), 0),
            **overrides,
        }

    async def _keep_reading(self, inbox: Inbox) -> None:
        """The reader task: read, and on connection loss reconnect and re-subscribe."""
        while True:
            pubsub, pool = self._pubsub, self._pool
            assert pubsub is not None
            assert pool is not None
            cause: ConnectionLost | None = None
            try:
                await run_until_lost(
                    pool, pubsub, self.options.health_check_interval, self._publish_connections
                )
            except ConnectionLost as exc:
                cause = exc
            self._pubsub = None
            self._losses += 1
            await pubsub.aclose()
            self._pubsub, early = await self._reconnect(cause)
            await self._reconcile(self._pubsub)
            self._reconnects += 1
            if self._reconnected is not None:
                self._reconnected.set()
            self._reconnected = anyio.Event()
            inbox.messages_lost()
            self._deliver_all(early)

    async def _reconnect(
        self, cause: ConnectionLost | None
    ) -> tuple[PubSubConnection, list[Message]]:
        """A new pub/sub connection, with the core's reconnect policy, until the server takes it.

        A refusal (an ACL changed during the outage no longer allows a
        subscribed group) is retried too, and logged: the channel stays
        open until an operator fixes it.
        """

        def count_attempt() -> None:
            self._attempts += 1

        return await reconnect_forever(
            self._open_pubsub,
            what=f"the pub/sub connection to {self.url} "
            f"({len(self._groups)} group(s), {len(self._patterns)} pattern(s))",
            logger=logger,
            backoff=self.options.reconnect_backoff,
            cause=cause,
            on_attempt=count_attempt,
            recovers=self.keeps_history,
        )

    async def _reconcile(self, pubsub: PubSubConnection) -> None:
        """Make a new connection's subscriptions what is wanted now.

        The reconnect subscribed the names wanted when it started; names
        left (or added) while it was under way are sent now, in one write
        computed from the wanted state of this instant (later changes go to
        the connection directly). No waiting: a failure here is the
        reader's to notice.
        """
        wanted = {self._wire.channel(group) for group in self._groups}
        changes = [
            (command, sorted(names))
            for command, names in (
                ("UNSUBSCRIBE", pubsub.channels - wanted),
                ("SUBSCRIBE", wanted - pubsub.channels),
                ("PUNSUBSCRIBE", pubsub.patterns - self._patterns.keys()),
                ("PSUBSCRIBE", self._patterns.keys() - pubsub.patterns),
            )
            if names
        ]
        if changes:
            with suppress(ConnectionLost):
                await pubsub.send(*changes)

    # -- delivery ---------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes, wire_pattern: bytes | None) -> None:
        inbox = self._inbox
        if inbox is None:
            return
        self._received += 1
        group = self._wire.group(channel)
        if group is None:
            self._skipped += 1
            logger.warning(
                "skipped a message on channel %r: not a UTF-8 group name under namespace %r",
                channel[:200],
                self.options.namespace,
            )
            return
        pattern = None if wire_pattern is None else self._patterns.get(wire_pattern)
        if wire_pattern is not None and pattern is None:
            return  # unsubscribed meanwhile
        route = self._route(channel, wire_pattern)
        if self._log is not None:
            accepted = self._filter.accept_logged(data, route)
            if accepted is not None:
                if accepted[1] is None and pattern is None:
                    self._log.unlogged.add(group)
                inbox.deliver(group, accepted[0], pattern, accepted[1])
            return
        payload = self._filter.accept(data, route)
        if payload is not None:
            inbox.deliver(group, payload, pattern)

    def _route(self, channel: bytes, wire_pattern: bytes | None) -> bytes | None:
        """Where one publisher's messages arrive in publish order (for `DuplicateFilter`).

        One server: every group on the one connection (None), each pattern
        on its own.
        """
        return wire_pattern

    def _unknown_if_delivered(self) -> None:
        """A message was too old to tell whether it had been delivered: dropped, so say so."""
        logger.warning(
            "dropped a message from %s that may have been delivered already "
            "(a publish retried after more than %d later messages); it may be lost",
            self.url,
            MAX_REMEMBERED,
        )
        if self._inbox is not None:
            self._inbox.messages_lost()

    def _deliver_all(self, messages: list[Message]) -> None:
        for message in messages:
            self._on_message(*message)

    # -- publishing -------------------------------------------------------------

    async def publish(self, group: str, payload: bytes) -> None:
        """PUBLISH once; only if that fails, retry until `publish_timeout` has passed.

        One deadline, `publish_timeout`, bounds everything: the wait for a
        connection, the round trips and the retries. A retry sends the same
        envelope, so receivers drop it if Redis had run the first. With
        history on, each try runs the history script instead of PUBLISH
        (one round trip too); a retry logs nothing the first try logged.
        """
        client = self._connected_client()
        self._check_payload(payload)
        if self._log is not None:
            await self._publish_logged([(group, payload)])
            return
        channel = self._wire.channel(group)
        sequence, message = self._outbox.seal(payload)
        publishing = self._publish_connections
        if publishing is None:  # cluster mode: redis-py's client finds the node

            async def send(retry: bool, deadline: float) -> None:
                await client.execute_command(self._PUBLISH, channel, message)

        else:
            command = pack_publish(channel, message)

            async def send(retry: bool, deadline: float) -> None:
                await self._call(publishing, command, 1, deadline)

        await self._send_with_retry(send, [sequence], f"publish to {group[:80]!r} on {self.url}")

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """PUBLISH every item in one write and one round trip, retried as one like `publish`.

        Every payload is checked before anything is sent. A retry sends the
        same envelopes, so receivers drop the messages Redis had already run.
        With history on, the whole batch is one run of the history script.
        """
        self._connected_client()
        publishing = self._publish_connections
        assert publishing is not None  # set with the client (the cluster layer has its own)
        limit = self.max_payload_bytes
        for _, payload in items:
            if len(payload) > limit:
                self._check_payload(payload)  # raises
        if self._log is not None:
            await self._publish_logged(items)
            return
        sequences = []
        frames = []
        seal, channel = self._outbox.seal, self._wire.channel
        for group, payload in items:
            sequence, message = seal(payload)
            sequences.append(sequence)
            frames.append(pack_publish(channel(group), message))
        commands = b"".join(frames)
        count = len(frames)

        async def send(retry: bool, deadline: float) -> None:
            await self._call(publishing, commands, count, deadline)

        await self._send_with_retry(send, sequences, f"publish {count} message(s) on {self.url}")

    async def _publish_logged(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Log and publish `items` in one run of the history script (history on)."""
        log, client, publishing = self._log, self._connected_client(), self._publish_connections
        assert log is not None
        sequences = []
        messages = []
        for group, payload in items:
            sequence, header = self._outbox.seal_logged()
            sequences.append(sequence)
            messages.append((group, header, payload))
        batch = log.batch(messages)

        async def send(retry: bool, deadline: float) -> None:
            if publishing is None:  # cluster mode: redis-py's client finds the node
                await log.append(client.execute_command, batch, retry=retry)
            else:
                await log.append(partial(self._execute, publishing, deadline), batch, retry=retry)

        what = f"publish {len(items)} message(s) on {self.url}"
        if len(items) == 1:
            what = f"publish to {items[0][0][:80]!r} on {self.url}"
        await self._send_with_retry(send, sequences, what)

    async def _call(
        self, publishing: PublishingConnections, commands: bytes, count: int, deadline: float
    ) -> list[Any]:
        """`publishing.call`, run on the pub/sub connection instead while that one is idle.

        History publishes share it too: the script runs atomically whichever
        connection sends it (Redis has no locks to hold across round trips),
        and its reply is matched in order like a PUBLISH's.
        """
        pubsub = self._pubsub
        if pubsub is not None:
            shared = pubsub.share(commands, count, deadline)
            if shared is not None:
                return await shared
        return await publishing.call(commands, count, deadline)

    async def _execute(
        self, publishing: PublishingConnections, deadline: float, *args: bytes | str | int
    ) -> Any:
        """One command through `_call` (as `PublishingConnections.execute`); its reply."""
        return (await self._call(publishing, pack_command(*args), 1, deadline))[0]

    async def _send_with_retry(
        self,
        send: Callable[[bool, float], Awaitable[None]],
        sequences: list[int],
        what: str,
        *,
        self_bounded: bool | None = None,
    ) -> None:
        """Run `send` once; only if that fails, retry until `publish_timeout` has passed.

        `send` gets whether this is a retry (the history script then checks
        what the first try logged) and the deadline (event loop time): on
        the layer's own connections the first try bounds itself by it, with
        no cancel scope (`self_bounded`; by default whenever the layer has
        its own publishing connections). The `sequences` sealed for it are settled whatever
        the outcome, and counted as published on success.
        """
        if self_bounded is None:
            self_bounded = self._publish_connections is not None
        timeout = self.options.publish_timeout
        deadline = anyio.current_time() + timeout
        tries = 0
        first_attempt: Callable[[], Awaitable[None]] | None = None
        try:
            if self_bounded:
                # The first try right here, as `call_with_deadline` would make
                # it: a publish that succeeds at once (nearly all) skips its
                # frames; a failed one goes on there, within the same deadline.
                tries = 1
                try:
                    await send(False, deadline)
                except Exception as exc:
                    error = exc

                    async def failed() -> None:
                        with self._translated(what):
                            raise error

                    first_attempt = failed
                else:
                    self._published += len(sequences)
                    return

            async def attempt() -> None:
                nonlocal tries
                tries += 1
                # Translated on each try: a refusal (AuthenticationError is a kind of
                # ConnectionError to redis-py) ends the publish at once, unretried.
                # (A try that succeeds builds no context manager for it.)
                try:
                    await send(tries > 1, deadline)
                except Exception as exc:
                    with self._translated(what):
                        raise exc

            await call_with_deadline(
                attempt,
                timeout=timeout,
                retry_on=(BrokerUnavailableError,),
                what=f"publish to {self.url}",
                backoff=self.options.reconnect_backoff,
                first_attempt=first_attempt,
                deadline=deadline,
            )
        finally:
            for sequence in sequences:
                self._outbox.settle(sequence)
        self._published += len(sequences)

    def _connected_client(self) -> Redis | RedisCluster:
        client = self._client
        if client is None:
            raise ChannelClosedError("the Redis layer is not connected")
        return client

    def _check_payload(self, payload: bytes) -> None:
        """`PayloadTooLargeError` if `payload` exceeds what the server's pub/sub buffers carry."""
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"the encoded message is {len(payload):,} bytes; {type(self).__name__} on "
                f"{self.url} carries at most {self.max_payload_bytes:,} (derived from the "
                "server's client-output-buffer-limit pubsub). Nothing was sent"
            )

    # -- history ----------------------------------------------------------------

    @property
    def keeps_history(self) -> bool:
        """True with `history_size` > 0: every publish is logged in the group's stream."""
        return self._log is not None

    async def read_history(self, group: str, after: str | None, limit: int | None) -> HistoryRead:
        """Read `group`'s stream (one script), retried like a publish within `publish_timeout`."""
        log, client = self._log, self._client
        if log is None:
            raise NotSupportedError(
                f"history is off on {type(self).__name__}: set history_size "
                "(e.g. ?history_size=100 in the URL)"
            )
        if client is None:
            raise ChannelClosedError("the Redis layer is not connected")

        async def attempt() -> HistoryRead:
            with self._translated(f"read the history of {group[:80]!r} on {self.url}"):
                return await log.read(client.execute_command, group, after, limit)

        return await call_with_deadline(
            attempt,
            timeout=self.options.publish_timeout,
            retry_on=(BrokerUnavailableError,),
            what=f"read the history on {self.url}",
            backoff=self.options.reconnect_backoff,
        )

    # -- subscribing ------------------------------------------------------------

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        """SUBSCRIBE to all `groups` in one command; return once Redis confirmed them."""
        self._groups.update(groups)
        await self._confirmed("SUBSCRIBE", [self._wire.channel(group) for group in groups])

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        self._groups.difference_update(groups)
        if self._log is not None:
            self._log.unlogged.difference_update(groups)
        await self._forget("UNSUBSCRIBE", [self._wire.channel(group) for group in groups])

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        """PSUBSCRIBE to all `patterns` in one command; return once Redis confirmed them."""
        wire = {self._wire.pattern(pattern): pattern for pattern in patterns}
        self._patterns.update(wire)
        await self._confirmed("PSUBSCRIBE", list(wire))

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        wire = [self._wire.pattern(pattern) for pattern in patterns]
        for name in wire:
            self._patterns.pop(name, None)
            self._filter.forget(name)
        await self._forget("PUNSUBSCRIBE", wire)

    async def _confirmed(self, command: str, names: list[bytes]) -> None:
        """Run `command` until the server confirms it, across reconnects, within the bound.

        The names are already in the desired state, so a reconnect meanwhile
        subscribes them too; sending again on the new connection is harmless.
        """
        timeout = self.options.subscribe_timeout
        with anyio.move_on_after(timeout), self._translated(f"{command} on {self.url}"):
            while True:
                pubsub, reconnected = self._pubsub, self._reconnected
                if pubsub is None:
                    if reconnected is None:
                        raise ChannelClosedError("the Redis layer is not connected")
                    await reconnected.wait()
                    continue
                try:
                    await pubsub.call(command, names)
                    return
                except ConnectionLost:
                    await anyio.sleep(0.01)  # for the reader task to notice and reconnect
        raise BrokerUnavailableError(
            f"could not {command} {len(names)} name(s) on {self.url} within {timeout:g} s: "
            "the server is not answering. The layer keeps reconnecting in the background; "
            "try again later"
        )

    async def _forget(self, command: str, names: list[bytes]) -> None:
        """Send `command` and return without waiting for the server.

        The names have already left the wanted state: the channel discards
        what still arrives for them, a lost connection drops them, and a
        reconnect under way removes them once it is through (`_reconcile`).
        """
        pubsub = self._pubsub
        if pubsub is None:
            return
        with suppress(ConnectionLost):
            await pubsub.send((command, names))
