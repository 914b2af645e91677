"""An incremental RESP2/RESP3 reply parser for the pub/sub connection.

`RespParser.feed` takes whatever the socket gave (any chunking: a frame may
be split anywhere, a chunk may hold hundreds of frames) and returns every
reply now complete, so the reader dispatches a whole burst per read instead
of paying redis-py's per-reply ``read_response``. Pub/sub deliveries
(``*3 $7 message``, ``smessage``, ``*4 $8 pmessage``, and the same as
RESP3 pushes, ``>3``/``>4``) and integers (the replies to PUBLISH) take a
fast path;
everything else (RESP3 pushes included) goes through a small general
parser of both protocol versions. Replies are what redis-py returns with
``disable_decoding``: bytes, ints, lists, None, and error replies as
redis-py's `ResponseError` subclasses (returned, not raised). A frame
whose size is known but not yet all there is collected chunk by chunk and
joined once, so a huge payload costs linear time.
"""

from __future__ import annotations

from typing import Any

from redis._parsers.base import BaseParser
from redis.exceptions import InvalidResponse, ResponseError

__all__ = ["Push", "RespParser"]

_CRLF = b"\r\n"
_MESSAGE = b"*3\r\n$7\r\nmessage\r\n"
_PMESSAGE = b"*4\r\n$8\r\npmessage\r\n"
_SMESSAGE = b"*3\r\n$8\r\nsmessage\r\n"
#: The same deliveries as RESP3 pushes.
_PUSH_MESSAGE = b">3\r\n$7\r\nmessage\r\n"
_PUSH_PMESSAGE = b">4\r\n$8\r\npmessage\r\n"
_PUSH_SMESSAGE = b">3\r\n$8\r\nsmessage\r\n"


class _Incomplete(Exception):
    """The buffer ends inside a frame, which needs at least `need` bytes from its start."""

    def __init__(self, need: int) -> None:
        self.need = need


class Push(list[Any]):
    """A RESP3 push (out-of-band data such as an invalidation), not the reply to a command."""


class RespParser:
    """Buffers bytes from the connection and parses complete replies out of them."""

    def __init__(self) -> None:
        self._buffer = b""
        #: Chunks received since the buffer was last parsed, and their total size.
        self._chunks: list[bytes] = []
        self._pending = 0
        #: Total size the buffer needs before another parse can succeed.
        self._need = 0

    @property
    def wanted(self) -> int:
        """How many more bytes the frame being received needs at least (0: unknown or none)."""
        return max(0, self._need - len(self._buffer) - self._pending)

    @property
    def buffered(self) -> bool:
        """Whether part of a reply was received and not yet parsed."""
        return bool(self._buffer or self._chunks)

    def feed(self, data: bytes) -> list[Any]:
        """Add `data`; return the replies it completed, in order (often none, often many)."""
        if self._chunks or len(self._buffer) + len(data) < self._need:
            self._chunks.append(data)
            self._pending += len(data)
            if len(self._buffer) + self._pending < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._pending = 0
        buffer = self._buffer + data if self._buffer else data
        replies: list[Any] = []
        pos = 0
        size = len(buffer)
        try:
            while pos < size:
                if buffer[pos] == 0x3A:  # ":", an integer: PUBLISH's reply
                    end = buffer.find(_CRLF, pos)
                    if end < 0:
                        raise _Incomplete(size - pos + 1)
                    replies.append(int(buffer[pos + 1 : end]))
                    at = end + 2
                elif buffer[pos] == 0x3E:  # ">", a RESP3 push: deliveries first
                    if buffer.startswith(_PUSH_MESSAGE, pos):
                        channel, at = _bulk(buffer, pos + 17, pos)
                        payload, at = _bulk(buffer, at, pos)
                        replies.append(Push((b"message", channel, payload)))
                    elif buffer.startswith(_PUSH_PMESSAGE, pos):
                        pattern, at = _bulk(buffer, pos + 18, pos)
                        channel, at = _bulk(buffer, at, pos)
                        payload, at = _bulk(buffer, at, pos)
                        replies.append(Push((b"pmessage", pattern, channel, payload)))
                    elif buffer.startswith(_PUSH_SMESSAGE, pos):
                        channel, at = _bulk(buffer, pos + 18, pos)
                        payload, at = _bulk(buffer, at, pos)
                        replies.append(Push((b"smessage", channel, payload)))
                    else:
                        reply, at = _parse(buffer, pos, pos)
                        replies.append(reply)
                elif buffer.startswith(_MESSAGE, pos):
                    channel, at = _bulk(buffer, pos + 17, pos)
                    payload, at = _bulk(buffer, at, pos)
                    replies.append([b"message", channel, payload])
                elif buffer.startswith(_PMESSAGE, pos):
                    pattern, at = _bulk(buffer, pos + 18, pos)
                    channel, at = _bulk(buffer, at, pos)
                    payload, at = _bulk(buffer, at, pos)
                    replies.append([b"pmessage", pattern, channel, payload])
                elif buffer.startswith(_SMESSAGE, pos):
                    channel, at = _bulk(buffer, pos + 18, pos)
                    payload, at = _bulk(buffer, at, pos)
                    replies.append([b"smessage", channel, payload])
                else:
                    reply, at = _parse(buffer, pos, pos)
                    replies.append(reply)
                pos = at
        except _Incomplete as incomplete:
            self._need = incomplete.need
        except ValueError as exc:  # a length that is not a number
            raise InvalidResponse(f"malformed RESP at {buffer[pos : pos + 40]!r}") from exc
        else:
            self._need = 0
        self._buffer = buffer[pos:] if pos < size else b""
        return replies


