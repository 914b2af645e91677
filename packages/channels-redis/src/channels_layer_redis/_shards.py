"""Sharded pub/sub over a Redis Cluster: SSUBSCRIBE on the master owning each channel's slot.

`ShardedSubscriptions` keeps one pub/sub connection (a `PubSubConnection`,
the same one the one-server layer uses) per master that owns a subscribed
channel's slot: not one per group or subscriber. A subscribe sends one
SSUBSCRIBE per slot (Redis refuses one command across slots), all of a
node's in one write, and returns once the node confirmed them.

Why not redis-py's pub/sub: its asyncio cluster client has none before
redis-py 8, and the one it has since polls each node's connection in
turn (`get_sharded_message`) and reconnects silently, so a subscriber
could not be told that messages may have been missed. What is needed on
top of `PubSubConnection` is small: which node owns a slot (redis-py's
`RedisCluster` slot map, the one publishing uses), and putting each
channel back where it belongs after a change.

A change is any of: a node's connection lost (its master died), the
server ending a subscription itself (``sunsubscribe``: the slot moved
away, by migration or failover), or a ``MOVED`` answer to SSUBSCRIBE (the
slot map was stale). The channels concerned become *lost*; a mender task
refreshes the slot map and subscribes them on their owner, with backoff,
until all are back on a master (a replica accepts SSUBSCRIBE for its
master's slots too: `_serves_as_master`); then the layer reports the gap
(`on_gap`, once for all of them, naming them) and only then hands over
what arrived for those channels meanwhile (held back, so that a subscriber
sees the gap before them). Channels on the other shards are never
interrupted, and their subscribers are not told of a gap that was not theirs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from channels_core import Backoff, BrokerUnavailableError, reconnect_forever, retry_until

from ._pubsub import ConnectionLost, Message, MessageHandler, PubSubConnection

__all__ = ["MAX_HELD", "ShardedSubscriptions"]

logger = logging.getLogger("channels_layer_redis")

#: Messages of lost channels held back until their gap is reported; beyond
#: it the oldest are dropped (they are inside the gap the subscriber is told of).
MAX_HELD = 10_000

#: Error replies that mean "ask again elsewhere or later", not a refusal.
_REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)

Address = tuple[str, int]


@dataclass(eq=False)
class _Link:
    """The pub/sub connection to one node, and whether the layer itself is closing it."""

    address: Address
    pubsub: PubSubConnection
    closing: bool = False
    #: Subscribes under way on this connection (it is not idle while any is).
    busy: int = 0
    #: Its node answered ROLE "master" since the last SSUBSCRIBE on it: until
    #: then (a ROLE that failed or was cut short included), every try asks again.
    master_known: bool = False


class ShardedSubscriptions:
    """The layer's sharded subscriptions; `start` it in the layer's task group."""

    def __init__(
        self,
        cluster: RedisCluster,
        connect: Callable[[str, int], AbstractConnection],
        handler: MessageHandler,
        on_gap: Callable[[set[bytes]], None],
        *,
        translated: Callable[[str], AbstractContextManager[None]],
        display_url: str,
        connect_timeout: float,
        health_check_interval: float,
        backoff: Backoff,
        recovers: bool = False,
    ) -> None:
        self._cluster = cluster
        self._recovers = recovers  # history on: what was missed is read back
        self._connect = connect
        self._handler = handler
        self._on_gap = on_gap
        self._translated = translated
        self._url = display_url
        self._connect_timeout = connect_timeout
        self._health_check_interval = health_check_interval
        self._backoff = backoff
        self._links: dict[Address, _Link] = {}
        self._opening: dict[Address, anyio.Lock] = defaultdict(anyio.Lock)
        self._tasks: TaskGroup | None = None
        #: Channels the layer wants, subscribed or (while lost) soon again.
        self.wanted: set[bytes] = set()
        #: Wanted channels whose subscription ended without the layer asking.
        self.lost: set[bytes] = set()
        self._held: list[Message] = []
        self._gap: set[bytes] = set()  # every channel lost since the last reported gap
        self._stale_map = False
        self._changed = anyio.Event()
        self._why: str | None = None
        #: Counters for the layer's stats.
        self.connection_losses = 0
        self.moves = 0
        self.mends = 0
        self.attempts = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self, tasks: TaskGroup) -> None:
        """Run the mender, and later each connection's reader, in `tasks`."""
        self._tasks = tasks
        tasks.start_soon(self._mend_forever)

    async def aclose(self) -> None:
        """Close every connection (the readers end with them)."""
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.closing = True
            await link.pubsub.aclose()
        self._tasks = None

    @property
    def connections(self) -> list[PubSubConnection]:
        """The open pub/sub connections, one per node with subscribed channels."""
        return [link.pubsub for link in self._links.values()]

    # -- subscribing ----------------------------------------------------------

    async def subscribe(self, channels: Iterable[bytes], timeout: float) -> None:
        """SSUBSCRIBE `channels` on their owners; return once all are confirmed.

        Raises `BrokerUnavailableError` after `timeout` s (the mender keeps
        trying in the background: they stay wanted), and `BrokerRefusedError`
        at once if a node refuses them (ACL).
        """
        names = set(channels)
        self.wanted |= names
        await retry_until(
            lambda: self._place(names),
            timeout=timeout,
            retry_on=(BrokerUnavailableError,),
            what=f"SSUBSCRIBE {len(names)} channel(s) on {self._url}",
            backoff=self._backoff,
        )

    async def unsubscribe(self, channels: Iterable[bytes]) -> None:
        """SUNSUBSCRIBE `channels` without waiting; close connections left with nothing wanted."""
        names = set(channels)
        self.wanted -= names
        self.lost -= names
        for link in list(self._links.values()):
            mine = link.pubsub.channels & names
            if not mine:
                continue
            if not link.pubsub.channels & self.wanted and not link.busy:
                await self._close(link)  # idle: closing unsubscribes everything
                continue
            with suppress(ConnectionLost):
                await link.pubsub.send(*_per_slot("SUNSUBSCRIBE", mine))

    async def check(self, timeout: float) -> None:
        """PING every node connection; `BrokerUnavailableError` while a channel is lost."""
        if self.lost:
            raise BrokerUnavailableError(
                f"{len(self.lost)} sharded subscription(s) on {self._url} are being renewed "
                f"({self._why or 'a change in the cluster'})"
            )
        with self._translated(f"check the pub/sub connections to {self._url}"):
            with anyio.fail_after(timeout):
                for link in list(self._links.values()):
                    await link.pubsub.call("PING", [])

    async def _place(self, channels: set[bytes]) -> None:
        """One try at having every still-wanted channel of `channels` confirmed on its owner.

        Raises `BrokerUnavailableError` if some are not (yet): a node is
        unreachable, or answered ``MOVED`` (the slot map is then refreshed
        before the next try).
        """
        if self._stale_map:
            with self._translated(f"refresh the slot map of {self._url}"):
                await self._cluster.nodes_manager.initialize()
            self._stale_map = False
        owners: dict[Address, set[bytes]] = defaultdict(set)
        nodes: dict[Address, ClusterNode] = {}
        with self._translated(f"find the shards of {self._url}"):
            for channel in channels & self.wanted:
                node = self._cluster.nodes_manager.get_node_from_slot(key_slot(channel))
                address = node.host, int(node.port)
                owners[address].add(channel)
                nodes[address] = node
        for address, names in owners.items():
            try:
                link = await self._link(address)
            except BrokerUnavailableError:
                # The owner died: only a fresh slot map names its replacement
                # (a layer that only subscribes has no publish to refresh it).
                self._stale_map = True
                raise
            where = f"{address[0]}:{address[1]}"
            link.busy += 1  # not idle: nobody closes it under this subscribe
            try:
                for other in list(self._links.values()):
                    moved = other.pubsub.channels & names
                    if other is not link and moved:  # subscribed where its slot was before
                        with suppress(ConnectionLost):
                            await other.pubsub.send(*_per_slot("SUNSUBSCRIBE", moved))
                todo = names - link.pubsub.channels
                errors: Sequence[Exception] = ()
                if todo:
                    link.master_known = False
                    with self._translated(f"SSUBSCRIBE on {where}"):
                        errors = await link.pubsub.call_all(*_per_slot("SSUBSCRIBE", todo))
                elif link.master_known:
                    continue
            finally:
                link.busy -= 1
            refusals = [error for error in errors if not isinstance(error, _REDIRECTS)]
            if refusals:
                with self._translated(f"SSUBSCRIBE on {where}"):
                    raise refusals[0]
            if errors:
                self._stale_map = True
            elif not link.master_known:
                if await self._serves_as_master(nodes[address], where):
                    link.master_known = True
                else:
                    await self._leave_replica(link, names)
        missing = [c for c in channels & self.wanted if not self._subscribed(c)]
        if missing:
            raise BrokerUnavailableError(
                f"{len(missing)} channel(s) not subscribed on {self._url} yet: "
                "their slots moved; the slot map is refreshed"
            )

    async def _serves_as_master(self, node: ClusterNode, where: str) -> bool:
        """Whether `node` is a master, asked after it confirmed an SSUBSCRIBE.

        A replica accepts SSUBSCRIBE for its master's slots (no ``MOVED``), so
        a stale slot map naming a demoted master (right after a failover) puts
        subscriptions there. A new master forwards its messages only to the
        replicas it knows, which it learns from the cluster bus a while
        later: messages published meanwhile never reach them, silently.
        Asked once the SSUBSCRIBE is done (a master that did not own the slot
        would have answered ``MOVED``), a master owned it then, and ends the
        subscription itself (``sunsubscribe``) if it loses it later.
        """
        with self._translated(f"ask cluster node {where} for its role"):
            role = await self._cluster.execute_command("ROLE", target_nodes=node)
        return bool(role) and role[0] in (b"master", "master")

    async def _leave_replica(self, link: _Link, placing: set[bytes]) -> None:
        """`link`'s node is a replica: close it; its other channels are lost, the map stale."""
        self._stale_map = True
        others = link.pubsub.channels & self.wanted - placing
        await self._close(link)
        self._lose(others, f"cluster node {link.address[0]}:{link.address[1]} is a replica")

    def _subscribed(self, channel: bytes) -> bool:
        return any(channel in link.pubsub.channels for link in self._links.values())

    async def _link(self, address: Address) -> _Link:
        """The connection to the node at `address`, opened (and its reader started) if need be."""
        async with self._opening[address]:
            link = self._links.get(address)
            if link is not None:
                return link
            if self._tasks is None:
                raise BrokerUnavailableError(f"the layer on {self._url} is closing")
            where = f"{address[0]}:{address[1]}"
            with self._translated(f"open a pub/sub connection to cluster node {where}"):
                pubsub, _ = await PubSubConnection.open(
                    self._connect(*address), self._receive, [], [], self._connect_timeout
                )
            link = self._links[address] = _Link(address, pubsub)
            pubsub.on_unsubscribed = lambda channel: self._unsubscribed(link, channel)
            self._tasks.start_soon(self._read, link)
            return link

    async def _close(self, link: _Link) -> None:
        link.closing = True
        if self._links.get(link.address) is link:
            del self._links[link.address]
        await link.pubsub.aclose()

    # -- losing and mending -----------------------------------------------------

    async def _read(self, link: _Link) -> None:
        """Read one node's connection until it ends; if the layer did not end it, a loss."""
        cause: BaseException | None = None
        try:
            await link.pubsub.run(self._health_check_interval)
        except ConnectionLost as exc:
            cause = exc
        finally:
            if self._links.get(link.address) is link:
                del self._links[link.address]
            with anyio.CancelScope(shield=True):
                await link.pubsub.aclose()
        if not link.closing:
            self.connection_losses += 1
            where = f"{link.address[0]}:{link.address[1]}"
            self._lose(link.pubsub.channels & self.wanted, f"lost cluster node {where}: {cause}")

    def _unsubscribed(self, link: _Link, channel: bytes) -> None:
        """A channel left `link`: still wanted and subscribed nowhere else? The server moved it."""
        if link.closing or channel not in self.wanted or self._subscribed(channel):
            return
        self.moves += 1
        where = f"{link.address[0]}:{link.address[1]}"
        self._lose({channel}, f"cluster node {where} ended a subscription: its slot moved")

    def _lose(self, channels: set[bytes], why: str) -> None:
        if not channels:
            return
        self.lost |= channels
        self._gap |= channels
        self._stale_map = True
        self._why = why
        self._changed.set()

    def _receive(self, channel: bytes, data: bytes, pattern: bytes | None) -> None:
        """From the readers: hold a lost channel's messages until its gap is reported."""
        if channel not in self.lost:
            self._handler(channel, data, pattern)
            return
        if len(self._held) >= MAX_HELD:
            del self._held[0]
        self._held.append((channel, data, pattern))

    async def _mend_forever(self) -> None:
        """Put lost channels back on their owners; report the gap once all of them are back."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            self.lost &= self.wanted
            if not self.lost:
                continue

            def attempt() -> None:
                self.attempts += 1

            async def renew() -> None:
                # Bounded: a node that accepts but never answers is tried again.
                with anyio.fail_after(self._connect_timeout):
                    await self._place(set(self.lost))

            await reconnect_forever(
                renew,
                what=f"{len(self.lost)} sharded subscription(s) on {self._url}",
                logger=logger,
                backoff=self._backoff,
                cause=self._why,
                on_attempt=attempt,
                recovers=self._recovers,
            )
            # No await from the check to the hand-over: nothing arrives in between.
            self.lost = {c for c in self.lost if c in self.wanted and not self._subscribed(c)}
            if self.lost:
                self._changed.set()  # lost again meanwhile: another round
                continue
            self.mends += 1
            gap, self._gap = self._gap, set()
            self._on_gap(gap)
            held, self._held = self._held, []
            for message in held:
                self._handler(*message)
            for link in list(self._links.values()):
                if not link.pubsub.channels and not link.busy:  # its slots all moved away
                    await self._close(link)


def _per_slot(command: str, channels: Iterable[bytes]) -> list[tuple[str, list[bytes]]]:
    """One `command` per hash slot: Redis Cluster refuses one naming channels of several slots."""
    slots: dict[int, list[bytes]] = defaultdict(list)
    for channel in sorted(channels):
        slots[key_slot(channel)].append(channel)
    return [(command, names) for names in slots.values()]
