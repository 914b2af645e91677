"""Group names <-> NATS subjects, and the frame that carries a hashed group's name.

A group becomes ``<namespace>.<token>.<token>...``: one subject token per
dot-separated part of the name, so that NATS wildcards can cover patterns
with a literal prefix (``chat.*`` -> ``<namespace>.chat.>``). Each token
keeps ``A-Z a-z 0-9 _ -`` and writes every other UTF-8 byte as ``~XX``
(upper-case hex); an empty part is ``~`` alone. So no subject holds a
space, a wildcard or an empty token, and the mapping is reversible.

A subject longer than `SUBJECT_LIMIT` bytes keeps as many leading tokens
as fit, then ends in ``~h<128-bit hash>`` (which no encoded token can be).
Its messages carry the real group name in front of the payload (`frame`),
and a receiver checks it: a hash collision or a foreign publisher can
never deliver to the wrong group.
"""

from __future__ import annotations

import hashlib
import re
import struct

from channels_core.patterns import literal_prefix

__all__ = ["SUBJECT_LIMIT", "Subjects"]

#: Longest subject the layer uses, in bytes (NATS recommends at most 256).
SUBJECT_LIMIT = 256

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_NAMESPACE_LIMIT = 64
_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = [chr(byte) if byte in _KEPT else f"~{byte:02X}" for byte in range(256)]
_ESCAPED = re.compile(r"~([0-9A-F]{2})")
_HASH_MARK = "~h"
_HASH_CHARS = 32  # hex digits: 128 bits
_HASH_TOKEN = len(_HASH_MARK) + _HASH_CHARS
_EMPTY = "~"
_LENGTH = struct.Struct(">I")


def _token(part: str) -> str:
    if not part:
        return _EMPTY
    if part.isascii() and part.replace("_", "").replace("-", "").isalnum():
        return part
    return "".join(_ESCAPES[byte] for byte in part.encode())


def _part(token: str) -> str | None:
    """The name part a token encodes, or None if it is not one this module writes."""
    if token == _EMPTY:
        return ""
    if _token(token) == token:
        return token
    try:
        text = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), token).encode("latin-1").decode()
    except UnicodeError:
        return None
    return text if _token(text) == token else None


class Subjects:
    """Every subject the layer uses, under one `namespace`."""

    def __init__(self, namespace: str) -> None:
        if len(namespace) > _NAMESPACE_LIMIT or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace must be 1-{_NAMESPACE_LIMIT} characters of A-Z, a-z, 0-9, _ and -, "
                f"in dot-separated parts (a NATS subject prefix); got {namespace!r}"
            )
        self.namespace = namespace
        #: Every subject of the namespace (what a pattern without literal prefix needs).
        self.everything = f"{namespace}.>"
        self._prefix = f"{namespace}."
        # Room for the leading tokens of a hashed subject, dot before the hash included.
        self._kept_room = SUBJECT_LIMIT - 1 - _HASH_TOKEN

    def subject(self, group: str) -> str:
        """The subject carrying `group` (at most `SUBJECT_LIMIT` bytes)."""
        tokens = [_token(part) for part in group.split(".")]
        direct = self._prefix + ".".join(tokens)
        if len(direct) <= SUBJECT_LIMIT:
            return direct
        digest = hashlib.sha256(group.encode()).hexdigest()[:_HASH_CHARS]
        return ".".join([*self._leading(tokens), _HASH_MARK + digest])

    def covering(self, pattern: str) -> str:
        """The narrowest NATS subject (maybe a wildcard) covering every group `pattern` matches."""
        prefix, whole = literal_prefix(pattern)
        if whole:
            return self.subject(prefix)
        complete = prefix.split(".")[:-1]  # the part after the last dot is cut short
        return ".".join([*self._leading([_token(part) for part in complete]), ">"])

    def _leading(self, tokens: list[str]) -> list[str]:
        """The namespace and as many of `tokens` as fit in a hashed subject."""
        kept = [self.namespace]
        length = len(self.namespace)
        for token in tokens:
            length += 1 + len(token)
            if length > self._kept_room:
                break
            kept.append(token)
        return kept

    def frame(self, group: str, payload: bytes) -> tuple[str, bytes]:
        """The subject and message data that carry `payload` to `group`."""
        subject = self.subject(group)
        if not self.is_hashed(subject):
            return subject, payload
        name = group.encode()
        return subject, _LENGTH.pack(len(name)) + name + payload

    def is_hashed(self, subject: str) -> bool:
        """Whether `subject` ends in a hash (its messages carry the group in a frame)."""
        return subject.rpartition(".")[2].startswith(_HASH_MARK)

    def read(self, subject: str, data: bytes) -> tuple[str, bytes] | None:
        """The group and payload of a message on `subject`; None if it is not the layer's."""
        if not subject.startswith(self._prefix):
            return None
        if self.is_hashed(subject):
            return self.unframe(subject, data)
        parts = [_part(token) for token in subject[len(self._prefix) :].split(".")]
        if any(part is None for part in parts):
            return None
        return ".".join(part for part in parts if part is not None), data

    def unframe(self, subject: str, data: bytes) -> tuple[str, bytes] | None:
        """Group and payload of a message on the hashed `subject`, checked against it."""
        if len(data) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(data)
        end = _LENGTH.size + size
        try:
            group = data[_LENGTH.size : end].decode()
        except UnicodeDecodeError:
            return None
        if len(data) < end or self.subject(group) != subject:
            return None
        return group, data[end:]
