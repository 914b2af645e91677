"""Group names reach PostgreSQL safely, stay distinct, and come back right."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from channels_core import Channel, Subscriber
from channels_layer_postgres import ChannelNames
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio

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


def test_channel_names_fit_and_never_collide() -> None:
    names = ChannelNames("channels")
    channels = [names.channel(group) for group in HOSTILE]
    assert len(set(channels)) == len(HOSTILE)
    for channel in channels:
        assert len(channel.encode()) <= 63
        assert "\x00" not in channel
    assert names.channel("chat.room-1") == "channels:chat.room-1"
    assert names.channel("x" * 100).startswith("channels#xxxx")
    assert names.channel("a" * 54) != names.channel("a" * 55)  # direct vs hashed


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
            assert sorted(listening) == sorted(layer.channel_name(group) for group in HOSTILE)
            async with channel.subscribe_pattern("y*"):
                assert len(await layer.listening_channels()) == len(HOSTILE) + 1
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
        for table in (other.payloads_table, other.patterns_table):
            await pg.execute(f'DROP TABLE IF EXISTS "{table}"')
