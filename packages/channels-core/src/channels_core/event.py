"""The value a subscriber receives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One message delivered to a subscriber.

    `group` is the group it was published to; `pattern` is the glob pattern
    that matched it for `subscribe_pattern` subscriptions, else ``None``.
    `position` is where the event sits in its group's history when the layer
    keeps one (``history_size``): opaque, ordered within the group, and what
    ``subscribe(group, since=position)`` resumes after; else ``None``.
    One `Event` object is shared by every local subscriber of the message:
    treat `message` as read-only.
    """

    group: str
    message: Any
    pattern: str | None = None
    position: str | None = None


class _Draft:
    """An `Event` under construction: the same slots, but assignable.

    The fan-out makes an `Event` per message (issue #15): a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    looked up by name. `SubscriptionRegistry.deliver` instead stores the
    slots of a draft and turns it into an `Event` (``__class__`` assignment,
    allowed between classes of identical layout), in under a third of the time.
    """

    __slots__ = Event.__slots__
    group: str
    message: Any
    pattern: str | None
    position: str | None
