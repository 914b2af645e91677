"""The protocol a channel layer (broker adapter) implements.

A layer is a *client* of one broker: it moves opaque ``bytes`` between
processes and knows nothing of serializers, subscribers or buffering. The
`Channel` on top of it does all of that, once, for every layer:

* it reference-counts groups across local subscribers, so a layer sees
  `subscribe(group)` when the first local subscriber of a group arrives and
  `unsubscribe(group)` when the last one leaves; calls for different names
  may run concurrently, but for one name they alternate (subscribe first,
  and again after a failed subscribe's clean-up) and never overlap;
* it encodes messages before `publish` and decodes what the layer hands to
  its `Inbox`, then fans events out to the subscribers' bounded buffers.

Optional capabilities (several groups in one broker round trip, glob
pattern subscriptions, a replayable history per group, many messages in one
round trip) are declared with class attributes (`supports_multi_group`,
`supports_patterns`, `supports_history`, `supports_publish_many`) naming
methods of the layer;
pluggy hooks (`channels_core.hookspecs`) remain for plugins that want them.

The error contract: everything a layer raises for broker trouble is a
`ChannelsError` chained to the driver's exception (translate at the
boundary with `channels_core.boundary.translate_errors`), so that
``except ChannelsError`` is enough for an application. Each method's
``Raises:`` section lists what it may raise.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol, Self

from .exceptions import LossReason, NotSupportedError
from .history import HistoryRead
from .stats import LayerStats

__all__ = ["ChannelLayer", "Inbox"]


class Inbox(Protocol):
    """Where a connected layer hands over what arrives from its broker.

    Both methods are synchronous and cheap: call them straight from the
    layer's reader task, without awaiting anything in between.
    """

    def deliver(
        self, group: str, payload: bytes, pattern: str | None = None, position: str | None = None
    ) -> bool:
        """Hand over one message published to `group`.

        Pass `pattern` when the message arrived through a pattern
        subscription (the pattern as it was subscribed), else leave it None.
        A layer keeping history passes the message's `position` in the
        group's log (`channels_core.history.format_position`), delivering
        each group's messages in log order.
        Returns True when a reading subscriber's buffer is filling up: a layer
        that delivers without I/O (in-process) should then yield to the event
        loop so subscribers can catch up; network layers can ignore it.
        """

    def messages_lost(
        self,
        reason: LossReason = "reconnect",
        count: int | None = None,
        groups: Collection[str] | None = None,
    ) -> None:
        """Report that messages may have been missed (e.g. after a reconnect).

        Call it once the broker subscriptions are live again, and before
        delivering anything received since, so that a subscriber
        resynchronising on this signal sees everything after it. With
        history on (`ChannelLayer.keeps_history`) the channel then recovers
        each subscribed group from the log, after the last position it
        delivered, and tells subscribers only what it cannot recover.
        Subscribers get ``MessagesLost(reason, count)``: pass
        ``reason="overflow"`` (and the `count` dropped, if known) when the
        layer itself dropped messages because a bound of its own was
        reached, rather than because the broker connection was lost.
        Pass `groups` when only those groups' subscriptions were affected
        (one of several broker connections lost, e.g. one shard of a
        cluster): only their subscribers are told (and recover), not the
        subscribers of other groups nor of patterns.
        """

    def encode(self, group: str, message: Any) -> bytes:
        """`message` encoded exactly as `Channel.publish` would send it to `group`.

        For layers that publish outside `Channel.publish` (e.g. inside the
        application's database transaction) and must agree with the
        channel's serializer and limits. Nothing is sent.

        Raises:
            TypeError: `group` is not a str.
            ValueError: `group` is empty or not valid Unicode text.
            SerializationError: the channel's serializer cannot encode `message`.
            PayloadTooLargeError: the encoded message exceeds the layer's
                `max_payload_bytes`.
        """


#: Capability attribute -> the methods it promises, and the capability's name.
_CAPABILITY_METHODS = {
    "supports_multi_group": ("subscribe_groups", "unsubscribe_groups"),
    "supports_patterns": ("subscribe_patterns", "unsubscribe_patterns"),
    "supports_history": ("read_history",),
    "supports_publish_many": ("publish_many",),
}


class ChannelLayer(abc.ABC):
    """Base class of every layer; register subclasses in ``channels.layers``.

    Lifecycle: `Channel` enters ``layer.connect(inbox)`` when it is entered
    and leaves it when it is left; every other method is only called in
    between. A layer instance serves one `Channel` at a time: the channel
    refuses a layer that is already connected (`LayerInUseError`) and, for
    an `asyncio_only` layer, any other event loop (`NotSupportedError`),
    before `connect` runs, so a layer needs neither check.

    Rules for implementers:

    * Keep your own record of the groups (and patterns) you are subscribed
      to, update it *before* talking to the broker, and restore all of it
      after a reconnect; then call `Inbox.messages_lost`.
    * Background work (a reader loop, a keep-alive) lives in a task group
      opened inside `connect`, so that leaving `connect` ends it; use
      `channels_core.background.background_tasks`, which also keeps the
      application's exceptions from being wrapped in an exception group.
    * Never leak a connection on error or cancellation.
    * Translate driver exceptions to `ChannelsError` subclasses at the
      boundary, ``raise ... from exc``, and show URLs through
      `channels_core.urls.redact_url` only.
    """

    #: Largest encoded message, in bytes, that `publish` accepts; ``None``
    #: means no limit of the layer's own. The channel checks it before
    #: calling `publish` and raises `PayloadTooLargeError` beyond it.
    max_payload_bytes: int | None = None

    #: URL schemes that `from_url` accepts.
    url_schemes: ClassVar[tuple[str, ...]] = ()

    #: True if the layer runs on asyncio only (its driver is asyncio-based):
    #: a channel entered under another backend (trio) then raises
    #: `NotSupportedError` naming the layer, before `connect` runs.
    asyncio_only: ClassVar[bool] = False

    #: True if the layer subscribes several groups in one broker round trip
    #: with `subscribe_groups` / `unsubscribe_groups` (which it must define).
    supports_multi_group: ClassVar[bool] = False

    #: True if the layer supports glob pattern subscriptions through
    #: `subscribe_patterns` / `unsubscribe_patterns` (which it must define).
    supports_patterns: ClassVar[bool] = False

    #: True if the layer can keep a replayable log per group (options
    #: ``history_size``/``history_ttl``, see `channels_core.history`) and
    #: defines `read_history`; `keeps_history` says whether this instance does.
    supports_history: ClassVar[bool] = False

    #: True if the layer sends many messages in one broker round trip with
    #: `publish_many` (which it must define). The channel then also coalesces
    #: concurrent `Channel.publish` calls into such batches; without it,
    #: `publish_many` publishes one message after the other.
    supports_publish_many: ClassVar[bool] = False

    @property
    def keeps_history(self) -> bool:
        """True if this layer logs every publish (history is on); False by default."""
        return False

    @property
    def coalesce_publishes(self) -> bool:
        """With `supports_publish_many`: whether concurrent publishes should share round trips.

        True by default: the channel then batches concurrent `Channel.publish`
        calls into `publish_many`. An in-process layer, whose `publish` waits
        for nothing, says False (batching would only add work), and so does
        a layer whose `publish_many` falls back to one `publish` at a time.
        """
        return True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attribute, methods in _CAPABILITY_METHODS.items():
            if not getattr(cls, attribute):
                continue
            missing = cls._inherited(methods)
            if missing:
                raise TypeError(
                    f"{cls.__qualname__} sets {attribute} = True but does not define "
                    f"{' and '.join(missing)}"
                )
        # `subscribe`/`unsubscribe` default to the bulk methods of a multi-group
        # layer; any other concrete layer must define them (checked here, as an
        # abstract method would be, but with the reason in the message).
        concrete = not any(
            getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls)
        )
        if concrete and not cls.supports_multi_group:
            missing = cls._inherited(("subscribe", "unsubscribe"))
            if missing:
                raise TypeError(
                    f"{cls.__qualname__} does not define {' and '.join(missing)}: a layer "
                    "defines them, or sets supports_multi_group = True and defines "
                    "subscribe_groups and unsubscribe_groups, which they then call"
                )

    @classmethod
    def _inherited(cls, methods: Sequence[str]) -> list[str]:
        """Those of `methods` the class leaves as `ChannelLayer` defines them."""
        return [m for m in methods if getattr(cls, m) is getattr(ChannelLayer, m)]

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a layer from a URL and layer options (what `Channel.from_url` calls).

        Raises:
            TypeError: an unknown option, or an option value of the wrong type.
            ValueError: a URL this layer does not serve, or a bad option value
                (the message names the option, and never shows a secret).
            NotSupportedError: the layer cannot be built from a URL.
        """
        raise NotSupportedError(
            f"{cls.__qualname__} cannot be built from a URL; construct it directly"
        )

    @abc.abstractmethod
    def connect(self, inbox: Inbox) -> AbstractAsyncContextManager[None]:
        """Connect to the broker for the duration of the returned context.

        Entering must not return before the layer can publish and subscribe.
        Leaving must close every connection and end every task it started,
        also when it is left through cancellation. Exceptions raised in the
        body come out unchanged.

        Raises:
            BrokerUnavailableError: the broker could not be reached within the
                layer's connect timeout.
            BrokerRefusedError: the broker refused the connection (credentials,
                permissions).
        """

    @abc.abstractmethod
    async def publish(self, group: str, payload: bytes) -> None:
        """Send `payload` to every subscriber of `group`, in every process.

        Raises:
            BrokerUnavailableError: the broker stayed unreachable for the
                layer's publish timeout; the message was not sent.
            BrokerRefusedError: the broker refused the message (permissions).
            ChannelClosedError: the layer is not connected.
        """

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Send each ``(group, payload)`` of `items`, in order (with `supports_publish_many`).

        The channel has encoded and size-checked every payload before the
        call, and `items` is never empty. A layer with the capability sends
        them all in one broker round trip and returns once the broker has
        accepted every one; this default, for every other layer, calls
        `publish` for each item in turn.

        Raises:
            The same as `publish`. On an error, items before the failing
            one may have been sent (this default: they were); none after it.
        """
        for group, payload in items:
            await self.publish(group, payload)

    async def subscribe(self, group: str) -> None:
        """Start receiving `group`; return once the broker has confirmed it.

        Defined by every layer, except one with `supports_multi_group`, whose
        `subscribe_groups` this default calls with the one group.

        Raises:
            BrokerUnavailableError: the broker did not confirm within the
                layer's subscribe timeout.
            BrokerRefusedError: the broker refused the subscription (permissions).
            ChannelClosedError: the layer is not connected.
        """
        await self.subscribe_groups([group])

    async def unsubscribe(self, group: str) -> None:
        """Stop receiving `group` (the channel calls it best effort, bounded in time).

        Defined by every layer, except one with `supports_multi_group`, whose
        `unsubscribe_groups` this default calls with the one group.

        Raises:
            BrokerUnavailableError: the broker could not be told; the layer has
                forgotten `group` anyway and will not restore it.
        """
        await self.unsubscribe_groups([group])

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        """Subscribe every group in `groups` at once (with `supports_multi_group`).

        Like `subscribe`, returns once the broker has confirmed every name;
        `groups` is non-empty and holds distinct names.

        Raises:
            The same as `subscribe`; `NotSupportedError` without the capability.
        """
        raise NotSupportedError(f"{type(self).__qualname__} does not subscribe groups in bulk")

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        """Unsubscribe every group in `groups` at once (with `supports_multi_group`).

        Raises:
            The same as `unsubscribe`; `NotSupportedError` without the capability.
        """
        raise NotSupportedError(f"{type(self).__qualname__} does not subscribe groups in bulk")

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        """Receive every group matching the glob `patterns` (with `supports_patterns`).

        Matching messages go to ``inbox.deliver(group, payload, pattern)``;
        returns once the broker has confirmed every pattern.

        Raises:
            The same as `subscribe`; `NotSupportedError` without the capability.
        """
        raise NotSupportedError(f"{type(self).__qualname__} does not support pattern subscriptions")

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        """Stop receiving `patterns` (with `supports_patterns`).

        Raises:
            The same as `unsubscribe`; `NotSupportedError` without the capability.
        """
        raise NotSupportedError(f"{type(self).__qualname__} does not support pattern subscriptions")

    async def read_history(self, group: str, after: str | None, limit: int | None) -> HistoryRead:
        """Read `group`'s log (with `supports_history`, while `keeps_history`).

        With `after` (a position), the first `limit` events after it, or all
        of them with ``limit=None``; if the log does not reach back to
        `after` (older than the oldest event retained, or of another epoch),
        the events from the oldest retained, with ``complete=False``. Without
        `after`, the newest `limit` events (all with None), oldest first,
        ``complete=True``. ``limit=0`` reads only the `HistoryRead.head`.

        Raises:
            BrokerUnavailableError: the broker did not answer within the
                layer's timeout.
            BrokerRefusedError: the broker refused the read (permissions).
            ChannelClosedError: the layer is not connected.
            NotSupportedError: without the capability (this default), or
                with history off.
        """
        raise NotSupportedError(f"{type(self).__qualname__} keeps no history")

    async def check(self, timeout: float) -> None:
        """Prove the broker answers now: one round trip on each connection the layer relies on.

        `Channel.health` calls it. A network layer checks both what
        publishing uses (a pooled connection) and what carries its
        subscriptions (the listening connection), each within `timeout`
        seconds in all; an in-process layer has nothing to check (this
        default returns at once). Returns None when the broker answered.

        Raises:
            BrokerUnavailableError: the broker did not answer within
                `timeout`, or the layer is between connections (reconnecting).
            BrokerRefusedError: the broker answered with a refusal.
            ChannelClosedError: the layer is not connected.
        """
        return

    def stats(self) -> LayerStats:
        """A frozen snapshot of the layer's counters (a `LayerStats`, or a subclass).

        Raises:
            NotSupportedError: the layer keeps no counters (this default).
        """
        raise NotSupportedError(f"{type(self).__qualname__} does not report statistics")
