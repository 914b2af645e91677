"""`HandOn`: deliveries read together with a call's answer go on just after the caller.

A connection that carries both the answers to its calls and deliveries (a
PostgreSQL listening connection, a Redis RESP3 pub/sub connection) often
reads a process's own message in the same chunk as the answer to the
publish that sent it. Handing the message on at once would route it and
wake its subscribers before the publisher; holding it until just after the
caller has been woken lets a sequential publisher write its next message
first, so that the process works while the server does instead of after it
(as asyncpg hands on its own notifications, with ``call_soon``).

Some callers are woken by a *relay*: the coalesced publishers of a batch
are woken by the channel's sender task (`channels_core._coalesce`),
which the answer wakes. The sender marks the turn in which its callers
run (`relaying`); a hand-on that finds one under way waits one more turn
of the event loop, so that they have published again and the sender has
written their next batch, and the deliveries are routed while that batch
is on the wire. Without a relay it costs no extra turn.

A reading protocol `hold`s each delivery of a chunk, then calls `release`
at the end of the chunk, saying whether a call was answered in it; before
anything that must come after the held deliveries (a subscription change,
the connection's loss) it calls `flush`. asyncio only: the layers that use
it drive asyncio transports.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["TURNS", "HandOn", "relaying"]

T = TypeVar("T")

#: Turns of the event loop after the read that held them by which a hand-on's
#: deliveries have gone on: one for the caller, one more for a relay's callers.
TURNS = 2


class _Relays(threading.local):
    """Relays of this thread (hence of its event loop) whose callers have yet to run."""

    pending = 0


_relays = _Relays()


@contextmanager
def relaying() -> Iterator[None]:
    """Around a relay's yield to the callers it has just woken (a hand-on waits for them)."""
    _relays.pending += 1
    try:
        yield
    finally:
        _relays.pending -= 1


class HandOn(Generic[T]):
    """Deliveries read but not handed on yet, in arrival order, and when they go.

    `deliver` gets every held delivery, in order, as one list; if it raises,
    the error propagates from `flush` (or, when scheduled, to `on_error`).
    """

    __slots__ = ("_deliver", "_held", "_on_error", "_scheduled")

    def __init__(
        self,
        deliver: Callable[[list[T]], None],
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._on_error = on_error
        self._held: list[T] = []
        self._scheduled = False

    def hold(self, delivery: T) -> None:
        """Keep `delivery` until the end of the chunk (`release`) or a `flush`."""
        self._held.append(delivery)

    def release(self, answered: bool) -> None:
        """The chunk is read: hand on what it held, after the caller if a call was `answered`.

        The caller's wake-up is already scheduled when its answer is set, so
        a ``call_soon`` runs after it (`_after_caller`), and after the
        callers a relay woke there if need be. A hand-on already scheduled
        takes the deliveries of later chunks too, in order.
        """
        if not self._held or self._scheduled:
            return
        if answered:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._after_caller)
        else:
            self.flush()

    def flush(self) -> None:
        """Hand on every held delivery now, in order (a scheduled hand-on then finds none)."""
        self._scheduled = False
        if self._held:
            held, self._held = self._held, []
            self._deliver(held)

    def _after_caller(self) -> None:
        """The caller has run; if it was a relay, its callers run next, and then the hand-on."""
        if _relays.pending:
            asyncio.get_running_loop().call_soon(self._scheduled_flush)
        else:
            self._scheduled_flush()

    def _scheduled_flush(self) -> None:
        if not self._scheduled:  # flushed meanwhile
            return
        try:
            self.flush()
        except Exception as exc:
            if self._on_error is None:
                raise
            self._on_error(exc)
