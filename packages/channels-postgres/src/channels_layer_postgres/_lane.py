"""One connection the layer reads and writes itself, after asyncpg has opened it.

asyncpg connects and authenticates (address, TLS, auth methods, server
settings); `take_transport` then hands the socket to a `Lane`, which walks
the server's messages (`_pgwire` framing) as they arrive. A lane runs one
call at a time: a prepared statement (`PublishingConnections.call` writes
its Bind + Execute + Sync) or a simple query (`query`: the listener's
LISTEN/UNLISTEN batches and checks). A lane made with `on_notification`
also hands every NotificationResponse to it, in arrival order: that is the
listening connection, on which publishes that only NOTIFY run too while it
is idle, so that a process's own notification comes back with the reply to
its publish.

When a chunk both answers a call and brings notifications, the
notifications are handed on just after the caller has been woken
(`channels_core.hand_on`), as asyncpg hands on its own: a sequential
publisher then writes its next statement before its subscribers run, and
the process works while the server does instead of after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import asyncpg
import asyncpg.exceptions

from channels_core.hand_on import HandOn

from ._pgwire import HEADER, error_fields, notification, simple_query

__all__ = ["Lane", "server_error"]

#: The Terminate message: a polite goodbye before closing the socket.
_TERMINATE = b"X\x00\x00\x00\x04"
#: Server messages a call reads past: BindComplete, DataRow, CommandComplete,
#: NoData, EmptyQueryResponse, NoticeResponse, ParameterStatus,
#: NotificationResponse, RowDescription.
_IGNORED = frozenset((b"2", b"D", b"C", b"n", b"I", b"N", b"S", b"A", b"T"))
#: What a listening lane reads past: the same, but for NotificationResponse.
_IGNORED_LISTENING = _IGNORED - {b"A"}
#: Severities after which the server closes the connection.
_FATAL = frozenset(("FATAL", "PANIC"))

Notified = Callable[[str, str], None]


class Lane(asyncio.Protocol):
    """One connection reading its own replies: the transport's protocol after take-over."""

    def __init__(
        self,
        on_notification: Notified | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.rest = b""  # the start of a message not all received yet
        #: query -> the name it was prepared under on this connection.
        self.prepared: dict[str, bytes] = {}
        #: The running call's: set until its ReadyForQuery (a cancelled call's too).
        self.waiter: asyncio.Future[dict[str, str] | None] | None = None
        self.error: dict[str, str] | None = None  # the running call's ErrorResponse
        self.parsing: tuple[str, bytes] | None = None  # the running call's Parse
        self.deadline = 0.0
        self.expired = False
        #: Closed, closing, or told something that leaves it unusable.
        self.broken = False
        #: Kept for the listener's own statement: publishes go elsewhere meanwhile.
        self.reserved = False
        #: Where notifications go: a listening lane's; changed while it reconnects.
        self.on_notification = on_notification
        self._on_lost = on_lost
        self._ignored = _IGNORED if on_notification is None else _IGNORED_LISTENING
        self._rows: list[str] | None = None  # the running query's, when it collects them
        self._fatal: dict[str, str] | None = None
        self._gone: asyncio.Future[None] | None = None  # see `goodbye`
        self._idle: asyncio.Future[None] | None = None  # see `until_idle`
        #: Notifications read but not handed on yet (see the module docstring).
        self._notifications: HandOn[tuple[str, str]] = HandOn(self._hand_on)

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not a check: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Walk the complete messages (any chunking); keep a partial one for later."""
        buffer = self.rest + data if self.rest else data
        pos, size = 0, len(buffer)
        waiter = self.waiter
        while size - pos >= 5:
            kind, length = HEADER.unpack_from(buffer, pos)
            end = pos + 1 + length
            if length < 4:
                self._break(asyncpg.exceptions.ProtocolViolationError(f"bad length {length}"))
                return
            if end > size:
                break
            if kind not in self._ignored and not self._handle(kind, buffer[pos + 5 : end]):
                return
            pos = end
        self.rest = buffer[pos:] if pos < size else b""
        self._notifications.release(answered=waiter is not None and self.waiter is None)

    def _hand_on(self, held: list[tuple[str, str]]) -> None:
        """Hand notifications to `on_notification`, in arrival order."""
        on_notification = self.on_notification
        if on_notification is not None:
            for channel, payload in held:
                on_notification(channel, payload)

    def _handle(self, kind: bytes, body: bytes) -> bool:
        """One message that is not read past; False once the connection is given up."""
        if kind == b"Z" and self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result(self.error)
            if self._idle is not None:
                self._wake_idle()
        elif kind == b"A" and self.on_notification is not None:
            self._notifications.hold(notification(body))
        elif kind == b"D" and self._rows is not None:
            self._rows.append(_first_column(body))
        elif kind == b"1" and self.parsing is not None:
            query, name = self.parsing
            self.prepared[query] = name
        elif kind == b"E":
            fields = error_fields(body)
            if fields.get("S") in _FATAL or fields.get("V") in _FATAL:
                self._fatal = fields  # the server closes the connection next
                self.broken = True
            elif self.waiter is None:
                self._break(server_error(fields))
                return False
            elif self.error is None:
                self.error = fields
        else:  # nothing a call or a listening connection is answered with: give up on it
            self._break(
                asyncpg.exceptions.ProtocolViolationError(
                    f"unexpected message {kind!r} from the server"
                )
            )
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self._notifications.flush()  # what arrived before the loss goes before its report
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if self._fatal is not None:
                error: Exception = server_error(self._fatal)
            else:
                error = asyncpg.exceptions.ConnectionDoesNotExistError(
                    "connection was closed in the middle of operation"
                )
            if exc is not None:
                error.__cause__ = exc
            waiter.set_exception(error)
        self._wake_idle()
        if self._on_lost is not None:
            self._on_lost()

    # -- the call's side ------------------------------------------------------------

    def usable(self) -> bool:
        if self.broken or self.rest or self.transport is None:
            return False
        return not self.transport.is_closing()

    def start(self, message: bytes) -> asyncio.Future[dict[str, str] | None]:
        """Write a call's `message`; the future gets its ErrorResponse's fields (or None)
        at its ReadyForQuery, or the connection's error."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self.error = None
        assert self.transport is not None
        self.transport.write(message)
        return waiter

    async def query(self, sql: str, *, rows: bool = False) -> list[str]:
        """Run `sql` (one statement or several, as one implicit transaction) with the
        simple query protocol; the first column of each row if `rows`.

        Raises asyncpg's exception for the server's error, or its connection
        error. Unbounded in time (the caller bounds it): a cancelled query
        leaves the lane busy until its answer has been read.
        """
        if not self.usable():
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the connection is closed")
        self.parsing = None
        collected: list[str] = []
        ignored = self._ignored
        if rows:  # DataRow is read, and NotificationResponse still is on a listening lane
            self._rows, self._ignored = collected, ignored - {b"D"}
        try:
            error = await self.start(simple_query(sql))
        finally:
            if rows:
                self._rows, self._ignored = None, ignored
        if error is not None:
            raise server_error(error)
        return collected

    async def until_idle(self) -> None:
        """Return once no call runs on the lane (at once if none does)."""
        while self.waiter is not None and not self.broken:
            idle = self._idle
            if idle is None or idle.done():
                idle = self._idle = asyncio.get_running_loop().create_future()
            # Shielded: a waiter cancelled must not cancel the future the others await.
            await asyncio.shield(idle)

    def _wake_idle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def expire(self) -> None:
        """The call's time is up: fail it. A publishing connection is cut; the listening
        one, which carries the subscriptions, is kept and reads the answer when it comes
        (its health check cuts it if the server is gone)."""
        self.expired = True
        if self.on_notification is None:
            self.abort()
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError("no answer from the server in time"))

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


def server_error(fields: dict[str, str]) -> Exception:
    """asyncpg's exception for an ErrorResponse: the same class asyncpg would raise."""
    error: Exception = asyncpg.PostgresError.new(fields)
    return error


def _first_column(body: bytes) -> str:
    """A DataRow's first column, as text ('' for NULL)."""
    length = int.from_bytes(body[2:6], "big", signed=True)
    return "" if length < 0 else body[6 : 6 + length].decode("utf-8")
