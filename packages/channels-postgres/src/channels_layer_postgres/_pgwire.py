"""PostgreSQL's extended-query protocol, the part a publishing connection needs.

Messages the client sends (Parse of a named statement, Bind + Execute +
Sync of it with text parameters) and the framing of what the server sends
back (`HEADER`: one-byte type, four-byte length, then the body).
Parameters travel in text format, so the server parses each with the type
it inferred for the statement, exactly as for a ``psql`` literal: str as
UTF-8 text, bytes as bytea hex, int in decimal, None as NULL, a list as an
array literal.
"""

from __future__ import annotations

from collections.abc import Sequence
from struct import Struct
from typing import Any

__all__ = [
    "HEADER",
    "bind_execute",
    "error_fields",
    "parse",
]

#: What starts every message from the server: its type, then its length (itself
#: included, the type not).
HEADER = Struct("!cI")
_LENGTH = Struct("!I")
_NULL = b"\xff\xff\xff\xff"
#: Execute the unnamed portal, all rows; then Sync (ends the implicit transaction).
_EXECUTE_SYNC = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04"


def parse(name: bytes, query: str) -> bytes:
    """Parse: prepare `query` as the statement `name`, parameter types inferred."""
    body = name + b"\x00" + query.encode("utf-8") + b"\x00\x00\x00"
    return b"P" + _LENGTH.pack(len(body) + 4) + body


def bind_execute(name: bytes, arguments: Sequence[Any]) -> bytes:
    """Bind `arguments` (text format) to statement `name`, Execute it, Sync."""
    parts = [b"\x00", name, b"\x00\x00\x00", len(arguments).to_bytes(2, "big")]
    for argument in arguments:
        if type(argument) is str:  # most of them: a fast path
            value = argument.encode("utf-8")
        elif argument is None:
            parts.append(_NULL)
            continue
        else:
            value = _text(argument)
        parts += (_LENGTH.pack(len(value)), value)
    parts.append(b"\x00\x00")  # results in text format (the layer reads none of them)
    body = b"".join(parts)  # the unnamed portal first
    return b"B" + _LENGTH.pack(len(body) + 4) + body + _EXECUTE_SYNC


def _text(argument: Any) -> bytes:
    """A parameter value in text format (not None)."""
    if isinstance(argument, str):
        return argument.encode("utf-8")
    if isinstance(argument, bytes):
        return b"\\x" + argument.hex().encode("ascii")
    if isinstance(argument, int):  # bool is refused below: no statement takes one
        if isinstance(argument, bool):
            raise TypeError("a bool parameter is not supported")
        return b"%d" % argument
    if isinstance(argument, list | tuple):
        return _array(argument).encode("utf-8")
    raise TypeError(f"a {type(argument).__name__} parameter is not supported")


def _array(items: Sequence[Any]) -> str:
    """A one-dimensional array literal: every element quoted (NULL bare)."""
    if items and all(type(item) is str for item in items):
        # The common case (a batch's channels and envelopes): escaped in a few
        # passes over the joined text, not item by item. NUL (which no text
        # value holds) separates the items meanwhile.
        joined = "\x00".join(items)
        if joined.count("\x00") == len(items) - 1:
            joined = joined.replace("\\", "\\\\").replace('"', '\\"')
            return '{"' + joined.replace("\x00", '","') + '"}'
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
