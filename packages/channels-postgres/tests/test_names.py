"""Group names reach PostgreSQL safely, stay distinct, and come back right."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import anyio
import asyncpg
import pytest

from channels_core import Channel, Subscriber
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres._names import BUCKETS, IDENTIFIER_LIMIT
from channels_layer_postgres.testing import LayerMaker

#: The `stalled_fetches` fixture (conftest.py).
StalledFetches = Callable[
    [PostgreSQLChannelLayer, str],
    AbstractAsyncContextManager[Callable[[int], Awaitable[None]]],
]

pytestmark = pytest.mark.anyio


def bucket_mates(names: ChannelNames, group: str, count: int) -> list[str]:
    """`count` other groups carried by the same channel as `group`."""
    channel = names.channel(group)
    mates = (f"{group}-mate-{number}" for number in itertools.count())
    return list(itertools.islice((m for m in mates if names.channel(m) == channel), count))


HOSTILE = [
    'x"; DROP TABLE canary; --',
    "x'); DROP TABLE canary; --",
    '"',
    "'",
    "\\",
    "$1",
    "UNLISTEN *",
    "semi;colon;",
    "ünïcødé 🚀 グループ",
    "tab\tnew\nline",
    "nul\x00byte",
    "   ",
    "z" * 1000,
    "y" * 62 + "-1",
    "y" * 62 + "-2",
    "é" * 40 + "1",
    "é" * 40 + "2",
]
# Groups sharing a channel with hostile ones: each must still get only its own.
HOSTILE += bucket_mates(ChannelNames("channels"), "nul\x00byte", 1)
HOSTILE += bucket_mates(ChannelNames("channels"), HOSTILE[0], 1)


def test_groups_map_onto_a_bounded_set_of_channels() -> None:
    names = ChannelNames("channels")
    channels = {names.channel(group) for group in HOSTILE}
    assert channels <= set(names.buckets)
    assert len(names.buckets) == len(set(names.buckets)) == BUCKETS
    for channel in names.buckets:
        assert len(channel.encode()) <= IDENTIFIER_LIMIT
        assert channel.isascii()
        assert channel.isprintable()
    # Part of the wire: every process, of every version from this one on, agrees.
    assert names.channel("chat.room-1") == "channels%0b8"
    assert names.channel("nul\x00byte") == ChannelNames("channels").channel("nul\x00byte")
    assert names.channel("\ud800") in names.buckets  # a lone surrogate still has a bucket
    # 10,000 groups spread over (nearly) every bucket.
    assert len({names.channel(f"room.{number}") for number in range(10_000)}) > BUCKETS * 0.99


def test_namespaces_never_share_a_channel() -> None:
    spaces = ["a", "a_", "ab", "a0", "channels", "channels_", "channels_b", "x" * 20]
    channels = [set(ChannelNames(space).buckets) for space in spaces]
    assert sum(map(len, channels)) == len(set().union(*channels))


@pytest.fixture
async def canary(pg: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A table that the hostile names try to drop."""
    await pg.execute("CREATE TABLE IF NOT EXISTS canary (id int)")
    try:
        yield pg
    finally:
        await pg.execute("DROP TABLE IF EXISTS canary")


async def _next(subscriber: Subscriber) -> tuple[str, object]:
    with anyio.fail_after(5):
        event = await subscriber.receive()
    return event.group, event.message


async def test_hostile_names_are_delivered_to_their_group_only(
    make_layer: LayerMaker, canary: asyncpg.Connection
) -> None:
    async with Channel(make_layer()) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe(*HOSTILE) as subscriber:
            for group in HOSTILE:
                await sender.publish(group, group)
            received = [await _next(subscriber) for _ in HOSTILE]
        assert received == [(group, group) for group in HOSTILE]
        # One at a time: nothing from the look-alikes leaks in.
        for group in HOSTILE:
            async with listener.subscribe(group) as subscriber:
                for other in HOSTILE:
                    await sender.publish(other, other)
                assert await _next(subscriber) == (group, group)
    assert await canary.fetchval("SELECT to_regclass('canary') IS NOT NULL")


async def test_every_subscription_is_listened_and_unlistened(make_layer: LayerMaker) -> None:
    layer = make_layer()
    async with Channel(layer) as channel:
        async with channel.subscribe(*HOSTILE):
            listening = await layer.listening_channels()
            assert listening == sorted({layer.channel_name(group) for group in HOSTILE})
            async with channel.subscribe_pattern("y*"):  # every bucket
                assert len(await layer.listening_channels()) == BUCKETS
            assert await layer.listening_channels() == listening
        assert await layer.listening_channels() == []


