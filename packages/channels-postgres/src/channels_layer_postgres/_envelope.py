"""The text a NOTIFY carries: the group name plus the payload or a reference to it.

NOTIFY payloads are text shorter than 8,000 bytes. The layer carries bytes,
so an envelope is::

    chl1 <kind> <sequence, hex> ":" <group as a JSON string> <body>

with kind ``t`` (body: the payload itself, when it is UTF-8 text without
NUL), ``b`` (body: the payload in base64) or ``r`` (body: the id of the row
of the payloads table holding it, for payloads that do not fit). The
sequence number keeps two identical messages published in one transaction
distinct (PostgreSQL folds identical notifications of a transaction). A
group name too long to fit is sent as ``null`` in a reference envelope and
stored in the payloads table row instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from itertools import count

__all__ = ["NOTIFY_LIMIT", "Envelope", "EnvelopeWriter", "decode"]

#: NOTIFY refuses payloads of 8,000 bytes and more.
NOTIFY_LIMIT = 7999

_MAGIC = "chl1"
_MAX_ID_DIGITS = 20  # a bigint in decimal
_TEXT, _BASE64, _REFERENCE = "t", "b", "r"
_decode_json = json.JSONDecoder().raw_decode


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded notification: `payload` is set, or `reference` (a payloads-table row id).

    `group` is None only for a reference whose row holds the group name.
    """

    group: str | None
    payload: bytes | None
    reference: int | None


class EnvelopeWriter:
    """Builds envelopes; `ascii_only` for servers whose encoding is not UTF-8."""

    def __init__(self, *, ascii_only: bool = False) -> None:
        self.ascii_only = ascii_only
        self._sequence = count()

    def _head(self, kind: str, group: str | None) -> str:
        quoted = json.dumps(group, ensure_ascii=self.ascii_only)
        return f"{_MAGIC}{kind}{next(self._sequence):x}:{quoted}"

    def inline(self, group: str, payload: bytes) -> str | None:
        """The envelope carrying `payload` itself, or None if it would not fit in a NOTIFY."""
        text: str | None = None
        if not self.ascii_only or payload.isascii():
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None and "\x00" not in text:
            envelope = self._head(_TEXT, group) + text
        else:
            envelope = self._head(_BASE64, group) + base64.b64encode(payload).decode("ascii")
        return envelope if len(envelope.encode("utf-8")) <= NOTIFY_LIMIT else None

    def reference_head(self, group: str) -> tuple[str, bool]:
        """The envelope minus the row id (the SQL appends it), and whether it names the group.

        A group name too long for a NOTIFY is left out (JSON ``null``): it
        then travels in the payloads table, with the payload.
        """
        head = self._head(_REFERENCE, group)
        if len(head.encode("utf-8")) + _MAX_ID_DIGITS <= NOTIFY_LIMIT:
            return head, True
        return self._head(_REFERENCE, None), False


def decode(text: str) -> Envelope:
    """Parse a notification; raise ValueError for anything that is not a well-formed envelope."""
    if not text.startswith(_MAGIC) or len(text) < len(_MAGIC) + 3:
        raise ValueError("not a channels envelope")
    kind = text[len(_MAGIC)]
    colon = text.find(":", len(_MAGIC) + 1)
    if kind not in (_TEXT, _BASE64, _REFERENCE) or colon < 0:
        raise ValueError("malformed envelope header")
    group, end = _decode_json(text, colon + 1)
    if not (isinstance(group, str) and group) and not (group is None and kind == _REFERENCE):
        raise ValueError("the envelope's group is not a non-empty string")
    body = text[end:]
    if kind == _TEXT:
        return Envelope(group, body.encode("utf-8"), None)
    if kind == _BASE64:
        try:
            return Envelope(group, base64.b64decode(body, validate=True), None)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 body: {exc}") from None
    if not body.isdigit() or not body.isascii():
        raise ValueError("bad payload reference")
    return Envelope(group, None, int(body))
