"""Glob patterns with Redis PSUBSCRIBE semantics, for layers that match locally.

``*`` any run of bytes, ``?`` one byte, ``[abc]`` / ``[a-z]`` / ``[^a]`` a
byte class, ``\\x`` the byte x literally. Like Redis, matching works on the
UTF-8 bytes of the pattern and the group, so every layer matches a pattern
the same way (``?`` does not match ``é``, which is two bytes; ``??`` does),
and every pattern is valid: an unclosed ``[`` runs to the end of the
pattern, a reversed range ``[z-a]`` means ``[a-z]``, a trailing ``\\`` is
literal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["compile_pattern", "pattern_to_regex"]

_DOT, _STAR, _NOTHING = b".", b".*", b"(?!)"


def pattern_to_regex(pattern: str) -> bytes:
    """The bytes regular expression (for `re.fullmatch`, DOTALL) equivalent to `pattern`."""
    source = pattern.encode()
    out: list[bytes] = []
    i, n = 0, len(source)
    while i < n:
        byte = source[i : i + 1]
        if byte == b"*":
            while i + 1 < n and source[i + 1 : i + 2] == b"*":
                i += 1
            out.append(_STAR)
        elif byte == b"?":
            out.append(_DOT)
        elif byte == b"\\" and i + 1 < n:
            i += 1
            out.append(_literal(source[i]))
        elif byte == b"[":
            i, byte_class = _byte_class(source, i + 1)
            out.append(byte_class)
        else:
            out.append(_literal(source[i]))
        i += 1
    return b"".join(out)


def _byte_class(source: bytes, i: int) -> tuple[int, bytes]:
    """Translate the class starting after ``[``; return the index of its last byte."""
    n = len(source)
    negate = i < n and source[i : i + 1] == b"^"
    if negate:
        i += 1
    members: list[bytes] = []
    while True:
        if i >= n:  # unclosed: the class ends with the pattern
            i = n - 1
            break
        byte = source[i : i + 1]
        if byte == b"\\" and i + 1 < n:
            i += 1
            members.append(_in_class(source[i]))
        elif byte == b"]":
            break
        elif i + 2 < n and source[i + 1 : i + 2] == b"-":
            low, high = sorted((source[i], source[i + 2]))
            members.append(_in_class(low) + b"-" + _in_class(high))
            i += 2
        else:
            members.append(_in_class(source[i]))
        i += 1
    body = b"".join(members)
    if not body:
        return i, _DOT if negate else _NOTHING
    return i, b"[" + (b"^" if negate else b"") + body + b"]"


def _literal(value: int) -> bytes:
    return b"\\x%02x" % value


_in_class = _literal


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A matcher: ``compile_pattern("chat.*")("chat.1")`` is True."""
    fullmatch = re.compile(pattern_to_regex(pattern), re.DOTALL).fullmatch

    def matches(group: str) -> bool:
        return fullmatch(group.encode()) is not None

    return matches
