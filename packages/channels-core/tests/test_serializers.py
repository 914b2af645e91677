"""Serializers: JSON by default, msgpack and custom objects on request, pickle only by name."""

from __future__ import annotations

import json
import pickle
import re
from typing import Any

import pytest

from channels_core import Channel, SerializationError
from channels_core.layers.local_memory import InMemoryChannelLayer
from channels_core.serializers import MAX_JSON_DEPTH, SPLICE_FROM, resolve_serializer

pytestmark = pytest.mark.anyio


async def _round_trip(message: Any, **options: Any) -> Any:
    async with Channel(InMemoryChannelLayer(), **options) as channel:
        async with channel.subscribe("codec") as subscriber:
            await channel.publish("codec", message)
            return (await subscriber.receive()).message


async def test_json_is_the_default_and_turns_tuples_into_lists() -> None:
    assert await _round_trip({"t": (1, 2), "s": "ü"}) == {"t": [1, 2], "s": "ü"}


async def test_msgpack_carries_bytes() -> None:
    assert await _round_trip({"raw": b"\x00\xff"}, serializer="msgpack") == {"raw": b"\x00\xff"}


async def test_a_module_with_dumps_and_loads_works_even_if_it_returns_str() -> None:
    assert await _round_trip([1, "two"], serializer=json) == [1, "two"]


async def test_pickle_only_when_named() -> None:
    assert await _round_trip({1, 2}, serializer="pickle") == {1, 2}
    with pytest.raises(SerializationError):
        await _round_trip({1, 2})


def test_json_payload_is_compact_utf8() -> None:
    codec = resolve_serializer("json")
    assert codec.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


@pytest.mark.parametrize(
    "message",
    [object(), float("inf"), {"k": {1, 2}}, "\udc80", [b"bytes"]],
    ids=["object", "infinity", "set", "lone-surrogate", "bytes"],
)
def test_json_refuses_what_it_cannot_carry(message: Any) -> None:
    with pytest.raises(SerializationError, match="json"):
        resolve_serializer("json").dumps(message)


def test_deep_nesting_is_a_serialization_error_not_a_crash() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError):
        resolve_serializer("json").dumps(deep)


class _Broken:
    name = "broken"

    def dumps(self, message: Any) -> bytes:
        raise RuntimeError("encoder exploded")

    def loads(self, payload: bytes) -> Any:
        return pickle.loads(payload)


def test_errors_of_a_custom_serializer_become_serialization_errors() -> None:
    with pytest.raises(SerializationError, match="encoder exploded"):
        resolve_serializer(_Broken()).dumps(1)


class _ReturnsInt:
    def dumps(self, message: Any) -> int:
        return 1

    def loads(self, payload: bytes) -> Any:
        return None


def test_a_serializer_returning_neither_bytes_nor_str_is_refused() -> None:
    with pytest.raises(SerializationError, match="returned int"):
        resolve_serializer(_ReturnsInt()).dumps(1)  # type: ignore[arg-type]


