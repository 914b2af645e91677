"""`RedisPubSubChannelLayer`: the Redis pub/sub layer, and its capability hookimpls.

One pub/sub connection (see `_pubsub`) carries every subscription of the
layer; publishing goes through a separate connection pool, so it never
waits behind the reader. The layer keeps the set of groups and patterns it
should be subscribed to; after a lost connection it reconnects with
backoff, subscribes all of them again, and tells the channel that messages
may have been missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Self

import anyio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.retry import Retry

from channels_core.background import background_tasks
from channels_core.exceptions import BrokerUnavailableError, ChannelClosedError, NotSupportedError
from channels_core.layer import ChannelLayer, Inbox
from channels_core.plugins import SubscribeMethods, hookimpl
from channels_core.reconnect import retry_until

from ._pubsub import TRANSIENT_ERRORS, ConnectionLost, Message, PubSubConnection
from ._url import DEFAULT_URL, SCHEMES, RedisConfig, parse_config
from ._wire import WireNames

__all__ = ["RedisLayerStats", "RedisPubSubChannelLayer"]

logger = logging.getLogger("channels_layer_redis")

#: Redis refuses bulk strings beyond 512 MiB (proto-max-bulk-len's default).
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024

#: What a reconnection attempt may fail with (a refused password may be fixed later).
_RECONNECT_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, BrokerUnavailableError)


@dataclass(frozen=True, slots=True)
class RedisLayerStats:
    """A snapshot of a layer's connection counters (see `RedisPubSubChannelLayer.stats`).

    `connection_losses` counts pub/sub connections that failed, `reconnects`
    those restored afterwards, `reconnect_attempts` every try in between.
    `skipped` counts messages dropped because their channel name was not
    valid UTF-8. `pubsub_client_id` is the server's CLIENT ID of the
    pub/sub connection while it is up.
    """

    connected: bool
    groups: int
    patterns: int
    published: int
    connection_losses: int
    reconnects: int
    reconnect_attempts: int
    skipped: int
    pubsub_client_id: int | None


class RedisPubSubChannelLayer(ChannelLayer):
    """Cross-process, fire-and-forget delivery through Redis SUBSCRIBE/PSUBSCRIBE.

    Build it with ``RedisPubSubChannelLayer.from_url(url, **options)`` or
    ``Channel.from_url(url, **options)``; see the package README for the
    URL forms and options. Runs on asyncio only (redis-py is asyncio-based).
    """

    url_schemes = SCHEMES
    max_payload_bytes = MAX_PAYLOAD_BYTES

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._config: RedisConfig = parse_config(url, options)
        self.options = self._config.options
        self._wire = WireNames(self.options.prefix)
        self._groups: set[str] = set()
        self._patterns: dict[bytes, str] = {}  # wire pattern -> pattern as subscribed
        self._inbox: Inbox | None = None
        self._client: Redis | None = None
        self._pubsub: PubSubConnection | None = None
        self._reconnected: anyio.Event | None = None  # set on each reconnect, then replaced
        self._published = 0
        self._losses = 0
        self._reconnects = 0
        self._attempts = 0
        self._skipped = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``redis://[[user]:password@]host[:port][/db][?option=value...]`` and friends.

        Also ``rediss://`` (TLS, with redis-py's ``ssl_*`` options),
        ``unix:///path/to/socket?db=N`` and ``redis+unix://`` (the same). Options
        are the layer's (`LayerOptions`) or redis-py connection options;
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
            groups=len(self._groups),
            patterns=len(self._patterns),
            published=self._published,
            connection_losses=self._losses,
            reconnects=self._reconnects,
            reconnect_attempts=self._attempts,
            skipped=self._skipped,
            pubsub_client_id=None if pubsub is None else pubsub.client_id,
        )

    # -- lifecycle --------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        _require_asyncio()
        if self._inbox is not None:
            raise RuntimeError("this layer is already connected; a layer serves one Channel")
        self._inbox = inbox
        self._reconnected = anyio.Event()
        pool = BlockingConnectionPool(
            connection_class=self._config.connection_class,
            max_connections=self._config.max_connections,
            timeout=self._config.pool_timeout,
            **{
                "socket_timeout": self.options.publish_timeout,
                "socket_connect_timeout": self.options.publish_timeout,
                **self._connection_kwargs(health_check_interval=self.options.health_check_interval),
            },
        )
        try:
            self._pubsub, early = await retry_until(
                self._open_pubsub,
                timeout=self.options.connect_timeout,
                retry_on=TRANSIENT_ERRORS,
                what=f"connect to {self.url}",
                backoff=self.options.reconnect_backoff,
            )
            self._client = Redis(connection_pool=pool)
            self._deliver_all(early)
            async with background_tasks() as tasks:
                tasks.start_soon(self._keep_reading, inbox)
                yield
        finally:
            with anyio.CancelScope(shield=True):
                if self._pubsub is not None:
                    await self._pubsub.aclose()
                await pool.disconnect()
            self._inbox = self._client = self._pubsub = self._reconnected = None
            self._groups.clear()
            self._patterns.clear()

    async def _open_pubsub(self) -> tuple[PubSubConnection, list[Message]]:
        """A new pub/sub connection, subscribed to every group and pattern we need."""
        name = self._config.connection_kwargs.get("client_name") or "channels-pubsub"
        connection: AbstractConnection = self._config.connection_class(
            **self._connection_kwargs(protocol=2, client_name=name)
        )
        try:
            return await PubSubConnection.open(
                connection,
                self._on_message,
                [self._wire.channel(group) for group in self._groups],
                list(self._patterns),
                timeout=self.options.connect_timeout,
            )
        except AuthenticationError as exc:
            raise BrokerUnavailableError(
                f"Redis at {self.url} refused the credentials ({exc}); "
                "check the username and password"
            ) from exc

    def _connection_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for one connection; retries are the layer's job, not redis-py's."""
        return {**self._config.connection_kwargs, "retry": Retry(NoBackoff(), 0), **overrides}

    async def _keep_reading(self, inbox: Inbox) -> None:
        """The reader task: read, and on connection loss reconnect and re-subscribe."""
        while True:
            pubsub = self._pubsub
            assert pubsub is not None
            try:
                await pubsub.run(self.options.health_check_interval)
            except ConnectionLost as exc:
                logger.warning(
                    "lost the pub/sub connection to %s (%s); reconnecting", self.url, exc
                )
            self._pubsub = None
            self._losses += 1
            await pubsub.aclose()
            self._pubsub, early = await self._reconnect()
            self._reconnects += 1
            if self._reconnected is not None:
                self._reconnected.set()
            self._reconnected = anyio.Event()
            logger.warning(
                "reconnected to %s; %d group(s) and %d pattern(s) subscribed again, "
                "messages published meanwhile were missed",
                self.url,
                len(self._groups),
                len(self._patterns),
            )
            inbox.messages_lost()
            self._deliver_all(early)

    async def _reconnect(self) -> tuple[PubSubConnection, list[Message]]:
        for delay in self.options.reconnect_backoff.delays():
            await anyio.sleep(delay)
            self._attempts += 1
            try:
                return await self._open_pubsub()
            except _RECONNECT_ERRORS as exc:
                logger.info("reconnecting to %s failed: %s: %s", self.url, type(exc).__name__, exc)
        raise AssertionError("unreachable: Backoff.delays() is endless")

    # -- delivery ---------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes, wire_pattern: bytes | None) -> None:
        inbox = self._inbox
        if inbox is None:
            return
        group = self._wire.group(channel)
        if group is None:
            self._skipped += 1
            logger.warning(
                "skipped a message on channel %r: not a UTF-8 group name under prefix %r",
                channel[:200],
                self.options.prefix,
            )
            return
        if wire_pattern is None:
            inbox.deliver(group, data)
            return
        pattern = self._patterns.get(wire_pattern)
        if pattern is not None:  # else unsubscribed meanwhile
            inbox.deliver(group, data, pattern)

    def _deliver_all(self, messages: list[Message]) -> None:
        for message in messages:
            self._on_message(*message)

    # -- publishing -------------------------------------------------------------

    async def publish(self, group: str, payload: bytes) -> None:
        """PUBLISH once; only if that fails, retry until `publish_timeout` has passed.

        The first attempt is bounded by the publishing connections' socket
        timeouts (`publish_timeout` unless the URL sets them), so the common
        case costs one round trip and no timer of the layer's own.
        """
        client = self._client
        if client is None:
            raise ChannelClosedError("the Redis layer is not connected")
        channel = self._wire.channel(group)
        started = time.monotonic()
        try:
            await client.publish(channel, payload)
        except TRANSIENT_ERRORS:
            elapsed = time.monotonic() - started
            deadline = anyio.current_time() + self.options.publish_timeout - elapsed

            async def attempt() -> None:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    await client.publish(channel, payload)

            await retry_until(
                attempt,
                timeout=max(0.0, deadline - anyio.current_time()),
                retry_on=TRANSIENT_ERRORS,
                what=f"publish to {self.url}",
                backoff=self.options.reconnect_backoff,
            )
        self._published += 1

    # -- subscribing ------------------------------------------------------------

    async def subscribe(self, group: str) -> None:
        await self.subscribe_groups([group])

    async def unsubscribe(self, group: str) -> None:
        await self.unsubscribe_groups([group])

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        """SUBSCRIBE to all `groups` in one command; return once Redis confirmed them."""
        self._groups.update(groups)
        await self._confirmed("SUBSCRIBE", [self._wire.channel(group) for group in groups])

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        self._groups.difference_update(groups)
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
        await self._forget("PUNSUBSCRIBE", wire)

    async def _confirmed(self, command: str, names: list[bytes]) -> None:
        """Run `command` until the server confirms it, across reconnects, within the bound.

        The names are already in the desired state, so a reconnect meanwhile
        subscribes them too; sending again on the new connection is harmless.
        """
        timeout = self.options.subscribe_timeout
        with anyio.move_on_after(timeout):
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
        """Best effort: a lost connection already dropped them, and they are not restored."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        with suppress(ConnectionLost):
            await pubsub.call(command, names)


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise NotSupportedError(
            "RedisPubSubChannelLayer runs on asyncio only (redis-py's client is "
            "asyncio-based); run your application with anyio's asyncio backend"
        ) from None


@hookimpl
def channels_multi_group_support(layer_class: type[ChannelLayer]) -> SubscribeMethods | None:
    if issubclass(layer_class, RedisPubSubChannelLayer):
        return SubscribeMethods(
            RedisPubSubChannelLayer.subscribe_groups, RedisPubSubChannelLayer.unsubscribe_groups
        )
    return None


@hookimpl
def channels_pattern_support(layer_class: type[ChannelLayer]) -> SubscribeMethods | None:
    if issubclass(layer_class, RedisPubSubChannelLayer):
        return SubscribeMethods(
            RedisPubSubChannelLayer.subscribe_patterns,
            RedisPubSubChannelLayer.unsubscribe_patterns,
        )
    return None
