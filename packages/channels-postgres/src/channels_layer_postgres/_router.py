"""What a layer listens to, and where each notification it receives goes.

Notifications are handled one at a time, in arrival order, so that a large
payload being fetched holds back the messages behind it and each
publisher's order is kept. At most `max_backlog` notifications wait so: when
fetching falls behind (a slow or locked payloads table), newer ones are
dropped, counted and reported to the subscribers as a gap
(`Inbox.messages_lost`, after everything queued before the drop), never
held in unbounded memory.

Several groups share a channel (`_names`: groups are hashed onto a bounded
set of buckets), so a notification for a group this layer does not
subscribe is normal: it is dropped on arrival, before it could queue behind
a large payload, uncounted. A group that does not belong on the channel it
came by is a forgery: counted as skipped. While a pattern subscription is
live, every bucket is LISTENed and each message arrives once, for its
subscribers by name and the patterns its group matches alike.
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

from ._envelope import Envelope, Reference, decode
from ._names import ChannelNames
from ._stats import Counters

__all__ = ["Fetch", "Router"]

logger = logging.getLogger("channels_layer_postgres")

#: Fetch a large payload by its row: (group stored with it or None, payload), or None if gone.
Fetch = Callable[[Reference], Awaitable[tuple[str | None, bytes] | None]]


class Router:
    """The desired subscriptions, and the routing of notifications to the inbox."""

    def __init__(self, names: ChannelNames, counters: Counters, max_backlog: int) -> None:
        self._names = names
        self._counters = counters
        self._max_backlog = max_backlog
        self._gap_pending = False  # notifications were dropped; the gap is not queued yet
        self._groups: dict[str, str] = {}  # group -> channel (its bucket)
        #: channel -> subscribed groups on it: LISTENed while above zero.
        self._channels: Counter[str] = Counter()
        self._patterns: dict[str, Callable[[str], object]] = {}
        self._queue: MemoryObjectSendStream[tuple[str, Envelope] | None] | None = None
        self._inbox: Inbox | None = None
        self._backlog = 0  # notifications queued or being fetched

    # -- the desired state --------------------------------------------------------
    # Each change returns the channels it touched, so that the listener
    # re-checks those alone: subscribing costs the same with 10 or 10,000
    # groups subscribed. A bucket is LISTENed when its first group comes and
    # UNLISTENed when its last one leaves.

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
        """Every bucket is touched when the first pattern comes: all are LISTENed then."""
        had_patterns = bool(self._patterns)
        self._patterns.update((pattern, compile_pattern(pattern)) for pattern in patterns)
        return set() if had_patterns else set(self._names.buckets)

    def remove_patterns(self, patterns: Iterable[str]) -> set[str]:
        """When the last pattern leaves, the buckets no group needs are touched (UNLISTENed)."""
        had_patterns = bool(self._patterns)
        for pattern in patterns:
            self._patterns.pop(pattern, None)
        if not had_patterns or self._patterns:
            return set()
        return set(self._names.buckets) - set(self._channels)

    def clear(self) -> None:
        self._groups.clear()
        self._channels.clear()
        self._patterns.clear()

    def wants(self, channel: str) -> bool:
        """Whether `channel` is to be LISTENed."""
        return bool(self._patterns) or channel in self._channels

    def desired_channels(self) -> set[str]:
        """Every channel to LISTEN: the buckets of the groups; every bucket while
        patterns are live."""
        if self._patterns:
            return set(self._names.buckets)
        return set(self._channels)

    # -- routing --------------------------------------------------------------------

    def on_notification(self, channel: str, text: str) -> None:
        """Called by the connection for each notification, in arrival order; never raises.

        It runs inside the listening connection's reading (`_lane`), where an
        exception would lose the notifications behind it: whatever a
        notification holds, the worst it can do is be counted, logged and
        skipped. An inline message for a group
        subscribed by name, with nothing queued, is delivered here; anything
        else goes through `_route`.
        """
        self._counters.received += 1
        try:
            inbox = self._inbox
            if self._queue is None or inbox is None:
                return
            try:
                envelope = decode(text)
            except ValueError as exc:
                self._foreign(channel, exc)
                return
            group = envelope.group
            if (
                not self._backlog
                and envelope.payload is not None
                and group is not None
                and self._groups.get(group) == channel  # so `_recipients` would be [None]
                and not self._patterns
            ):
                inbox.deliver(group, envelope.payload, None, envelope.position)
                return
            self._route(channel, envelope)
        except Exception:
            self._counters.skipped += 1
            logger.exception(
                "skipped a notification on channel %r that could not be handled", channel
            )

    def _route(self, channel: str, envelope: Envelope) -> None:
        """An inline message with nothing queued before it is delivered right
        away; a reference (its payload must be fetched) and everything
        behind one wait in the queue, so each publisher's order is kept.
        """
        queue, inbox = self._queue, self._inbox
        assert queue is not None
        assert inbox is not None
        group = envelope.group
        recipients = None
        if group is not None and group not in self._groups:
            recipients = self._recipients(channel, group)
            if not recipients:
                return  # a bucket-mate's that no pattern matches (dropped), or a forgery (counted)
        if not self._backlog and envelope.payload is not None:
            self._deliver(inbox, channel, group, envelope.payload, envelope.position, recipients)
            return
        if self._backlog >= self._max_backlog:
            self._drop(channel)
            return
        if self._gap_pending:  # room again: the gap goes before what follows it
            self._gap_pending = False
            self._enqueue(queue, None)  # None marks the gap
        self._enqueue(queue, (channel, envelope))

    def _enqueue(
        self,
        queue: MemoryObjectSendStream[tuple[str, Envelope] | None],
        item: tuple[str, Envelope] | None,
    ) -> None:
        self._backlog += 1
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.WouldBlock):
            queue.send_nowait(item)

    def _drop(self, channel: str) -> None:
        """Drop a notification at the bound: counted, logged once per gap, reported."""
        self._counters.dropped += 1
        if not self._gap_pending:
            self._gap_pending = True
            logger.warning(
                "dropping notifications (the first on channel %r): %d are waiting behind "
                "large payloads being fetched (max_backlog); subscribers are told of the gap",
                channel,
                self._backlog,
            )

    async def run(self, inbox: Inbox, fetch: Fetch) -> None:
        """Route queued notifications to `inbox` until cancelled."""
        # The queue holds at most `max_backlog` notifications plus one gap
        # marker (`_route` checks the backlog before queueing).
        send, receive = anyio.create_memory_object_stream[tuple[str, Envelope] | None](
            self._max_backlog + 1
        )
        self._queue, self._inbox, self._backlog, self._gap_pending = send, inbox, 0, False
        try:
            async with receive:
                async for item in receive:
                    try:
                        if item is None:  # the gap left by dropped notifications
                            inbox.messages_lost("overflow")
                        else:
                            await self._route_queued(inbox, fetch, *item)
                    finally:
                        self._backlog -= 1
                    if not self._backlog and self._gap_pending:  # nothing came after the drop
                        self._gap_pending = False
                        inbox.messages_lost("overflow")
        finally:
            self._queue = self._inbox = None
            send.close()

    def _foreign(self, channel: str, error: ValueError) -> None:
        """A notification that is not an envelope of this layer: counted, logged, skipped."""
        self._counters.skipped += 1
        logger.warning(
            "skipped a notification on channel %r that is not from this layer (%s)",
            channel,
            error,
        )

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
        self._deliver(inbox, channel, group, payload, envelope.position)

    def _deliver(
        self,
        inbox: Inbox,
        channel: str,
        group: str | None,
        payload: bytes,
        position: str | None = None,
        recipients: list[str | None] | None = None,
    ) -> None:
        """`payload` to each of `recipients` (`_recipients`, computed here unless given)."""
        if group is None:  # a reference whose row holds no group: not from this layer
            self._counters.skipped += 1
            return
        if recipients is None:
            recipients = self._recipients(channel, group)
        for pattern in recipients:
            inbox.deliver(group, payload, pattern, position)

    def _recipients(self, channel: str, group: str) -> list[str | None]:
        """How `group` is delivered if it arrives on `channel`: by name (None), by patterns.

        None of them for a group not subscribed here, sharing the bucket of
        one that is; a group that does not belong on `channel` is counted and logged.
        """
        expected = self._groups.get(group)  # the channel name, computed once per group
        if (expected or self._names.channel(group)) != channel:
            self._counters.skipped += 1
            logger.warning("skipped a notification for group %r on channel %r", group, channel)
            return []
        recipients: list[str | None] = [None] if expected is not None else []
        if self._patterns:
            recipients += [pattern for pattern, matches in self._patterns.items() if matches(group)]
        return recipients
