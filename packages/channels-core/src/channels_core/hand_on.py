"""`HandOn`: deliveries read together with a call's answer go on just after the caller.

A connection that carries both the answers to its calls and deliveries (a
PostgreSQL listening connection, a Redis RESP3 pub/sub connection) often
reads a process's own message in the same chunk as the answer to the
publish that sent it. Handing the message on at once would route it and
wake its subscribers before the publisher; holding it until just after the
caller has been woken lets a sequential publisher write its next message
first, so that the process works while the server does instead of after it
(as asyncpg hands on its own notifications, with ``call_soon``). The
hand-on waits one more turn of the event loop than the caller's wake-up,
for callers woken by a relay: the coalesced publishers of a batch are
woken by the channel's sender task (`channels_core._coalesce`), which the
answer wakes; one turn later they have published again and the sender
has written their next batch, and the deliveries are routed while that
batch is on the wire.

A reading protocol `hold`s each delivery of a chunk, then calls `release`
at the end of the chunk, saying whether a call was answered in it; before
anything that must come after the held deliveries (a subscription change,
the connection's loss) it calls `flush`. asyncio only: the layers that use
it drive asyncio transports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HandOn"]

T = TypeVar("T")


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
        a ``call_soon`` runs after it; the hand-on goes one ``call_soon``
        later still (`_after_relay`), after the callers a relay wakes. A
        hand-on already scheduled takes the deliveries of later chunks too,
        in order.
        """
        if not self._held or self._scheduled:
            return
        if answered:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._after_relay)
        else:
            self.flush()

    def flush(self) -> None:
        """Hand on every held delivery now, in order (a scheduled hand-on then finds none)."""
        self._scheduled = False
        if self._held:
            held, self._held = self._held, []
            self._deliver(held)

    def _after_relay(self) -> None:
        """The caller has run; a relay it woke (a coalescing sender) has scheduled its own."""
        if self._scheduled:  # else flushed meanwhile
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        if not self._scheduled:  # flushed meanwhile
            return
        try:
            self.flush()
        except Exception as exc:
            if self._on_error is None:
                raise
            self._on_error(exc)
