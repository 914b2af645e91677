"""Payload sizes, binary payloads, expiry of large payloads, garbage notifications."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import anyio
import asyncpg
import pytest

from channels_core import Channel, Event, MessagesLost, PayloadTooLargeError, Subscriber
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres.testing import LayerMaker

#: The `stalled_fetches` fixture (conftest.py).
StalledFetches = Callable[
    [PostgreSQLChannelLayer, str],
    AbstractAsyncContextManager[Callable[[int], Awaitable[None]]],
]

pytestmark = pytest.mark.anyio


async def _receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(5):
        return await subscriber.receive()


def _message_of(size: int) -> str:
    """A message whose JSON encoding is exactly `size` bytes."""
    message = "x" * (size - 2)
    assert len(json.dumps(message).encode()) == size
    return message


@pytest.mark.parametrize(
    ("size", "through_table"),
    [(1000, False), (7_900, False), (7_999, True), (8_000, True), (100_000, True)],
)
async def test_payload_sizes_around_the_notify_limit(
    make_layer: LayerMaker, size: int, through_table: bool
) -> None:
    message = _message_of(size)
    sender = make_layer()
    async with Channel(make_layer()) as listener, Channel(sender) as channel:
        async with listener.subscribe("sizes") as subscriber:
            await channel.publish("sizes", message)
            await channel.publish("sizes", "after")
            assert (await _receive(subscriber)).message == message
            assert (await _receive(subscriber)).message == "after"  # order kept
    assert sender.stats().large_published == int(through_table)


async def test_the_maximum_is_enforced_before_sending(make_layer: LayerMaker) -> None:
    layer = make_layer()
    limit = layer.max_payload_bytes
    async with Channel(layer) as channel, channel.subscribe("max") as subscriber:
        await channel.publish("max", _message_of(limit))
        assert len((await _receive(subscriber)).message) == limit - 2
        with pytest.raises(PayloadTooLargeError, match=f"{limit:,}"):
            await channel.publish("max", _message_of(limit + 1))
        await channel.publish("max", "next")
        assert (await _receive(subscriber)).message == "next"
    assert layer.stats().large_published == 1


async def test_the_maximum_is_configurable(make_layer: LayerMaker) -> None:
    async with Channel(make_layer(max_payload_bytes=20_000)) as channel:
        await channel.publish("max", _message_of(20_000))
        with pytest.raises(PayloadTooLargeError):
            await channel.publish("max", _message_of(20_001))


@pytest.mark.parametrize("size", [10, 7_000, 50_000])
async def test_binary_payloads_round_trip(make_layer: LayerMaker, size: int) -> None:
    message = {"blob": bytes(range(256)) * (size // 256 + 1), "n": None}
    async with Channel(make_layer(), serializer="msgpack") as channel:
        async with channel.subscribe("binary") as subscriber:
            await channel.publish("binary", message)
            assert (await _receive(subscriber)).message == message


async def test_large_payload_rows_expire(
    make_layer: LayerMaker, pg: asyncpg.Connection, namespace: str
) -> None:
    table = ChannelNames(namespace).payloads_table
    layer = make_layer(large_payload_ttl=0.2)
    async with Channel(layer) as channel:
        await channel.publish("expiry", _message_of(10_000))
        await anyio.sleep(0.3)
        await channel.publish("expiry", _message_of(10_000))
    old = await pg.fetchval(
        f"SELECT count(*) FROM \"{table}\" WHERE created < now() - interval '0.2 s'"
    )
    assert old == 0


async def test_garbage_notifications_are_skipped_and_the_subscription_survives(
    make_layer: LayerMaker, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    layer = make_layer()
    channel_name = layer.channel_name("victim")
    forged = [
        "plain text",
        "",
        "chl1",
        "chl1t0:",
        "chl1t0:not json",
        'chl1t0:"victim',
        "chl1t0:123body",
        'chl1b0:"victim"***',
        'chl1r0:"victim"12x',
        'chl1z0:"victim"body',
    ]
    async with Channel(layer) as channel, channel.subscribe("victim") as subscriber:
        for text in forged:
            await pg.execute("SELECT pg_notify($1, $2)", channel_name, text)
        # Well-formed, but naming another group than the channel carries.
        assert layer.channel_name("other") != channel_name
        await pg.execute("SELECT pg_notify($1, $2)", channel_name, 'chl1t0:"other""x"')
        # Well-formed, for this group, but a row that does not exist.
        await pg.execute(
            "SELECT pg_notify($1, $2)", channel_name, 'chl1r0:"victim"0123456789abcdef.999999999'
        )
        # Undecodable JSON body: the core reports and skips it.
        await pg.execute("SELECT pg_notify($1, $2)", channel_name, 'chl1t1:"victim"{oops')
        await channel.publish("victim", "real")
        assert await _receive(subscriber) == Event("victim", "real")
    assert layer.stats().skipped == len(forged) + 1  # the forgeries, and the misrouted one
    assert layer.stats().large_missing == 1
    assert channel.stats().undecodable == 1
    assert "skipped" in caplog.text


async def test_a_backlog_beyond_its_bound_is_dropped_counted_and_reported(
    make_layer: LayerMaker, stalled_fetches: StalledFetches
) -> None:
    """Notifications wait behind a large payload being fetched; never more than
    `max_backlog` of them: the rest are dropped, counted, and the subscribers
    are told of the gap after the ones that were kept."""
    layer = make_layer(max_backlog=3)
    async with Channel(layer) as channel, channel.subscribe("slow") as subscriber:
        async with stalled_fetches(layer, "slow") as until_received:
            for number in range(6):
                await channel.publish("slow", number)
            await until_received(7)
            assert layer.stats().dropped == 4  # the reference and two messages were kept
        received = [(await _receive(subscriber)).message for _ in range(2)]
        with anyio.fail_after(5), pytest.raises(MessagesLost) as lost:
            await subscriber.receive()
        assert lost.value.reason == "overflow"  # the layer's own bound, not a reconnect
        await channel.publish("slow", "after")
        assert (await _receive(subscriber)).message == "after"
    assert received == [0, 1]
    stats = layer.stats()
    assert (stats.dropped, stats.large_missing, stats.connection_losses) == (4, 1, 0)


@pytest.mark.parametrize("group", ["nul\x00" * 2_500, "é\x00中" * 1_500], ids=["nul", "unicode"])
async def test_a_group_too_long_for_the_notify_travels_in_the_table_whatever_it_holds(
    make_layer: LayerMaker, group: str
) -> None:
    """A group name longer than a NOTIFY is stored with the payload: NUL included."""
    sender = make_layer()
    async with Channel(make_layer()) as listener, Channel(sender) as channel:
        async with listener.subscribe(group) as subscriber:
            await channel.publish(group, {"n": 1})
            assert await _receive(subscriber) == Event(group, {"n": 1})
    assert sender.stats().large_published == 1
