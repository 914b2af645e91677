"""PostgreSQL's frontend/backend protocol, the part the layer's own connections need.

Messages the client sends (Parse of a named statement, Bind + Execute +
Sync of it, a simple Query) and the framing of what the server sends back
(`HEADER`: one-byte type, four-byte length, then the body), with the
bodies the layer reads (ErrorResponse, NotificationResponse).

Parameters: str as UTF-8 text and int in decimal (text format: the server
parses them with whatever type it inferred), bytes as bytea and a list of
only str (or only bytes) as a one-dimensional text[] (bytea[]) in binary
format, so a batch's envelopes are copied, never escaped; any other list
as an array literal in text format, None as NULL. A statement must then
take bytes where it takes bytea, and a list of str where it takes text[]
(``$1::text[]``), as the layer's statements do.
"""

from __future__ import annotations

from collections.abc import Sequence
from struct import Struct
from typing import Any

__all__ = [
    "HEADER",
    "bind_execute",
    "error_fields",
    "notification",
    "parse",
    "simple_query",
]

#: What starts every message from the server: its type, then its length (itself
#: included, the type not).
HEADER = Struct("!cI")
_LENGTH = Struct("!I")
_NULL = b"\xff\xff\xff\xff"
#: A binary array's header: dimensions, has-NULLs flag, element type, then per
#: dimension its length and lower bound.
_ARRAY_HEAD = Struct("!iiIii")
_TEXT_OID, _BYTEA_OID = 25, 17
#: Execute the unnamed portal, all rows; then Sync (ends the implicit transaction).
_EXECUTE_SYNC = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04"


def parse(name: bytes, query: str) -> bytes:
    """Parse: prepare `query` as the statement `name`, parameter types inferred."""
    body = name + b"\x00" + query.encode("utf-8") + b"\x00\x00\x00"
    return b"P" + _LENGTH.pack(len(body) + 4) + body


def simple_query(sql: str) -> bytes:
    """Query: run `sql`, one statement or several separated by semicolons."""
    body = sql.encode("utf-8") + b"\x00"
    return b"Q" + _LENGTH.pack(len(body) + 4) + body


def bind_execute(name: bytes, arguments: Sequence[Any]) -> bytes:
    """Bind `arguments` to statement `name`, Execute it, Sync."""
    parts = []
    codes: list[int] | None = None  # per parameter (0 text, 1 binary) once one is binary
    for index, argument in enumerate(arguments):
        if type(argument) is str:  # most of them: a fast path
            value = argument.encode("utf-8")
        elif argument is None:
            parts.append(_NULL)
            continue
        else:
            value, binary = _value(argument)
            if binary:
                if codes is None:
                    codes = [0] * len(arguments)
                codes[index] = 1
        parts += (_LENGTH.pack(len(value)), value)
    if codes is None:
        formats = b"\x00\x00"  # every parameter in text format
    else:
        formats = len(codes).to_bytes(2, "big") + bytes(
            byte for code in codes for byte in (0, code)
        )
    head = b"\x00" + name + b"\x00" + formats + len(arguments).to_bytes(2, "big")
    # Results in text format (the layer reads none of them).
    body = head + b"".join(parts) + b"\x00\x00"
    return b"B" + _LENGTH.pack(len(body) + 4) + body + _EXECUTE_SYNC


def _value(argument: Any) -> tuple[bytes, bool]:
    """A parameter value (not None), and whether it is in binary format."""
    if isinstance(argument, bytes):
        return argument, True
    if isinstance(argument, str):
        return argument.encode("utf-8"), False
    if isinstance(argument, int):
        if isinstance(argument, bool):  # no statement takes one
            raise TypeError("a bool parameter is not supported")
        return b"%d" % argument, False
    if isinstance(argument, list | tuple):
        if argument and all(type(item) is str for item in argument):
            return _binary_array(_TEXT_OID, [item.encode("utf-8") for item in argument]), True
        if argument and all(type(item) is bytes for item in argument):
            return _binary_array(_BYTEA_OID, argument), True
        return _array(argument).encode("utf-8"), False
    raise TypeError(f"a {type(argument).__name__} parameter is not supported")


def _binary_array(element_type: int, items: Sequence[bytes]) -> bytes:
    """A one-dimensional array of `items` (none NULL) in binary format."""
    parts = [_ARRAY_HEAD.pack(1, 0, element_type, len(items), 1)]
    pack = _LENGTH.pack
    for item in items:
        parts += (pack(len(item)), item)
    return b"".join(parts)


def _array(items: Sequence[Any]) -> str:
    """A one-dimensional array literal in text format: every element quoted, NULL bare."""
    elements = []
    for item in items:
        if item is None:
            elements.append("NULL")
            continue
        if isinstance(item, str):
            text = item
        elif isinstance(item, bytes):
            text = "\\x" + item.hex()
        elif isinstance(item, int) and not isinstance(item, bool):
            text = str(item)
        else:
            raise TypeError(f"a {type(item).__name__} array element is not supported")
        if "\\" in text or '"' in text:
            text = text.replace("\\", "\\\\").replace('"', '\\"')
        elements.append(f'"{text}"')
    return "{" + ",".join(elements) + "}"


def error_fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse or NoticeResponse body: code letter -> text."""
    fields: dict[str, str] = {}
    for field in body.split(b"\x00"):
        if field:
            fields[chr(field[0])] = field[1:].decode("utf-8", "replace")
    return fields


def notification(body: bytes) -> tuple[str, str]:
    """A NotificationResponse body: its channel and payload (the sender's pid skipped)."""
    channel, payload, _ = body[4:].split(b"\x00", 2)
    return channel.decode("utf-8", "replace"), payload.decode("utf-8", "replace")
