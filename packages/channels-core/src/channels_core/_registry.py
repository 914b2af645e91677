"""Who listens to what in one channel: routing and broker reference counts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._broker_state import BrokerState
from .event import Event
from .subscriber import Subscriber

logger = logging.getLogger("channels_core")

_Members = dict[Subscriber, None]  # an insertion-ordered set


class SubscriptionRegistry:
    """The channel's `Inbox`: decodes each delivery once and fans it out.

    It also tracks, per group and per pattern, which local subscribers need
    it, so that the layer is asked to unsubscribe a name when its last one
    leaves; `broker` keeps what the broker has of each name, and the call in
    flight for it.
    """

    def __init__(self, loads: Callable[[bytes], Any]) -> None:
        self._loads = loads
        self._groups: dict[str, _Members] = {}
        self._patterns: dict[str, _Members] = {}
        self.broker = BrokerState()
        self.received = 0
        self.undecodable = 0
        self.gaps = 0

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
        return (
            _remove(self._groups, subscriber.groups, subscriber),
            _remove(self._patterns, subscriber.patterns, subscriber),
        )

    def close_all(self) -> None:
        for subscriber in self.subscribers:
            subscriber._close()
        self._groups.clear()
        self._patterns.clear()

    # -- the Inbox protocol ---------------------------------------------------

    def deliver(self, group: str, payload: bytes, pattern: str | None = None) -> bool:
        self.received += 1
        members = self._groups.get(group) if pattern is None else self._patterns.get(pattern)
        if not members:
            return False
        try:
            message = self._loads(payload)
        except Exception as exc:
            self.undecodable += 1
            logger.warning(
                "skipped a message on group %r that could not be decoded (%s: %s); "
                "%d byte(s), starting %r",
                group,
                type(exc).__name__,
                exc,
                len(payload),
                payload[:64],
            )
            return False
        event = Event(group, message, pattern)
        filling = False
        for subscriber in members:
            if subscriber._push(event):
                filling = True
        return filling

    def messages_lost(self) -> None:
        self.gaps += 1
        for subscriber in self.subscribers:
            subscriber._mark_reconnect()


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
