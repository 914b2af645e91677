"""`Channel`: the application's handle on a layer."""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._broker_state import BrokerCall
from ._coalesce import CoalescingPublisher
from ._connecting import connected
from ._names import check_name, check_names
from ._registry import SubscriptionRegistry, Unwrap
from .background import background_tasks
from .discovery import layer_for_url
from .event import Event
from .exceptions import (
    ChannelClosedError,
    ChannelInUseError,
    ChannelsError,
    MessagesLost,
    NotSupportedError,
    PayloadTooLargeError,
)
from .health import DEFAULT_HEALTH_TIMEOUT, ChannelHealth, HealthRecord
from .history import HistoryOptions, HistoryRead, ReadHistory, parse_position
from .layer import ChannelLayer
from .layers.local_memory import InMemoryChannelLayer
from .options import check_count, check_seconds
from .plugins import capabilities_of
from .serializers import Serializer, resolve_serializer
from .subscriber import OVERFLOW_POLICIES, OverflowPolicy, Subscriber

__all__ = ["Channel", "ChannelStats"]

logger = logging.getLogger("channels_core")

#: The options `Channel.from_url` keeps for the channel; the rest go to the layer.
CHANNEL_OPTIONS = ("serializer", "buffer_size", "overflow", "unsubscribe_timeout")

#: Layer options that need the "history" capability.
HISTORY_OPTIONS = HistoryOptions.names()

#: ``since=`` of `Channel.subscribe`: one position, or a position per group.
Since = str | Mapping[str, str]


class _State(enum.Enum):
    NEW = "not entered yet"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_OPEN = _State.OPEN  # (a global: `publish` checks it on every call)
_get_ident = threading.get_ident  # (likewise)

#: States in which entering the channel again is refused.
_BUSY = frozenset({_State.OPENING, _State.OPEN, _State.CLOSING})


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A snapshot of a channel's counters (see `Channel.stats`)."""

    subscribers: int
    groups: int
    patterns: int
    published: int
    received: int
    undecodable: int
    gaps: int


