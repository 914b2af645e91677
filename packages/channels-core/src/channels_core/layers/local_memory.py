"""The in-memory layer: one process, fire-and-forget, no broker.

Layers that share a `MemoryHub` hear each other, like clients of one
broker. ``memory://`` gives a channel a private hub; ``memory://NAME`` joins
the process-wide hub called NAME, so that several channels in one process
can talk, also from different threads and event loops (asyncio or trio).
Multi-group, pattern subscriptions and history are declared with the class
attributes any layer uses (`supports_multi_group`, `supports_patterns`,
`supports_history`).

History (``history_size``, ``history_ttl``) is a ring buffer per group in
the hub, shared by every layer on it; positions are ``"<epoch>-<n>"``, an
epoch per hub and a counter per group.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import anyio.lowlevel

from ..background import background_tasks
from ..discovery import registered_as
from ..exceptions import ChannelClosedError, NotSupportedError
from ..history import HistoryOptions, HistoryRead, format_position, parse_position
from ..layer import ChannelLayer, Inbox
from ..patterns import compile_pattern
from ..stats import LayerStats
from ..urls import redact_url
from ._loop_call import loop_caller

__all__ = ["InMemoryChannelLayer", "MemoryHub"]

#: Publishes after which the memory layer yields even if no buffer is filling.
#: Each yield wakes every subscriber that got something meanwhile, and a
#: wake-up costs more than a delivery: with messages spread over many
#: groups, yielding every few dozen publishes meant a wake-up per message
#: (issue #15). `YIELD_AFTER` bounds the time between yields instead.
YIELD_EVERY = 1024

#: CPU seconds a publishing loop runs at most without yielding, checked
#: every `YIELD_CHECK` publishes: a costly publish (to thousands of local
#: subscribers, or of a large message) cannot hold the event loop for
#: `YIELD_EVERY` of them. The thread's CPU time, not the clock's: on a
#: loaded machine, time spent descheduled is nobody's turn.
YIELD_AFTER = 0.005
YIELD_CHECK = 32

#: Deliveries from other threads a port holds for an event loop that does not
#: run (blocked, or far slower than its publishers). Beyond it they are
#: discarded and the channel is told (`Inbox.messages_lost`), as a broker
#: drops a client that does not read (Redis' client-output-buffer-limit).
CROSS_THREAD_BACKLOG = 100_000

_Delivery = tuple[str, bytes, str | None, str | None]  # group, payload, pattern, position


class _Port:
    """One connected layer's door into its hub, owned by the layer's event loop.

    A publish from the same thread (hence the same event loop) delivers
    straight into the inbox. One from another thread queues the delivery
    here and wakes the owner loop through its thread-safe call mechanism;
    the port's drain task, in the owner loop, hands the queue over in
    order, yielding as a local publisher would when buffers fill up. The
    queue is bounded by `CROSS_THREAD_BACKLOG`.
    """

    __slots__ = (
        "_call_soon",
        "_inbox",
        "_lock",
        "_overrun",
        "_pending",
        "_ready",
        "_signalled",
        "deliver",
        "received",
        "thread",
    )

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox  # only ever called in the owner loop's thread
        self.deliver = inbox.deliver
        #: Deliveries handed to the inbox (counted by the hub and `drain`: no
        #: wrapper around `deliver`, whose call is on every message's path).
        self.received = 0
        self.thread = threading.get_ident()
        self._call_soon = loop_caller()
        self._lock = threading.Lock()
        self._pending: deque[_Delivery] = deque()
        self._overrun = False  # deliveries were discarded since the last drain
        self._signalled = False
        self._ready = anyio.Event()

    def post(self, delivery: _Delivery) -> None:
        """Queue a delivery from another thread; wake the owner loop if it is not yet due."""
        with self._lock:
            if len(self._pending) >= CROSS_THREAD_BACKLOG:
                self._pending.clear()
                self._overrun = True
            self._pending.append(delivery)
            if self._signalled:
                return
            self._signalled = True
        with contextlib.suppress(RuntimeError):  # the owner loop has finished: disconnecting
            self._call_soon(self._wake)

    def _wake(self) -> None:
        self._ready.set()

    async def drain(self) -> None:
        """Forever: wait for posted deliveries and hand them to the inbox, in order."""
        deliver = self.deliver
        while True:
            await self._ready.wait()
            self._ready = anyio.Event()
            with self._lock:
                batch, self._pending = self._pending, deque()
                overrun, self._overrun = self._overrun, False
                self._signalled = False
            if overrun:
                # Before the deliveries that came after the gap; the cap is the
                # hub's own bound, so the gap is an overflow, not a broker loss.
                self._inbox.messages_lost("overflow")
            pacer = _Pacer()
            for group, payload, pattern, position in batch:
                self.received += 1
                pacer.count += 1
                if deliver(group, payload, pattern, position) or (
                    not pacer.count % YIELD_CHECK and pacer.due()
                ):
                    pacer.yielded()
                    await anyio.lowlevel.checkpoint()


class _Pacer:
    """When a loop that hands out messages without waiting yields (`YIELD_EVERY`).

    The loop counts in `count` and, every `YIELD_CHECK` messages, asks `due`;
    it calls `yielded` when it yields (for whatever reason).
    """

    __slots__ = ("count", "since")

    def __init__(self) -> None:
        self.count = 0
        self.since = time.thread_time()

    def due(self) -> bool:
        return self.count >= YIELD_EVERY or time.thread_time() - self.since >= YIELD_AFTER

    def yielded(self) -> None:
        self.count = 0
        self.since = time.thread_time()


class _GroupLog:
    """One group's retained events: ``(n, logged at, payload)``, n counting from 1."""

    __slots__ = ("entries", "last", "trimmed")

    def __init__(self) -> None:
        self.entries: deque[tuple[int, float, bytes]] = deque()
        self.last = 0  # n of the newest event ever logged
        self.trimmed = 0  # n of the newest event trimmed away (0: none)

    def trim(self, size: int, ttl: float | None, now: float) -> None:
        entries = self.entries
        while len(entries) > size:
            self.trimmed = entries.popleft()[0]
        if ttl is not None:
            while entries and now - entries[0][1] > ttl:
                self.trimmed = entries.popleft()[0]


