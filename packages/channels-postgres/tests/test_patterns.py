"""Pattern subscriptions across layers, through the firehose channel."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from channels_core import Channel, Event, Subscriber
from channels_layer_postgres import ChannelNames
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio


async def _receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(5):
        return await subscriber.receive()


@pytest.fixture
async def firehose(pg: asyncpg.Connection, namespace: str) -> list[str]:
    """What reaches the firehose channel, seen by a raw LISTEN."""
    seen: list[str] = []
    await pg.add_listener(
        ChannelNames(namespace).firehose, lambda _c, _pid, _ch, payload: seen.append(payload)
    )
    return seen


async def test_patterns_match_across_layers_and_nothing_else_arrives(
    make_layer: LayerMaker,
) -> None:
    async with Channel(make_layer()) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe_pattern("orders.*", "user.[0-9]") as subscriber:
            for group in ("orders.1", "orders", "user.x", "user.7", "users.7", "ORDERS.2"):
                await sender.publish(group, group)
            await sender.publish("orders.big", "b" * 20_000)
            await sender.publish("orders.last", "last")
            received = [await _receive(subscriber) for _ in range(4)]
    assert [(e.group, e.pattern) for e in received] == [
        ("orders.1", "orders.*"),
        ("user.7", "user.[0-9]"),
        ("orders.big", "orders.*"),
        ("orders.last", "orders.*"),
    ]
    assert received[2].message == "b" * 20_000


async def test_a_group_matching_two_patterns_and_its_name_arrives_once_per_subscription(
    make_layer: LayerMaker,
) -> None:
    layer = make_layer()
    big = "B" * 20_000
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        async with (
            listener.subscribe_pattern("a.*") as first,
            listener.subscribe_pattern("*.b") as second,
            listener.subscribe("a.b") as by_name,
        ):
            await sender.publish("a.b", 1)
            await sender.publish("a.b", big)
            for message in (1, big):
                assert await _receive(first) == Event("a.b", message, "a.*")
                assert await _receive(second) == Event("a.b", message, "*.b")
                assert await _receive(by_name) == Event("a.b", message)
    assert layer.stats().large_fetched == 1  # fetched once for all three


async def test_publishers_pay_for_the_firehose_only_while_patterns_are_live(
    make_layer: LayerMaker, firehose: list[str]
) -> None:
    layer = make_layer()
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        await sender.publish("quiet", 1)
        async with listener.subscribe_pattern("lo*") as subscriber:
            await sender.publish("loud", 2)
            assert (await _receive(subscriber)).message == 2
        # Leaving returns at once; this waits for the UNLISTEN (and unregistering).
        assert await layer.listening_channels() == []
        await sender.publish("quiet", 3)
        await anyio.sleep(0.2)
    assert len(firehose) == 1
    assert '"loud"' in firehose[0]
