"""What a layer listens to, and where each notification it receives goes.

Notifications are handled one at a time, in arrival order, so that a large
payload being fetched holds back the messages behind it and each
publisher's order is kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from channels_core.layer import Inbox
from channels_core.patterns import compile_pattern

from ._counters import LayerCounters
from ._envelope import Envelope, Reference, decode
from ._names import ChannelNames

__all__ = ["Fetch", "Router"]

logger = logging.getLogger("channels_layer_postgres")

#: Fetch a large payload by its row: (group stored with it or None, payload), or None if gone.
Fetch = Callable[[Reference], Awaitable[tuple[str | None, bytes] | None]]


class Router:
    """The desired subscriptions, and the routing of notifications to the inbox."""

    def __init__(self, names: ChannelNames, counters: LayerCounters) -> None:
        self._names = names
        self._counters = counters
        self._groups: dict[str, str] = {}  # group -> channel
        self._channels: Counter[str] = Counter()  # channel -> groups on it
        self._patterns: dict[str, Callable[[str], object]] = {}
        self._queue: MemoryObjectSendStream[tuple[str, Envelope]] | None = None
        self._inbox: Inbox | None = None
        self._backlog = 0  # notifications queued or being fetched

    # -- the desired state --------------------------------------------------------
    # Each change returns the channels it touched, so that the listener
    # re-checks those alone: subscribing costs the same with 10 or 10,000
    # groups subscribed.

    def add_groups(self, groups: Iterable[str]) -> set[str]:
        touched = set()
        for group in groups:
            if group not in self._groups:
                channel = self._groups[group] = self._names.channel(group)
                self._channels[channel] += 1
                touched.add(channel)
        return touched

    def remove_groups(self, groups: Iterable[str]) -> set[str]:
        touched = set()
        for group in groups:
            channel = self._groups.pop(group, None)
            if channel is not None:
                self._channels[channel] -= 1
                if not self._channels[channel]:
                    del self._channels[channel]
                touched.add(channel)
        return touched

    def add_patterns(self, patterns: Iterable[str]) -> set[str]:
        self._patterns.update((pattern, compile_pattern(pattern)) for pattern in patterns)
        return {self._names.firehose}

    def remove_patterns(self, patterns: Iterable[str]) -> set[str]:
        for pattern in patterns:
            self._patterns.pop(pattern, None)
        return {self._names.firehose}

    def clear(self) -> None:
        self._groups.clear()
        self._channels.clear()
        self._patterns.clear()

    def wants(self, channel: str) -> bool:
        """Whether `channel` is to be LISTENed."""
        if channel == self._names.firehose:
            return bool(self._patterns)
        return channel in self._channels

    def desired_channels(self) -> set[str]:
        """Every channel to LISTEN: one per group, plus the firehose while patterns are live."""
        channels = set(self._channels)
        if self._patterns:
            channels.add(self._names.firehose)
        return channels

    # -- routing --------------------------------------------------------------------

    def on_notification(self, channel: str, text: str) -> None:
        """Called by the connection for each notification, in arrival order; never raises.

        It runs inside asyncpg's protocol, where an exception would leave the
        connection unusable: whatever a notification holds, the worst it can
        do is be counted, logged and skipped.
        """
        self._counters.notifications += 1
        try:
            self._route(channel, text)
        except Exception:
            self._counters.undecodable += 1
            logger.exception(
                "skipped a notification on channel %r that could not be handled", channel
            )

    def _route(self, channel: str, text: str) -> None:
        """An inline message with nothing queued before it is delivered right
        away; a reference (its payload must be fetched) and everything
        behind one wait in the queue, so each publisher's order is kept.
        """
        queue, inbox = self._queue, self._inbox
        if queue is None or inbox is None:
            return
        envelope = self._decode(channel, text)
        if envelope is None:
            return
        if not self._backlog and envelope.payload is not None:
            self._deliver(inbox, channel, envelope.group, envelope.payload)
            return
        self._backlog += 1
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            queue.send_nowait((channel, envelope))

    async def run(self, inbox: Inbox, fetch: Fetch) -> None:
        """Route queued notifications to `inbox` until cancelled."""
        send, receive = anyio.create_memory_object_stream[tuple[str, Envelope]](float("inf"))
        self._queue, self._inbox, self._backlog = send, inbox, 0
        try:
            async with receive:
                async for channel, envelope in receive:
                    try:
                        await self._route_queued(inbox, fetch, channel, envelope)
                    finally:
                        self._backlog -= 1
        finally:
            self._queue = self._inbox = None
            send.close()

    def _decode(self, channel: str, text: str) -> Envelope | None:
        try:
            return decode(text)
        except ValueError as exc:
            self._counters.undecodable += 1
            logger.warning(
                "skipped a notification on channel %r that is not from this layer (%s)",
                channel,
                exc,
            )
            return None

    async def _route_queued(
        self, inbox: Inbox, fetch: Fetch, channel: str, envelope: Envelope
    ) -> None:
        group, payload = envelope.group, envelope.payload
        if payload is None:
            if group is not None and not self._recipients(channel, group):
                return
            assert envelope.reference is not None
            fetched = await fetch(envelope.reference)
            if fetched is None:
                return
            stored_group, payload = fetched
            group = group or stored_group
        self._deliver(inbox, channel, group, payload)

    def _deliver(self, inbox: Inbox, channel: str, group: str | None, payload: bytes) -> None:
        if group is None:  # a reference whose row holds no group: not from this layer
            self._counters.undecodable += 1
            return
        for pattern in self._recipients(channel, group):
            inbox.deliver(group, payload, pattern)

    def _recipients(self, channel: str, group: str) -> list[str | None]:
        """How `group` is delivered if it arrives on `channel`: by name (None), by patterns."""
        if channel == self._names.firehose:
            return [pattern for pattern, matches in self._patterns.items() if matches(group)]
        expected = self._groups.get(group)  # the channel name, computed once per group
        if expected == channel:
            return [None]
        if (expected or self._names.channel(group)) != channel:
            self._counters.misrouted += 1
            logger.warning("skipped a notification for group %r on channel %r", group, channel)
        return []
