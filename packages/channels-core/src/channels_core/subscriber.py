"""A subscriber: the bounded buffer between the fan-out and one consumer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import anyio

from .event import Event
from .exceptions import ChannelClosedError, LossReason, MessagesLost

__all__ = ["OverflowPolicy", "Subscriber"]

#: What a full buffer does with a new message: ``"drop_oldest"`` makes room by
#: discarding the oldest buffered event (the subscriber stays current),
#: ``"drop_newest"`` discards the new message (the subscriber keeps the past).
#: Either way the publisher and the other subscribers never wait, and the
#: subscriber is told: its iteration raises `MessagesLost` where the gap is.
OverflowPolicy = Literal["drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: tuple[OverflowPolicy, ...] = ("drop_oldest", "drop_newest")


@dataclass(frozen=True, slots=True)
class _Gap:
    """A marker in the buffer: messages went missing at this point."""

    reason: LossReason
    count: int | None

    def merge(self, other: _Gap) -> _Gap:
        if self.reason == other.reason == "overflow":
            return _Gap("overflow", (self.count or 0) + (other.count or 0))
        reasons = {self.reason, other.reason}
        return _Gap("reconnect" if "reconnect" in reasons else "expired", None)


_ONE_DROPPED = _Gap("overflow", 1)


class _Waiter(Protocol):
    """What a subscriber waits on: an `asyncio.Future` on asyncio, else `_EventWaiter`."""

    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...

    def __await__(self) -> Generator[Any, None, object]: ...


class _EventWaiter:
    """A subscriber's wait off asyncio (trio): an `anyio.Event` with a future's interface."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def done(self) -> bool:
        return self._event.is_set()

    def set_result(self, result: None, /) -> None:
        self._event.set()

    def __await__(self) -> Generator[Any, None, object]:
        return self._event.wait().__await__()


def _waiter_factory() -> Callable[[], _Waiter]:
    """How this event loop's subscribers make their waiters (looked up once per subscriber).

    On asyncio, a bare future of the loop: an `anyio.Event` would be three
    objects made per wait, and asyncio's task steps take their fast path
    only for a future of the exact type. In a fan-out each message costs
    one wait per subscriber, so that is most of the wake-up (issue #15).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio)
        return _EventWaiter
    if type(loop).create_future is asyncio.BaseEventLoop.create_future:
        return partial(asyncio.Future, loop=loop)  # what it does, without its frame
    return loop.create_future


def _cancelled_for_another_task(exc: BaseException) -> bool:
    """True if the asyncio future this task waited on was cancelled, but this task was not.

    Tasks receiving from one subscriber share its future; asyncio cancels
    the future a cancelled task waits on, which would wake the others with
    a `CancelledError` of nobody's asking. They wait again instead.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not asyncio
        return False
    return task is not None and not task.cancelling()