class Channel:
    """Publish to groups and subscribe to them through one layer.

    Use it as an async context manager: entering connects the layer,
    leaving ends every open subscription and disconnects the layer. A
    channel left cleanly can be entered again (a fresh connection, with the
    same options); entering one that is open raises `ChannelInUseError`:
    share the open channel between tasks instead.

    An open channel belongs to the event loop, and thread, that entered it:
    any task of that loop may publish and subscribe concurrently; another
    thread or event loop gets `ChannelInUseError` at once (threads use
    `BlockingChannel`, other event loops a channel of their own).

    `serializer` is ``"json"`` (default), ``"msgpack"``, ``"pickle"`` or an
    object with ``dumps``/``loads``. `buffer_size` and `overflow` are the
    defaults for each subscriber's bounded buffer (see `OverflowPolicy`).
    """

    def __init__(
        self,
        layer: ChannelLayer,
        *,
        serializer: str | Serializer = "json",
        buffer_size: int = 1000,
        overflow: OverflowPolicy = "drop_oldest",
        unsubscribe_timeout: float = 5.0,
    ) -> None:
        if not isinstance(layer, ChannelLayer):
            raise TypeError(
                f"Channel needs a ChannelLayer instance, got {type(layer).__name__}; "
                "use Channel.from_url('memory://') to pick a layer by URL"
            )
        self._layer = layer
        self._codec = resolve_serializer(serializer)
        self._buffer_size = _check_buffer_size(buffer_size)
        self._overflow = _check_overflow(overflow)
        self._unsubscribe_timeout = _check_unsubscribe_timeout(unsubscribe_timeout)
        self._capabilities = capabilities_of(type(layer))
        self._registry = SubscriptionRegistry(self._codec.loads, self._encode)
        self._state = _State.NEW
        self._owner = 0  # the thread that entered the channel (threading.get_ident)
        self._loop: anyio.lowlevel.EventLoopToken | None = None  # and its event loop
        self._exit_stack: AsyncExitStack | None = None
        self._published = 0
        self._recovery_round = 0  # bumped by each reconnect the layer reports
        self._recovering = False  # a recovery task is running
        self._health = HealthRecord()
        # Set by `channels_core.telemetry.instrument`; None (no cost) when off.
        #: Publishes instead of the layer's publish (a span, the duration).
        self._observed_publish: Callable[[str, Any], Awaitable[None]] | None = None
        #: Puts the envelope (`channels_core.envelope`) around each encoded payload.
        self._wrap_envelope: Callable[[str, bytes], bytes] | None = None
        #: The registry's `SubscriptionRegistry.unwrap`: reads enveloped payloads.
        self._unwrap_envelope: Unwrap | None = None
        #: How `publish` sends one encoded message: the layer's `publish`, or,
        #: with ``publish-many``, coalesced with concurrent ones (`_coalesce`).
        self._send: Callable[[str, bytes], Awaitable[None]] = layer.publish
        #: The memory layer's `publish` without its coroutine (`_nowait_publisher`).
        self._send_nowait = _nowait_publisher(layer)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A channel on the layer serving `url`'s scheme (e.g. ``redis://host:6379/0``).

        Channel options (``serializer``, ``buffer_size``, ``overflow``,
        ``unsubscribe_timeout``) are taken out; the remaining options go to
        the layer's ``from_url``.
        """
        channel_options = {key: options.pop(key) for key in CHANNEL_OPTIONS if key in options}
        layer_class = layer_for_url(url)
        _check_history_options(layer_class, url, options)
        layer = layer_class.from_url(url, **options)
        return cls(layer, **channel_options)

    def __repr__(self) -> str:
        return f"<Channel {self._layer!r} ({self._state.value})>"

    @property
    def layer(self) -> ChannelLayer:
        return self._layer

    @property
    def capabilities(self) -> frozenset[str]:
        """The layer's optional capabilities, e.g. ``{"multi-group", "patterns"}``."""
        return self._capabilities.names

    def stats(self) -> ChannelStats:
        registry = self._registry
        return ChannelStats(
            subscribers=len(registry.subscribers),
            groups=len(registry.groups),
            patterns=len(registry.patterns),
            published=self._published,
            received=registry.received,
            undecodable=registry.undecodable,
            gaps=registry.gaps,
        )

    async def health(self, timeout: float = DEFAULT_HEALTH_TIMEOUT) -> ChannelHealth:
        """Whether this channel can publish and its subscriptions are live, checked now.

        Asks the broker (`ChannelLayer.check`) and reads the layer's state,
        within `timeout` seconds; never raises for broker trouble: the
        report says it (`ChannelHealth.healthy`, `ChannelHealth.reason`).
        A channel that is not open reports unhealthy.
        """
        timeout = check_seconds("timeout", timeout)
        if self._state is not _State.OPEN:
            return self._health.closed(self._state.value)
        self._check_owner()
        return await self._health.check(self._layer, timeout)

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state in _BUSY:
            raise ChannelInUseError(
                f"this channel is already {self._state.value} (entered by another task); "
                "share the open channel with every task that needs it, or create another "
                "Channel for a connection of its own"
            )
        # Claimed before the first await: a concurrent enter sees OPENING.
        self._state = _State.OPENING
        self._owner = threading.get_ident()
        self._loop = anyio.lowlevel.current_token()
        # A new registry: nothing carried over from an earlier session.
        self._registry = SubscriptionRegistry(self._codec.loads, self._encode)
        self._registry.unwrap = self._unwrap_envelope
        self._published = 0
        self._recovering = False
        self._send = self._layer.publish
        self._send_nowait = _nowait_publisher(self._layer)
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(connected(self._layer, self._registry))
                layer = self._layer
                history = self._capabilities.history is not None and layer.keeps_history
                publish_many = self._capabilities.publish_many
                if not layer.coalesce_publishes:
                    publish_many = None
                if history or publish_many is not None:
                    tasks = await stack.enter_async_context(background_tasks())
                if publish_many is not None:
                    batch = publish_many  # bound for the closure: narrowed, unchanging
                    coalescer = CoalescingPublisher(
                        layer.publish, lambda items: batch(layer, items)
                    )
                    tasks.start_soon(coalescer.run)
                    self._send = coalescer.publish
                    self._send_nowait = None
                if history:
                    self._registry.start_recovery = lambda: self._start_recovery(tasks)
                self._exit_stack = stack.pop_all()
        except BaseException:
            self._state = _State.CLOSED
            raise
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._state is not _State.OPEN:
            return None
        self._check_owner()
        self._state = _State.CLOSING
        self._registry.close_all()
        exit_stack, self._exit_stack = self._exit_stack, None
        assert exit_stack is not None
        try:
            return await exit_stack.__aexit__(exc_type, exc, tb)
        finally:
            self._state = _State.CLOSED

    def _check_open(self) -> None:
        """Refuse use outside ``async with channel:``, or from another thread or loop."""
        if self._state is not _State.OPEN:
            raise ChannelClosedError(
                f"this channel is {self._state.value}: use it inside "
                "`async with channel:` (or `async with Channel(...) as channel:`)"
            )
        if self._owner != threading.get_ident():
            self._check_owner()

    def _check_owner(self) -> None:
        """Refuse another thread, or a later event loop of the entering thread.

        Publishing checks the thread only (`_check_open`: it must stay cheap);
        subscribing and leaving check the event loop too.
        """
        if self._owner != threading.get_ident() or anyio.lowlevel.current_token() != self._loop:
            owner = next((t.name for t in threading.enumerate() if t.ident == self._owner), "?")
            here = (
                f"another thread ({threading.current_thread().name!r})"
                if self._owner != threading.get_ident()
                else "another event loop of that thread"
            )
            raise ChannelInUseError(
                f"this channel was entered by the event loop of thread {owner!r}; a Channel "
                f"cannot be used from {here}. Nothing was done. From synchronous code or "
                "other threads use channels_core.BlockingChannel; in another event loop, "
                "open a Channel of its own there"
            )

    # -- publishing -------------------------------------------------------------

    async def publish(self, group: str, message: Any) -> None:
        """Send `message` to every current subscriber of `group`, in every process.

        Returns once the broker has accepted it. Concurrent calls share round
        trips where the layer can (see `channels_core._coalesce`); errors,
        timeouts and cancellation stay per call. Raises `SerializationError`
        or `PayloadTooLargeError` (nothing sent) if the message cannot be
        carried.
        """
        if self._state is not _OPEN or self._owner != _get_ident():
            self._check_open()  # raises
        observed_publish = self._observed_publish
        if observed_publish is None:
            payload = self._encode(group, message)
            send_nowait = self._send_nowait
            if send_nowait is None:
                await self._send(group, payload)
            elif send_nowait(group, payload):
                await anyio.lowlevel.checkpoint()
        else:  # channels_core.telemetry: encodes and publishes in a span, timed
            await observed_publish(group, message)
        self._published += 1

    async def publish_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Send each ``(group, message)`` of `items`, in order, in one round trip if the layer can.

        Every message is encoded and checked before anything is sent: if one
        cannot be carried, the error (`SerializationError`,
        `PayloadTooLargeError`, or `TypeError`/`ValueError` for a bad group)
        names its index and nothing is sent. Returns once the broker has
        accepted every message. With the layer's ``publish-many`` capability
        (memory, Redis, PostgreSQL) they travel together; other layers
        publish them one after the other. On a broker error some of the
        messages may have been sent, as with a failed `publish`.
        """
        self._check_open()
        batch = self._encode_many(items)
        if not batch:
            return
        publish_many = self._capabilities.publish_many
        if publish_many is None:
            await self._layer.publish_many(batch)  # the layer's own, or the default loop
        else:
            await publish_many(self._layer, batch)
        self._published += len(batch)

    def _encode_many(self, items: Iterable[tuple[str, Any]]) -> list[tuple[str, bytes]]:
        """Every item encoded (`_encode`); an error names the first bad item's index."""
        encoded = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, tuple | list) or len(item) != 2:
                    raise TypeError(f"expected a (group, message) tuple, got {type(item).__name__}")
                group, message = item
                encoded.append((group, self._encode(group, message)))
            except (TypeError, ValueError) as exc:
                raise _item_error(exc, index) from exc
        return encoded

    def _encode(self, group: str, message: Any) -> bytes:
        """`message` as the layer carries it to `group`; the registry's `Inbox.encode`."""
        if type(group) is not str or not group.isascii() or not group:
            check_name(group, "group")  # the full check, for what the quick one cannot pass
        codec = self._codec
        dumps = codec.bytes_dumps
        if dumps is None:
            payload = codec.dumps(message)
        else:  # `Codec.dumps` without its frame: this runs for every message
            try:
                payload = dumps(message)
            except Exception as exc:
                raise codec.refused(message, exc) from exc
        if self._wrap_envelope is not None:  # channels_core.telemetry
            payload = self._wrap_envelope(group, payload)
        limit = self._layer.max_payload_bytes
        if limit is not None and len(payload) > limit:
            raise PayloadTooLargeError(
                f"the encoded message is {len(payload):,} bytes; {type(self._layer).__name__} "
                f"carries at most {limit:,}. Nothing was sent: send a smaller message, "
                "or a reference to where the data is stored"
            )
        return payload

    # -- subscribing ------------------------------------------------------------

    def subscribe(
        self,
        group: str,
        *more_groups: str,
        buffer_size: int | None = None,
        overflow: OverflowPolicy | None = None,
        since: Since | None = None,
    ) -> AbstractAsyncContextManager[Subscriber]:
        """Subscribe to one or more groups for the duration of an ``async with`` block.

        The subscription is live on the broker when the block starts; it
        yields a `Subscriber`, an async iterator of `Event`.

        `since` (history on): an `Event.position` of the one group, or
        ``{group: position}`` for several. The subscriber first gets every
        retained event of those groups after the position, in order, then
        live events, with no gap and no duplicate in between; if the history
        no longer reaches back to a position, iteration raises
        ``MessagesLost(reason="expired")`` before that group's oldest event.
        """
        groups = check_names((group, *more_groups), "group")
        positions = None if since is None else self._check_since(groups, since)
        return self._subscription(groups, (), buffer_size, overflow, positions)

    def subscribe_pattern(
        self,
        pattern: str,
        *more_patterns: str,
        buffer_size: int | None = None,
        overflow: OverflowPolicy | None = None,
    ) -> AbstractAsyncContextManager[Subscriber]:
        """Subscribe to every group matching glob patterns (Redis PSUBSCRIBE semantics).

        Events carry the matching pattern in `Event.pattern`. Raises
        `NotSupportedError` if the layer has no pattern support.
        """
        patterns = check_names((pattern, *more_patterns), "pattern")
        if self._capabilities.patterns is None:
            raise NotSupportedError(
                f"{type(self._layer).__name__} does not support pattern subscriptions; "
                "subscribe to the groups by name, or use a layer that supports patterns "
                "(memory, redis, postgresql)"
            )
        return self._subscription((), patterns, buffer_size, overflow)

    def _subscription(
        self,
        groups: tuple[str, ...],
        patterns: tuple[str, ...],
        buffer_size: int | None,
        overflow: OverflowPolicy | None,
        since: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Subscriber]:
        subscriber = Subscriber(
            groups,
            patterns,
            self._buffer_size if buffer_size is None else _check_buffer_size(buffer_size),
            self._overflow if overflow is None else _check_overflow(overflow),
        )
        return self._attached(subscriber, since)

    @asynccontextmanager
    async def _attached(
        self, subscriber: Subscriber, since: Mapping[str, str] | None = None
    ) -> AsyncIterator[Subscriber]:
        registry = self._registry  # the entered one, even if the channel is entered again
        if since:
            registry.hold(subscriber, tuple(since))
        try:
            await self._attach(registry, subscriber)
        except BaseException:
            registry.unhold(subscriber)
            raise
        try:
            if since:
                await self._replay(subscriber, since)
            if subscriber.groups and registry.start_recovery is not None:
                await self._note_heads(subscriber.groups)
            yield subscriber
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(registry, subscriber)

    async def _attach(self, registry: SubscriptionRegistry, subscriber: Subscriber) -> None:
        """Register `subscriber` and wait until every name of it is live at the broker.

        No channel-wide lock: each name has at most one broker call in flight,
        shared by whoever needs it (see `_broker_state`), so a subscribe
        stuck in an outage holds up neither other names nor leaving.
        """
        self._check_open()
        self._check_owner()
        await anyio.lowlevel.checkpoint()
        registry.add(subscriber)
        issued: BrokerCall | None = None
        try:
            while True:
                self._check_open()
                issued, others = registry.broker.claim(subscriber)
                if issued is None and not others:
                    break
                if issued is not None:
                    await self._broker_subscribe(issued.groups, issued.patterns)
                    registry.broker.finish(issued)
                    issued = None
                for call in others:
                    await call.wait()
                    if call.subscribing and isinstance(call.error, Exception):
                        raise call.error  # the subscribe this one waited for failed
                # Else another task's subscribe was cancelled, or an unsubscribe
                # ended: claim again.
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._release(registry, subscriber, issued, exc)
            raise
        subscriber._live = True

    async def _release(
        self,
        registry: SubscriptionRegistry,
        subscriber: Subscriber,
        failed: BrokerCall | None = None,
        error: BaseException | None = None,
    ) -> None:
        """End `subscriber`; unsubscribe what nobody needs any more, and what `failed` held.

        The registry and the broker state are updated before the first
        await: the subscriber is gone at once, and the unsubscribe waits for
        no other task.
        """
        subscriber._close()
        gone_groups, gone_patterns = registry.remove(subscriber)
        call = registry.broker.unsubscribe(gone_groups, gone_patterns, failed)
        if failed is not None:
            registry.broker.finish(failed, error)
        if call is None:
            return
        try:
            if self._state is _State.OPEN and registry is self._registry:
                await self._broker_unsubscribe(call.groups, call.patterns)
        finally:
            registry.broker.finish(call)

    # -- history ----------------------------------------------------------------

    async def history(
        self, group: str, limit: int | None = None, since: str | None = None
    ) -> list[Event]:
        """Events retained in `group`'s history, oldest first (history on).

        Without `since`, the newest `limit` events (all with None); with
        `since` (an `Event.position`), the first `limit` events after it, to
        page forward. Raises ``MessagesLost(reason="expired")`` if the
        history no longer reaches back to `since`, and `NotSupportedError`
        if the layer keeps no history.
        """
        self._check_open()
        self._check_owner()
        check_name(group, "group")
        if limit is not None:
            check_count("limit", limit, minimum=0)
        if since is not None:
            parse_position(since, "since")
        read_history = self._history_reader("history()")
        read = await read_history(self._layer, group, since, limit)
        if since is not None and not read.complete:
            raise MessagesLost("expired", None)
        return self._registry.decode_history(group, read)

    def _history_reader(self, what: str) -> ReadHistory:
        """The layer's ``read_history``; `NotSupportedError` naming the layer if it has none."""
        read_history = self._capabilities.history
        name = type(self._layer).__name__
        if read_history is None:
            raise NotSupportedError(
                f"{name} keeps no history, so {what} cannot be used; use a layer with the "
                f'"history" capability (memory, for one) and set its history_size'
            )
        if not self._layer.keeps_history:
            raise NotSupportedError(
                f"history is off on this {name}, so {what} cannot be used; turn it on with "
                "the layer option history_size (e.g. memory://?history_size=100)"
            )
        return read_history

    def _check_since(self, groups: tuple[str, ...], since: object) -> dict[str, str]:
        """``since=`` as ``{group: position}``, checked against `groups`."""
        self._history_reader("subscribe(..., since=...)")
        if isinstance(since, str):
            if len(set(groups)) > 1:
                raise ValueError(
                    "since= is one position, but a position belongs to one group and this "
                    f"subscription has {len(set(groups))}; pass since={{group: position, ...}}"
                )
            since = {groups[0]: since}
        if not isinstance(since, Mapping):
            raise TypeError(
                "since must be an Event.position (str) or a {group: position} mapping, "
                f"got {type(since).__name__}"
            )
        unknown = [group for group in since if group not in groups]
        if unknown:
            raise ValueError(
                f"since= names group(s) this subscription does not include: {unknown!r}"
            )
        for group, position in since.items():
            parse_position(position, f"since[{group!r}]")
        return dict(since)

    async def _replay(self, subscriber: Subscriber, since: Mapping[str, str]) -> None:
        """Read each group's history after its position, then hand the live events over."""
        read_history = self._history_reader("subscribe(..., since=...)")
        for group, position in since.items():
            read = await read_history(self._layer, group, position, None)
            self._registry.release(subscriber, group, read)

    async def _note_heads(self, groups: tuple[str, ...]) -> None:
        """Record the log's head for groups with no position yet, to recover them later.

        Best effort: a group whose head is unknown gets
        ``MessagesLost("reconnect")`` after a reconnect, as without history.
        """
        registry = self._registry
        read_history = self._capabilities.history
        assert read_history is not None
        for group in dict.fromkeys(groups):
            if group in registry.positions:
                continue
            try:
                read = await read_history(self._layer, group, None, 0)
            except ChannelsError as exc:
                logger.info("could not read the history head of %r: %s", group, exc)
                continue
            if group in registry.groups:
                registry.positions.setdefault(group, read.head)

    def _start_recovery(self, tasks: TaskGroup) -> None:
        """Called when the layer reports a reconnect: recover the held groups in a task."""
        self._recovery_round += 1
        if not self._recovering:
            self._recovering = True
            tasks.start_soon(self._recover)

    async def _recover(self) -> None:
        """Read every recovering group's log after its last position, then release it.

        A reconnect reported while reading makes the reads stale (the new gap
        may not be in them): read again, the live events staying held.
        """
        registry = self._registry
        read_history = self._capabilities.history
        assert read_history is not None
        try:
            while registry.recovering:
                round_number = self._recovery_round
                reads: dict[str, HistoryRead | None] = {}
                for group in list(registry.recovering):
                    try:
                        reads[group] = await read_history(
                            self._layer, group, registry.positions.get(group), None
                        )
                    except ChannelsError as exc:
                        logger.warning("could not recover %r from its history: %s", group, exc)
                        reads[group] = None
                if round_number != self._recovery_round:
                    continue
                for group, read in reads.items():
                    if group in registry.recovering:
                        registry.finish_recovery(group, read)
        finally:
            self._recovering = False

    async def _broker_subscribe(self, groups: Sequence[str], patterns: Sequence[str]) -> None:
        layer, capabilities = self._layer, self._capabilities
        if groups:
            if capabilities.multi_group is not None:
                await capabilities.multi_group.subscribe(layer, groups)
            else:
                for group in groups:
                    await layer.subscribe(group)
        if patterns:
            assert capabilities.patterns is not None
            await capabilities.patterns.subscribe(layer, patterns)

    async def _broker_unsubscribe(self, groups: Sequence[str], patterns: Sequence[str]) -> None:
        """Best effort, bounded in time: a failure is logged, never raised.

        The layer has already forgotten these names, so a reconnect will not
        bring them back; messages that still arrive for them are discarded.
        """
        if not (groups or patterns):
            return
        layer, capabilities = self._layer, self._capabilities
        try:
            with anyio.fail_after(self._unsubscribe_timeout):
                if groups:
                    if capabilities.multi_group is not None:
                        await capabilities.multi_group.unsubscribe(layer, groups)
                    else:
                        for group in groups:
                            await layer.unsubscribe(group)
                if patterns and capabilities.patterns is not None:
                    await capabilities.patterns.unsubscribe(layer, patterns)
        except Exception:
            logger.warning(
                "could not unsubscribe %s from the broker", [*groups, *patterns], exc_info=True
            )


