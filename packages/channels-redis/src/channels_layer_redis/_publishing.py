"""The publishing connections: the layer writes the commands and reads the replies itself.

redis-py opens each connection (address, Sentinel lookup, TLS, unix
socket, AUTH, HELLO, SELECT, client name); from then on
`PublishingConnections.call` writes already packed commands (PUBLISH, the
history script) straight to its stream and parses the replies with
`RespParser`, in as few reads as the socket allows. That skips what
redis-py charges per command (pool acquire and release with their
condition, timeout and metrics; a task per write for its send timeout;
a parser call per reply), which cost more CPU than the round trip itself.

What stays per call: one connection is used by one call at a time; every
reply of a call is read before its connection is used again; a call that
fails, times out or is cancelled part-way closes its connection (never
reused with replies unread), and the next call opens a new one. The
deadline is not a cancel scope (~15 us per call for ``anyio.fail_after``)
nor a timer per call (a handle pushed on and cancelled off the event loop's
heap): each call notes its deadline on its connection, and one lazy timer
(`channels_core.deadlines.Deadlines`) closes the connections whose call is past it when it fires,
then re-arms for the earliest deadline still running. Only waiting for a
free connection or opening one runs under a cancel scope.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from channels_core.deadlines import Deadlines
from channels_core.slots import Slots

from ._resp import Push, RespParser
from ._wire import pack_command

__all__ = ["PublishingConnections"]

#: Bytes asked of the socket per read.
READ_SIZE = 1 << 16

#: Each `PublishingConnections`' place in the one order `call_each` takes them in.
_RANKS = itertools.count()


class _Lane:
    """One open connection and the parser of its replies."""

    __slots__ = ("connection", "deadline", "expired", "parser")

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.parser = RespParser()
        self.expired = False
        self.deadline = 0.0  # loop time by which the running call must end

    def expire(self) -> None:
        """The call's time is up: close the connection, which ends its read or write."""
        self.expired = True
        writer = self.connection._writer
        if writer is not None:
            writer.transport.abort()

    def usable(self) -> bool:
        """Open, and nothing arrived since its last call (not even the server closing it)."""
        reader = self.connection._reader
        return reader is not None and not reader.at_eof() and not reader._buffer  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close the connection at once (no await: safe when cancelled, and idempotent)."""
        self.connection._close()  # type: ignore[no-untyped-call]


class PublishingConnections:
    """Up to `size` connections made by `make_connection`, each used by one call at a time.

    A call finding all `size` in use waits for one, at most `wait_timeout`
    seconds if given (then `RedisConnectionError`, as redis-py's blocking
    pool). With `demoted_is_lost` (Sentinel mode) a READONLY reply means
    the server is no longer the master: the call fails as a lost connection
    (so it is retried, on the new master) rather than as a refusal.
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        size: int,
        *,
        wait_timeout: float | None = None,
        demoted_is_lost: bool = False,
    ) -> None:
        self._make = make_connection
        self._rank = next(_RANKS)
        self._slots: Slots[_Lane] = Slots(
            self._open,
            size,
            usable=_Lane.usable,
            close=_Lane.close,
            error=RedisConnectionError,
            wait_timeout=wait_timeout,
        )
        self._deadlines: Deadlines[_Lane] = Deadlines()
        self._busy = self._deadlines.running  # the lanes with a call on them
        self._demoted_is_lost = demoted_is_lost

    async def call(self, commands: bytes, count: int, deadline: float) -> list[Any]:
        """Write `count` packed `commands` at once; return their replies once all are read.

        Raises the first error reply (a `ResponseError`) once every reply
        has been read, so the connection stays usable; `RedisTimeoutError`
        if the replies are not all there by `deadline` (event loop time) or
        within the connection's ``socket_timeout``; `RedisConnectionError`
        if the connection fails (then it is closed, and so after a timeout
        or a cancellation).
        """
        return await self._read(await self._write(commands, deadline), count)

    @staticmethod
    async def call_each(
        calls: Sequence[tuple[PublishingConnections, bytes, int]], deadline: float
    ) -> list[list[Any] | Exception]:
        """`call` on several servers at once, in one task: every write first, then the reads.

        What concurrent `call`s would do without a task each (several
        shards of a cluster). Returns, per call, its replies or the error
        `call` would have raised; a cancellation closes every connection
        whose replies were not read.

        A write may wait for a free connection while holding another
        server's: every task takes them in one order (`_rank`), so two such
        tasks never wait on each other.
        """
        results: list[list[Any] | Exception] = []
        written: list[tuple[PublishingConnections, _Lane] | Exception | None] = [None] * len(calls)
        try:
            for index in sorted(range(len(calls)), key=lambda index: calls[index][0]._rank):
                publishing, commands, _ = calls[index]
                try:
                    lane = await publishing._write(commands, deadline)
                except Exception as exc:
                    written[index] = exc
                else:
                    written[index] = (publishing, lane)
            for index, (_, _, count) in enumerate(calls):
                begun, written[index] = written[index], None  # `_read` closes it if need be
                assert begun is not None
                if isinstance(begun, Exception):
                    results.append(begun)
                    continue
                try:
                    results.append(await begun[0]._read(begun[1], count))
                except Exception as exc:
                    results.append(exc)
        except BaseException:
            for begun in written:
                if isinstance(begun, tuple):
                    publishing, lane = begun
                    publishing._abandon(lane)
            raise
        return results

    async def execute(self, deadline: float, *args: bytes | str | int) -> Any:
        """Run one command (``args`` as `pack_command` takes them) and return its reply."""
        return (await self.call(pack_command(*args), 1, deadline))[0]

    def close_all(self) -> None:
        """Close every connection, those in use too (their calls fail and are retried)."""
        self._slots.close_idle()
        for lane in list(self._busy):
            lane.close()  # its call fails, and frees the slot

    def close(self) -> None:
        """Close every connection for good (the layer disconnects); waiting calls fail."""
        self._slots.close()
        self._deadlines.cancel()
        for lane in list(self._busy):
            lane.close()  # its call fails

    # -- internals ------------------------------------------------------------

    async def _open(self) -> _Lane:
        connection = self._make()
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            connection._close()  # type: ignore[no-untyped-call]
            raise
        return _Lane(connection)

    def _abandon(self, lane: _Lane) -> None:
        """A call on `lane` failed or was cancelled part-way: its connection is lost."""
        self._deadlines.end(lane)
        self._slots.lost(lane)

    async def _write(self, commands: bytes, deadline: float) -> _Lane:
        """A connection with `commands` written to it, its call's deadline set."""
        slots = self._slots
        lane = slots.idle.pop() if slots.idle else None
        if lane is None or not lane.usable():
            if lane is not None:
                slots.lost(lane)
            with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                lane = await slots.acquire()
        connection = lane.connection
        if connection._reader is None or connection._writer is None:
            slots.lost(lane)
            raise RedisConnectionError("the publishing connection is closed")
        socket_timeout = connection.socket_timeout
        if socket_timeout is not None:
            deadline = min(deadline, self._deadlines.loop().time() + socket_timeout)
        self._deadlines.start(lane, deadline)
        try:
            connection._writer.write(commands)
        except BaseException as exc:
            self._abandon(lane)
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"the publishing connection failed: {exc}") from exc
            raise
        return lane

    async def _read(self, lane: _Lane, count: int) -> list[Any]:
        """The `count` replies to what `_write` wrote on `lane`; the lane is free again after."""
        try:
            replies = await self._exchange(lane, count)
        except BaseException:
            self._abandon(lane)
            raise
        self._deadlines.end(lane)
        self._slots.release(lane)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def _exchange(self, lane: _Lane, count: int) -> list[Any]:
        connection = lane.connection
        reader, writer = connection._reader, connection._writer
        replies: list[Any] = []
        parser = lane.parser
        try:
            if reader is None or writer is None:
                raise RedisConnectionError("the publishing connection is closed")
            if writer.transport.get_write_buffer_size():  # else nothing to wait for
                await writer.drain()
            while len(replies) < count:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise RedisConnectionError("the server closed the connection")
                for reply in parser.feed(data):
                    if not isinstance(reply, Push):  # RESP3 out-of-band data
                        replies.append(reply)
        except (OSError, RedisConnectionError, InvalidResponse) as exc:
            if lane.expired:
                raise RedisTimeoutError("no reply from the server in time") from exc
            raise RedisConnectionError(f"the publishing connection failed: {exc}") from exc
        if len(replies) > count or parser.buffered:
            raise RedisConnectionError(f"{len(replies)} replies to {count} commands")
        if self._demoted_is_lost and any(isinstance(reply, ReadOnlyError) for reply in replies):
            raise RedisConnectionError("the server is no longer the master (READONLY)")
        return replies
