"""The publishing connections: the layer writes the statements and reads the replies itself.

asyncpg opens each connection (address, TLS, authentication, server
settings); then `take_transport` hands its socket to a `_Lane`, and
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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import anyio
import asyncpg
import asyncpg.exceptions

from channels_core.deadlines import Deadlines
from channels_core.slots import Slots

from ._connection import take_transport
from ._pgwire import HEADER, bind_execute, error_fields, parse

__all__ = ["PublishingConnections"]

#: The Terminate message: a polite goodbye before closing the socket.
_TERMINATE = b"X\x00\x00\x00\x04"
#: Server messages a call reads past: BindComplete, DataRow, CommandComplete,
#: NoData, EmptyQueryResponse, NoticeResponse, ParameterStatus, NotificationResponse.
_IGNORED = frozenset((b"2", b"D", b"C", b"n", b"I", b"N", b"S", b"A"))
#: Severities after which the server closes the connection.
_FATAL = frozenset(("FATAL", "PANIC"))


class _Lane(asyncio.Protocol):
    """One connection, reading its own replies: the transport's protocol after take-over."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.rest = b""  # the start of a message not all received yet
        #: query -> the name it was prepared under on this connection.
        self.prepared: dict[str, bytes] = {}
        self.waiter: asyncio.Future[dict[str, str] | None] | None = None
        self.error: dict[str, str] | None = None  # the running call's ErrorResponse
        self.parsing: tuple[str, bytes] | None = None  # the running call's Parse
        self.deadline = 0.0
        self.expired = False
        #: Closed, closing, or told something that leaves it unusable.
        self.broken = False
        self._fatal: dict[str, str] | None = None
        self._gone: asyncio.Future[None] | None = None  # see `goodbye`

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not a check: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Walk the complete messages (any chunking); keep a partial one for later."""
        buffer = self.rest + data if self.rest else data
        pos, size = 0, len(buffer)
        while size - pos >= 5:
            kind, length = HEADER.unpack_from(buffer, pos)
            end = pos + 1 + length
            if length < 4:
                self._break(asyncpg.exceptions.ProtocolViolationError(f"bad length {length}"))
                return
            if end > size:
                break
            if kind not in _IGNORED and not self._handle(kind, buffer[pos + 5 : end]):
                return
            pos = end
        self.rest = buffer[pos:] if pos < size else b""

    def _handle(self, kind: bytes, body: bytes) -> bool:
        """One message that is not read past; False once the connection is given up."""
        if kind == b"Z" and self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result(self.error)
        elif kind == b"1" and self.parsing is not None:
            query, name = self.parsing
            self.prepared[query] = name
        elif kind == b"E":
            fields = error_fields(body)
            if fields.get("S") in _FATAL or fields.get("V") in _FATAL:
                self._fatal = fields  # the server closes the connection next
                self.broken = True
            elif self.waiter is None:
                self._break(_server_error(fields))
                return False
            elif self.error is None:
                self.error = fields
        else:  # nothing a publishing statement is answered with: give up on it
            self._break(
                asyncpg.exceptions.ProtocolViolationError(
                    f"unexpected message {kind!r} from the server"
                )
            )
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if self._fatal is not None:
                error: Exception = _server_error(self._fatal)
            else:
                error = asyncpg.exceptions.ConnectionDoesNotExistError(
                    "connection was closed in the middle of operation"
                )
            if exc is not None:
                error.__cause__ = exc
            waiter.set_exception(error)

    # -- the call's side ------------------------------------------------------------

    def usable(self) -> bool:
        if self.broken or self.rest or self.transport is None:
            return False
        return not self.transport.is_closing()

    def expire(self) -> None:
        """The call's time is up: cut the connection, which fails the call."""
        self.expired = True
        self.abort()

    def abort(self) -> None:
        """Close at once (no await: safe when cancelled, and idempotent)."""
        self.broken = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Say goodbye to the server, then close (used for idle connections)."""
        self.broken = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_TERMINATE)
            transport.close()

    def goodbye(self) -> asyncio.Future[None]:
        """Ask the server to end the connection (used for idle ones); done once it has.

        The server closes the socket only after its backend has left
        (`pg_stat_activity` no longer shows it), so awaiting this means
        the connection is gone on both sides, as asyncpg's ``close()`` does.
        """
        self.broken = True
        gone = self._gone = asyncio.get_running_loop().create_future()
        transport = self.transport
        if transport is None or transport.is_closing():
            gone.set_result(None)
        else:
            transport.write(_TERMINATE)
        return gone

    def _break(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()


def _server_error(fields: dict[str, str]) -> Exception:
    """asyncpg's exception for an ErrorResponse: the same class asyncpg would raise."""
    error: Exception = asyncpg.PostgresError.new(fields)
    return error


class PublishingConnections:
    """Up to `size` connections opened by `connect`, each used by one call at a time."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        self._connect = connect
        self._slots: Slots[_Lane] = Slots(
            self._open,
            size,
            usable=_Lane.usable,
            close=_Lane.abort,
            error=asyncpg.exceptions.InterfaceError,
        )
        self._deadlines: Deadlines[_Lane] = Deadlines()
        self._busy = self._deadlines.running  # the lanes with a call on them
        self._loop = self._deadlines.loop()
        self._names = 0  # statements prepared so far (their names)

    def clock(self) -> float:
        """The event loop's time, which deadlines are given in."""
        return self._loop.time()

    async def call(self, query: str, arguments: Sequence[Any], deadline: float) -> None:
        """Run `query` with `arguments` once; return when the server has answered.

        Raises asyncpg's exception for the server's error (the connection
        stays usable); `TimeoutError` if the answer is not there by
        `deadline` (event loop time); asyncpg's connection errors if the
        connection fails (then it is closed, and so after a timeout or a
        cancellation).
        """
        slots = self._slots
        lane = slots.idle.pop() if slots.idle else None
        if lane is None or lane.broken or lane.rest:  # `usable`, inlined
            if lane is not None:
                slots.lost(lane)
            with anyio.fail_after(max(deadline - self._loop.time(), 0.0)):
                lane = await slots.acquire()
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
            slots.release(lane)
            raise
        waiter = lane.waiter = self._loop.create_future()
        lane.error = None
        self._deadlines.start(lane, deadline)
        try:
            assert lane.transport is not None
            lane.transport.write(message)
            error = await waiter
        except BaseException as exc:
            self._deadlines.end(lane)
            slots.lost(lane)
            if lane.expired and isinstance(exc, Exception):
                raise TimeoutError("no answer from the server in time") from exc
            raise
        self._deadlines.end(lane)
        if slots.closed or slots.waiting:
            slots.release(lane)
        else:
            slots.idle.append(lane)  # `release`, inlined
        if error is not None:
            raise _server_error(error)

    def adopt(self, connection: Any) -> None:
        """Take an open asyncpg `connection` as an idle publishing connection, if there is
        room (else, or if it is not usable, it is closed)."""
        lane = _Lane()
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
        idle, self._slots.idle = self._slots.idle, []
        self._slots.close()
        for lane in list(self._busy):
            lane.abort()  # its call fails
        goodbyes = [lane.goodbye() for lane in idle]
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            for gone in goodbyes:
                await gone
        for lane in idle:
            lane.abort()  # a server that did not answer the goodbye in time

    # -- connections --------------------------------------------------------------------

    async def _open(self) -> _Lane:
        connection = await self._connect()
        lane = _Lane()
        try:
            take_transport(connection, lane)
        except BaseException:
            connection.terminate()
            raise
        return lane
