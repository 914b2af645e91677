"""One Redis connection in pub/sub mode: the layer's single subscribing connection.

`PubSubConnection.open` connects and subscribes a whole set of channels and
patterns in one round trip (also what a reconnect does); `run` then reads
forever, handing messages to a callback and PINGing when the line is quiet.
`call` sends (P)(UN)SUBSCRIBE from any task and returns once the server has
processed it: the command is followed by ``PING <token>`` and, replies
being in order, the token's PONG proves the command is done. `send` does
the same without waiting (its replies, errors included, are consumed).
The connection keeps its own subscription list (`channels`, `patterns`)
from the server's confirmations. Sharded pub/sub (SSUBSCRIBE, Redis
Cluster) works the same: its channels are in `channels` too, and
`on_unsubscribed` hears of every channel that left, also when the server
itself ended the subscription (its slot moved to another node).

The connection speaks RESP2 (where pub/sub messages are plain replies)
unless `open` is asked for RESP3 and the server accepts ``HELLO 3``
(Redis >= 6, HELLO allowed by the ACL). In RESP3 a subscribed connection
may run any command, messages and subscription confirmations arrive as
pushes, and `share` lets the layer publish on it while it has nothing in
flight: the server then answers the PUBLISH and delivers the process's own
message in one read; that message is handed on just after the publisher
has been woken (`channels_core.hand_on`), so that a sequential publisher
writes its next PUBLISH before its subscribers run. Every other reply is
matched, in order, with what was written (`_queue`: each shared call's
reply count, each PING token); a shared call cancelled or past its deadline
leaves its entry there, and its replies are read and dropped when they
come, so the subscriptions' connection is never cut for it. Once
connected, it reads the socket itself, parsing with `RespParser` (not
through redis-py's per-reply ``read_response``); while `run` reads, the
parsing and dispatch happen in the transport's own callback (`_Feeder`) as
the bytes arrive, so a burst of messages wakes no reading task and,
downstream, one task per subscriber.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from channels_core.deadlines import Deadlines
from channels_core.hand_on import HandOn

from ._resp import Push, RespParser
from ._wire import pack_command

__all__ = [
    "TRANSIENT_ERRORS",
    "ConnectionLost",
    "Message",
    "MessageHandler",
    "PubSubConnection",
]

#: ``(channel, data, pattern)``; `pattern` is None for SUBSCRIBE deliveries.
Message = tuple[bytes, bytes, bytes | None]
#: ``handler(channel, data, pattern)``, called from the reading task.
MessageHandler = Callable[[bytes, bytes, bytes | None], None]

#: Errors that mean "the server cannot be reached right now": worth retrying.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
)

_tokens = itertools.count()
#: Bytes asked of the socket per read (more when a frame is known to need more).
READ_SIZE = 1 << 16


class ConnectionLost(RedisConnectionError):
    """The pub/sub connection failed or closed (so it counts as transient, like its base)."""


class PubSubConnection:
    """A connected pub/sub connection; create it with `open`."""

    def __init__(self, connection: AbstractConnection, handler: MessageHandler) -> None:
        self._connection = connection
        self._handler = handler
        self._waiting: dict[bytes, anyio.Event] = {}
        self._answers: dict[bytes, list[ResponseError]] = {}
        self._errors: list[ResponseError] = []
        self._health_token: bytes | None = None
        #: `run`'s silence timer, the loop time data last arrived, and why the
        #: timer gave up on the connection (None while it has not).
        self._watchdog: asyncio.TimerHandle | None = None
        self._heard = 0.0
        self._silent: str | None = None
        self._closed = False
        #: RESP3 (HELLO 3 accepted): pushes carry the pub/sub traffic.
        self.resp3 = False
        #: RESP3 only: what the replies still due answer, in order (a shared
        #: call, or the PING token ending a command of the connection's own).
        self._queue: deque[_Shared | bytes] = deque()
        #: While `run` reads a RESP3 connection: `share` may write on it.
        self._sharing = False
        #: With Sentinel: a READONLY reply to a shared call means the master moved.
        self.demoted_is_lost = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Bounds the shared calls: one lazy timer, as the publishing connections'.
        self._deadlines: Deadlines[_Shared] = Deadlines()
        self._parser = RespParser()
        #: RESP3 messages read but not handed to the handler yet (see `_dispatch_all`).
        self._messages: HandOn[Any] = HandOn(self._hand_on, self._hand_on_failed)
        self._feeder: _Feeder | None = None  # while `run` reads
        #: Replies read but not dispatched yet (those after the PONG `open` waited for).
        self._ready: list[Any] = []
        self.client_id: int | None = None
        #: What the server confirmed this connection is subscribed to.
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()
        #: Called with each channel the server confirms as unsubscribed.
        self.on_unsubscribed: Callable[[bytes], None] | None = None

    @classmethod
    async def open(
        cls,
        connection: AbstractConnection,
        handler: MessageHandler,
        channels: Sequence[bytes],
        patterns: Sequence[bytes],
        timeout: float,
        *,
        resp3: bool = False,
    ) -> tuple[PubSubConnection, list[Message]]:
        """Connect, subscribe `channels` and `patterns`, and wait for the server to confirm.

        With `resp3`, ``HELLO 3`` goes first (in the same write); a server
        refusing it leaves the connection in RESP2. Returns the connection
        and the messages that arrived meanwhile, for the caller to hand over
        once it has announced the reconnect. Closes `connection` on any failure.
        """
        early: list[Message] = []
        pubsub = cls(connection, lambda *message: early.append(message))
        try:
            with anyio.fail_after(timeout):
                await connection.connect()  # type: ignore[no-untyped-call]
                commands: list[tuple[Any, ...]] = [("HELLO", 3)] if resp3 else []
                commands.append(("CLIENT", "ID"))
                if channels:
                    commands.append(("SUBSCRIBE", *channels))
                if patterns:
                    commands.append(("PSUBSCRIBE", *patterns))
                token = _new_token()
                answered = pubsub._waiting[token] = anyio.Event()
                commands.append(("PING", token))
                pubsub.resp3 = resp3
                await pubsub._send(commands, token)
                if resp3:
                    pubsub.resp3 = isinstance(await pubsub._next(timeout), dict)
                    if not pubsub.resp3:
                        pubsub._queue.clear()
                client_id = await pubsub._next(timeout)
                pubsub.client_id = client_id if isinstance(client_id, int) else None
                while not answered.is_set():
                    pubsub._dispatch_all([await pubsub._next(timeout)])
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.disconnect()
            raise
        del pubsub._waiting[token]
        errors = pubsub._answers.pop(token)
        if errors:
            await pubsub.aclose()
            raise errors[0]
        pubsub._handler = handler
        return pubsub, early

    @property
    def address(self) -> tuple[str, int]:
        """The server's ``(host, port)`` as connected (``("", 0)`` for a unix socket)."""
        host = getattr(self._connection, "host", "")
        port = getattr(self._connection, "port", 0)
        return str(host), int(port)

    async def call(self, command: str, names: Sequence[bytes]) -> None:
        """Send ``command *names`` and return once the server has processed it.

        Raises `ConnectionLost` if the connection ends first, and the
        server's `ResponseError` if it refused the command.
        """
        errors = await self.call_all((command, names))
        if errors:
            raise errors[0]

    async def call_all(self, *commands: tuple[str, Sequence[bytes]]) -> list[ResponseError]:
        """Send each ``command *names`` in one write; return the server's refusals once done.

        Raises `ConnectionLost` if the connection ends before the server
        has processed them all.
        """
        token = _new_token()
        answered = self._waiting[token] = anyio.Event()
        try:
            await self._send(
                [*((command, *names) for command, names in commands), ("PING", token)], token
            )
            await answered.wait()
        finally:
            del self._waiting[token]
            errors = self._answers.pop(token, None)
        if errors is None:
            raise ConnectionLost("the pub/sub connection closed before the server confirmed")
        return errors

    async def send(self, *commands: tuple[str, Sequence[bytes]]) -> None:
        """Send each ``command *names`` in one write, without waiting for the server.

        Raises `ConnectionLost` if the connection is closed.
        """
        token = _new_token()
        await self._send(
            [*((command, *names) for command, names in commands), ("PING", token)], token
        )

    def share(
        self, commands: bytes, count: int, deadline: float
    ) -> asyncio.Future[list[Any]] | None:
        """Write `count` packed `commands` here if the connection is idle; None if it is not.

        Idle: RESP3, read by `run`, and no reply of anything written before
        still due. Returns the future of the replies (once all are read),
        which fails with the first error reply, with `RedisTimeoutError`
        past `deadline` (event loop time), or with `ConnectionLost`.
        Cancelling it, or its deadline passing, leaves the replies to be read
        and dropped: the connection stays.
        """
        if self._queue or not self._sharing:
            return None
        writer = self._connection._writer
        loop = self._loop
        if writer is None or loop is None or writer.transport.is_closing():
            return None
        shared = _Shared(count, loop.create_future(), self.demoted_is_lost)
        self._deadlines.start(shared, deadline)
        self._queue.append(shared)
        writer.write(commands)
        return shared.future

    async def run(self, health_check_interval: float) -> None:
        """Read and dispatch until the connection fails, then raise `ConnectionLost`.

        After `health_check_interval` seconds of silence a PING goes out; if
        nothing at all comes back within as long again, the connection is
        declared dead. A timer watches the silence (`_watch`), so reading
        costs no cancel scope. The replies are parsed and dispatched in the
        transport's own callback (`_Feeder`), as the bytes arrive: no task
        wakes up per read, and no stream buffer copies them on the way.
        """
        loop = self._loop = asyncio.get_running_loop()
        self._heard = loop.time()
        interval = health_check_interval
        self._watchdog = loop.call_at(self._heard + interval, self._watch, interval)
        try:
            replies, self._ready = self._ready, []
            self._dispatch_all(replies)
            await self._feed_until_lost(loop)
        except TRANSIENT_ERRORS as exc:
            if self._silent is not None:
                raise ConnectionLost(self._silent) from exc
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._fail_shared()
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

    async def _feed_until_lost(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the transport to a `_Feeder` until the connection fails; raise why."""
        connection = self._connection
        reader, writer = connection._reader, connection._writer
        if self._closed or reader is None or writer is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        transport = writer.transport
        stream = transport.get_protocol()
        ended: asyncio.Future[None] = loop.create_future()
        feeder = self._feeder = _Feeder(self, stream, ended, loop)
        # What the stream holds (read ahead, or arrived while no `run` was reading)
        # goes first; the stream may have paused the transport for it.
        buffered = bytes(reader._buffer)  # type: ignore[attr-defined]
        reader._buffer.clear()  # type: ignore[attr-defined]
        at_eof = reader.at_eof()
        transport.set_protocol(feeder)
        reader._maybe_resume_transport()  # type: ignore[attr-defined]
        self._sharing = self.resp3
        try:
            if buffered:
                feeder.data_received(buffered)
            if at_eof:
                feeder.eof_received()
            await ended
        except (OSError, RedisConnectionError, InvalidResponse) as exc:
            await self._disconnect()
            raise RedisConnectionError(str(exc) or type(exc).__name__) from exc
        finally:
            self._feeder = None
            feeder.stop()
            # (A closed TLS transport has no protocol left to ask about.)
            if not transport.is_closing() and transport.get_protocol() is feeder:
                transport.set_protocol(stream)

    def _dispatch_all(self, replies: list[Any]) -> None:
        """Hand each reply on; in RESP3, messages after the shared call their chunk answers.

        Only replies to shared calls may overtake held messages: anything
        else (a subscription confirmed, a PING answered) goes after them.
        """
        handler = self._handler
        if self.resp3:
            messages, queue = self._messages, self._queue
            answered = False
            for reply in replies:
                if type(reply) is Push:
                    if reply[0] == b"message":
                        messages.hold(reply)
                        continue
                elif queue and type(queue[0]) is _Shared:
                    self._reply(reply)
                    answered = True
                    continue
                messages.flush()
                if type(reply) is Push:
                    self._dispatch(reply)
                else:
                    self._reply(reply)
            messages.release(answered)
            return
        for reply in replies:
            # A message (the bulk of the traffic) straight to the handler.
            if type(reply) is list and reply and reply[0] == b"message":
                handler(reply[1], reply[2], None)
            else:
                self._dispatch(reply)

    def _hand_on(self, messages: list[Any]) -> None:
        handler = self._handler
        for message in messages:
            handler(message[1], message[2], None)

    def _hand_on_failed(self, error: Exception) -> None:
        """A handler failed in a hand-on after the publisher: the reading ends with it."""
        feeder = self._feeder
        if feeder is None:
            raise error
        feeder.end(error)

    def _watch(self, interval: float) -> None:
        """The silence timer of `run`: PING after `interval` s of it, give up after twice that.

        Runs as an event loop callback: it writes the PING itself (a few
        bytes, whole in one write) and, for a dead line, aborts the
        connection, which ends the read in `run` with the reason.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        writer = self._connection._writer
        if self._closed or writer is None:
            return
        if now - self._heard < interval:
            self._watchdog = loop.call_at(self._heard + interval, self._watch, interval)
            return
        if self._health_token is None:
            self._health_token = _new_token()
            if self.resp3:
                self._queue.append(self._health_token)
            writer.write(pack_command("PING", self._health_token))
            self._heard = now  # the PING's answer is due within `interval` from now
            self._watchdog = loop.call_at(now + interval, self._watch, interval)
            return
        self._silent = f"RedisTimeoutError: no reply to PING within {interval:g} s"
        writer.transport.abort()

    async def aclose(self) -> None:
        """Close the connection and wake every `call` still waiting (idempotent)."""
        self._closed = True
        self._fail_shared()
        for answered in self._waiting.values():
            answered.set()
        with anyio.CancelScope(shield=True):
            await self._connection.disconnect()

    # -- internals ------------------------------------------------------------

    async def _next(self, timeout: float) -> Any:
        """The next reply (an error reply is returned, not raised), or None after `timeout` s."""
        while not self._ready:
            replies = await self._read(timeout)
            if replies is None:
                return None
            self._ready = replies
        return self._ready.pop(0)

    async def _read(self, timeout: float | None) -> list[Any] | None:
        """The replies one read of the socket completed (maybe none), or None after `timeout` s.

        With `timeout` None, no cancel scope: the caller watches the time.
        Raises `RedisConnectionError` if the connection ended or spoke
        something other than RESP, and closes it then, as redis-py's own
        reads do (so `_send` fails from then on). Cancelling loses nothing:
        what a read brought is parsed before the next await.
        """
        reader = self._connection._reader
        if self._closed or reader is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        try:
            if timeout is None:
                return await self._receive(reader)
            with anyio.move_on_after(timeout):
                return await self._receive(reader)
            return None
        except OSError as exc:
            await self._disconnect()
            raise RedisConnectionError(f"error while reading: {exc}") from exc
        except (RedisConnectionError, InvalidResponse) as exc:
            await self._disconnect()
            raise RedisConnectionError(str(exc)) from exc

    async def _receive(self, reader: asyncio.StreamReader) -> list[Any]:
        data = await reader.read(max(READ_SIZE, self._parser.wanted))
        if not data:
            raise RedisConnectionError("the server closed the connection")
        return self._parser.feed(data)

    async def _disconnect(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._connection.disconnect(nowait=True)

    async def _send(self, commands: Iterable[tuple[Any, ...]], token: bytes) -> None:
        """Write `commands`, the last one ``PING token``, whose reply `_queue` then awaits.

        Written here, before any await (redis-py's send may write from a
        task of its own, after another writer): the order of the writes is
        the order of `_queue`.
        """
        # Checked right before sending: redis-py would silently reconnect a
        # disconnected connection, without our subscriptions.
        writer = self._connection._writer
        if self._closed or not self._connection.is_connected or writer is None:
            raise ConnectionLost("the pub/sub connection is closed")
        if self.resp3:
            self._queue.append(token)
        try:
            writer.writelines(self._connection.pack_commands(commands))
            if writer.transport.get_write_buffer_size():
                await writer.drain()
        except OSError as exc:
            raise ConnectionLost(f"the pub/sub connection failed: {exc}") from exc

    def _reply(self, reply: Any) -> None:
        """A RESP3 reply (not a push): to the shared call or the command it answers."""
        queue = self._queue
        if queue:
            head = queue[0]
            if type(head) is _Shared:
                head.replies.append(reply)
                if len(head.replies) == head.count:
                    queue.popleft()
                    self._deadlines.end(head)
                    head.settle()
                return
            if isinstance(reply, ResponseError):
                self._errors.append(reply)
                return
            if reply != head:
                return  # a reply of the command itself (``PING`` with no token)
            queue.popleft()
        self._dispatch(reply)

    def _fail_shared(self) -> None:
        """The connection stopped being read: every shared call still due fails, none is added."""
        self._sharing = False
        self._deadlines.cancel()
        if not self._queue:
            return
        queue, self._queue = self._queue, deque()
        for entry in queue:
            if type(entry) is _Shared:
                self._deadlines.end(entry)
                entry.fail(ConnectionLost("the pub/sub connection was lost before the reply"))

    def _dispatch(self, response: Any) -> None:
        if isinstance(response, ResponseError):
            self._errors.append(response)
        elif isinstance(response, bytes):  # PONG outside subscribed mode: the token itself
            self._answer(response)
        elif isinstance(response, list) and response:
            kind = response[0]
            if kind == b"message" or kind == b"smessage":
                self._handler(response[1], response[2], None)
            elif kind == b"pmessage":
                self._handler(response[2], response[3], response[1])
            elif kind == b"pong":
                self._answer(response[1])
            elif kind == b"subscribe" or kind == b"ssubscribe":
                self.channels.add(response[1])
            elif kind == b"unsubscribe" or kind == b"sunsubscribe":
                self.channels.discard(response[1])
                if self.on_unsubscribed is not None:
                    self.on_unsubscribed(response[1])
            elif kind == b"psubscribe":
                self.patterns.add(response[1])
            elif kind == b"punsubscribe":
                self.patterns.discard(response[1])

    def _answer(self, token: bytes) -> None:
        # Each command is sent together with its PING, so the error replies
        # read since the previous PONG belong to the command of this one.
        errors, self._errors = self._errors, []
        if token == self._health_token:
            self._health_token = None
            return
        waiter = self._waiting.get(token)
        if waiter is not None:
            self._answers[token] = errors
            waiter.set()


class _Feeder(asyncio.Protocol):
    """The transport's protocol while `PubSubConnection.run` reads: parses and dispatches.

    Everything but the bytes goes on to redis-py's stream protocol
    (`stream`), so writing, draining and closing the connection work as
    before. `ended` gets the error that ends the reading: the connection
    lost or closed, bytes that are not RESP, or a handler's exception.
    """

    def __init__(
        self,
        pubsub: PubSubConnection,
        stream: asyncio.BaseProtocol,
        ended: asyncio.Future[None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._pubsub: PubSubConnection | None = pubsub
        self._stream = stream
        self._ended = ended
        self._loop = loop

    def stop(self) -> None:
        """Read no more (`run` ended): later bytes are left unparsed, what was read goes on."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            pubsub._messages.flush()

    def data_received(self, data: bytes) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        pubsub._heard = self._loop.time()
        try:
            pubsub._dispatch_all(pubsub._parser.feed(data))
        except Exception as exc:
            self.end(exc)

    def eof_received(self) -> bool | None:
        self._lost(RedisConnectionError("the server closed the connection"))
        return self._stream.eof_received()  # type: ignore[attr-defined, no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(RedisConnectionError(f"the connection was lost: {exc or 'closed'}"))
        self._stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self._stream.pause_writing()

    def resume_writing(self) -> None:
        self._stream.resume_writing()

    def _lost(self, error: Exception) -> None:
        """The connection ended: what was read before goes on before the loss is reported."""
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub._messages.flush()
            except Exception as exc:
                error = exc
        self.end(error)

    def end(self, error: Exception) -> None:
        """Read no more; `run` raises `error`."""
        self._pubsub = None
        if not self._ended.done():
            self._ended.set_exception(error)


class _Shared:
    """A call `PubSubConnection.share` wrote: its replies as they are read, and its future."""

    __slots__ = ("count", "deadline", "demoted_is_lost", "future", "replies")

    def __init__(
        self, count: int, future: asyncio.Future[list[Any]], demoted_is_lost: bool
    ) -> None:
        self.count = count
        self.future = future
        self.demoted_is_lost = demoted_is_lost
        self.replies: list[Any] = []
        self.deadline = 0.0  # loop time, set by `Deadlines.start`

    def settle(self) -> None:
        """Every reply is in: the future gets them, or the first error reply."""
        if self.future.done():  # cancelled, or past its deadline: the replies go unread
            return
        for reply in self.replies:
            if isinstance(reply, ResponseError):
                if self.demoted_is_lost and isinstance(reply, ReadOnlyError):
                    self.fail(ConnectionLost("the server is no longer the master (READONLY)"))
                else:
                    self.future.set_exception(reply)
                return
        self.future.set_result(self.replies)

    def expire(self) -> None:
        """The deadline passed: the call fails; its replies are still read (and dropped)."""
        if not self.future.done():
            self.future.set_exception(RedisTimeoutError("no reply from the server in time"))

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def _new_token() -> bytes:
    return b"channels:%d" % next(_tokens)
