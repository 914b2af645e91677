"""`RedisClusterChannelLayer`: the Redis layer on a Redis Cluster, with sharded pub/sub.

What ``redis+cluster://`` and ``rediss+cluster://`` build (also through
`RedisPubSubChannelLayer`). Publishing is ``SPUBLISH`` to the master
owning the group's slot, found in redis-py's `RedisCluster` slot map
(`_cluster`), through the layer's own connections to that master (a
`PublishingConnections` per master, as the one-server layer has for its
server). A ``MOVED``/``ASK`` reply, a lost connection or a timeout sends
that publish again through `RedisCluster` itself, which refreshes its slot
map, follows redirections and failovers, and retries. With history on,
publishes go through `RedisCluster` (the history script). Subscriptions
are ``SSUBSCRIBE`` on that master, one connection per master (`_shards`).
A message crosses only its own shard (master and replicas), unlike
classic PUBLISH, which a cluster copies to every node.

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
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.cluster import PRIMARY
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
from ._publishing import PublishingConnections
from ._shards import ShardedSubscriptions
from ._url import DEFAULT_URL
from ._wire import pack_publish

__all__ = ["RedisClusterChannelLayer", "RedisClusterLayerStats", "is_cluster_url"]

_ERRORS = {**REDIS_ERRORS, **CLUSTER_ERRORS}

#: What sends a publish from the layer's own connection to `RedisCluster`:
#: the slot map is stale (a migration, a failover) or the node is unreachable.
_FALL_BACK_ON = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    SlotNotCoveredError,
    RedisConnectionError,
    RedisTimeoutError,
)

#: One sealed message: its channel's slot, channel, envelope and packed SPUBLISH.
_Sealed = tuple[int, bytes, bytes, bytes]


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
        #: At most `pool_size` publishes at once through `RedisCluster` (it
        #: fails, rather than waits, when a node's connections run out).
        self._publishing = anyio.Semaphore(self.options.pool_size)
        #: The layer's own publishing connections, per master (node name).
        self._node_publishing: dict[str, PublishingConnections] = {}
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
        """SPUBLISH the items: one pipelined write per master, the masters concurrently.

        A group's items go to one master (its slot's), in order. Every
        payload is checked before anything is sent; a retry sends the same
        envelopes, so receivers drop those Redis had already run. With
        history on, one publish after the other (the history script).
        """
        if self._log is not None:
            await ChannelLayer.publish_many(self, items)
            return
        self._connected_client()
        for _, payload in items:
            self._check_payload(payload)
        sequences = []
        sealed = []
        for group, payload in items:
            sequence, message = self._outbox.seal(payload)
            sequences.append(sequence)
            sealed.append(self._packed(self._wire.channel(group), message))

        async def send(retry: bool, deadline: float) -> None:
            await self._send(sealed, retry, deadline)

        await self._send_with_retry(
            send,
            sequences,
            f"publish {len(sealed)} message(s) on {self.url}",
            self_bounded=True,
        )

    @property
    def coalesce_publishes(self) -> bool:
        """With history off: a batch is then one write per master (with history, a loop)."""
        return self._log is None

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
                for publishing in self._node_publishing.values():
                    publishing.close()
                self._node_publishing.clear()
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
        """SPUBLISH to the master owning the group's slot, on the layer's connection to it.

        With history on, through `RedisCluster` (the history script).
        """
        if self._log is not None:
            async with self._publishing:
                await super().publish(group, payload)
            return
        self._connected_client()
        self._check_payload(payload)
        sequence, message = self._outbox.seal(payload)
        sealed = [self._packed(self._wire.channel(group), message)]

        async def send(retry: bool, deadline: float) -> None:
            await self._send(sealed, retry, deadline)

        await self._send_with_retry(
            send, [sequence], f"publish to {group[:80]!r} on {self.url}", self_bounded=True
        )

    @staticmethod
    def _packed(channel: bytes, message: bytes) -> _Sealed:
        return key_slot(channel), channel, message, pack_publish(channel, message, b"SPUBLISH")

    async def _send(self, sealed: list[_Sealed], retry: bool, deadline: float) -> None:
        """One try: each master's messages in one write on its connection, masters concurrently.

        (`PublishingConnections.call_each`: every write, then every read, in
        this task: no task per master.) A retry, and a master whose try hits
        a stale slot map or a lost connection, goes through `RedisCluster`
        instead (`_send_through_client`).
        """
        if retry:
            await self._send_through_client(sealed, deadline)
            return
        by_node: dict[PublishingConnections, list[_Sealed]] = {}
        try:
            for item in sealed:
                by_node.setdefault(self._node_publisher(item[0]), []).append(item)
        except SlotNotCoveredError:
            await self._send_through_client(sealed, deadline)
            return
        if len(by_node) == 1:
            for publishing, mine in by_node.items():
                await self._send_on(publishing, mine, deadline)
            return
        batches = list(by_node.values())
        results = await PublishingConnections.call_each(
            [(publishing, _joined(items), len(items)) for publishing, items in by_node.items()],
            deadline,
        )
        refusals = []
        for items, result in zip(batches, results, strict=True):
            if isinstance(result, _FALL_BACK_ON):
                await self._send_through_client(items, deadline)
            elif isinstance(result, Exception):
                refusals.append(result)
        if refusals:
            raise refusals[0]

    async def _send_on(
        self, publishing: PublishingConnections, sealed: list[_Sealed], deadline: float
    ) -> None:
        """`sealed` on one master's connection; through `RedisCluster` if the map was stale."""
        try:
            await publishing.call(_joined(sealed), len(sealed), deadline)
        except _FALL_BACK_ON:
            await self._send_through_client(sealed, deadline)

    async def _send_through_client(self, sealed: list[_Sealed], deadline: float) -> None:
        """SPUBLISH each of `sealed` in order through `RedisCluster` (it follows the cluster)."""
        client = self._connected_client()
        async with self._publishing:
            with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                for _, channel, message, _ in sealed:
                    await client.execute_command(self._PUBLISH, channel, message)
        self._forget_departed()

    def _node_publisher(self, slot: int) -> PublishingConnections:
        """The publishing connections to the master owning `slot` (made on first use)."""
        client = self._client
        assert isinstance(client, RedisCluster)
        node = client.nodes_manager.get_node_from_slot(slot)
        publishing = self._node_publishing.get(node.name)
        if publishing is None:
            publishing = self._node_publishing[node.name] = PublishingConnections(
                partial(node.connection_class, **node.connection_kwargs),
                self.options.pool_size,
                wait_timeout=self._config.pool_timeout,
            )
        return publishing

    def _forget_departed(self) -> None:
        """Close the connections to nodes no longer masters in the slot map."""
        client = self._client
        if not isinstance(client, RedisCluster):
            return
        nodes = client.nodes_manager.nodes_cache
        for name in list(self._node_publishing):
            node = nodes.get(name)
            if node is None or node.server_type != PRIMARY:
                self._node_publishing.pop(name).close()

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


def _joined(sealed: list[_Sealed]) -> bytes:
    """The packed SPUBLISH commands of `sealed`, for one write."""
    return sealed[0][3] if len(sealed) == 1 else b"".join(item[3] for item in sealed)
