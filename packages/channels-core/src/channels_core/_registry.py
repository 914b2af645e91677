"""Who listens to what in one channel: routing, broker reference counts, history handovers.

With history on it also keeps the last position delivered per group, and
holds live deliveries while a replay from the log is under way (for one
subscriber's ``since=``, or for a whole group recovering after a
reconnect); releasing a hold drops what the replay already delivered, so
the handover has no gap and no duplicate. A network layer's live stream
can trail its log (the read's reply overtakes live messages on another
connection), so live events arriving after the release that the replay
already had are dropped too, until one past the replay's head arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from ._broker_state import BrokerState
from .envelope import MAGIC
from .event import Event, _Draft
from .exceptions import LossReason
from .history import HistoryRead, Position, is_position, parse_position
from .subscriber import Subscriber

logger = logging.getLogger("channels_core")

_Members = dict[Subscriber, None]  # an insertion-ordered set

#: ``unwrap(group, enveloped, live)``: the payload inside an envelope (`channels_core.envelope`);
#: `live` is False for history replays (not a delivery to observe).
Unwrap = Callable[[str, bytes, bool], bytes]


class SubscriptionRegistry:
    """The channel's `Inbox`: decodes each delivery once and fans it out.

    It also tracks, per group and per pattern, which local subscribers need
    it, so that the layer is asked to unsubscribe a name when its last one
    leaves; `broker` keeps what the broker has of each name, and the call in
    flight for it.
    """

    def __init__(self, loads: Callable[[bytes], Any], encode: Callable[[str, Any], bytes]) -> None:
        self._loads = loads
        #: The channel's encoding (`Inbox.encode`): the one `Channel.publish` uses.
        self.encode = encode
        self._groups: dict[str, _Members] = {}
        self._patterns: dict[str, _Members] = {}
        self.broker = BrokerState()
        self.received = 0
        self.undecodable = 0
        self.gaps = 0
        #: Gaps by reason: the layer's reports (`gaps`, also those the history
        #: then fills), and ``since=`` replays the history no longer reaches ("expired").
        self.gaps_by_reason: dict[str, int] = {"reconnect": 0, "overflow": 0, "expired": 0}
        #: Set by `channels_core.telemetry.instrument`: reads enveloped payloads.
        self.unwrap: Unwrap | None = None
        #: Overflow drops of the subscribers that have left, by policy (their
        #: own `Subscriber.dropped` counts the live ones).
        self.dropped_by_left: dict[str, int] = {"drop_oldest": 0, "drop_newest": 0}
        #: Group -> the position of the last event delivered for it (history on).
        self.positions: dict[str, str] = {}
        #: Live events held per subscriber and group while its ``since=`` replay runs.
        self._holds: dict[Subscriber, dict[str, list[Event]]] = {}
        #: Live events held per group while it recovers after a reconnect.
        self.recovering: dict[str, list[Event]] = {}
        #: Group -> subscriber -> the head its ``since=`` replay reached while the
        #: group was recovering: the recovery skips what it already has.
        self._caught_up: dict[str, dict[Subscriber, Position]] = {}
        #: Group -> the head of its last recovery read, and subscriber -> group
        #: -> the head of its ``since=`` replay: live events not after it came
        #: late (the replay had them) and are dropped, until one after it.
        self._recovered_to: dict[str, Position] = {}
        self._replayed_to: dict[Subscriber, dict[str, Position]] = {}
        #: Called (synchronously) to start recovering the groups in `recovering`;
        #: None when the layer keeps no history: a reconnect is then a gap.
        self.start_recovery: Callable[[], object] | None = None

    @property
    def subscribers(self) -> set[Subscriber]:
        members: set[Subscriber] = set()
        for table in (self._groups, self._patterns):
            for subscribers in table.values():
                members.update(subscribers)
        return members

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self._groups)

    @property
    def patterns(self) -> frozenset[str]:
        return frozenset(self._patterns)

    def add(self, subscriber: Subscriber) -> None:
        """Register `subscriber`: it receives what arrives for its groups and patterns."""
        _add(self._groups, subscriber.groups, subscriber)
        _add(self._patterns, subscriber.patterns, subscriber)

    def remove(self, subscriber: Subscriber) -> tuple[list[str], list[str]]:
        """Unregister `subscriber`; return the groups and patterns nobody needs any more."""
        self._holds.pop(subscriber, None)
        self._replayed_to.pop(subscriber, None)
        if subscriber.dropped and self._is_member(subscriber):
            policy = "drop_oldest" if subscriber._drop_oldest else "drop_newest"
            self.dropped_by_left[policy] += subscriber.dropped
        gone_groups = _remove(self._groups, subscriber.groups, subscriber)
        for group in gone_groups:
            self.positions.pop(group, None)
            self.recovering.pop(group, None)
            self._caught_up.pop(group, None)
            self._recovered_to.pop(group, None)
        return gone_groups, _remove(self._patterns, subscriber.patterns, subscriber)

    def _is_member(self, subscriber: Subscriber) -> bool:
        for table, names in (
            (self._groups, subscriber.groups),
            (self._patterns, subscriber.patterns),
        ):
            if names and subscriber in table.get(names[0], ()):
                return True
        return False

    def _decode(self, group: str, payload: bytes, live: bool = True) -> Any:
        """The decoded message, or `_UNDECODABLE` (logged and counted)."""
        try:
            if self.unwrap is not None and payload.startswith(MAGIC):
                payload = self.unwrap(group, payload, live)
            return self._loads(payload)
        except Exception as exc:
            return self._skipped(group, payload, f"{type(exc).__name__}: {exc}")

    def _skipped(self, group: str, payload: bytes, why: str) -> Any:
        """Count and log a message that cannot be delivered; `_UNDECODABLE`."""
        self.undecodable += 1
        logger.warning(
            "skipped a message on group %r that could not be decoded (%s); %d byte(s), starting %r",
            group,
            why,
            len(payload),
            payload[:64],
        )
        return _UNDECODABLE

    def close_all(self) -> None:
        for subscriber in self.subscribers:
            subscriber._close()
        self._groups.clear()
        self._patterns.clear()
        self._holds.clear()
        self.recovering.clear()
        self._caught_up.clear()
        self._recovered_to.clear()
        self._replayed_to.clear()

    # -- the Inbox protocol ---------------------------------------------------

    def deliver(
        self, group: str, payload: bytes, pattern: str | None = None, position: str | None = None
    ) -> bool:
        self.received += 1
        members = self._groups.get(group) if pattern is None else self._patterns.get(pattern)
        if not members:
            return False
        if position is not None and not is_position(position):  # a foreign publisher's
            self._skipped(group, payload, f"its position {position[:40]!r} is not a position")
            return False
        if self.unwrap is None:  # `_decode` without its frame: this runs for every message
            try:
                message = self._loads(payload)
            except Exception as exc:
                message = self._skipped(group, payload, f"{type(exc).__name__}: {exc}")
        else:
            message = self._decode(group, payload)
        if message is _UNDECODABLE:
            return False
        draft = _Draft()  # an Event, made in a third of the time (see `_Draft`)
        draft.group = group
        draft.message = message
        draft.pattern = pattern
        draft.position = position
        draft.__class__ = Event  # type: ignore[assignment]
        event: Event = draft  # type: ignore[assignment]
        if position is not None:  # history on: the only check its absence costs
            return self._deliver_logged(event, members)
        filling = False
        for subscriber in members:
            if subscriber._push(event):
                filling = True
        return filling

    def messages_lost(
        self,
        reason: LossReason = "reconnect",
        count: int | None = None,
        groups: Collection[str] | None = None,
    ) -> None:
        """Mark a gap for every subscriber, except groups the channel can recover from the log.

        With `groups`, only those groups' subscribers (patterns' are not affected).
        """
        self.gaps += 1
        affected = self._groups.keys() if groups is None else set(groups) & self._groups.keys()
        self.gaps_by_reason[reason] = self.gaps_by_reason.get(reason, 0) + 1
        recoverable: set[str] = set()
        if self.start_recovery is not None:
            recoverable = {group for group in affected if group in self.positions}
        for group in recoverable:
            self.recovering.setdefault(group, [])
        if groups is None:
            lost = self._patterns_and_groups_except(recoverable)
        else:
            lost = {member for group in affected - recoverable for member in self._groups[group]}
        for subscriber in lost:
            subscriber._mark_lost(reason, count)
        if recoverable:
            assert self.start_recovery is not None
            self.start_recovery()

    # -- history handovers ----------------------------------------------------

    def hold(self, subscriber: Subscriber, groups: tuple[str, ...]) -> None:
        """Hold `subscriber`'s live events of `groups` until `release` (call before `add`)."""
        self._holds[subscriber] = {group: [] for group in groups}

    def unhold(self, subscriber: Subscriber) -> None:
        """Forget `subscriber`'s holds (its subscription failed or ended)."""
        self._holds.pop(subscriber, None)

    def release(self, subscriber: Subscriber, group: str, read: HistoryRead) -> None:
        """Hand `subscriber` the replayed `read` of `group`, then its held events past it.

        An incomplete read puts a ``MessagesLost("expired")`` before the
        replayed events.
        """
        held = self._holds.get(subscriber, {}).pop(group, [])
        if not self._holds.get(subscriber, True):
            del self._holds[subscriber]
        if not read.complete:
            self.gaps_by_reason["expired"] += 1
        items = self._replayed(group, read, "expired", held)
        subscriber._replay(items)
        self._replayed_to.setdefault(subscriber, {})[group] = parse_position(read.head)
        if group in self.recovering:
            self._caught_up.setdefault(group, {})[subscriber] = parse_position(read.head)
        if group in self._groups:
            self.positions.setdefault(group, read.head)

    def finish_recovery(self, group: str, read: HistoryRead | None) -> None:
        """End `group`'s recovery with the log `read` after its last position (None: failed).

        Every subscriber of the group gets the missed events, then the live
        events held meanwhile that the read did not contain; a read that is
        missing or incomplete is a ``MessagesLost("reconnect")`` first.
        """
        held = self.recovering.pop(group, [])
        caught_up = self._caught_up.pop(group, {})
        members = self._groups.get(group)
        if not members:
            return
        if read is None:
            for subscriber in members:
                subscriber._mark_lost("reconnect", None)
            events = held
        else:
            events = [
                item
                for item in self._replayed(group, read, "reconnect", held)
                if isinstance(item, Event)
            ]
            if not read.complete:
                for subscriber in members:
                    subscriber._mark_lost("reconnect", None)
        for event in events:
            if event.position is not None:
                self.positions[group] = event.position
            receivers = members
            if caught_up:
                receivers = {
                    subscriber: None
                    for subscriber in members
                    if subscriber not in caught_up
                    or _is_after(event.position, caught_up[subscriber])
                }
            self._fan_out_held(event, receivers)
        if read is not None:
            self._recovered_to[group] = parse_position(read.head)

    def decode_history(self, group: str, read: HistoryRead) -> list[Event]:
        """The events of `read`, decoded (undecodable ones skipped and counted)."""
        events = []
        for position, payload in read.events:
            message = self._decode(group, payload, live=False)
            if message is not _UNDECODABLE:
                events.append(Event(group, message, None, position))
        return events

    def _replayed(
        self, group: str, read: HistoryRead, reason: LossReason, held: list[Event]
    ) -> list[Event | LossReason]:
        """`read`'s events (after a loss marker if incomplete), then `held` events past its head."""
        items: list[Event | LossReason] = [] if read.complete else [reason]
        items += self.decode_history(group, read)
        head = parse_position(read.head)
        items += [event for event in held if _is_after(event.position, head)]
        return items

    def _deliver_logged(self, event: Event, members: _Members) -> bool:
        """Fan out an event with a position: held while its group recovers, else noted."""
        if event.pattern is None:
            group = event.group
            if self.recovering and group in self.recovering:
                self.recovering[group].append(event)
                return False
            assert event.position is not None
            if self._recovered_to and group in self._recovered_to:
                if not _is_after(event.position, self._recovered_to[group]):
                    return False  # the recovery delivered it already
                del self._recovered_to[group]
            self.positions[group] = event.position
        return self._fan_out_held(event, members)

    def _fan_out_held(self, event: Event, members: _Members) -> bool:
        filling = False
        for subscriber in members:
            held = self._holds.get(subscriber)
            if held is not None and event.pattern is None and event.group in held:
                held[event.group].append(event)
            elif self._replayed_to and self._replayed_already(subscriber, event):
                continue
            elif subscriber._push(event):
                filling = True
        return filling

    def _replayed_already(self, subscriber: Subscriber, event: Event) -> bool:
        """True if `subscriber`'s ``since=`` replay had `event` (checked until one after it)."""
        heads = self._replayed_to.get(subscriber)
        if heads is None or event.pattern is not None or event.group not in heads:
            return False
        if not _is_after(event.position, heads[event.group]):
            return True
        del heads[event.group]
        if not heads:
            del self._replayed_to[subscriber]
        return False

    def _patterns_and_groups_except(self, groups: set[str]) -> set[Subscriber]:
        """Every pattern subscriber, and every subscriber of a group not in `groups`."""
        members: set[Subscriber] = set()
        for subscribers in self._patterns.values():
            members.update(subscribers)
        for group, subscribers in self._groups.items():
            if group not in groups:
                members.update(subscribers)
        return members


_UNDECODABLE = object()


def _is_after(position: str | None, head: Position) -> bool:
    """True if `position` comes after `head` (a live event not in the replay)."""
    if position is None:
        return True
    try:
        return parse_position(position).is_after(head)
    except ValueError:
        return True


def _add(table: dict[str, _Members], names: tuple[str, ...], subscriber: Subscriber) -> None:
    for name in names:
        table.setdefault(name, {})[subscriber] = None


def _remove(
    table: dict[str, _Members], names: tuple[str, ...], subscriber: Subscriber
) -> list[str]:
    gone = []
    for name in names:
        members = table.get(name)
        if members is None:
            continue
        members.pop(subscriber, None)
        if not members:
            del table[name]
            gone.append(name)
    return gone
