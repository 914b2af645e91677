"""History: what a layer implements to keep a bounded, replayable log per group.

The channel does the rest once, for every layer: ``subscribe(...,
since=...)``, ``Channel.history`` and the recovery after a reconnect, with
the "no gap, no duplicate" handover between the log and live delivery. A
layer with history:

* takes the options of `HistoryOptions` (derive its options class from it:
  ``history_size`` events kept per group, 0 = off; ``history_ttl`` seconds);
* sets ``supports_history = True`` and defines ``read_history`` and
  ``keeps_history`` (see `ChannelLayer`);
* appends every publish to the group's log in the same atomic step as the
  live publish, and hands each live delivery's position to the channel
  (``inbox.deliver(group, payload, position=...)``), in log order;
* after a reconnect calls ``inbox.messages_lost()`` before delivering
  anything received on the new connection: the channel then reads the log
  from the last position it delivered and reports a loss only when the log
  cannot prove the recovery complete.

Positions are text the channel can order without asking the layer:
``format_position(epoch, *offset)``, e.g. ``"k3f9a1-42"`` or, for a Redis
stream ID, ``"k3f9a1-1700000000000-5"``. The epoch names one incarnation of
the log (a broker that lost its data starts a new one), so a position from
another epoch is never taken for a position of this log.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import options
from .options import LayerOptions

__all__ = [
    "HistoryOptions",
    "HistoryRead",
    "Position",
    "ReadHistory",
    "format_position",
    "is_position",
    "parse_position",
]

_EPOCH = re.compile(r"[A-Za-z0-9_]+")
_POSITION = re.compile(r"([A-Za-z0-9_]+)((?:-[0-9]+)+)")


@dataclass(frozen=True, slots=True)
class HistoryOptions(LayerOptions):
    """The history options every layer with history shares; derive a layer's options from it."""

    #: Events kept per group; 0 (the default) keeps no history at all.
    history_size: int = options.count(0, minimum=0)
    #: Seconds an event is kept (None: until `history_size` pushes it out).
    history_ttl: float | None = options.seconds(None, allow_none=True)

    def __post_init__(self) -> None:
        LayerOptions.__post_init__(self)  # (no bare super() in a slotted dataclass)
        if self.history_ttl is not None and not self.history_size:
            raise ValueError(
                "history_ttl needs history_size > 0 (the events kept per group); "
                "set both, or neither"
            )


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """What `ChannelLayer.read_history` found in one group's log.

    `events` are ``(position, payload)`` pairs, oldest first, all after the
    requested position. `complete` is False when the log no longer reaches
    back to that position (trimmed, expired, or another epoch: events in
    between are gone); then `events` start at the oldest one retained.
    `head` is the position of the newest event in the log when it was read
    (for an empty log, a position before any event of its epoch): the
    channel drops live deliveries at or before it as already replayed.
    """

    events: Sequence[tuple[str, bytes]]
    complete: bool
    head: str


#: ``async def read_history(layer, group, after, limit) -> HistoryRead``; see
#: `ChannelLayer.read_history` (an unbound method of the layer fits).
ReadHistory = Callable[[Any, str, "str | None", "int | None"], Awaitable[HistoryRead]]


@dataclass(frozen=True, slots=True, order=False)
class Position:
    """A parsed position: the log's `epoch` and the `offset` within it."""

    epoch: str
    offset: tuple[int, ...]

    def is_after(self, other: Position) -> bool:
        """True if this position comes later than `other`, or belongs to another log."""
        return self.epoch != other.epoch or self.offset > other.offset


def format_position(epoch: str, *offset: int) -> str:
    """The text of a position: ``"<epoch>-<n>[-<n>...]"``; `epoch` is letters, digits and _."""
    if not _EPOCH.fullmatch(epoch):
        raise ValueError(f"a position's epoch is letters, digits and _, got {epoch!r}")
    if not offset or any(n < 0 for n in offset):
        raise ValueError(f"a position's offset is one or more ints >= 0, got {offset!r}")
    return "-".join((epoch, *map(str, offset)))


def is_position(text: str) -> bool:
    """True if `text` has the form of a position (`format_position`): a check, not a parse."""
    return _POSITION.fullmatch(text) is not None


def parse_position(text: object, name: str = "position") -> Position:
    """Parse a position made by `format_position`; `ValueError`/`TypeError` naming `name`."""
    if not isinstance(text, str):
        raise TypeError(
            f"{name} must be a position (the str of an Event.position), "
            f"got {type(text).__name__}: {text!r}"
        )
    match = _POSITION.fullmatch(text)
    if match is None:
        raise ValueError(f"{name} must be a position taken from Event.position, got {text[:100]!r}")
    epoch, offset = match.groups()
    return Position(epoch, tuple(int(n) for n in offset[1:].split("-")))
