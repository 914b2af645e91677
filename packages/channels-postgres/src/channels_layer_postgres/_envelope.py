"""The text a NOTIFY carries: the group name plus the payload or a reference to it.

NOTIFY payloads are text shorter than 8,000 bytes. The layer carries bytes,
so an envelope is::

    chl1 <kind> <sequence, hex> ["@" <position>] ":" <group as a JSON string> <body>

with kind ``t`` (body: the payload itself, when it is UTF-8 text without
NUL), ``b`` (body: the payload in base64) or ``r`` (body: ``<token>.<row
id>``, naming the row of the payloads table holding it, for payloads that
do not fit). The token is a random number
stored with the row and checked when it is fetched: row ids restart after
``TRUNCATE ... RESTART IDENTITY`` or a crash (the table is unlogged), so an
id alone could name another message. The
sequence number keeps two identical messages published in one transaction
distinct (PostgreSQL folds identical notifications of a transaction). A
group name too long to fit is sent as ``null`` in a reference envelope and
stored in the payloads table row instead. With history on, the publishing
statement inserts ``@<position>`` (the message's place in its group's log,
known only there) before the colon; readers that predate it skip it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from itertools import count
from json.decoder import scanstring  # type: ignore[attr-defined]  # untyped, public since 2.6
from typing import NamedTuple

from channels_core.history import parse_position

__all__ = [
    "NOTIFY_LIMIT",
    "POSITION_ROOM",
    "Envelope",
    "EnvelopeWriter",
    "Reference",
    "decode",
    "load_stored_group",
    "split_for_position",
    "stored_group",
]

#: NOTIFY refuses payloads of 8,000 bytes and more.
NOTIFY_LIMIT = 7999
#: Bytes an envelope keeps free for ``@<position>`` (a 12-character epoch, a bigint).
POSITION_ROOM = 1 + 12 + 1 + 19

_MAGIC = "chl1"
_MAX_ID_DIGITS = 20  # a bigint in decimal
_QUOTED_CACHE = 1024  # groups whose JSON string a writer keeps
_TOKEN_DIGITS = 16  # hex digits of a 63-bit token
_TEXT, _BASE64, _REFERENCE = "t", "b", "r"
_REFERENCE_BODY = re.compile(rf"([0-9a-f]{{{_TOKEN_DIGITS}}})\.([0-9]{{1,{_MAX_ID_DIGITS}}})")


@dataclass(frozen=True, slots=True)
class Reference:
    """A payloads-table row: its id, and the random token written with it."""

    row: int
    token: int


class Envelope(NamedTuple):
    """A decoded notification: `payload` is set, or `reference` (a payloads-table row).

    `group` is None only for a reference whose row holds the group name;
    `position` is the message's place in its group's log (history on). A
    named tuple: one is made per notification received, and a tuple costs
    a fraction of a frozen dataclass's ``__init__``.
    """

    group: str | None
    payload: bytes | None
    reference: Reference | None
    position: str | None = None


class EnvelopeWriter:
    """Builds envelopes; `ascii_only` for servers whose encoding is not UTF-8."""

    def __init__(self, *, ascii_only: bool = False) -> None:
        self._ascii_only = ascii_only
        self._sequence = count()
        #: Group -> its JSON string: a publisher sends to the same few groups again and again.
        self._quoted: dict[str | None, str] = {}

    @property
    def ascii_only(self) -> bool:
        return self._ascii_only

    @ascii_only.setter
    def ascii_only(self, value: bool) -> None:
        self._ascii_only = value
        self._quoted.clear()

    def _head(self, kind: str, group: str | None) -> str:
        quoted = self._quoted.get(group)
        if quoted is None:
            if len(self._quoted) >= _QUOTED_CACHE:
                self._quoted.clear()
            quoted = self._quoted[group] = json.dumps(group, ensure_ascii=self._ascii_only)
        return f"{_MAGIC}{kind}{next(self._sequence):x}:{quoted}"

    def inline(self, group: str, payload: bytes, reserve: int = 0) -> str | None:
        """The envelope carrying `payload` itself, or None if it would not fit in a NOTIFY
        with `reserve` bytes to spare."""
        text: str | None = None
        if b"\x00" not in payload and (not self._ascii_only or payload.isascii()):
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None:
            envelope = self._head(_TEXT, group) + text
        else:
            envelope = self._head(_BASE64, group) + base64.b64encode(payload).decode("ascii")
        size = len(envelope) if envelope.isascii() else len(envelope.encode("utf-8"))
        return envelope if size + reserve <= NOTIFY_LIMIT else None

    def reference_head(self, group: str, reserve: int = 0) -> tuple[str, bool, int]:
        """The envelope minus the row id (the SQL appends it), whether it names the group,
        and the token to store with the row.

        A group name too long for a NOTIFY is left out (JSON ``null``): it
        then travels in the payloads table, with the payload.
        """
        token = secrets.randbits(63)  # a positive bigint
        tail = f"{token:0{_TOKEN_DIGITS}x}."
        head = self._head(_REFERENCE, group) + tail
        if len(head.encode("utf-8")) + _MAX_ID_DIGITS + reserve <= NOTIFY_LIMIT:
            return head, True, token
        return self._head(_REFERENCE, None) + tail, False, token


def split_for_position(envelope: str) -> tuple[str, str]:
    """`envelope` cut where ``@<position>`` goes: before the colon ending its header."""
    colon = envelope.index(":", len(_MAGIC) + 1)
    return envelope[:colon], envelope[colon:]


def stored_group(group: str) -> str:
    """`group` as the payloads table keeps it: a JSON string in ASCII, since a
    ``text`` column can hold neither NUL nor, on a non-UTF-8 server, every character."""
    return json.dumps(group)


def load_stored_group(text: str) -> str:
    """The group the payloads table kept; ValueError if `text` is not one."""
    group, end = _decode_group(text, 0)
    if group is None or end != len(text):
        raise ValueError("the stored group is not a JSON string")
    return group


def decode(text: str) -> Envelope:
    """Parse a notification; raise ValueError for anything that is not a well-formed envelope."""
    if not text.startswith(_MAGIC) or len(text) < len(_MAGIC) + 3:
        raise ValueError("not a channels envelope")
    kind = text[len(_MAGIC)]
    colon = text.find(":", len(_MAGIC) + 1)
    if kind not in (_TEXT, _BASE64, _REFERENCE) or colon < 0:
        raise ValueError("malformed envelope header")
    if text.startswith('"', colon + 1):  # `_decode_group` of a string, inlined
        group, end = scanstring(text, colon + 2, True)
        if not group or not group.isascii():
            group, end = _decode_group(text, colon + 1)  # raises for what it refuses
    else:
        group, end = _decode_group(text, colon + 1)
    if group is None and kind != _REFERENCE:
        raise ValueError("the envelope has no group")
    position: str | None = None
    at = text.find("@", len(_MAGIC) + 1, colon)
    if at >= 0:
        position = text[at + 1 : colon]
        parse_position(position)  # ValueError if it is not one
    body = text[end:]
    if kind == _TEXT:
        return Envelope(group, body.encode("utf-8"), None, position)
    if kind == _BASE64:
        try:
            return Envelope(group, base64.b64decode(body, validate=True), None, position)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 body: {exc}") from None
    reference = _REFERENCE_BODY.fullmatch(body)
    if reference is None:
        raise ValueError("bad payload reference")
    token, row = reference.groups()
    return Envelope(group, None, Reference(int(row), int(token, 16)), position)


def _decode_group(text: str, start: int) -> tuple[str | None, int]:
    """The JSON string (or ``null``) at `start`, and where it ends.

    Only a string literal is parsed, never arbitrary JSON: a foreign
    notification of 7,000 nested brackets must be a ValueError, not a
    RecursionError. A group that is not valid Unicode (a lone surrogate
    escaped as ``\\ud800``) is refused like any other malformed group.
    """
    if text.startswith("null", start):
        return None, start + 4
    if not text.startswith('"', start):
        raise ValueError("the envelope's group is not a JSON string")
    group, end = scanstring(text, start + 1, True)  # strict: no raw control characters
    if not group:
        raise ValueError("the envelope's group is empty")
    if not group.isascii():
        try:
            group.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the envelope's group is not valid Unicode text") from None
    return group, end
