"""Publishing inside the application's transaction, and through its own pool or connection."""

from __future__ import annotations

from functools import partial

import anyio
import asyncpg
import pytest

from channels_core import (
    Channel,
    ChannelClosedError,
    PayloadTooLargeError,
    SerializationError,
    Subscriber,
)
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio


async def _messages(subscriber: Subscriber, count: int) -> list[object]:
    with anyio.fail_after(5):
        return [(await subscriber.receive()).message for _ in range(count)]


async def test_commit_delivers_and_rollback_drops(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer()
    async with Channel(layer) as channel, channel.subscribe("orders") as subscriber:
        async with pg.transaction():
            await layer.publish_in(pg, "orders", {"id": 1})
            await layer.publish_in(pg, "orders", {"id": 1})  # not folded
            await layer.publish_in(pg, "orders", "x" * 20_000)  # large
        transaction = pg.transaction()
        await transaction.start()
        await layer.publish_in(pg, "orders", "rolled back")
        await layer.publish_in(pg, "orders", "y" * 20_000)
        await transaction.rollback()
        await channel.publish("orders", "marker")
        received = await _messages(subscriber, 4)
    assert received == [{"id": 1}, {"id": 1}, "x" * 20_000, "marker"]


async def test_nothing_is_delivered_before_commit(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer()
    async with Channel(layer) as channel, channel.subscribe("pending") as subscriber:
        transaction = pg.transaction()
        await transaction.start()
        await layer.publish_in(pg, "pending", "later")
        await anyio.sleep(0.2)
        assert channel.stats().received == 0
        await transaction.commit()
        assert await _messages(subscriber, 1) == ["later"]


async def test_publish_in_checks_its_input_as_publish_does(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer(max_payload_bytes=1000)
    with pytest.raises(ChannelClosedError, match="enter its Channel"):
        await layer.publish_in(pg, "g", 1)
    async with Channel(layer) as channel:
        for publish in (channel.publish, partial(layer.publish_in, pg)):
            with pytest.raises(PayloadTooLargeError, match="at most 1,000"):
                await publish("g", "x" * 1000)
            with pytest.raises(ValueError, match="non-empty"):
                await publish("", 1)
            with pytest.raises(TypeError, match="group must be a str"):
                await publish(b"g", 1)  # type: ignore[arg-type]
            with pytest.raises(SerializationError):
                await publish("g", object())
    with pytest.raises(ChannelClosedError, match="enter its Channel"):
        await layer.publish_in(pg, "g", 1)  # not after the channel is left either


async def test_publish_in_encodes_with_the_channels_serializer(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer()
    async with Channel(layer, serializer="msgpack") as channel:
        async with channel.subscribe("packed") as subscriber:
            await layer.publish_in(pg, "packed", {"b": b"\x00\xff"})
            # The old serializer= argument still works, with a warning.
            with pytest.warns(DeprecationWarning, match=r"publish_in\(serializer=\.\.\.\)"):
                await layer.publish_in(pg, "packed", b"\x01", serializer="msgpack")
            assert await _messages(subscriber, 2) == [{"b": b"\x00\xff"}, b"\x01"]
        assert channel.stats().undecodable == 0


async def test_application_pool_is_used_and_left_open(
    make_layer: LayerMaker, postgres_url: str
) -> None:
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        async with Channel(make_layer(pool=pool)) as channel:
            async with channel.subscribe("pooled") as subscriber:
                await channel.publish("pooled", 1)
                await channel.publish("pooled", "z" * 30_000)
                assert await _messages(subscriber, 2) == [1, "z" * 30_000]
        assert not pool.is_closing()
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_application_connection_is_used_and_left_open(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    async with Channel(make_layer(connection=pg)) as channel:
        async with channel.subscribe("shared-conn") as subscriber:

            async def publish(tag: str) -> None:
                for number in range(20):
                    await channel.publish("shared-conn", [tag, number])

            async with anyio.create_task_group() as tasks:  # concurrent use is serialised
                tasks.start_soon(publish, "a")
                tasks.start_soon(publish, "b")
            received = await _messages(subscriber, 40)
    assert sorted(map(tuple, received)) == sorted((t, n) for t in "ab" for n in range(20))  # type: ignore[arg-type]
    assert not pg.is_closed()
