"""The protocol a channel layer (broker adapter) implements.

A layer is a *client* of one broker: it moves opaque ``bytes`` between
processes and knows nothing of serializers, subscribers or buffering. The
`Channel` on top of it does all of that, once, for every layer:

* it reference-counts groups across local subscribers, so a layer sees
  `subscribe(group)` when the first local subscriber of a group arrives and
  `unsubscribe(group)` when the last one leaves;
* it encodes messages before `publish` and decodes what the layer hands to
  its `Inbox`, then fans events out to the subscribers' bounded buffers.

Optional capabilities (several groups in one broker round trip, glob
pattern subscriptions) are not methods here: they are pluggy hooks, see
`channels_core.plugins`.
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol, Self

from .exceptions import NotSupportedError

__all__ = ["ChannelLayer", "Inbox"]


class Inbox(Protocol):
    """Where a connected layer hands over what arrives from its broker.

    Both methods are synchronous and cheap: call them straight from the
    layer's reader task, without awaiting anything in between.
    """

    def deliver(self, group: str, payload: bytes, pattern: str | None = None) -> bool:
        """Hand over one message published to `group`.

        Pass `pattern` when the message arrived through a pattern
        subscription (the pattern as it was subscribed), else leave it None.
        Returns True when a reading subscriber's buffer is filling up: a layer
        that delivers without I/O (in-process) should then yield to the event
        loop so subscribers can catch up; network layers can ignore it.
        """

    def messages_lost(self) -> None:
        """Report that messages may have been missed (e.g. after a reconnect).

        Call it once the broker subscriptions are live again, so that a
        subscriber resynchronising on this signal sees everything after it.
        """


class ChannelLayer(abc.ABC):
    """Base class of every layer; register subclasses in ``channels.layers``.

    Lifecycle: `Channel` enters ``layer.connect(inbox)`` when it is entered
    and leaves it when it is left; every other method is only called in
    between. A layer instance serves one `Channel` at a time.

    Rules for implementers:

    * Keep your own record of the groups (and patterns) you are subscribed
      to, update it *before* talking to the broker, and restore all of it
      after a reconnect; then call `Inbox.messages_lost`.
    * Background work (a reader loop, a keep-alive) lives in a task group
      opened inside `connect`, so that leaving `connect` ends it; use
      `channels_core.background.background_tasks`, which also keeps the
      application's exceptions from being wrapped in an exception group.
    * Never leak a connection on error or cancellation.
    """

    #: Largest encoded message, in bytes, that `publish` accepts; ``None``
    #: means no limit of the layer's own. The channel checks it before
    #: calling `publish` and raises `PayloadTooLargeError` beyond it.
    max_payload_bytes: int | None = None

    #: URL schemes that `from_url` accepts (informational, used in messages).
    url_schemes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a layer from a URL and layer options (what `Channel.from_url` calls)."""
        raise NotSupportedError(
            f"{cls.__qualname__} cannot be built from a URL; construct it directly"
        )

    @abc.abstractmethod
    def connect(self, inbox: Inbox) -> AbstractAsyncContextManager[None]:
        """Connect to the broker for the duration of the returned context.

        Entering must not return before the layer can publish and subscribe.
        Leaving must close every connection and end every task it started,
        also when it is left through cancellation.
        """

    @abc.abstractmethod
    async def publish(self, group: str, payload: bytes) -> None:
        """Send `payload` to every subscriber of `group`, in every process."""

    @abc.abstractmethod
    async def subscribe(self, group: str) -> None:
        """Start receiving `group`; return once the broker has confirmed it."""

    @abc.abstractmethod
    async def unsubscribe(self, group: str) -> None:
        """Stop receiving `group`."""
