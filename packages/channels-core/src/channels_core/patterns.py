"""Glob patterns with Redis PSUBSCRIBE semantics, for layers that match locally.

``*`` any run of bytes, ``?`` one byte, ``[abc]`` / ``[a-z]`` / ``[^a]`` a
byte class, ``\\x`` the byte x literally. Like Redis, matching works on the
UTF-8 bytes of the pattern and the group, so every layer matches a pattern
the same way (``?`` does not match ``é``, which is two bytes; ``??`` does),
and every pattern is valid: an unclosed ``[`` runs to the end of the
pattern, a reversed range ``[z-a]`` means ``[a-z]``, a trailing ``\\`` is
literal. Ranges compare bytes as Redis's signed ``char`` does: bytes from
0x80 up come before 0x00, so ``[0-é]`` (``é`` is 0xC3 0xA9) holds the bytes
0xC3-0xFF, 0x00-``0`` and 0xA9.

Matching never backtracks: between two stars each piece of the pattern has
a fixed width, so its leftmost occurrence is the one to take, and the
regular expression commits to it (an atomic group). A match costs at most
O(len(pattern) * len(group)), whoever chooses the names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import groupby

__all__ = ["compile_pattern", "literal_prefix", "pattern_to_regex"]

#: One byte of the group (the set of byte values it may be), or None for a star.
_Token = frozenset[int] | None
_ANY_BYTE = frozenset(range(256))


def pattern_to_regex(pattern: str) -> bytes:
    """The bytes regular expression (for `re.fullmatch`, DOTALL) equivalent to `pattern`."""
    segments = _segments(_parse(pattern.encode()))
    return _join([_byte_regex(segment) for segment in segments]).encode()


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A matcher: ``compile_pattern("chat.*")("chat.1")`` is True.

    A group that is not valid UTF-8 (lone surrogates, which no channel
    accepts as a name) is matched on its ``surrogatepass`` bytes, never raises.
    """
    segments = _segments(_parse(pattern.encode()))
    if any(not token for segment in segments for token in segment):
        return _never  # an empty class, such as ``[]``: no byte fits
    if all(len(token) == 1 for segment in segments for token in segment):
        try:
            texts = [bytes(min(token) for token in segment).decode() for segment in segments]
        except UnicodeDecodeError:
            pass  # a class of one byte that is part of a character: match bytes
        else:
            return _literal_matcher(texts)
    regex = _join([_byte_regex(segment) for segment in segments]).encode()
    fullmatch = re.compile(regex, re.DOTALL).fullmatch

    def matches(group: str) -> bool:
        try:
            data = group.encode()
        except UnicodeEncodeError:
            data = group.encode("utf-8", "surrogatepass")
        return fullmatch(data) is not None

    return matches


def literal_prefix(pattern: str) -> tuple[str, bool]:
    """The text every group matching `pattern` starts with, and whether it is the only match.

    For layers whose broker has its own, coarser wildcards: subscribe to
    the narrowest broker wildcard covering the prefix (or to the exact name
    when the pattern has no wildcard: ``literal_prefix("a\\*")`` is
    ``("a*", True)``), then match exactly with `compile_pattern`.
    """
    prefix = bytearray()
    tokens = _parse(pattern.encode())
    for token in tokens:
        if token is None or len(token) != 1:
            break
        prefix.append(min(token))
    try:
        text = prefix.decode()
    except UnicodeDecodeError as cut:  # a class of one byte that is part of a character
        return prefix[: cut.start].decode(), False
    return text, len(prefix) == len(tokens)


def _literal_matcher(segments: Sequence[str]) -> Callable[[str], bool]:
    """Match a pattern without ``?`` or classes on the text itself (no encoding).

    UTF-8 is self-synchronizing: text made of whole characters occurs in the
    bytes of a group exactly where it occurs in its characters, so this
    agrees with matching bytes.
    """
    if len(segments) == 1:
        (exact,) = segments
        return lambda group: group == exact
    if len(segments) == 2 and not segments[1]:
        head = segments[0]
        return lambda group: group.startswith(head)
    fullmatch = re.compile(_join([re.escape(segment) for segment in segments]), re.DOTALL).fullmatch
    return lambda group: fullmatch(group) is not None


def _never(group: str) -> bool:
    return False


def _parse(source: bytes) -> list[_Token]:
    """The pattern's tokens, read exactly as Redis's ``stringmatchlen`` reads them."""
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        byte = source[i]
        if byte == ord("*"):
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
        elif byte == ord("?"):
            tokens.append(_ANY_BYTE)
        elif byte == ord("["):
            i, members = _byte_class(source, i + 1)
            tokens.append(members)
        else:
            if byte == ord("\\") and i + 1 < n:
                i += 1
            tokens.append(frozenset((source[i],)))
        i += 1
    return tokens


def _byte_class(source: bytes, i: int) -> tuple[int, frozenset[int]]:
    """Read the class starting after ``[``; return the index of its last byte and its bytes."""
    n = len(source)
    negate = i < n and source[i] == ord("^")
    if negate:
        i += 1
    members: set[int] = set()
    while True:
        if i >= n:  # unclosed: the class ends with the pattern
            i = n - 1
            break
        byte = source[i]
        if byte == ord("\\") and i + 1 < n:
            i += 1
            members.add(source[i])
        elif byte == ord("]"):
            break
        elif i + 2 < n and source[i + 1] == ord("-"):
            low, high = sorted((_signed(byte), _signed(source[i + 2])))
            members.update(value & 0xFF for value in range(low, high + 1))
            i += 2
        else:
            members.add(byte)
        i += 1
    return i, _ANY_BYTE - members if negate else frozenset(members)


def _signed(byte: int) -> int:
    """The byte as a C ``char`` on the platforms Redis runs on (signed: 0xFF is -1)."""
    return byte - 256 if byte >= 0x80 else byte


def _segments(tokens: list[_Token]) -> list[list[frozenset[int]]]:
    """The fixed-width pieces between stars: one more than there are stars."""
    segments: list[list[frozenset[int]]] = [[]]
    for token in tokens:
        if token is None:
            segments.append([])
        else:
            segments[-1].append(token)
    return segments


def _join(segments: Sequence[str]) -> str:
    """Join the regexes of fixed-width segments with stars, without backtracking.

    The first segment is anchored at the start, the last at the end; each
    one between takes its leftmost occurrence after the previous, inside an
    atomic group so that a failure later never retries a later occurrence.
    """
    if len(segments) == 1:
        return segments[0]
    head, *between, tail = segments
    return head + "".join(f"(?>.*?{segment})" for segment in between) + ".*" + tail


def _byte_regex(segment: Sequence[frozenset[int]]) -> str:
    return "".join(_byte_set_regex(token) for token in segment)


def _byte_set_regex(members: frozenset[int]) -> str:
    if not members:
        return "(?!)"
    if members == _ANY_BYTE:
        return "."
    if len(members) == 1:
        return _hex(min(members))
    parts = []
    # Runs of consecutive values: within one, value minus position is constant.
    for _, run in groupby(enumerate(sorted(members)), lambda item: item[1] - item[0]):
        first, *rest = (value for _, value in run)
        parts.append(_hex(first) + (f"-{_hex(rest[-1])}" if rest else ""))
    return "[" + "".join(parts) + "]"


def _hex(byte: int) -> str:
    return f"\\x{byte:02x}"
