"""The publishing connections: the layer writes the statements and reads the replies itself.

asyncpg opens each connection (address, TLS, authentication, server
settings); then `take_transport` hands its socket to a `Lane`, and
`PublishingConnections.call` writes the statement's Bind + Execute + Sync
(and its Parse, the first time on that connection) straight to it, and
reads the replies with `_pgwire`. That skips what asyncpg charges per
statement in Python (its execute chain, statement cache lookup, timeout
handling) and what a pool acquire and release would.

What stays per call: one connection runs one call at a time; a call whose
connection fails, times out or is cancelled part-way closes that
connection (never reused with replies unread), and the next call opens a
new one. An error the server answers (`ErrorResponse`) fails that call
alone, as asyncpg's exception for its SQLSTATE; the connection stays in
use. The deadline is one lazy timer for all calls
(`channels_core.deadlines.Deadlines`, as the Redis layer's), not a timer
or cancel scope per call; only opening a connection or waiting for a free
one runs under a cancel scope.

The listening connection is shared in (`share`): a call of a statement
that only NOTIFYs runs there when it is idle, else on the publishing
connections. On it one backend answers a publish and delivers the
process's own notification of it, instead of waking a second backend to
notify the listening connection (see the package README for what it
saves). A statement that writes a table (a large payload's) never runs
there: waiting for a lock an application holds on that table, it would
hold up every notification of the process, and the health check after
them. Since nothing there waits for long, a call that may run there and
finds every publishing connection in use takes whichever is free first,
that one or one of them (`_next_free`). A call cancelled or timed out
there leaves its answer to be read: the connection carries the
subscriptions, and is closed only when it fails (the listener's health
check notices a server gone silent).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg.exceptions

from channels_core.deadlines import Deadlines
from channels_core.slots import Slots

from ._connection import take_transport
from ._lane import Lane, server_error
from ._pgwire import bind_execute, parse

__all__ = ["PublishingConnections"]


class PublishingConnections:
    """Up to `size` connections opened by `connect`, each used by one call at a time."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        self._connect = connect
        self._slots: Slots[Lane] = Slots(
            self._open,
            size,
            usable=Lane.usable,
            close=Lane.abort,
            error=asyncpg.exceptions.InterfaceError,
        )
        self._deadlines: Deadlines[Lane] = Deadlines()
        self._busy = self._deadlines.running  # the lanes with a call on them
        self._loop = self._deadlines.loop()
        self._names = 0  # statements prepared so far (their names)
        self._shared: Lane | None = None  # see `share`
        self._shareable: frozenset[str] = frozenset()  # the statements run there

    def clock(self) -> float:
        """The event loop's time, which deadlines are given in."""
        return self._loop.time()

    async def call(self, query: str, arguments: Sequence[Any], deadline: float) -> None:
        """Run `query` with `arguments` once; return when the server has answered.

        Raises asyncpg's exception for the server's error (the connection
        stays usable); `TimeoutError` if the answer is not there by
        `deadline` (event loop time); asyncpg's connection errors if the
        connection fails (then it is closed, and so after a timeout or a
        cancellation on a publishing connection).
        """
        shared = lane = self._shared
        if (
            lane is not None
            and lane.waiter is None
            and not lane.reserved
            and not lane.broken
            and query in self._shareable
        ):
            lane.expired = False
        else:
            shared = None
            slots = self._slots
            lane = slots.idle.pop() if slots.idle else None
            if lane is None or lane.broken or lane.rest:  # `usable`, inlined
                if lane is not None:
                    slots.lost(lane)
                with anyio.fail_after(max(deadline - self._loop.time(), 0.0)):
                    lane = await self._next_free(query)
                if lane is self._shared:
                    shared = lane
        name = lane.prepared.get(query)
        try:
            if name is None:
                self._names += 1
                name = b"channels_%d" % self._names
                lane.parsing = (query, name)
                message = parse(name, query) + bind_execute(name, arguments)
            else:
                lane.parsing = None
                message = bind_execute(name, arguments)
        except BaseException:  # arguments it cannot send: nothing was written
            if lane is not shared:
                self._done(lane)
            raise
        waiter = lane.waiter = self._loop.create_future()
        lane.error = None
        self._deadlines.start(lane, deadline)
        try:
            assert lane.transport is not None
            lane.transport.write(message)
            error = await waiter
        except BaseException as exc:
            if lane.waiter is None or lane.waiter is waiter:  # else the deadline is the next call's
                self._deadlines.end(lane)
            if lane is not shared:  # else failed or timed out: `Lane.expire` keeps it
                self._slots.lost(lane)
            if lane.expired and isinstance(exc, Exception):
                raise TimeoutError("no answer from the server in time") from exc
            raise
        # On the shared lane another call may have started since the answer came
        # (a task woken by its notification): its deadline is not this call's to end.
        if lane.waiter is None:
            self._deadlines.end(lane)
        if lane is not shared:
            self._done(lane)
        if error is not None:
            raise server_error(error)

    async def _next_free(self, query: str) -> Lane:
        """The connection a call of `query` gets when none is free now.

        A statement run on the listening connection too takes whichever is
        free first, that one or a publishing connection, if every
        publishing connection is in use: those may be held up for long (a
        large payload's statement waiting for a lock), the listening one
        never is. Else the next publishing connection.
        """
        slots = self._slots
        while self._shared is not None and query in self._shareable:
            if slots.idle or slots.free:
                break
            lane, publishing = await self._first_free(query)
            if publishing:
                return lane
            # The listening one is the call's if no other call took it meanwhile.
            if (
                lane is self._shared
                and lane.waiter is None
                and not lane.reserved
                and not lane.broken
            ):
                lane.expired = False
                return lane
        return await slots.acquire()

    async def _first_free(self, query: str) -> tuple[Lane, bool]:
        """A publishing connection or the listening one, whichever is free first, and
        whether it is a publishing connection.

        Raises what waiting for a publishing connection raises (the
        connections closed, one failing to open), as itself, unless the
        listening one was free first. A publishing connection won but not
        returned (cancelled, or both free at once) goes back.
        """
        won: list[tuple[Lane, bool]] = []
        failed: list[Exception] = []

        async def take(wait: Callable[[], Awaitable[Lane]], publishing: bool) -> None:
            try:
                won.append((await wait(), publishing))
            except Exception as exc:
                failed.append(exc)
            tasks.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(take, self._slots.acquire, True)
                tasks.start_soon(take, functools.partial(self._listening_when_idle, query), False)
            if not won:
                raise failed[0]
        except BaseException:
            self._give_back(won)
            raise
        self._give_back(won[1:])
        return won[0]

    def _give_back(self, won: list[tuple[Lane, bool]]) -> None:
        """The publishing connections of `won` go back unused."""
        for lane, publishing in won:
            if publishing:
                self._done(lane)

    async def _listening_when_idle(self, query: str) -> Lane:
        """The listening connection once it can take a call of `query` (never, if it goes)."""
        while True:
            shared = self._shared
            if shared is None or shared.broken or query not in self._shareable:
                await anyio.sleep_forever()  # a publishing connection will do
            elif shared.waiter is not None:
                await shared.until_idle()
            elif shared.reserved:  # the listener's statement is about to start there
                await anyio.lowlevel.checkpoint()
            else:
                return shared

    def _done(self, lane: Lane) -> None:
        """A call has finished with publishing connection `lane`: it goes back to the idle ones."""
        slots = self._slots
        if slots.closed or slots.waiting:
            slots.release(lane)
        else:
            slots.idle.append(lane)  # `release`, inlined

    def share(self, lane: Lane | None, statements: frozenset[str] = frozenset()) -> None:
        """Run calls of `statements` on `lane` too while it is idle (the listening
        connection); None: no more.

        `statements` must never wait for long on the server (no lock to wait
        for): while one runs, the lane delivers no notification.
        """
        self._shared = lane
        self._shareable = statements if lane is not None else frozenset()

    def adopt(self, connection: Any) -> None:
        """Take an open asyncpg `connection` as an idle publishing connection, if there is
        room (else, or if it is not usable, it is closed)."""
        lane = Lane()
        try:
            take_transport(connection, lane)
        except Exception:
            connection.terminate()
            return
        if not self._slots.adopt(lane):
            lane.close()

    async def aclose(self, timeout: float) -> None:
        """Close every connection for good (the layer disconnects); calls running or
        waiting fail.

        Idle connections are closed politely: the server hears a goodbye, and
        this waits (shielded, at most `timeout` seconds) until it has let
        them go, so none is left on the server once the layer has closed.
        """
        self._deadlines.cancel()
        shared, self._shared = self._shared, None  # the listener closes that one
        idle, self._slots.idle = self._slots.idle, []
        self._slots.close()
        for lane in list(self._busy):
            if lane is not shared:
                lane.abort()  # its call fails
        goodbyes = [lane.goodbye() for lane in idle]
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            for gone in goodbyes:
                await gone
        for lane in idle:
            lane.abort()  # a server that did not answer the goodbye in time

    # -- connections --------------------------------------------------------------------

    async def _open(self) -> Lane:
        connection = await self._connect()
        lane = Lane()
        try:
            take_transport(connection, lane)
        except BaseException:
            connection.terminate()
            raise
        return lane
