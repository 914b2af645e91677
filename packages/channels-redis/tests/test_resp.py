"""The pub/sub connection's RESP parser: any chunking of the byte stream gives the same replies."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import InvalidResponse, NoPermissionError, ResponseError

from channels_layer_redis._resp import Push, RespParser


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _encode(reply: Any) -> bytes:
    """RESP2 for what the parser returns (errors as ``-...``)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, bytes):
        return _bulk(reply)
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, ResponseError):
        return b"-ERR %s\r\n" % str(reply).encode()  # redis-py drops the ERR
    return b"*%d\r\n" % len(reply) + b"".join(_encode(item) for item in reply)


def _comparable(replies: list[Any]) -> list[Any]:
    return [(type(r), str(r)) if isinstance(r, ResponseError) else r for r in replies]


def _feed_in(parser: RespParser, stream: bytes, cuts: list[int]) -> list[Any]:
    replies: list[Any] = []
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        replies.extend(parser.feed(stream[previous:cut]))
        previous = cut
    return replies


#: What a pub/sub connection hears: messages (binary names and payloads, CRLF
#: inside included), confirmations, PONGs, errors, CLIENT ID.
PUBSUB_STREAM = [
    1234,
    [b"subscribe", b"ns:\xff\x00grp", 1],
    [b"psubscribe", b"ns:*", 2],
    [b"message", b"ns:\xff\x00grp", b"\r\n$3\r\n*1\r\n\x00\xff"],
    [b"message", b"ns:a", b""],
    [b"pmessage", b"ns:*", b"ns:b", b"payload"],
    [b"smessage", b"{ns}:c", b"x" * 300],
    [b"ssubscribe", b"{ns}:c", 1],
    [b"sunsubscribe", b"{ns}:c", 0],
    [b"pong", b"channels:7"],
    [b"pong", b""],
    b"channels:8",
    ResponseError("unknown command 'FOO'"),
    [b"unsubscribe", None, 0],
    [b"message", b"ns:a", b"last"],
]


def test_a_stream_split_at_every_byte_gives_the_same_replies() -> None:
    stream = b"".join(_encode(reply) for reply in PUBSUB_STREAM)
    expected = _comparable(PUBSUB_STREAM)
    assert _comparable(RespParser().feed(stream)) == expected
    for cut in range(1, len(stream)):
        assert _comparable(_feed_in(RespParser(), stream, [cut])) == expected, cut
    one_byte_at_a_time = list(range(1, len(stream)))
    assert _comparable(_feed_in(RespParser(), stream, one_byte_at_a_time)) == expected


_replies = st.recursive(
    st.none() | st.binary(max_size=40) | st.integers(-(2**63), 2**63 - 1),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)
_messages = st.tuples(
    st.sampled_from([b"message", b"smessage"]), st.binary(max_size=20), st.binary(max_size=200)
).map(list) | st.tuples(
    st.just(b"pmessage"), st.binary(max_size=10), st.binary(max_size=20), st.binary(max_size=50)
).map(list)


@settings(max_examples=100, deadline=None)
@given(st.lists(_messages | _replies, min_size=1, max_size=30), st.randoms())
def test_any_chunking_gives_the_replies_sent(replies: list[Any], rng: random.Random) -> None:
    stream = b"".join(_encode(reply) for reply in replies)
    cuts = rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 40)))
    assert _feed_in(RespParser(), stream, cuts) == replies


def test_a_huge_payload_arrives_whole_in_linear_time() -> None:
    payload = bytes(range(256)) * (64 * 1024)  # 16 MiB
    stream = _encode([b"message", b"ns:big", payload]) + _encode([b"pong", b"t"])
    parser = RespParser()
    replies = parser.feed(stream[:1000])
    assert replies == []
    assert parser.wanted == len(stream) - len(_encode([b"pong", b"t"])) - 1000
    for start in range(1000, len(stream), 4096):  # 4,000 chunks: quadratic would show
        replies.extend(parser.feed(stream[start : start + 4096]))
    assert replies == [[b"message", b"ns:big", payload], [b"pong", b"t"]]
    assert parser.wanted == 0


def test_error_replies_are_redis_py_exceptions_returned_not_raised() -> None:
    replies = RespParser().feed(b"-NOPERM no permission\r\n-ERR bad\r\n")
    assert isinstance(replies[0], NoPermissionError)
    assert type(replies[1]) is ResponseError
    assert str(replies[1]) == "bad"


def test_resp3_replies_and_pushes() -> None:
    stream = (
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\ndata\r\n"
        b"%1\r\n+key\r\n#t\r\n"
        b"~2\r\n,1.5\r\n_\r\n"
        b"|1\r\n+a\r\n+b\r\n(123\r\n"
        b"=8\r\ntxt:some\r\n"
        b"!9\r\nERR boom!\r\n"
    )
    replies = RespParser().feed(stream)
    assert replies[:5] == [[b"message", b"ch", b"data"], {b"key": True}, [1.5, None], 123, b"some"]
    assert isinstance(replies[5], ResponseError)
    assert str(replies[5]) == "boom!"


def test_resp3_pushes_split_at_every_byte_are_pushes() -> None:
    """Deliveries take the fast path as pushes too, and stay pushes (not replies)."""
    pushes = [reply for reply in PUBSUB_STREAM if isinstance(reply, list)]
    stream = b"".join(b">" + _encode(push)[1:] for push in pushes) + b":7\r\n"
    for cut in range(1, len(stream)):
        replies = _feed_in(RespParser(), stream, [cut])
        assert replies == [*pushes, 7], cut
        assert [type(reply) for reply in replies] == [Push] * len(pushes) + [int], cut


@pytest.mark.parametrize(
    "garbage", [b"?what\r\n", b"$x\r\n", b":1x\r\n", b"*3\r\n$7\r\nmessage\r\n$z\r\n"]
)
def test_what_is_not_resp_is_refused(garbage: bytes) -> None:
    with pytest.raises(InvalidResponse):
        RespParser().feed(garbage)
