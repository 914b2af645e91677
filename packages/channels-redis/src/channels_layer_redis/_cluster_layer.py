"""`RedisClusterChannelLayer`: the Redis layer on a Redis Cluster, with sharded pub/sub.

What ``redis+cluster://`` and ``rediss+cluster://`` build (also through
`RedisPubSubChannelLayer`). Publishing is ``SPUBLISH`` through redis-py's
`RedisCluster` (`_cluster`), to the master owning the group's slot;
subscriptions are ``SSUBSCRIBE`` on that master, one connection per master
(`_shards`). A message crosses only its own shard (master and replicas),
unlike classic PUBLISH, which a cluster copies to every node.

Patterns are refused: sharded pub/sub has no PSUBSCRIBE, and serving them
with classic PSUBSCRIBE would need every publish sent a second time as a
classic PUBLISH, which the cluster copies to every node: each message
would cross the whole cluster again, what sharding is for avoiding.
Channel names carry a hash tag derived from the group (`WireNames.hash_tag`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from channels_core import (
    BrokerUnavailableError,
    ChannelClosedError,
    ChannelLayer,
    Inbox,
    NotSupportedError,
    background_tasks,
    retry_until,
    translate_errors,
)

from ._cluster import CLUSTER_ERRORS, CLUSTER_SCHEMES, open_cluster_client
from ._layer import REDIS_ERRORS, RedisLayerStats, RedisPubSubChannelLayer
from ._shards import ShardedSubscriptions
from ._url import DEFAULT_URL

__all__ = ["RedisClusterChannelLayer", "RedisClusterLayerStats", "is_cluster_url"]

_ERRORS = {**REDIS_ERRORS, **CLUSTER_ERRORS}


def is_cluster_url(url: str) -> bool:
    """Whether `url`'s scheme is ``redis+cluster`` or ``rediss+cluster``."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisClusterLayerStats(RedisLayerStats):
    """The Redis layer's stats (`pubsub_client_id` is None: there is one connection per shard).

    `connection_losses` counts node connections lost; `reconnects` the
    times lost subscriptions were all renewed (each one gap reported).
    """

    #: Pub/sub connections open: one per master owning a subscribed group's slot.
    shard_connections: int
    #: Subscriptions a node ended because their slot moved (migration or
    #: failover), renewed on the slot's new owner.
    moved: int


