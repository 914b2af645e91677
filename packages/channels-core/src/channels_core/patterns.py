"""Glob patterns with Redis PSUBSCRIBE semantics, for layers that match locally.

``*`` any run of characters, ``?`` one character, ``[abc]`` / ``[a-z]`` /
``[^a]`` a character class, ``\\x`` the character x literally. Like Redis,
every pattern is valid: an unclosed ``[`` runs to the end of the pattern, a
reversed range ``[z-a]`` means ``[a-z]``, a trailing ``\\`` is literal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["compile_pattern", "pattern_to_regex"]


def pattern_to_regex(pattern: str) -> str:
    """The regular expression (for `re.fullmatch`, DOTALL) equivalent to `pattern`."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            i, cls = _character_class(pattern, i + 1)
            out.append(cls)
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _character_class(pattern: str, i: int) -> tuple[int, str]:
    """Translate the class starting after ``[``; return the index of its last character."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    members: list[str] = []
    while True:
        if i >= n:  # unclosed: the class ends with the pattern
            i = n - 1
            break
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            i += 1
            members.append(_class_escape(pattern[i]))
        elif char == "]":
            break
        elif i + 2 < n and pattern[i + 1] == "-":
            low, high = sorted((pattern[i], pattern[i + 2]))
            members.append(f"{_class_escape(low)}-{_class_escape(high)}")
            i += 2
        else:
            members.append(_class_escape(char))
        i += 1
    body = "".join(members)
    if not body:
        return i, "." if negate else "(?!)"
    return i, f"[{'^' if negate else ''}{body}]"


def _class_escape(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """A matcher: ``compile_pattern("chat.*")("chat.1")`` is truthy."""
    return re.compile(pattern_to_regex(pattern), re.DOTALL).fullmatch
