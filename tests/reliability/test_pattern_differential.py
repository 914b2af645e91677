"""The core's glob matcher against the real Redis, pair by pair.

Redis has no command that matches one pattern against one name, but
``KEYS pattern`` runs the same function as PSUBSCRIBE (``stringmatchlen``,
case-sensitive) over the key names: each check stores the names as keys
under a prefix of this test's own (no glob character in it, so it matches
only itself, as the Redis layer's escaped prefix does) and compares the keys
Redis returns with the names `compile_pattern` accepts.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels_core.patterns import compile_pattern

#: Glob syntax, ASCII on both sides of the signed-char boundary, and characters
#: whose UTF-8 bytes are 0x80 or more (é is C3 A9, ÿ is C3 BF, 中 is E4 B8 AD).
ALPHABET = "ab0Z(-[]^\\*?é中ÿ\x00\x7f"


class RedisGlob:
    """Asks Redis which of some names a pattern matches."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._prefix = f"glob-diff-{secrets.token_hex(6)}:".encode()

    def matching(self, pattern: str, names: Iterable[str]) -> set[str]:
        keys = {self._prefix + name.encode(): name for name in names}
        pipe = self._client.pipeline(transaction=True)
        pipe.mset(dict.fromkeys(keys, b""))
        pipe.keys(self._prefix + pattern.encode())
        pipe.delete(*keys)
        _, found, _ = pipe.execute()
        return {keys[key] for key in found}


@pytest.fixture(scope="module")
def redis_glob(redis_url: str) -> Iterator[RedisGlob]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield RedisGlob(client)
    finally:
        client.close()


def ours(pattern: str, names: Iterable[str]) -> set[str]:
    matches = compile_pattern(pattern)
    return {name for name in names if matches(name)}


characters = st.sampled_from(ALPHABET)
#: A class with ranges: ``[``, maybe ``^``, members and ``x-y`` ranges, maybe no ``]``.
byte_classes = st.builds(
    lambda negate, members, close: "[" + negate + "".join(members) + close,
    st.sampled_from(["", "^"]),
    st.lists(characters | st.builds("{}-{}".format, characters, characters), max_size=3),
    st.sampled_from(["]", ""]),
)
patterns = st.lists(characters | byte_classes, min_size=1, max_size=6).map("".join)
names = st.lists(st.text(characters, min_size=1, max_size=8), min_size=1, max_size=12)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=patterns, names=names)
def test_random_patterns_match_exactly_what_redis_matches(
    redis_glob: RedisGlob, pattern: str, names: list[str]
) -> None:
    assert ours(pattern, names) == redis_glob.matching(pattern, names)


def test_every_short_pattern_matches_exactly_what_redis_matches(redis_glob: RedisGlob) -> None:
    """All patterns of up to three characters against all names of up to two."""
    names = [
        "".join(chars) for size in (1, 2) for chars in itertools.product("a0Z(-]\\*é", repeat=size)
    ]
    assert_agree(
        redis_glob,
        (
            "".join(chars)
            for size in (1, 2, 3)
            for chars in itertools.product("a0Z-[]^\\*?é", repeat=size)
        ),
        names,
    )


def test_every_range_matches_exactly_what_redis_matches(redis_glob: RedisGlob) -> None:
    """Ranges between any two of ASCII, glob syntax and bytes from 0x80 up, both ways round.

    Redis compares signed chars, so a range with one bound below 0x80 and
    the other above wraps around: ``[0-é]`` matches ``(`` but not ``5``.
    """
    bounds = "\x00(05Za\x7f-]\\^éÿ中"
    names = [chr(code) for code in range(128)] + ["\x80", "é", "ÿ", "中", "🚀"]
    assert_agree(
        redis_glob,
        (f"[{negate}{low}-{high}]*" for negate in ("", "^") for low in bounds for high in bounds),
        names,
    )


def assert_agree(redis_glob: RedisGlob, patterns: Iterable[str], names: list[str]) -> None:
    disagreements = []
    for pattern in patterns:
        expected, got = redis_glob.matching(pattern, names), ours(pattern, names)
        if got != expected:
            disagreements.append((pattern, sorted(got - expected), sorted(expected - got)))
    assert disagreements == []
