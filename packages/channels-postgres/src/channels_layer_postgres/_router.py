"""What a layer listens to, and where each notification it receives goes.

Notifications are handled one at a time, in arrival order, so that a large
payload being fetched holds back the messages behind it and each
publisher's order is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from channels_core.layer import Inbox
from channels_core.patterns import compile_pattern

from ._counters import LayerCounters
from ._envelope import decode
from ._names import ChannelNames

__all__ = ["Fetch", "Notification", "Router"]

logger = logging.getLogger("channels_layer_postgres")

Notification = tuple[str, str]  # (channel, payload text)
#: Fetch a large payload by row id: (group stored with it or None, payload), or None if gone.
Fetch = Callable[[int], Awaitable[tuple[str | None, bytes] | None]]


class Router:
    """The desired subscriptions, and the routing of notifications to the inbox."""

    def __init__(self, names: ChannelNames, counters: LayerCounters) -> None:
        self._names = names
        self._counters = counters
        self._groups: dict[str, str] = {}  # group -> channel
        self._patterns: dict[str, Callable[[str], object]] = {}
        self._queue: MemoryObjectSendStream[Notification] | None = None

    # -- the desired state --------------------------------------------------------

    def add_groups(self, groups: Iterable[str]) -> None:
        self._groups.update((group, self._names.channel(group)) for group in groups)

    def remove_groups(self, groups: Iterable[str]) -> None:
        for group in groups:
            self._groups.pop(group, None)

    def add_patterns(self, patterns: Iterable[str]) -> None:
        self._patterns.update((pattern, compile_pattern(pattern)) for pattern in patterns)

    def remove_patterns(self, patterns: Iterable[str]) -> None:
        for pattern in patterns:
            self._patterns.pop(pattern, None)

    def clear(self) -> None:
        self._groups.clear()
        self._patterns.clear()

    def desired_channels(self) -> set[str]:
        """Every channel to LISTEN: one per group, plus the firehose while patterns are live."""
        channels = set(self._groups.values())
        if self._patterns:
            channels.add(self._names.firehose)
        return channels

    # -- routing --------------------------------------------------------------------

    def on_notification(self, channel: str, text: str) -> None:
        """Called by the connection for each notification: queue it, in arrival order."""
        self._counters.notifications += 1
        if self._queue is not None:
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._queue.send_nowait((channel, text))

    async def run(self, inbox: Inbox, fetch: Fetch) -> None:
        """Route notifications to `inbox` until cancelled."""
        send, receive = anyio.create_memory_object_stream[Notification](float("inf"))
        self._queue = send
        try:
            async with receive:
                await self._route(receive, inbox, fetch)
        finally:
            self._queue = None
            send.close()

    async def _route(
        self, notifications: MemoryObjectReceiveStream[Notification], inbox: Inbox, fetch: Fetch
    ) -> None:
        async for channel, text in notifications:
            try:
                envelope = decode(text)
            except ValueError as exc:
                self._counters.undecodable += 1
                logger.warning(
                    "skipped a notification on channel %r that is not from this layer (%s)",
                    channel,
                    exc,
                )
                continue
            group, payload = envelope.group, envelope.payload
            if group is not None and not self._recipients(channel, group):
                continue
            if payload is None:
                assert envelope.reference is not None
                fetched = await fetch(envelope.reference)
                if fetched is None:
                    continue
                stored_group, payload = fetched
                group = group or stored_group
            if group is None:  # a reference whose row holds no group: not from this layer
                self._counters.undecodable += 1
                continue
            for pattern in self._recipients(channel, group):
                inbox.deliver(group, payload, pattern)

    def _recipients(self, channel: str, group: str) -> list[str | None]:
        """How `group` is delivered if it arrives on `channel`: by name (None), by patterns."""
        if channel == self._names.firehose:
            return [pattern for pattern, matches in self._patterns.items() if matches(group)]
        if self._names.channel(group) != channel:
            self._counters.misrouted += 1
            logger.warning("skipped a notification for group %r on channel %r", group, channel)
            return []
        return [None] if group in self._groups else []