@pytest.mark.parametrize("length", [3_000, 20_000])
async def test_group_names_longer_than_a_notify_work(make_layer: LayerMaker, length: int) -> None:
    group = "q" * length
    async with Channel(make_layer()) as listener, Channel(make_layer()) as sender:
        async with (
            listener.subscribe(group) as by_name,
            listener.subscribe_pattern("q*") as by_pattern,
        ):
            await sender.publish("p" + group[1:], "look-alike")  # same length, no match
            for message in ("small", "x" * 9_000):
                await sender.publish(group, message)
                assert await _next(by_name) == (group, message)
                assert await _next(by_pattern) == (group, message)


async def test_namespaces_keep_layers_apart(
    make_layer: LayerMaker, namespace: str, pg: asyncpg.Connection
) -> None:
    other = ChannelNames(namespace + "b")
    try:
        async with (
            Channel(make_layer()) as mine,
            Channel(make_layer(namespace=other.namespace)) as theirs,
            mine.subscribe("shared") as by_name,
            mine.subscribe_pattern("sh*") as by_pattern,
        ):
            await theirs.publish("shared", "theirs")
            await theirs.publish("shared", "y" * 9_000)
            await mine.publish("shared", "mine")
            assert await _next(by_name) == ("shared", "mine")
            assert await _next(by_pattern) == ("shared", "mine")
    finally:
        await pg.execute(f'DROP TABLE IF EXISTS "{other.payloads_table}"')


async def test_groups_sharing_a_channel_reach_their_own_subscribers_only(
    make_layer: LayerMaker,
) -> None:
    layer = make_layer()
    mine, theirs, unwanted = bucket_mates(ChannelNames("any"), "room", 3)
    assert layer.channel_name(mine) == layer.channel_name(unwanted)
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe(mine) as by_mine, listener.subscribe(theirs) as by_theirs:
            for group in (unwanted, theirs, mine):
                await sender.publish(group, f"small for {group}")
                await sender.publish(group, f"large for {group} " + "x" * 9_000)
            for subscriber, group in ((by_mine, mine), (by_theirs, theirs)):
                assert await _next(subscriber) == (group, f"small for {group}")
                assert await _next(subscriber) == (group, f"large for {group} " + "x" * 9_000)
            with anyio.move_on_after(0.2):
                assert await _next(by_mine) is None  # nothing else came
    stats = layer.stats()
    assert stats.received == 6
    assert stats.skipped == 0  # a bucket-mate's message is no forgery
    assert stats.large_fetched == 2  # the unwanted group's large message was never fetched


async def test_a_channel_is_listened_while_any_of_its_groups_is_subscribed(
    make_layer: LayerMaker,
) -> None:
    layer = make_layer()
    first, second = bucket_mates(ChannelNames("any"), "lobby", 2)
    bucket = layer.channel_name(first)
    witness = next(
        group
        for group in (f"witness-{number}" for number in itertools.count())
        if layer.channel_name(group) != bucket
    )
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe(witness) as by_witness:
            async with listener.subscribe(first) as by_first:
                async with listener.subscribe(second):
                    assert bucket in await layer.listening_channels()
                assert bucket in await layer.listening_channels()  # `first` still needs it
                await sender.publish(second, "gone")
                await sender.publish(first, "kept")
                assert await _next(by_first) == (first, "kept")  # not "gone": `second` left
                assert layer.stats().skipped == 0
            assert await layer.listening_channels() == [layer.channel_name(witness)]
            received = layer.stats().received
            await sender.publish(first, "unheard")
            await sender.publish(second, "unheard")
            await sender.publish(witness, "heard")
            assert await _next(by_witness) == (witness, "heard")
            assert layer.stats().received == received + 1  # the bucket is no longer LISTENed


@pytest.mark.parametrize("pattern", [None, "elsewhere.*"])
async def test_a_bucket_mates_traffic_never_fills_the_backlog(
    make_layer: LayerMaker, stalled_fetches: StalledFetches, pattern: str | None
) -> None:
    """Notifications for groups not subscribed here are dropped on arrival: they
    never wait behind a large payload being fetched, nor count against `max_backlog`;
    also while a pattern subscription (which none of them matches) LISTENs every bucket."""
    layer = make_layer(max_backlog=3)
    (busy,) = bucket_mates(ChannelNames("any"), "slow", 1)
    async with (
        Channel(layer) as channel,
        channel.subscribe("slow") as subscriber,
        AsyncExitStack() as patterns,
    ):
        if pattern is not None:
            await patterns.enter_async_context(channel.subscribe_pattern(pattern))
        async with stalled_fetches(layer, "slow") as until_received:
            for number in range(6):
                await channel.publish(busy, number)
            for number in range(2):
                await channel.publish("slow", number)
            await until_received(9)
        received = [await _next(subscriber) for _ in range(2)]
    assert received == [("slow", 0), ("slow", 1)]
    stats = layer.stats()
    assert (stats.dropped, stats.skipped, stats.large_missing) == (0, 0, 1)
