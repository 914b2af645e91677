"""Every error the library raises on purpose; all derive from `ChannelsError`.

Each message says what happened and what to do about it.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "ChannelClosedError",
    "ChannelInUseError",
    "ChannelsError",
    "LayerImportError",
    "LayerInUseError",
    "LayerNotFoundError",
    "LossReason",
    "MessagesLost",
    "NotSupportedError",
    "PayloadTooLargeError",
    "SerializationError",
]

LossReason = Literal["overflow", "reconnect", "expired"]


class ChannelsError(Exception):
    """Base class of every error raised by `channels_core` and its layers."""


class LayerNotFoundError(ChannelsError, LookupError, ValueError):
    """No installed layer serves the requested name or URL scheme.

    Also a `ValueError`: a URL naming an unknown scheme is a bad value, and
    code written for other libraries (``except ValueError``) catches it.
    """


class LayerImportError(ChannelsError, ImportError):
    """An installed layer plugin failed to load (import error or bad entry point)."""


class NotSupportedError(ChannelsError):
    """The layer lacks an optional capability (for example pattern subscriptions)."""


class ChannelClosedError(ChannelsError):
    """The channel is not open: enter it with `async with` before use."""


class SerializationError(ChannelsError, ValueError):
    """A message could not be encoded for the wire; nothing was sent."""


class PayloadTooLargeError(ChannelsError, ValueError):
    """An encoded message exceeds what the layer can carry; nothing was sent."""


class BrokerUnavailableError(ChannelsError, ConnectionError):
    """The broker could not be reached (at connect, or during an outage, after retries)."""


class MessagesLost(ChannelsError):
    """Raised by a subscriber's iteration at the point where messages went missing.

    `reason` is ``"overflow"`` when the subscriber's buffer was full,
    ``"reconnect"`` when the layer lost its broker connection and came back
    and could not prove that it recovered what was published in between, and
    ``"expired"`` when a replay (``subscribe(..., since=...)``) started from a
    position the group's history no longer reaches back to. `count` is the
    number of dropped messages when it is known (overflow), else ``None``.

    The subscription stays live: catch this, resynchronise whatever state you
    derive from the stream, and keep iterating the same subscriber.
    """

    def __init__(self, reason: LossReason, count: int | None) -> None:
        self.reason: LossReason = reason
        self.count = count
        if reason == "overflow":
            what = f"{count} message(s) dropped because this subscriber's buffer was full"
            hint = "read faster, or raise buffer_size"
        elif reason == "expired":
            what = (
                "the history no longer reaches back to the requested position "
                "(trimmed, expired, or the broker lost its log); older events are gone"
            )
            hint = "resynchronise any state derived from this stream, or keep more history"
        else:
            what = (
                "the broker connection was lost and restored; "
                "messages published meanwhile were missed"
            )
            hint = "resynchronise any state derived from this stream"
        super().__init__(f"{what}; {hint}. The subscription is still live: keep iterating.")

    def __reduce__(self) -> tuple[type[MessagesLost], tuple[LossReason, int | None]]:
        return (type(self), (self.reason, self.count))


class ChannelInUseError(ChannelsError, RuntimeError):
    """The channel is open elsewhere: in another task, or another thread or event loop.

    A `Channel` belongs to the event loop (and thread) that entered it; other
    threads use a `BlockingChannel`, other event loops their own `Channel`.
    """


class BrokerRefusedError(ChannelsError):
    """The broker refused an operation: bad credentials, missing permissions (ACL), ...

    Unlike `BrokerUnavailableError` the broker is reachable; retrying as it
    is will not help until its configuration (or the layer's) changes.
    """


class LayerInUseError(ChannelsError, RuntimeError):
    """The layer instance already serves an open `Channel`; build one layer per channel."""
