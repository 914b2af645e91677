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
