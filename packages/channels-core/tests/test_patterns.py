"""Glob matching follows Redis PSUBSCRIBE semantics."""

from __future__ import annotations

import pytest

from channels_core.patterns import compile_pattern


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("chat.*", ["chat.", "chat.1", "chat.a.b", "chat.\n"], ["chat", "xchat.1"]),
        ("h?llo", ["hello", "hallo"], ["hllo", "heello", "hällo"]),
        # Like Redis, bytes of UTF-8: ? is one byte, é two, 🚀 four.
        ("h??llo", ["hällo"], ["hallo"]),
        ("h????llo", ["h🚀llo"], ["hällo"]),
        ("[é]", [], ["é", "e"]),
        ("[é][é]", ["é"], ["e"]),
        ("h[ae]llo", ["hello", "hallo"], ["hillo", "hllo"]),
        ("h[^e]llo", ["hallo", "hbllo"], ["hello"]),
        ("h[a-b]llo", ["hallo", "hbllo"], ["hcllo"]),
        ("h[b-a]llo", ["hallo", "hbllo"], ["hcllo"]),  # reversed ranges are swapped
        (r"h\*llo", ["h*llo"], ["hello"]),
        (r"h\?", ["h?"], ["ha"]),
        (r"[\]]", ["]"], ["a"]),
        ("a[bc", ["ab", "ac"], ["abc", "a["]),  # unclosed class runs to the end
        ("a[]b", [], ["ab", "a]b"]),  # an empty class matches nothing
        ("a[^]b", ["axb", "a]b"], ["ab"]),
        ("back\\", ["back\\"], ["back"]),  # a trailing backslash is literal
        ("**x", ["x", "abx"], ["xa"]),
        ("a.b+c(d)", ["a.b+c(d)"], ["aXb+c(d)"]),  # regex metacharacters are literal
        ("ü*", ["über"], ["uber"]),
        ("[^a]", ["b"], ["a", "é"]),
    ],
)
def test_pattern_semantics(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    matches = compile_pattern(pattern)
    for group in matching:
        assert matches(group), f"{pattern!r} should match {group!r}"
    for group in not_matching:
        assert not matches(group), f"{pattern!r} should not match {group!r}"