class MemoryHub:
    """The in-process 'broker' connecting the memory layers that share it.

    Safe to share between threads: routing tables are replaced, never
    changed in place (under a lock), so a publish reads them without one.
    With history on (`keep_history`), a publish appends to its group's log
    and fans out under one lock, so every port sees a group's events in log
    order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, tuple[_Port, ...]] = {}
        self._patterns: dict[str, tuple[Callable[[str], object], tuple[_Port, ...]]] = {}
        #: ``(history_size, history_ttl)`` once history is on, else None.
        self.history: tuple[int, float | None] | None = None
        self.epoch = secrets.token_hex(6)  # a new hub is a new log: older positions expire
        self._logs: dict[str, _GroupLog] = {}
        self._log_lock = threading.Lock()

    def keep_history(self, size: int, ttl: float | None) -> None:
        """Turn history on (idempotent); `ValueError` if the hub already keeps other settings."""
        with self._log_lock:
            if self.history is not None and self.history != (size, ttl):
                raise ValueError(
                    f"this memory hub already keeps history with history_size="
                    f"{self.history[0]}, history_ttl={self.history[1]}; every layer on one "
                    f"hub shares its history: give the same settings (or none)"
                )
            self.history = (size, ttl)

    def publish(
        self, group: str, payload: bytes, origin: int | None = None, position: str | None = None
    ) -> bool:
        """Deliver to every subscribed port; True if a local one asked the sender to yield.

        `origin` is the publishing thread's `threading.get_ident`, when the
        caller knows it already. With history on, the message is logged
        first and delivered with its `position` (leave it None: the log
        assigns it); with history off this costs one comparison.
        """
        here = threading.get_ident() if origin is None else origin
        if position is None and self.history is not None:
            with self._log_lock:
                return self.publish(group, payload, here, self._append(group, payload))
        filling = False
        for port in self._groups.get(group, ()):
            if port.thread != here:
                port.post((group, payload, None, position))
            else:
                port.received += 1
                if port.deliver(group, payload, None, position):
                    filling = True
        patterns = self._patterns
        for pattern, (matches, ports) in patterns.items() if patterns else ():
            if matches(group):
                for port in ports:
                    if port.thread != here:
                        port.post((group, payload, pattern, position))
                    else:
                        port.received += 1
                        if port.deliver(group, payload, pattern, position):
                            filling = True
        return filling

    def _append(self, group: str, payload: bytes) -> str:
        """Log `payload` (under the log lock); its position."""
        assert self.history is not None
        size, ttl = self.history
        log = self._logs.get(group)
        if log is None:
            log = self._logs[group] = _GroupLog()
        log.last += 1
        now = time.monotonic()
        log.entries.append((log.last, now, payload))
        log.trim(size, ttl, now)
        return f"{self.epoch}-{log.last}"

    def read(self, group: str, after: str | None, limit: int | None) -> HistoryRead:
        """`group`'s retained events (see `ChannelLayer.read_history`)."""
        if self.history is None:
            raise NotSupportedError("this memory hub keeps no history: set history_size")
        size, ttl = self.history
        with self._log_lock:
            log = self._logs.get(group) or _GroupLog()
            log.trim(size, ttl, time.monotonic())
            entries = [(n, payload) for n, _, payload in log.entries]
            head = format_position(self.epoch, log.last)
            trimmed = log.trimmed
        if after is None:
            chosen = entries if limit is None else entries[len(entries) - limit :] if limit else []
            complete = True
        else:
            since = parse_position(after, "after")
            mine = since.epoch == self.epoch and len(since.offset) == 1
            complete = mine and since.offset[0] >= trimmed
            start = since.offset[0] if complete else 0
            chosen = [(n, payload) for n, payload in entries if n > start][:limit]
        events = [(f"{self.epoch}-{n}", payload) for n, payload in chosen]
        return HistoryRead(events, complete, head)

    def subscribe(self, port: _Port, groups: Sequence[str]) -> None:
        with self._lock:
            table = self._groups
            for group in groups:
                ports = table.get(group, ())
                if port not in ports:
                    table[group] = (*ports, port)

    def unsubscribe(self, port: _Port, groups: Sequence[str]) -> None:
        with self._lock:
            table = self._groups
            for group in groups:
                ports = tuple(other for other in table.get(group, ()) if other is not port)
                if ports:
                    table[group] = ports
                else:
                    table.pop(group, None)

    def psubscribe(self, port: _Port, patterns: Sequence[str]) -> None:
        with self._lock:
            table = dict(self._patterns)
            for pattern in patterns:
                matches, ports = table.get(pattern) or (compile_pattern(pattern), ())
                if port not in ports:
                    table[pattern] = (matches, (*ports, port))
            self._patterns = table

    def punsubscribe(self, port: _Port, patterns: Sequence[str]) -> None:
        with self._lock:
            table = dict(self._patterns)
            for pattern in patterns:
                entry = table.get(pattern)
                if entry is None:
                    continue
                ports = tuple(other for other in entry[1] if other is not port)
                if ports:
                    table[pattern] = (entry[0], ports)
                else:
                    del table[pattern]
            self._patterns = table


