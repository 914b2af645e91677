"""Glob matching follows Redis PSUBSCRIBE semantics."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels_core.patterns import compile_pattern, literal_prefix, pattern_to_regex


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
        # Ranges compare signed chars, as Redis does: bytes from 0x80 up come
        # before 0x00, so a range from ASCII to é (0xC3 0xA9) wraps around.
        ("[0-é]", ["(", "\x00", "0"], ["5", "Z"]),
        ("[é-0]", ["("], ["5"]),
        ("[^0-é]", ["5", "Z"], ["(", "0"]),
        ("[a-é]*", ["é", "中", "Z", "a"], ["b", "z"]),
        # Every byte but 0xC3 is excluded: a class of one byte that is half of é.
        ("[^\x00-\x7f\x00-Ā\u0080-\u0080]*", ["é", "ée", "ü", "Ã"], ["a", "Ā", "ā"]),
    ],
)
def test_pattern_semantics(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    matches = compile_pattern(pattern)
    for group in matching:
        assert matches(group), f"{pattern!r} should match {group!r}"
    for group in not_matching:
        assert not matches(group), f"{pattern!r} should not match {group!r}"


@pytest.mark.parametrize(
    ("pattern", "group"),
    [
        ("*a*a*a*b", "a" * 800),  # took 7 s as a backtracking regex
        ("jobs.*.*.*.done", "jobs." + "." * 3000),  # took 24 s
        ("*a?*a?*a?*a?*[ab]*b", "a" * 5000),
        ("*" + "a" * 100 + "b*", "a" * 5000),
    ],
)
def test_matching_never_backtracks_exponentially(pattern: str, group: str) -> None:
    """Whoever picks group names cannot stall a pattern subscriber (a few ms at most here)."""
    matches = compile_pattern(pattern)
    started = time.perf_counter()
    assert not matches(group)
    assert time.perf_counter() - started < 1.0


def test_a_group_with_a_lone_surrogate_is_matched_not_raised_on() -> None:
    assert compile_pattern("*")("\ud800")
    assert compile_pattern("a*")("a\ud800")
    assert compile_pattern("???")("\ud800")  # its surrogatepass bytes: ED A0 80
    assert not compile_pattern("[a]*")("\ud800")


texts = st.text(st.sampled_from("ab.*\\é中"), max_size=8)


@given(pattern=texts.filter(bool), group=texts)
def test_patterns_without_classes_match_on_text_as_on_bytes(pattern: str, group: str) -> None:
    """Without ``?`` or classes the matcher works on the text: it agrees with the bytes regex."""
    on_bytes = re.fullmatch(pattern_to_regex(pattern), group.encode(), re.DOTALL)
    assert compile_pattern(pattern)(group) == (on_bytes is not None)


@pytest.mark.parametrize("pattern", ["[]", "a[]*", "*[]*", "[^]", "[", "\\"])
def test_pattern_to_regex_is_a_valid_regex_for_every_pattern(pattern: str) -> None:
    regex = re.compile(pattern_to_regex(pattern), re.DOTALL)
    for group in ["a", "ab", "\\", "["]:
        assert (regex.fullmatch(group.encode()) is not None) == compile_pattern(pattern)(group)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("chat.*", ("chat.", False)),
        ("chat.room", ("chat.room", True)),
        ("a\\*b[c]", ("a*bc", True)),
        ("user.?", ("user.", False)),
        ("[xy]z", ("", False)),
        ("é[é]", ("é", False)),
        ("ü*", ("ü", False)),
    ],
)
def test_literal_prefix(pattern: str, expected: tuple[str, bool]) -> None:
    assert literal_prefix(pattern) == expected


@given(st.text(min_size=1), st.text())
def test_every_match_starts_with_the_literal_prefix(pattern: str, group: str) -> None:
    prefix, whole = literal_prefix(pattern)
    for candidate in (group, prefix + group, prefix):
        if compile_pattern(pattern)(candidate):
            assert candidate.startswith(prefix)
            assert not whole or candidate == prefix
