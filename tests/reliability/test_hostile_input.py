"""Hostile input, property-based: names, patterns, messages and forged payloads.

Each generated input gets a clear error (`TypeError`, `ValueError`,
`SerializationError`, `PayloadTooLargeError`) or is delivered intact; one
channel serves all examples of a test, so it must stay usable throughout,
and a bystander subscription must never see anything of it.

Every check ends with a sentinel: the subscriber under test also listens to
a sentinel group, and once the sentinel (published after the input) arrives,
everything the input caused has arrived before it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import nats
import pytest
import redis.asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels_core import (
    Channel,
    ChannelLayer,
    Event,
    MessagesLost,
    PayloadTooLargeError,
    SerializationError,
    Subscriber,
)
from channels_core.layers.local_memory import InMemoryChannelLayer
from channels_core.patterns import compile_pattern
from channels_layer_nats import NatsChannelLayer
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_redis import RedisPubSubChannelLayer

pytestmark = pytest.mark.anyio

SENTINEL = "\x00sentinel"
BYSTANDER = "bystander"
#: A smaller maximum for the PostgreSQL layer, so sizes around it stay quick.
PG_MAX_PAYLOAD = 20_000
#: A table that the SQL-shaped group names try to drop (PostgreSQL).
CANARY = f"canary_{secrets.token_hex(4)}"

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Harness:
    """One open channel for all examples, a bystander, and the sentinel protocol."""

    def __init__(self, channel: Channel, bystander: Subscriber, kind: str) -> None:
        self.channel = channel
        self.bystander = bystander
        self.kind = kind
        self.layer = channel.layer

    async def until_sentinel(self, subscriber: Subscriber) -> list[Event]:
        """Publish the sentinel and return everything the subscriber got before it."""
        token = secrets.token_hex(4)
        await self.channel.publish(SENTINEL, token)
        events: list[Event] = []
        with anyio.fail_after(10):
            while True:
                try:
                    event = await subscriber.receive()
                except MessagesLost as lost:  # never expected: no outage, small flows
                    pytest.fail(f"unexpected {lost!r}")
                if event.group == SENTINEL and event.message == token:
                    return events
                events.append(event)

    async def check_bystander(self) -> None:
        """The bystander received nothing but what was published to it."""
        await self.channel.publish(BYSTANDER, "only this")
        with anyio.fail_after(10):
            assert (await self.bystander.receive()).message == "only this"


@pytest.fixture(params=["memory", "redis", "postgres", "nats"])
async def harness(
    request: pytest.FixtureRequest, pg_namespace: str, prefix: str
) -> AsyncIterator[Harness]:
    kind = str(request.param)
    layer: ChannelLayer
    if kind == "memory":
        layer = InMemoryChannelLayer()
    elif kind == "redis":
        layer = RedisPubSubChannelLayer.from_url(
            request.getfixturevalue("redis_url"), namespace=prefix
        )
    elif kind == "nats":
        layer = NatsChannelLayer.from_url(
            request.getfixturevalue("nats_url"), namespace=prefix.rstrip(":")
        )
    else:
        layer = PostgreSQLChannelLayer(
            request.getfixturevalue("postgres_url"),
            namespace=pg_namespace,
            max_payload_bytes=PG_MAX_PAYLOAD,
        )
    if kind == "postgres":
        await canary("CREATE TABLE IF NOT EXISTS {} (id int)", request)
    try:
        async with Channel(layer) as channel, channel.subscribe(BYSTANDER) as bystander:
            harness = Harness(channel, bystander, kind)
            yield harness
            await harness.check_bystander()
            assert channel.stats().subscribers == 1
        if kind == "postgres":
            assert await canary("SELECT to_regclass('{}') IS NOT NULL", request)
    finally:
        if kind == "postgres":
            await canary("DROP TABLE IF EXISTS {}", request)


async def canary(statement: str, request: pytest.FixtureRequest) -> Any:
    conn = await asyncpg.connect(request.getfixturevalue("postgres_url"))
    try:
        return await conn.fetchval(statement.format(CANARY))
    finally:
        await conn.close()


# -- group names -----------------------------------------------------------------------

#: Any code point, lone surrogates and control characters included.
any_char = st.characters(codec=None, categories=None)
#: Group names shaped to break out of SQL quoting and drop the canary table.
sql_shaped = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["", "x", "x'", 'x"', "x');", 'x");', "$1", "E'\\'", 'U&"\\0000']),
        st.sampled_from(["", "'", '"', ";", "\x00", "\\", "--"]),
        st.sampled_from([f"DROP TABLE {CANARY}; --", f'; DROP TABLE "{CANARY}"', "UNLISTEN *"]),
    ),
)
names = st.one_of(
    sql_shaped,
    st.text(any_char, max_size=40),
    st.text(st.sampled_from("\x00\n\t\"';\\$*?[]{}%_ é🚀"), min_size=1, max_size=80),
    st.builds(lambda char, n: char * n, any_char, st.integers(60, 20_000)),
)


def is_valid_name(name: str) -> bool:
    if not name:
        return False
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


@EXAMPLES
@given(name=names)
async def test_any_group_name_is_refused_clearly_or_works(harness: Harness, name: str) -> None:
    channel = harness.channel
    if not is_valid_name(name):
        with pytest.raises(ValueError, match="group"):
            await channel.publish(name, "x")
        with pytest.raises(ValueError, match="group"):
            async with channel.subscribe(name):
                pass
        return
    async with channel.subscribe(name, SENTINEL) as subscriber:
        await channel.publish(name, {"to": name[:100]})
        events = await harness.until_sentinel(subscriber)
    assert events == [Event(name, {"to": name[:100]})]


@pytest.mark.parametrize("name", [None, 1, b"bytes", ("tuple",), object()])
async def test_names_of_other_types_are_a_type_error(harness: Harness, name: Any) -> None:
    with pytest.raises(TypeError, match="group must be a str"):
        await harness.channel.publish(name, "x")
    with pytest.raises(TypeError, match="must be a str"):
        async with harness.channel.subscribe(name):
            pass


# -- patterns --------------------------------------------------------------------------

glob_text = st.text(st.sampled_from("ab*?[]^-\\0é"), min_size=1, max_size=8)
groups_text = st.lists(st.text(st.sampled_from("ab]-[^\\*?(é"), min_size=1, max_size=6), max_size=8)


@EXAMPLES
@given(pattern=glob_text, groups=groups_text)
async def test_glob_patterns_match_like_redis(
    harness: Harness, pattern: str, groups: list[str]
) -> None:
    """Globs of every shape (unclosed classes, trailing escapes, ranges from ASCII to é).

    On Redis the server matches; elsewhere the core does: they must agree.
    """
    channel = harness.channel
    matches = compile_pattern(pattern)
    async with (
        channel.subscribe_pattern(pattern) as by_pattern,
        channel.subscribe(SENTINEL) as sentinel,
    ):
        for number, group in enumerate(groups):
            await channel.publish(group, number)
        await harness.until_sentinel(sentinel)
        await channel.publish(SENTINEL, "last")  # (also matched by pattern or not)
        received = [(e.group, e.message) for e in await drain(by_pattern)]
    expected = [(group, number) for number, group in enumerate(groups) if matches(group)]
    assert [r for r in received if r[0] != SENTINEL] == expected


@pytest.mark.parametrize(
    ("pattern", "group"),
    [("*a*a*a*b", "a" * 800), ("jobs.*.*.*.done", "jobs." + "." * 3000)],
    ids=["stars", "dots"],
)
async def test_a_group_name_built_against_a_pattern_does_not_stall_its_subscriber(
    harness: Harness, pattern: str, group: str
) -> None:
    """Names that made a backtracking matcher spin for seconds on each publish."""
    channel = harness.channel
    async with (
        channel.subscribe_pattern(pattern, "a*") as by_pattern,
        channel.subscribe(SENTINEL) as sentinel,
    ):
        started = anyio.current_time()
        await channel.publish(group, "spin?")
        await harness.until_sentinel(sentinel)
        assert anyio.current_time() - started < 2.0, "matching stalled the event loop"
        received = [(e.pattern, e.group) for e in await drain(by_pattern)]
    assert received == ([("a*", group)] if group.startswith("a") else [])


async def drain(subscriber: Subscriber) -> list[Event]:
    """What is buffered now (the sentinel has arrived, so everything else has too)."""
    events = []
    while True:
        with anyio.move_on_after(0):  # the buffer is read without waiting
            events.append(await subscriber.receive())
            continue
        return events


@EXAMPLES
@given(pattern=names)
async def test_any_pattern_is_refused_clearly_or_works(harness: Harness, pattern: str) -> None:
    channel = harness.channel
    if not is_valid_name(pattern):
        with pytest.raises(ValueError, match="pattern"):
            async with channel.subscribe_pattern(pattern):
                pass
        return
    literal = "".join("\\" + char if char in "*?[]\\^-" else char for char in pattern)
    async with channel.subscribe_pattern(literal) as subscriber, channel.subscribe(SENTINEL):
        await channel.publish(pattern, "literal")
        await channel.publish(SENTINEL, "done")
        with anyio.fail_after(10):
            event = await subscriber.receive()
    assert (event.group, event.message, event.pattern) == (pattern, "literal", literal)


# -- messages --------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(any_char, max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(any_char, max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
not_json = st.sampled_from(
    [float("nan"), float("inf"), {1, 2}, b"bytes", object(), {("tuple", "key"): 1}]
)


def encodable(message: Any) -> bool:
    try:
        json.dumps(message, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        return False
    return True


def nested(depth: int) -> Any:
    message: Any = "core"
    for level in range(depth):
        message = [message] if level % 2 else {"d": message}
    return message


@EXAMPLES
@given(
    message=json_values
    | not_json
    | st.builds(nested, st.integers(1, 3000))
    | st.lists(not_json, min_size=1, max_size=2)
)
async def test_any_message_is_refused_clearly_or_delivered_intact(
    harness: Harness, message: Any
) -> None:
    channel = harness.channel
    async with channel.subscribe("messages", SENTINEL) as subscriber:
        if not encodable(message):
            with pytest.raises(SerializationError, match="nothing was sent"):
                await channel.publish("messages", message)
            assert await harness.until_sentinel(subscriber) == []
            return
        published = channel.stats().published
        try:
            await channel.publish("messages", message)
        except SerializationError:  # too deep for the encoder: said so, nothing sent
            assert channel.stats().published == published
            assert await harness.until_sentinel(subscriber) == []
            return
        events = await harness.until_sentinel(subscriber)
    assert events == [Event("messages", message)], "published, so it must arrive intact"


@EXAMPLES
@given(
    group=st.text(st.sampled_from('a"\\\x01é🚀'), min_size=1, max_size=300),
    around=st.sampled_from(["notify", "maximum"]),
    offset=st.integers(-3, 3),
)
async def test_sizes_around_each_limit(
    harness: Harness, group: str, around: str, offset: int
) -> None:
    """Around the NOTIFY limit (8,000 bytes, envelope and group name included) and the maximum."""
    channel = harness.channel
    target = 7_999 - len(json.dumps(group).encode()) if around == "notify" else PG_MAX_PAYLOAD
    message = "x" * max(0, target + offset - 2)  # JSON adds two quotes
    size = len(json.dumps(message))
    async with channel.subscribe(group, SENTINEL) as subscriber:
        if harness.kind == "postgres" and size > PG_MAX_PAYLOAD:
            with pytest.raises(PayloadTooLargeError, match=f"{PG_MAX_PAYLOAD:,}"):
                await channel.publish(group, message)
            assert await harness.until_sentinel(subscriber) == []
            return
        await channel.publish(group, message)
        assert await harness.until_sentinel(subscriber) == [Event(group, message)]


# -- forged payloads from a foreign publisher ------------------------------------------


def strict_json(payload: bytes) -> Any:
    """Decode as strictly as the channel: NaN and infinities are not JSON."""
    return json.loads(payload, parse_constant=reject_constant)


def reject_constant(name: str) -> Any:
    raise ValueError(name)


@EXAMPLES
@given(
    payload=st.binary(max_size=200)
    | st.builds(lambda v: json.dumps(v).encode(), json_values)
    | st.sampled_from([b"NaN", b"[1,Infinity]", b'{"x":-Infinity}'])
)
@example(payload=b"\x00chr1")  # the Redis layer's envelope prefix without its header
@example(payload=b"\x00chr1" + b"\x00" * 23)
@example(payload=b"\x00chr2")  # the Redis layer's history envelope, cut short
@example(payload=b"\x00chr2" + b"\x00" * 23)
async def test_forged_payloads_are_skipped_or_delivered_intact(
    harness: Harness, payload: bytes, redis_url: str, postgres_url: str, nats_url: str
) -> None:
    """Raw bytes on the broker, from a client that is not a channel."""
    if harness.kind == "memory":
        pytest.skip("no broker to forge on")
    channel = harness.channel
    undecodable = channel.stats().undecodable
    try:
        expected = [Event("forged", strict_json(payload))]
    except ValueError:  # not JSON (or not UTF-8): skipped and counted
        expected = []
    async with channel.subscribe("forged", SENTINEL) as subscriber:
        await forge(harness, payload, redis_url, postgres_url, nats_url)
        events = await harness.until_sentinel(subscriber)
    assert events == expected
    assert channel.stats().undecodable == undecodable + (not expected)


async def forge(
    harness: Harness, payload: bytes, redis_url: str, postgres_url: str, nats_url: str
) -> None:
    layer = harness.layer
    if isinstance(layer, NatsChannelLayer):
        nats_client = await nats.connect(nats_url)
        try:
            await nats_client.publish(layer.subject("forged"), payload)
            # nats-py writes a flush's PING ahead of queued publishes: the second
            # PING follows the publish on the wire, so its PONG proves it processed.
            await nats_client.flush()
            await nats_client.flush()
        finally:
            await nats_client.close()
        return
    if isinstance(layer, RedisPubSubChannelLayer):
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.publish(layer.options.namespace + "forged", payload)
            # And on a channel whose name is not UTF-8, under the prefix: skipped.
            await client.publish(layer.options.namespace.encode() + b"\xff\xfe", payload)
        finally:
            await client.aclose()
        return
    assert isinstance(layer, PostgreSQLChannelLayer)
    conn = await asyncpg.connect(postgres_url)
    try:
        envelope = 'chl1b0:"forged"' + base64.b64encode(payload).decode()
        await conn.execute("SELECT pg_notify($1, $2)", layer.channel_name("forged"), envelope)
        # And raw text that is no envelope at all: skipped by the layer.
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            layer.channel_name("forged"),
            payload.decode("utf-8", "replace").replace("\x00", ""),
        )
    finally:
        await conn.close()


async def test_every_nesting_depth_is_refused_or_delivered() -> None:
    """Depths across the recursion limit: publish refuses, or the subscriber receives."""
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe("deep", SENTINEL) as subscriber:
            harness = Harness(channel, subscriber, "memory")
            for depth in range(900, 1100):
                try:
                    await channel.publish("deep", nested(depth))
                except SerializationError:
                    assert await harness.until_sentinel(subscriber) == []
                    continue
                events = await harness.until_sentinel(subscriber)
                assert events == [Event("deep", nested(depth))], f"depth {depth} was lost"


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize(
    "message",
    [{1: "a"}, {None: 1, True: 2, 1.5: 3}, {"1": "x", 1: "y"}, {b"k": 1}, [{"ok": {2: "b"}}]],
)
async def test_dict_keys_other_than_str_are_refused_or_delivered_intact(
    message: Any, serializer: str
) -> None:
    async with Channel(InMemoryChannelLayer(), serializer=serializer) as channel:
        async with channel.subscribe("keys", SENTINEL) as subscriber:
            harness = Harness(channel, subscriber, "memory")
            try:
                await channel.publish("keys", message)
            except SerializationError:
                assert await harness.until_sentinel(subscriber) == []
                return
            assert await harness.until_sentinel(subscriber) == [Event("keys", message)]


async def test_patterns_match_non_ascii_groups_alike_on_every_layer(
    redis_url: str, prefix: str, postgres_url: str, pg_namespace: str, nats_url: str
) -> None:
    layers: list[ChannelLayer] = [
        InMemoryChannelLayer(),
        RedisPubSubChannelLayer.from_url(redis_url, namespace=prefix),
        PostgreSQLChannelLayer(postgres_url, namespace=pg_namespace),
        NatsChannelLayer.from_url(nats_url, namespace=prefix.rstrip(":")),
    ]
    outcomes = []
    for layer in layers:
        async with Channel(layer) as channel:
            async with (
                channel.subscribe_pattern("a?", "[é]", "?") as by_pattern,
                channel.subscribe(SENTINEL) as sentinel,
            ):
                for group in ("aé", "é", "🚀"):
                    await channel.publish(group, group)
                await Harness(channel, sentinel, "").until_sentinel(sentinel)
                outcomes.append(sorted((e.pattern or "", e.group) for e in await drain(by_pattern)))
    assert all(outcome == outcomes[0] for outcome in outcomes), outcomes