class Subscriber:
    """The async iterator of `Event` that `Channel.subscribe` yields.

    Iteration never ends on its own while the subscription is live; it ends
    (after the buffered events) when the subscription or channel is left. If
    messages were lost, iteration raises `MessagesLost` at the point of the
    gap; the subscription stays live and iteration can go on.

    The end is reported once: by `StopAsyncIteration` (which ends an
    ``async for``) or by `receive`'s `ChannelClosedError`. Every later call
    raises `ChannelClosedError`, so a loop that starts iterating again (say,
    ``while True: async for ...``) fails at once instead of spinning without
    ever yielding to the event loop.
    """

    __slots__ = (
        "_buffer",
        "_capacity",
        "_closed",
        "_drop_oldest",
        "_end_reported",
        "_live",
        "_new_waiter",
        "_size",
        "_stuck",
        "_waiter",
        "_woken",
        "dropped",
        "groups",
        "patterns",
    )

    def __init__(
        self,
        groups: tuple[str, ...],
        patterns: tuple[str, ...],
        buffer_size: int,
        overflow: OverflowPolicy,
    ) -> None:
        self.groups = groups
        self.patterns = patterns
        #: Messages discarded because the buffer was full, since subscribing.
        self.dropped = 0
        self._buffer: deque[Event | _Gap] = deque()
        self._size = 0  # events in the buffer, not counting gap markers
        self._capacity = buffer_size
        self._drop_oldest = overflow == "drop_oldest"
        self._waiter: _Waiter | None = None
        self._new_waiter: Callable[[], _Waiter] | None = None
        self._woken = False  # woken by a push and not resumed since
        self._stuck = False  # filled up without reading: the publisher no longer waits
        self._closed = False
        self._end_reported = False  # the end was raised once; later calls are errors
        self._live = False  # set once the broker confirmed the subscription

    def __repr__(self) -> str:
        names = ", ".join(map(repr, self.groups + self.patterns))
        state = "closed" if self._closed else f"{self._size} buffered"
        return f"<Subscriber {names} ({state})>"

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        buffer = self._buffer
        while not buffer:
            if self._closed:
                if self._end_reported:
                    raise _ended()
                self._end_reported = True
                raise StopAsyncIteration
            waiter = self._waiter
            if waiter is None:
                # The backend is looked up once, at the first wait.
                if self._new_waiter is None:
                    self._new_waiter = _waiter_factory()
                waiter = self._waiter = self._new_waiter()
            try:
                await waiter
            except BaseException as exc:
                if waiter.done():  # a cancelled future cannot be waited on again
                    self._waiter = None  # (an unset one stays: other tasks may wait on it)
                if _cancelled_for_another_task(exc):
                    continue
                raise
            self._woken = False
        self._stuck = False
        item = buffer.popleft()
        if type(item) is Event:
            self._size -= 1
            return item
        assert isinstance(item, _Gap)
        raise MessagesLost(item.reason, item.count)

    async def receive(self) -> Event:
        """The next event; `ChannelClosedError` once the subscription has ended."""
        buffer = self._buffer
        if buffer and type(buffer[0]) is Event:  # at hand: no second coroutine
            self._size -= 1
            self._stuck = False
            return buffer.popleft()  # type: ignore[return-value]
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise _ended() from None

    @property
    def closed(self) -> bool:
        """True once the subscription has ended."""
        return self._closed

    # -- called by the channel's fan-out (synchronous, never blocks) --------

    def _push(self, event: Event) -> bool:
        """Buffer `event`; True if the publisher should yield to let this subscriber catch up.

        That is while the buffer is at least half full *and* the subscriber
        has been woken and not run since: it is reading, just not scheduled
        yet. Otherwise a half-full buffer asks until it is full: a reader
        started but not yet run gets its turn before its buffer overflows
        (on trio a yield may run the publisher first, so once is not
        enough). One that fills up without reading is taken as stuck and
        asks no more until it reads, so a subscriber that stopped reading
        costs the publisher half a buffer of yields, not one per message.
        """
        if self._closed:
            return False
        if self._size >= self._capacity:
            self.dropped += 1
            if self._drop_oldest:
                self._discard_oldest()
            else:
                self._mark(_ONE_DROPPED)
                return False
        self._buffer.append(event)
        self._size += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self._woken = True
            if not waiter.done():  # else cancelled: that receive raises, and the next one reads
                waiter.set_result(None)
        if 2 * self._size < self._capacity:
            return False
        if self._woken:
            return True
        if self._stuck:
            return False
        if self._size >= self._capacity:
            self._stuck = True
            return False
        return True

    def _replay(self, items: list[Event | LossReason]) -> None:
        """Buffer events replayed from the history, past the capacity, with any loss before them.

        A replay is bounded by the layer's ``history_size``; cutting it to
        the buffer would lose what the subscriber asked for.
        """
        for item in items:
            if isinstance(item, Event):
                self._buffer.append(item)
                self._size += 1
            else:
                self._mark(_Gap(item, None))
        self._wake()

    def _mark_lost(self, reason: LossReason, count: int | None) -> None:
        """Note a gap the layer reported, for subscriptions whose block had started before it."""
        if self._live and not self._closed:
            self._mark(_Gap(reason, count))

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _mark(self, gap: _Gap) -> None:
        buffer = self._buffer
        if buffer and type(last := buffer[-1]) is _Gap:
            buffer[-1] = last.merge(gap)
        else:
            buffer.append(gap)
        self._wake()

    def _discard_oldest(self) -> None:
        """Drop the oldest event, folding the loss into a gap marker at the front."""
        buffer = self._buffer
        gap = _ONE_DROPPED
        while True:
            item = buffer.popleft()
            if type(item) is _Gap:
                gap = gap.merge(item)
            else:
                break
        self._size -= 1
        while buffer and type(head := buffer[0]) is _Gap:
            gap = gap.merge(head)
            buffer.popleft()
        buffer.appendleft(gap)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


def _ended() -> ChannelClosedError:
    return ChannelClosedError(
        "this subscription has ended (its subscribe block or its channel was left) "
        "and will never yield another event; subscribe again to go on receiving"
    )
