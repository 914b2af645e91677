"""`Slots`: up to `size` connections of a layer, each used by one call at a time.

What a layer's own publishing connections share whatever the broker:
connections are opened on demand up to `size`, an idle one is reused (the
most recently used first), and calls finding all of them in use wait in
order: a released connection is handed to the first waiting call, never
left idle for a newcomer to take. A connection found unusable, or lost by
its call, frees its slot for a new one.

The layer keeps the fast path to itself: ``slots.idle.pop()`` and
``slots.idle.append()`` when nobody waits (`release` otherwise).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

__all__ = ["Slots"]

T = TypeVar("T")


class _Waiter(Generic[T]):
    """A call waiting for a connection: woken with one handed over, or with a free slot."""

    __slots__ = ("event", "item")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.item: T | None = None


class Slots(Generic[T]):
    """Up to `size` connections made by `opener`, handed out one call at a time.

    `usable` tells whether an idle one may serve a call, `close` closes one
    at once (no await: it runs when cancelled too); `error` makes the
    layer's connection error from a message (every slot closed, or none
    free within `wait_timeout` seconds when that is given).
    """

    def __init__(
        self,
        opener: Callable[[], Awaitable[T]],
        size: int,
        *,
        usable: Callable[[T], bool],
        close: Callable[[T], None],
        error: Callable[[str], Exception],
        wait_timeout: float | None = None,
    ) -> None:
        self._open = opener
        self._usable = usable
        self._close = close
        self._error = error
        self._size = size
        self._wait_timeout = wait_timeout
        self._free = size  # connections that may still be opened
        self._waiters: deque[_Waiter[T]] = deque()
        #: Idle connections, most recently used last.
        self.idle: list[T] = []
        #: Closed for good: no connection is handed out any more.
        self.closed = False

    @property
    def free(self) -> int:
        """Slots holding no connection (connections that may still be opened)."""
        return self._free

    @property
    def waiting(self) -> bool:
        """Whether a call waits for a connection (then `release`, not ``idle.append``)."""
        return bool(self._waiters)

    async def acquire(self) -> T:
        """An idle usable connection, else a new one, else the next one released."""
        while True:
            while self.idle:
                item = self.idle.pop()
                if self._usable(item):
                    return item
                self.lost(item)
            if self.closed:
                raise self._error("the layer's publishing connections are closed")
            if self._free > 0:
                self._free -= 1
                try:
                    item = await self._open()
                except BaseException:
                    self._free += 1
                    self._wake()
                    raise
                if self.closed:  # closed while it was being opened
                    self.lost(item)
                    raise self._error("the layer's publishing connections are closed")
                return item
            waiter: _Waiter[T] = _Waiter()
            self._waiters.append(waiter)
            try:
                with anyio.move_on_after(self._wait_timeout):
                    await waiter.event.wait()
            except BaseException:
                self._withdraw(waiter)
                raise
            if not waiter.event.is_set():
                self._waiters.remove(waiter)
                raise self._error(
                    f"no publishing connection free within {self._wait_timeout:g} s "
                    f"(all {self._size} in use)"
                )
            handed = waiter.item
            if handed is not None:
                if self._usable(handed):
                    return handed
                self.lost(handed)
            # Else a slot was freed (a connection was lost): open one in it.

    def adopt(self, item: T) -> bool:
        """Take an already open connection as an idle one; False (not taken) if no slot is free."""
        if self.closed or self._free <= 0:
            return False
        self._free -= 1
        self.release(item)
        return True

    def release(self, item: T) -> None:
        """`item` is free again: to the first waiting call, else idle."""
        if self.closed:
            self._close(item)
            self._free += 1
        elif self._waiters:
            waiter = self._waiters.popleft()
            waiter.item = item
            waiter.event.set()
        else:
            self.idle.append(item)

    def lost(self, item: T) -> None:
        """`item` is closed and forgotten: its slot is free for a new connection."""
        self._close(item)
        self._free += 1
        self._wake()

    def close(self) -> None:
        """Close the idle connections and hand out no more (waiting calls fail).

        Connections in use stay with their calls, which close them (their
        `release` does) or lose them.
        """
        self.closed = True
        self.close_idle()
        while self._waiters:
            self._waiters.popleft().event.set()

    def close_idle(self) -> None:
        """Close every idle connection (the next calls open new ones)."""
        idle, self.idle = self.idle, []
        for item in idle:
            self.lost(item)

    def _wake(self) -> None:
        """Tell the first waiting call that a slot is free (no connection handed over)."""
        if self._waiters:
            self._waiters.popleft().event.set()

    def _withdraw(self, waiter: _Waiter[T]) -> None:
        """A waiting call gave up: pass on what it was handed, if anything."""
        if not waiter.event.is_set():
            self._waiters.remove(waiter)
        elif waiter.item is not None:
            self.release(waiter.item)
        else:
            self._wake()