class RedisClusterChannelLayer(RedisPubSubChannelLayer):
    """Cross-process, fire-and-forget delivery through a Redis Cluster's sharded pub/sub.

    ``redis+cluster://[user:password@]host:port[,host:port...][?option=value...]``;
    the options are the Redis layer's. No pattern subscriptions.
    """

    url_schemes = tuple(CLUSTER_SCHEMES)
    supports_patterns = False
    _PUBLISH = "SPUBLISH"
    _HASH_TAGS = True

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        super().__init__(url, **options)
        if self._config.cluster is None:
            raise ValueError(
                f"{self.url!r} is not a Redis Cluster URL: use "
                "redis+cluster://host:port[,host:port...] or rediss+cluster://"
            )
        self._shards: ShardedSubscriptions | None = None
        #: At most `pool_size` publishes at once (redis-py's cluster client
        #: fails, rather than waits, when a node's connections run out).
        self._publishing = anyio.Semaphore(self.options.pool_size)
        self._moved = 0

    def stats(self) -> RedisClusterLayerStats:
        shards = self._shards
        return RedisClusterLayerStats(
            connected=shards is not None and not shards.lost,
            published=self._published,
            received=self._received,
            connection_losses=self._losses + (shards.connection_losses if shards else 0),
            reconnects=self._reconnects + (shards.mends if shards else 0),
            groups=len(self._groups),
            patterns=0,
            reconnect_attempts=self._attempts + (shards.attempts if shards else 0),
            skipped=self._skipped,
            duplicates=self._filter.duplicates,
            pubsub_client_id=None,
            shard_connections=len(shards.connections) if shards else 0,
            moved=self._moved + (shards.moves if shards else 0),
        )

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """SPUBLISH the items one after the other, in order: their groups live on several shards."""
        await ChannelLayer.publish_many(self, items)

    @property
    def coalesce_publishes(self) -> bool:
        """Not in cluster mode: a batch would span shards (`publish_many` is a loop here)."""
        return False

    async def check(self, timeout: float) -> None:
        """PING every master through the publishing client, then every pub/sub connection.

        Raises:
            BrokerUnavailableError: no answer within `timeout`, or
                subscriptions are being renewed after a change in the cluster.
            BrokerRefusedError: a node refused the PING (ACL).
            ChannelClosedError: the layer is not connected.
        """
        client, shards = self._client, self._shards
        if not isinstance(client, RedisCluster) or shards is None:
            raise ChannelClosedError("the Redis layer is not connected")
        with self._translated(f"check {self.url}"), anyio.fail_after(timeout):
            await client.ping(target_nodes=RedisCluster.PRIMARIES)
        await shards.check(timeout)

    def _translated(self, what: str) -> AbstractContextManager[None]:
        return translate_errors(_ERRORS, what=what, secrets=self._config.secrets)

    # -- lifecycle --------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        target = self._config.cluster
        assert target is not None
        self._inbox = inbox
        client = open_cluster_client(
            target,
            pool_size=self.options.pool_size,
            health_check_interval=self.options.health_check_interval,
        )
        shards: ShardedSubscriptions | None = None
        try:

            async def initialize() -> None:
                with self._translated(f"connect to {self.url}"):
                    await client.initialize()

            await retry_until(
                initialize,
                timeout=self.options.connect_timeout,
                retry_on=(BrokerUnavailableError,),
                what=f"connect to {self.url}",
                backoff=self.options.reconnect_backoff,
            )
            self._client = client
            self.max_payload_bytes = await self._payload_limit(client)
            shards = ShardedSubscriptions(
                client,
                self._shard_connection,
                self._on_message,
                self._report_gap,
                translated=self._translated,
                display_url=self.url,
                connect_timeout=self.options.connect_timeout,
                health_check_interval=self.options.health_check_interval,
                backoff=self.options.reconnect_backoff,
                recovers=self.keeps_history,
            )
            async with background_tasks() as tasks:
                shards.start(tasks)
                self._shards = shards
                yield
        finally:
            with anyio.CancelScope(shield=True):
                if shards is not None:
                    await shards.aclose()
                    self._losses += shards.connection_losses
                    self._reconnects += shards.mends
                    self._attempts += shards.attempts
                    self._moved += shards.moves
                await client.aclose()
            self._inbox = self._client = self._shards = None
            self._groups.clear()
            self._filter.clear()

    def _report_gap(self, channels: set[bytes]) -> None:
        """Subscriptions of `channels` were lost and are back: tell their groups' subscribers."""
        if self._inbox is not None:
            groups = {self._wire.group(channel) for channel in channels}
            self._inbox.messages_lost(groups=[group for group in groups if group is not None])

    def _shard_connection(self, host: str, port: int) -> AbstractConnection:
        """A new pub/sub connection (RESP2) to the cluster node at `host`:`port`."""
        name = self._config.connection_kwargs.get("client_name") or "channels-pubsub"
        kwargs = self._connection_kwargs(protocol=2, client_name=name, host=host, port=port)
        connection: AbstractConnection = self._config.connection_class(**kwargs)
        return connection

    def _route(self, channel: bytes, wire_pattern: bytes | None) -> bytes | None:
        """The channel's hash slot: one publisher's messages keep their order only within a shard.

        (Messages to groups on two shards travel two connections, so a later
        one may arrive first; within a slot they come from one node, in
        order, also across a migration or failover.) At most 16,384 routes.
        """
        return b"%d" % key_slot(channel)

    # -- publishing and subscribing ---------------------------------------------

    async def publish(self, group: str, payload: bytes) -> None:
        """SPUBLISH to the master owning the group's slot (else as the one-server layer)."""
        async with self._publishing:
            await super().publish(group, payload)

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        """SSUBSCRIBE on each group's master (one write per master); return once confirmed."""
        shards = self._shards
        if shards is None:
            raise ChannelClosedError("the Redis layer is not connected")
        self._groups.update(groups)
        with self._translated(f"SSUBSCRIBE on {self.url}"):
            await shards.subscribe(
                [self._wire.channel(group) for group in groups],
                timeout=self.options.subscribe_timeout,
            )

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        self._groups.difference_update(groups)
        shards = self._shards
        if shards is not None:
            await shards.unsubscribe([self._wire.channel(group) for group in groups])

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        """Refused: sharded pub/sub has no patterns (see the module docstring for why)."""
        raise NotSupportedError(
            f"{type(self).__name__} ({self.url}) does not support pattern subscriptions: "
            "Redis Cluster's sharded pub/sub has none. Subscribe to the groups by name "
            "(several in one subscription), or use a redis:// URL of one node for classic "
            "pub/sub, which the cluster copies to every node"
        )

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        """Nothing to do: no pattern is ever subscribed in cluster mode."""