_named_hubs: weakref.WeakValueDictionary[str, MemoryHub] = weakref.WeakValueDictionary()
_named_hubs_lock = threading.Lock()


def named_hub(name: str) -> MemoryHub:
    """The process-wide hub called `name` (alive while some layer uses it)."""
    with _named_hubs_lock:
        hub = _named_hubs.get(name)
        if hub is None:
            hub = _named_hubs[name] = MemoryHub()
        return hub


class InMemoryChannelLayer(ChannelLayer):
    """Delivers within one process; `hub` is private unless you share one.

    `history_size` > 0 keeps that many events per group in the hub (and
    `history_ttl` seconds at most), for ``since=``, `Channel.history` and
    `Event.position`; the history belongs to the hub, so layers sharing one
    give the same settings.
    """

    url_schemes = ("memory",)
    supports_multi_group = True
    supports_patterns = True
    supports_history = True
    supports_publish_many = True

    def __init__(
        self,
        hub: MemoryHub | None = None,
        *,
        history_size: int = 0,
        history_ttl: float | None = None,
    ) -> None:
        self.options = HistoryOptions(history_size=history_size, history_ttl=history_ttl)
        self.hub = MemoryHub() if hub is None else hub
        if history_size:
            self.hub.keep_history(history_size, self.options.history_ttl)
        self._port: _Port | None = None
        self._groups: set[str] = set()
        self._patterns: set[str] = set()
        self._name = ""
        self._pacer = _Pacer()  # publishes since this layer last yielded
        self._published = 0  # before the last yield: `_pacer.count` counts those since
        self._received = 0  # by the ports of earlier connections

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``memory://`` (a private hub) or ``memory://NAME`` (the shared hub NAME).

        The scheme may be any name this class is registered under (a
        subclass's own entry point, say). The only options, as keywords or
        URL parameters, are ``history_size`` and ``history_ttl``: a URL cannot
        change how messages are decoded.
        """
        allowed = HistoryOptions.names()
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(
                f"the memory layer takes no options other than {' and '.join(sorted(allowed))}, "
                f"got {', '.join(unknown)}"
            )
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in cls.url_schemes and not registered_as(cls, scheme):
            raise ValueError(f"{url!r} is not a memory:// URL")
        query = parse_qsl(parts.query, keep_blank_values=True)
        names = [name for name, _ in query if name not in allowed]
        if parts.fragment or names or (parts.query and not query):
            raise ValueError(
                f"the memory layer takes no URL parameters other than "
                f"{' and '.join(sorted(allowed))}, got {', '.join(names) or parts.query}"
                f"{' and a #fragment' if parts.fragment else ''}; use memory:// or memory://NAME"
            )
        settings = HistoryOptions.from_options(options, query=query)
        name = parts.netloc + parts.path.rstrip("/")
        layer = cls(
            named_hub(name) if name else None,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
        )
        layer._name = name
        return layer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(f'memory://{self._name}')}>"

    def stats(self) -> LayerStats:
        """Counters since the layer was built; an in-process hub never loses a connection."""
        return LayerStats(
            connected=self._port is not None,
            published=self._published + self._pacer.count,
            received=self._received + (self._port.received if self._port else 0),
            connection_losses=0,
            reconnects=0,
        )

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        port = self._port = _Port(inbox)
        try:
            async with background_tasks() as tasks:
                tasks.start_soon(port.drain)
                yield
        finally:
            self.hub.unsubscribe(port, list(self._groups))
            self.hub.punsubscribe(port, list(self._patterns))
            self._groups.clear()
            self._patterns.clear()
            self._received += port.received
            self._port = None

    def _connected_port(self) -> _Port:
        if self._port is None:
            raise ChannelClosedError("the memory layer is not connected")
        return self._port

    async def publish(self, group: str, payload: bytes) -> None:
        """Deliver synchronously; yield to the event loop when subscribers need to catch up.

        Yielding on every publish would wake every subscriber task once per
        message; yielding when a buffer is half full (or every
        `YIELD_EVERY` publishes or `YIELD_AFTER` seconds, so a publishing
        loop never starves the others) lets each subscriber take a batch per
        wake-up, losslessly as long as it keeps pace.
        """
        if self.publish_nowait(group, payload):
            await anyio.lowlevel.checkpoint()

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Deliver each item synchronously, yielding where `publish` would (and only there)."""
        for group, payload in items:
            if self.publish_nowait(group, payload):
                await anyio.lowlevel.checkpoint()

    def publish_nowait(self, group: str, payload: bytes) -> bool:
        """`publish` without its yield: deliver now; True when the publisher should yield.

        `Channel.publish` calls this directly (then yields if told to), sparing
        a coroutine per message, when `publish` is this class's own.
        """
        port = self._port or self._connected_port()  # (which raises)
        pacer = self._pacer
        pacer.count += 1
        # The channel only calls this from its own thread: the port's.
        if self.hub.publish(group, payload, port.thread) or (
            not pacer.count % YIELD_CHECK and pacer.due()
        ):
            self._published += pacer.count
            pacer.yielded()
            return True
        return False

    @property
    def keeps_history(self) -> bool:
        return self.hub.history is not None

    @property
    def coalesce_publishes(self) -> bool:
        """False: a publish waits for nothing, so there is no round trip to share."""
        return False

    async def read_history(self, group: str, after: str | None, limit: int | None) -> HistoryRead:
        """Read the hub's log; yields first, as a broker round trip would.

        Publishers then run between the live subscription and the read, so
        the channel's handover is exercised here as on a network layer.
        """
        self._connected_port()
        await anyio.lowlevel.checkpoint()
        return self.hub.read(group, after, limit)

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        self.hub.subscribe(self._connected_port(), groups)
        self._groups.update(groups)

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        self._groups.difference_update(groups)
        if self._port is not None:
            self.hub.unsubscribe(self._port, groups)

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        self.hub.psubscribe(self._connected_port(), patterns)
        self._patterns.update(patterns)

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        self._patterns.difference_update(patterns)
        if self._port is not None:
            self.hub.punsubscribe(self._port, patterns)
