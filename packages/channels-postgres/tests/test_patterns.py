"""Pattern subscriptions across layers: every bucket LISTENed, each group matched locally."""

from __future__ import annotations

import anyio
import pytest

from channels_core import Channel, Event, Subscriber
from channels_layer_postgres import ChannelNames
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio


async def _receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(5):
        return await subscriber.receive()


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


async def test_a_pattern_subscription_listens_every_bucket_while_it_lasts(
    make_layer: LayerMaker,
) -> None:
    """A publish is one NOTIFY on its group's bucket whoever subscribes: a pattern
    subscriber LISTENs every bucket of the namespace and matches groups itself.
    When the last pattern leaves, only the buckets of groups subscribed by name stay."""
    layer = make_layer()
    names = ChannelNames(layer.options.namespace)
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe("quiet") as by_name:
            async with (
                listener.subscribe_pattern("lo*") as first,
                listener.subscribe_pattern("l?ud") as second,
            ):
                assert sorted(await layer.listening_channels()) == sorted(names.buckets)
                await sender.publish("loud", 1)
                await sender.publish("quiet", 2)
                assert await _receive(first) == Event("loud", 1, "lo*")
                assert await _receive(second) == Event("loud", 1, "l?ud")
                assert await _receive(by_name) == Event("quiet", 2)
            # Leaving returns at once; this waits for the UNLISTENs.
            assert await layer.listening_channels() == [names.channel("quiet")]
            await sender.publish("loud", 3)
            await sender.publish("quiet", 4)
            assert await _receive(by_name) == Event("quiet", 4)
        assert await layer.listening_channels() == []
    assert layer.stats().skipped == 0
