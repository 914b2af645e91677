"""Group names -> subjects: valid for NATS, reversible, distinct, covered by their patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels_core.patterns import compile_pattern
from channels_layer_nats._subjects import SUBJECT_LIMIT, Subjects

subjects = Subjects("ns")
names = st.text(min_size=1).filter(lambda name: name == name.encode().decode())
# Names made of few characters, so that patterns built from the same alphabet match often.
dotted = st.text(alphabet="ab.é *?[]\\", min_size=1, max_size=12)


def nats_matches(wildcard: str, subject: str) -> bool:
    """NATS's own rule: ``*`` one token, ``>`` one or more trailing tokens."""
    wanted, tokens = wildcard.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(tokens) == len(wanted)


def valid_subject(subject: str) -> bool:
    return (
        len(subject.encode()) <= SUBJECT_LIMIT
        and subject.isascii()
        and not re.search(r"\s", subject)
        and all(token and "*" not in token and ">" not in token for token in subject.split("."))
    )


@given(names | dotted | st.builds(lambda n: n * 300, dotted))
def test_every_name_has_a_valid_subject_and_comes_back(group: str) -> None:
    subject, data = subjects.frame(group, b"payload")
    assert valid_subject(subject), subject
    assert subjects.read(subject, data) == (group, b"payload")


@given(names, names)
def test_distinct_names_never_meet(first: str, second: str) -> None:
    if first != second:
        assert subjects.subject(first) != subjects.subject(second)


@given(dotted | st.builds(lambda n: n * 60, dotted), dotted | st.builds(lambda n: n * 60, dotted))
def test_a_patterns_wildcard_covers_every_group_it_matches(pattern: str, group: str) -> None:
    covering = subjects.covering(pattern)
    assert covering == "ns.>" or valid_subject(covering.removesuffix(".>"))
    for candidate in (group, pattern.replace("*", "").replace("?", "a") + group):
        if compile_pattern(pattern)(candidate):
            assert nats_matches(covering, subjects.subject(candidate)), (covering, candidate)


@pytest.mark.parametrize(
    ("pattern", "covering"),
    [
        ("chat.*", "ns.chat.>"),
        ("chat.room.?", "ns.chat.room.>"),
        ("chat*", "ns.>"),
        ("*.errors", "ns.>"),
        ("exact.name", "ns.exact.name"),
        ("with space.*", "ns.with~20space.>"),
    ],
)
def test_narrowest_wildcard(pattern: str, covering: str) -> None:
    assert subjects.covering(pattern) == covering


def test_foreign_and_forged_messages_are_not_read() -> None:
    hashed = subjects.subject("x" * 400)
    assert subjects.is_hashed(hashed)
    forged = subjects.frame("y" * 400, b"data")[1]
    assert subjects.read(hashed, forged) is None  # another group's frame on this subject
    assert subjects.read(hashed, b"\x00\x00") is None  # no frame at all
    assert subjects.read("ns.a~4", b"") is None  # a broken escape
    assert subjects.read("ns.a~61", b"") is None  # "aa" written another way
    assert subjects.read("other.a", b"") is None  # another namespace
    assert subjects.read("ns.a", b"plain") == ("a", b"plain")


@pytest.mark.parametrize("namespace", ["", "a b", "a.*", "a..b", ".a", "x" * 65])
def test_bad_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Subjects(namespace)
