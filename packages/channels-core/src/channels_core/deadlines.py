"""`Deadlines`: one lazy timer bounding every running call of a layer's own connections.

A cancel scope per call (``anyio.fail_after``, ~15 us) or a timer per call
(a handle pushed on and cancelled off the event loop's heap) costs more
than a publish's own work. Instead each call notes its deadline on its
connection (`start`), and one timer expires the connections whose call is
past it when it fires, then re-arms for the earliest deadline still
running. A call starting only re-arms the timer if its deadline is earlier
than the armed one; a call ending (`end`) leaves the timer be.

Expiring is the connection's business (`Expiring.expire`: typically abort
its transport, which fails the call's read or write). asyncio only: the
layers that use it drive asyncio transports.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

__all__ = ["Deadlines", "Expiring"]


class Expiring(Protocol):
    """A connection whose call a `Deadlines` bounds."""

    #: Event loop time by which the running call must end (set by `Deadlines.start`).
    deadline: float

    def expire(self) -> None:
        """The call's time is up: end it (close the connection), without awaiting."""


E = TypeVar("E", bound=Expiring)


class Deadlines(Generic[E]):
    """The connections with a call running, and the one timer that expires them."""

    __slots__ = ("_armed", "_loop", "_timer", "running")

    def __init__(self) -> None:
        #: The connections with a call running: a dict as an ordered set.
        self.running: dict[E, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when `_timer` fires

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (looked up once): deadlines are in its time."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def start(self, connection: E, deadline: float) -> None:
        """A call on `connection` must end by `deadline` (event loop time)."""
        connection.deadline = deadline
        self.running[connection] = None
        if self._timer is None or deadline < self._armed:
            self._arm(deadline)

    def end(self, connection: E) -> None:
        """The call on `connection` ended (idempotent)."""
        self.running.pop(connection, None)

    def cancel(self) -> None:
        """Stop the timer (the connections are being closed for good)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self.loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop().time()
        earliest = None
        for connection in list(self.running):
            if connection.deadline <= now:
                del self.running[connection]
                connection.expire()
            elif earliest is None or connection.deadline < earliest:
                earliest = connection.deadline
        if earliest is not None:
            self._arm(earliest)