def test_bad_serializer_specs_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown serializer 'yaml'"):
        resolve_serializer("yaml")
    with pytest.raises(TypeError, match="dumps"):
        resolve_serializer(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("message", [{1: "a"}, {"ok": [{None: 1}]}, {"1": "x", 1: "y"}])
def test_json_refuses_dict_keys_it_would_turn_into_strings(message: Any) -> None:
    with pytest.raises(SerializationError, match="dict keys must be str"):
        resolve_serializer("json").dumps(message)


@pytest.mark.parametrize(
    "message",
    [{1: "a"}, {"ok": [{None: 1}]}, ({1.5: "x"},), {(1, 2): "tuple"}, {True: 1}],
)
async def test_msgpack_refuses_dict_keys_no_receiver_could_decode(message: Any) -> None:
    """msgpack packs them, but receivers unpack with strict_map_key: refused, not lost."""
    async with Channel(InMemoryChannelLayer(), serializer="msgpack") as channel:
        async with channel.subscribe("codec") as subscriber:
            with pytest.raises(SerializationError, match="dict keys must be str or bytes"):
                await channel.publish("codec", message)
            await channel.publish("codec", "next")
            assert (await subscriber.receive()).message == "next"
            assert channel.stats().undecodable == 0


async def test_msgpack_carries_str_and_bytes_dict_keys() -> None:
    message = {"s": 1, b"\xff": [{b"k": "v"}]}
    assert await _round_trip(message, serializer="msgpack") == message


@pytest.mark.parametrize("payload", [b"NaN", b"[1,Infinity]", b'{"x":-Infinity}'])
async def test_json_decoding_refuses_what_json_encoding_refuses(payload: bytes) -> None:
    """A foreign NaN is not JSON: skipped and counted, like any undecodable payload."""
    layer = InMemoryChannelLayer()
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        layer.hub.publish("g", payload)
        await channel.publish("g", "good")
        assert (await subscriber.receive()).message == "good"
        assert channel.stats().undecodable == 1


def test_json_nesting_limit_is_checked_before_encoding() -> None:
    def nested(depth: int) -> Any:
        value: Any = "leaf"
        for _ in range(depth):
            value = [value]
        return value

    codec = resolve_serializer("json")
    assert codec.loads(codec.dumps(nested(MAX_JSON_DEPTH))) == nested(MAX_JSON_DEPTH)
    with pytest.raises(SerializationError, match=f"deeper than {MAX_JSON_DEPTH}"):
        codec.dumps({"k": nested(MAX_JSON_DEPTH)})


class _Key(str):
    """A str subclass: a dict key JSON writes as the string it is."""


_JSON_SAMPLES: list[Any] = [
    {"i": 1, "t": 12345.678901234, "pad": "x" * 60},
    {"s": 'é\n"\\', "n": None, "b": True, "f": -0.0, "big": 10**30},
    {_Key("sub"): 1},
    {"nested": {"a": [1, (2, 3)], "b": {}}},
    [1, "two", {"three": 3.0}],
    "just text",
    42,
    None,
    {},
    # Long strings, which the serializer copies in unescaped when it can:
    {"i": 1, "pad": "x" * SPLICE_FROM, "after": "é"},
    {"pad": "x" * SPLICE_FROM + '"', "n": 1},
    {"pad": "\\" + "x" * SPLICE_FROM},
    {"pad": "x" * SPLICE_FROM + "\n", "t": 1.5},
    {"pad": "\x1f" + "x" * SPLICE_FROM},
    {"pad": "é😀\x7f\u2028" * SPLICE_FROM},
    {"pad": "x" * SPLICE_FROM, "other": "\x00"},  # a value encoded like its stand-in
    {"\x00": 1, "pad": "x" * SPLICE_FROM},
    {"a": "x" * SPLICE_FROM, "b": "y" * SPLICE_FROM},
]


@pytest.mark.parametrize("message", _JSON_SAMPLES)
def test_json_encodes_exactly_as_the_json_module_does(message: Any) -> None:
    """The serializer's own use of the C encoder (issue #15) writes what `json.dumps` writes."""
    expected = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    assert resolve_serializer("json").dumps(message) == expected


@pytest.mark.parametrize("message", _JSON_SAMPLES)
def test_json_without_the_c_encoder_writes_the_same(
    message: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = resolve_serializer("json").dumps(message)
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert resolve_serializer("json").dumps(message) == fast


@pytest.mark.parametrize("message", _JSON_SAMPLES)
def test_json_gives_back_what_decoding_its_bytes_would_give(message: Any) -> None:
    """The bytes object `dumps` just made decodes from a copy of a flat dict (issue #15):
    the same keys, order, values and value types as decoding equal bytes."""
    codec = resolve_serializer("json")
    payload = codec.dumps(message)
    from_copy, decoded = codec.loads(payload), codec.loads(bytes(bytearray(payload)))
    assert from_copy == decoded
    assert repr(from_copy) == repr(decoded)  # key order, True vs 1, 1.0 vs 1
    if isinstance(message, dict):
        assert from_copy is not message
        assert [type(value) for value in from_copy.values()] == [
            type(value) for value in decoded.values()
        ]


def test_json_decodes_a_flat_dict_as_it_was_when_encoded() -> None:
    codec = resolve_serializer("json")
    message: dict[str, Any] = {"n": 1, "s": "x"}
    payload = codec.dumps(message)
    message["n"] = 2
    message["added"] = True
    first = codec.loads(payload)
    assert first == {"n": 1, "s": "x"}
    first["n"] = 3  # a receiver changing its copy changes no one else's
    assert codec.loads(payload) == {"n": 1, "s": "x"}
    assert codec.loads(payload) is not codec.loads(payload)


async def test_a_memory_subscriber_gets_the_message_as_published_not_the_object() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe("codec") as subscriber:
            message: dict[str, Any] = {"count": 1}
            await channel.publish("codec", message)
            message["count"] = 2  # the publisher reuses its dict
            await channel.publish("codec", message)
            first, second = await subscriber.receive(), await subscriber.receive()
    assert [first.message, second.message] == [{"count": 1}, {"count": 2}]
    assert first.message is not message
    assert second.message is not message


@pytest.mark.parametrize(
    "message",
    [{"pad": "\ud800" + "x" * SPLICE_FROM}, {"pad": "x" * SPLICE_FROM, "b": "\ud800"}],
    ids=["in-the-long-string", "elsewhere"],
)
def test_json_refuses_lone_surrogates_as_the_json_module_does(message: Any) -> None:
    with pytest.raises(UnicodeEncodeError) as expected:
        json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    with pytest.raises(SerializationError, match=re.escape(str(expected.value))):
        resolve_serializer("json").dumps(message)


@pytest.mark.parametrize(
    "message",
    [{"x": float("nan")}, {"x": float("-inf")}, {"x": {1: "a"}}, {"x": ["ok", {2: "b"}]}],
    ids=["nan", "infinity", "nested-int-key", "deeper-int-key"],
)
def test_json_refuses_a_bad_value_inside_a_flat_looking_dict(message: Any) -> None:
    with pytest.raises(SerializationError):
        resolve_serializer("json").dumps(message)


def test_json_refuses_a_container_that_holds_itself() -> None:
    """Encoded without circular-reference tracking: the depth check stops it first."""
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    as_list: list[Any] = [1]
    as_list.append(as_list)
    for message in (looped, as_list):
        with pytest.raises(SerializationError, match=f"deeper than {MAX_JSON_DEPTH}"):
            resolve_serializer("json").dumps(message)


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b'{"a":1}', {"a": 1}), (b' {"a": 1}\n', {"a": 1}), (b"\t[1, 2] ", [1, 2]), (b'"x"', "x")],
)
def test_json_decodes_documents_with_or_without_surrounding_whitespace(
    payload: bytes, message: Any
) -> None:
    assert resolve_serializer("json").loads(payload) == message


