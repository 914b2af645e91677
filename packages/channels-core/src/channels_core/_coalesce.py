"""Coalesced publishing: concurrent `Channel.publish` calls share the wire.

A publish that finds nothing in flight goes straight to the layer's
`publish`, so a lone sequential publisher pays nothing extra. One that
finds a publish already in flight joins the *open batch* (a new one once
it holds `MAX_BATCH` messages); the channel's sender task hands each batch
to the layer's `publish_many` (one broker round trip: a Redis pipeline,
one PostgreSQL statement) as soon as it is idle, so while one batch is on
the wire the next one fills up.

What stays per call:

* **the answer**: every caller returns only when the broker has accepted
  the batch holding its message, and gets the batch's error otherwise (a
  failed batch tells none of its callers "sent");
* **timeouts and cancellation**: a caller cancelled while its message is
  still in the open batch withdraws it (it is never sent); once the batch
  is on the wire, the others still get their answer, and the cancelled one
  leaves as a cancelled `publish` does (the message may have been sent);
* **order**: a publisher awaits each publish before the next, so its
  messages go out in order whichever path they take.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel

from .exceptions import ChannelClosedError
from .hand_on import relaying
from .subscriber import _Waiter, _waiter_factory

__all__ = ["CoalescingPublisher"]

#: Messages at most in one batch: bounds the work of one round trip.
MAX_BATCH = 1000


class _Batch:
    """Messages waiting for one `publish_many`; withdrawn ones become None.

    Each caller waits on a waiter of its own (on asyncio a bare future, as a
    subscriber's: cheaper than an `anyio.Event`, and cancelling one caller's
    wait touches no other's).
    """

    __slots__ = ("error", "items", "sent", "waiters")

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes] | None] = []
        self.waiters: list[_Waiter] = []
        self.error: BaseException | None = None
        self.sent = False  # handed to the layer: too late to withdraw

    def answer(self) -> None:
        """Wake every caller (each then reads `error`)."""
        for waiter in self.waiters:
            if not waiter.done():  # else cancelled: that caller has left
                waiter.set_result(None)


class CoalescingPublisher:
    """The publish path of one open channel whose layer has ``publish-many``.

    `run` is the sender task, started in the channel's task group; when it
    ends (the channel is left), every message not yet answered gets
    `ChannelClosedError`.
    """

    def __init__(
        self,
        publish: Callable[[str, bytes], Awaitable[None]],
        publish_many: Callable[[Sequence[tuple[str, bytes]]], Awaitable[None]],
    ) -> None:
        self._publish = publish
        self._publish_many = publish_many
        self._in_flight = 0  # publishes and batches on the wire
        #: Batches waiting for the sender, oldest first; new publishes join the
        #: newest until it holds `MAX_BATCH` messages.
        self._waiting: deque[_Batch] = deque()
        self._ready = anyio.Event()  # a batch is waiting for the sender
        self._closed = False
        self._new_waiter: Callable[[], _Waiter] | None = None  # looked up at the first wait

    async def publish(self, group: str, payload: bytes) -> None:
        """Send one message, alone or in a batch; return once the broker accepted it."""
        if not self._in_flight:
            self._in_flight += 1
            try:
                await self._publish(group, payload)
            finally:
                self._in_flight -= 1
            return
        if self._closed:
            raise _closed_error()
        waiting = self._waiting
        batch = waiting[-1] if waiting else None
        if batch is None or len(batch.items) >= MAX_BATCH:
            batch = _Batch()
            waiting.append(batch)
            self._ready.set()
        index = len(batch.items)
        batch.items.append((group, payload))
        new_waiter = self._new_waiter
        if new_waiter is None:
            new_waiter = self._new_waiter = _waiter_factory()
        waiter = new_waiter()
        batch.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if not batch.sent:
                batch.items[index] = None  # withdrawn: never sent
            raise
        if batch.error is not None:
            raise batch.error

    async def run(self) -> None:
        """The sender: hand each open batch to the layer, one at a time, until cancelled."""
        try:
            while True:
                await self._ready.wait()
                self._ready = anyio.Event()
                while self._waiting:
                    await self._send(self._waiting.popleft())
        finally:
            self._closed = True
            for batch in self._waiting:
                batch.error = _closed_error()
                batch.answer()
            self._waiting.clear()

    async def _send(self, batch: _Batch) -> None:
        batch.sent = True
        items = [item for item in batch.items if item is not None]
        self._in_flight += 1
        try:
            try:
                if items:
                    await self._publish_many(items)
            except Exception as exc:
                batch.error = exc
            except BaseException:  # the sender is cancelled: the channel is being left
                batch.error = _closed_error()
                raise
            finally:
                batch.answer()
            # Let the callers just answered publish again before the next batch
            # leaves (still "in flight", so they join it): one batch per round of
            # publishers, instead of two half-size batches taking turns. The
            # batch's own messages are handed on after that (`relaying`).
            with relaying():
                await anyio.lowlevel.checkpoint()
        finally:
            self._in_flight -= 1


def _closed_error() -> ChannelClosedError:
    return ChannelClosedError(
        "the channel was left while this message waited to be sent, or was being sent: "
        "it may not have reached the broker"
    )