def _bulk(buffer: bytes, pos: int, start: int) -> tuple[bytes, int]:
    """The bulk string at `pos` (of the frame at `start`) and where the next item begins."""
    end = buffer.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete(len(buffer) - start + 1)
    if buffer[pos] != 0x24:  # not "$": let the general parser say what it is
        return _parse(buffer, pos, start)
    length = int(buffer[pos + 1 : end])
    if length < 0:
        return None, end + 2  # type: ignore[return-value]
    stop = end + 2 + length
    if stop + 2 > len(buffer):
        raise _Incomplete(stop + 2 - start)
    return buffer[end + 2 : stop], stop + 2


def _error(text: bytes) -> ResponseError:
    """An error reply as redis-py's exception for it (`NoPermissionError` for NOPERM...)."""
    error: ResponseError = BaseParser.parse_error(  # type: ignore[no-untyped-call]
        text.decode("utf-8", "replace")
    )
    return error


def _parse(buffer: bytes, pos: int, start: int) -> tuple[Any, int]:
    """The reply at `pos` (inside the frame at `start`) and where the next one begins.

    Raises `_Incomplete` if the buffer ends first, `InvalidResponse` for
    what is not RESP.
    """
    end = buffer.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete(len(buffer) - start + 1)
    kind = buffer[pos : pos + 1]
    line = buffer[pos + 1 : end]
    after = end + 2
    try:
        if kind in (b"$", b"=", b"!"):  # bulk string, verbatim string, bulk error
            length = int(line)
            if length < 0:
                return None, after
            stop = after + length
            if stop + 2 > len(buffer):
                raise _Incomplete(stop + 2 - start)
            value = buffer[after:stop]
            if kind == b"=":
                value = value[4:]  # "txt:" or "mkd:"
            elif kind == b"!":
                return _error(value), stop + 2
            return value, stop + 2
        if kind in (b"*", b">", b"~", b"%", b"|"):  # array, push, set, map, attribute
            count = int(line)
            if count < 0:
                return None, after
            if kind in (b"%", b"|"):
                count *= 2
            items = []
            for _ in range(count):
                item, after = _parse(buffer, after, start)
                items.append(item)
            if kind == b"%":
                return dict(zip(items[::2], items[1::2], strict=True)), after
            if kind == b"|":  # an attribute annotates the reply that follows it
                return _parse(buffer, after, start)
            if kind == b">":
                return Push(items), after
            return items, after
        if kind == b"+":
            return line, after
        if kind == b"-":
            return _error(line), after
        if kind in (b":", b"("):  # integer, big number
            return int(line), after
        if kind == b"_":
            return None, after
        if kind == b"#":
            return line == b"t", after
        if kind == b",":
            return float(line), after
    except ValueError as exc:
        raise InvalidResponse(f"malformed RESP {kind!r} line {line[:40]!r}") from exc
    raise InvalidResponse(f"unknown RESP reply type {kind!r}")