def _nowait_publisher(layer: ChannelLayer) -> Callable[[str, bytes], bool] | None:
    """The layer's synchronous publish if its `publish` is just that plus a yield, else None.

    The memory layer delivers without waiting for anything: calling its
    `InMemoryChannelLayer.publish_nowait`, and yielding when that says so,
    is its `publish` without a coroutine per message. A subclass that
    overrides `publish` keeps having it called.
    """
    if type(layer).publish is InMemoryChannelLayer.publish:
        return layer.publish_nowait  # type: ignore[attr-defined, no-any-return]
    return None


def _item_error(exc: Exception, index: int) -> Exception:
    """`exc`, of the same type, saying that item `index` of a `publish_many` caused it."""
    text = f"publish_many item {index}: {exc} (nothing was sent)"
    try:
        error = type(exc)(text)
    except Exception:  # an exception type with another signature: annotate it instead
        exc.add_note(text)
        return exc
    return error


def _check_history_options(
    layer_class: type[ChannelLayer], url: str, options: Mapping[str, object]
) -> None:
    """`NotSupportedError` naming the layer if history options reach a layer without history."""
    query = {name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    given = sorted(HISTORY_OPTIONS & (set(options) | query))
    if given and capabilities_of(layer_class).history is None:
        raise NotSupportedError(
            f"{layer_class.__name__} keeps no history, so it cannot take {', '.join(given)}; "
            'use a layer with the "history" capability'
        )


def _check_buffer_size(buffer_size: object) -> int:
    if not isinstance(buffer_size, int) or isinstance(buffer_size, bool) or buffer_size < 1:
        raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
    return buffer_size


def _check_unsubscribe_timeout(timeout: object) -> float:
    problem = f"unsubscribe_timeout must be a positive number of seconds, got {timeout!r}"
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(problem)
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(problem)
    return float(timeout)


def _check_overflow(overflow: object) -> OverflowPolicy:
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
    return overflow
