"""The in-memory layer: one process, fire-and-forget, no broker.

Layers that share a `MemoryHub` hear each other, like clients of one
broker. ``memory://`` gives a channel a private hub; ``memory://NAME`` joins
the process-wide hub called NAME, so that several channels in one process
can talk. Multi-group and pattern subscriptions are declared with the
class attributes any layer uses (`supports_multi_group`, `supports_patterns`).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit

import anyio.lowlevel

from ..exceptions import ChannelClosedError
from ..layer import ChannelLayer, Inbox
from ..patterns import compile_pattern
from ..stats import LayerStats
from ..urls import redact_url

__all__ = ["InMemoryChannelLayer", "MemoryHub"]


class MemoryHub:
    """The in-process 'broker' connecting the memory layers that share it."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[Inbox, None]] = {}
        self._patterns: dict[str, tuple[Callable[[str], object], dict[Inbox, None]]] = {}

    def publish(self, group: str, payload: bytes) -> bool:
        """Deliver to every subscribed inbox; True if one asked the sender to yield."""
        filling = False
        for inbox in self._groups.get(group, ()):
            if inbox.deliver(group, payload):
                filling = True
        for pattern, (matches, inboxes) in self._patterns.items():
            if matches(group):
                for inbox in inboxes:
                    if inbox.deliver(group, payload, pattern):
                        filling = True
        return filling

    def subscribe(self, inbox: Inbox, groups: Sequence[str]) -> None:
        for group in groups:
            self._groups.setdefault(group, {})[inbox] = None

    def unsubscribe(self, inbox: Inbox, groups: Sequence[str]) -> None:
        for group in groups:
            inboxes = self._groups.get(group)
            if inboxes is not None:
                inboxes.pop(inbox, None)
                if not inboxes:
                    del self._groups[group]

    def psubscribe(self, inbox: Inbox, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            entry = self._patterns.setdefault(pattern, (compile_pattern(pattern), {}))
            entry[1][inbox] = None

    def punsubscribe(self, inbox: Inbox, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            entry = self._patterns.get(pattern)
            if entry is not None:
                entry[1].pop(inbox, None)
                if not entry[1]:
                    del self._patterns[pattern]


#: Publishes after which the memory layer yields even if no buffer is filling.
YIELD_EVERY = 32

_named_hubs: weakref.WeakValueDictionary[str, MemoryHub] = weakref.WeakValueDictionary()


def named_hub(name: str) -> MemoryHub:
    """The process-wide hub called `name` (alive while some layer uses it)."""
    hub = _named_hubs.get(name)
    if hub is None:
        hub = _named_hubs[name] = MemoryHub()
    return hub


class _CountingInbox:
    """The channel's inbox, counting for `InMemoryChannelLayer.stats` what the layer receives."""

    __slots__ = ("_inbox", "_layer")

    def __init__(self, inbox: Inbox, layer: InMemoryChannelLayer) -> None:
        self._inbox = inbox
        self._layer = layer

    def deliver(self, group: str, payload: bytes, pattern: str | None = None) -> bool:
        self._layer._received += 1
        return self._inbox.deliver(group, payload, pattern)

    def messages_lost(self) -> None:
        self._inbox.messages_lost()


class InMemoryChannelLayer(ChannelLayer):
    """Delivers within one process; `hub` is private unless you share one."""

    url_schemes = ("memory",)
    supports_multi_group = True
    supports_patterns = True

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = MemoryHub() if hub is None else hub
        self._inbox: Inbox | None = None
        self._groups: set[str] = set()
        self._patterns: set[str] = set()
        self._name = ""
        self._unyielded = 0  # publishes since this layer last yielded
        self._published = 0
        self._received = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``memory://`` (a private hub) or ``memory://NAME`` (the shared hub NAME)."""
        if options:
            raise TypeError(f"the memory layer takes no options, got {', '.join(sorted(options))}")
        parts = urlsplit(url)
        if parts.scheme.lower() != "memory":
            raise ValueError(f"{url!r} is not a memory:// URL")
        name = parts.netloc + parts.path.rstrip("/")
        layer = cls(named_hub(name) if name else None)
        layer._name = name
        return layer

    def __repr__(self) -> str:
        return f"<InMemoryChannelLayer {redact_url(f'memory://{self._name}')}>"

    def stats(self) -> LayerStats:
        """Counters since the layer was built; an in-process hub never loses a connection."""
        return LayerStats(
            connected=self._inbox is not None,
            published=self._published,
            received=self._received,
            connection_losses=0,
            reconnects=0,
        )

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        self._inbox = inbox = _CountingInbox(inbox, self)
        try:
            yield
        finally:
            self.hub.unsubscribe(inbox, list(self._groups))
            self.hub.punsubscribe(inbox, list(self._patterns))
            self._groups.clear()
            self._patterns.clear()
            self._inbox = None

    def _connected_inbox(self) -> Inbox:
        if self._inbox is None:
            raise ChannelClosedError("the memory layer is not connected")
        return self._inbox

    async def publish(self, group: str, payload: bytes) -> None:
        """Deliver synchronously; yield to the event loop when subscribers need to catch up.

        Yielding on every publish would wake every subscriber task once per
        message; yielding when a buffer is half full (or every
        `YIELD_EVERY` publishes, so a publishing loop never starves the
        others) lets each subscriber take a batch per wake-up, losslessly
        as long as it keeps pace.
        """
        self._connected_inbox()
        self._unyielded += 1
        self._published += 1
        if self.hub.publish(group, payload) or self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await anyio.lowlevel.checkpoint()

    async def subscribe(self, group: str) -> None:
        await self.subscribe_groups([group])

    async def unsubscribe(self, group: str) -> None:
        await self.unsubscribe_groups([group])

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        self.hub.subscribe(self._connected_inbox(), groups)
        self._groups.update(groups)

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        self._groups.difference_update(groups)
        if self._inbox is not None:
            self.hub.unsubscribe(self._inbox, groups)

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        self.hub.psubscribe(self._connected_inbox(), patterns)
        self._patterns.update(patterns)

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        self._patterns.difference_update(patterns)
        if self._inbox is not None:
            self.hub.punsubscribe(self._inbox, patterns)