@pytest.mark.parametrize("payload", [b'{"a":1}x', b"1 2", b"", b"   ", b"[1,", b"{'a': 1}"])
def test_json_decoding_refuses_what_is_not_one_json_document(payload: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        resolve_serializer("json").loads(payload)


@pytest.mark.parametrize(
    ("serializer", "message", "cause"),
    [
        ("json", {"k": object()}, TypeError),
        ("json", float("nan"), ValueError),
        ("msgpack", {"k": object()}, TypeError),
        ("pickle", lambda: None, Exception),
    ],
    ids=["json-object", "json-nan", "msgpack-object", "pickle-lambda"],
)
async def test_publish_refuses_what_a_builtin_serializer_cannot_carry(
    serializer: str, message: Any, cause: type[Exception]
) -> None:
    """The channel calls a built-in serializer itself: the error, sent nothing, carry on."""
    expected = ""
    try:
        resolve_serializer(serializer).dumps(message)
    except SerializationError as exc:
        expected = str(exc)
    async with Channel(InMemoryChannelLayer(), serializer=serializer) as channel:
        async with channel.subscribe("codec") as subscriber:
            with pytest.raises(SerializationError) as refused:
                await channel.publish("codec", message)
            assert str(refused.value) == expected  # the codec's own words
            assert f"with the {serializer} serializer" in expected
            assert "nothing was sent" in expected
            assert isinstance(refused.value.__cause__, cause)
            await channel.publish("codec", "next")
            assert (await subscriber.receive()).message == "next"  # nothing before it
            assert channel.stats().published == 1
