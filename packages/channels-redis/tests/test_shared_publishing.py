"""Publishes on the pub/sub connection while it is idle (RESP3), and the RESP2 fallback."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions

from channels_core import BrokerUnavailableError, Channel, Subscriber
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio

Eventually = Callable[..., Awaitable[None]]
LayerMaker = Callable[..., RedisPubSubChannelLayer]


async def pubsub_client(admin: redis.asyncio.Redis, layer: RedisPubSubChannelLayer) -> Any:
    """The server's CLIENT LIST entry of the layer's pub/sub connection."""
    client_id = layer.stats().pubsub_client_id
    return next(c for c in await admin.client_list() if int(c["id"]) == client_id)


async def receive_until(subscriber: Subscriber, last: str) -> list[str]:
    """The messages up to `last` (MessagesLost raises)."""
    got: list[str] = []
    with anyio.fail_after(10):
        while not got or got[-1] != last:
            got.append((await subscriber.receive()).message)
    return got


@pytest.mark.parametrize("history_size", [0, 100])
async def test_an_idle_pubsub_connection_carries_the_publishes(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, history_size: int
) -> None:
    name = f"share-{uuid.uuid4().hex[:12]}"
    layer = make_redis_layer(client_name=name, history_size=history_size)
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        for number in range(20):
            await channel.publish("g", number)
        await channel.publish_many([("g", "a"), ("g", "b")])
        got = [(await subscriber.receive()).message for _ in range(22)]
        assert got == [*range(20), "a", "b"]
        own = [c for c in await admin.client_list() if c["name"] == name]
        pubsub = await pubsub_client(admin, layer)
        assert pubsub["resp"] == "3"
        assert pubsub["cmd"] == ("evalsha" if history_size else "publish")
        if not history_size:  # (with history, redis-py's pool runs the history reads' script)
            # No connection of the layer's but the pub/sub one ran a publish.
            assert [c for c in own if c["cmd"] == "publish"] == [pubsub]
        assert layer.stats().connection_losses == 0


async def test_a_cancelled_or_timed_out_shared_publish_keeps_the_subscriptions(
    throwaway_redis: RedisServer,
) -> None:
    server = throwaway_redis
    admin = redis.asyncio.Redis.from_url(server.url)
    layer = RedisPubSubChannelLayer.from_url(server.url, publish_timeout=0.3, pool_size=1)
    try:
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            client_id = layer.stats().pubsub_client_id
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with anyio.move_on_after(0.1) as scope:
                    await channel.publish("g", "cancelled")  # on the pub/sub connection
                assert scope.cancelled_caught
                with anyio.fail_after(3), pytest.raises(BrokerUnavailableError):
                    await channel.publish("g", "timed out")
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await channel.publish("g", "back")
            # The cancelled publish had reached the server: it ran, in order.
            got = await receive_until(subscriber, "back")
            assert got[0] == "cancelled"
            assert layer.stats().pubsub_client_id == client_id
            assert layer.stats().connection_losses == 0
            assert channel.stats().gaps == 0
            # Its reply was read: the connection is idle, and shared, again.
            await channel.publish("g", "shared again")
            assert (await pubsub_client(admin, layer))["cmd"] == "publish"
            assert await receive_until(subscriber, "shared again") == ["shared again"]
    finally:
        await admin.aclose()


async def test_subscribes_and_unsubscribes_run_among_shared_publishes(
    make_redis_layer: LayerMaker,
) -> None:
    async with Channel(make_redis_layer()) as channel, channel.subscribe("g") as subscriber:
        done = anyio.Event()

        async def churn() -> None:
            number = 0
            while not done.is_set():
                async with channel.subscribe(f"other-{number % 5}") as other:
                    await channel.publish(f"other-{number % 5}", "ping")
                    assert (await other.receive()).message == "ping"
                number += 1

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(churn)
            for number in range(300):
                await channel.publish("g", number)
            done.set()
        with anyio.fail_after(10):
            got = [(await subscriber.receive()).message for _ in range(300)]
        # The churning subscriber's "ping"s go to its own groups, never to "g".
        assert got == list(range(300))
        assert channel.stats().gaps == 0


async def test_without_resp3_publishes_keep_their_own_connections(
    throwaway_redis: RedisServer,
) -> None:
    """``share_pubsub=False``: the RESP2 path a server refusing ``HELLO 3`` takes too."""
    await _publish_on_resp2(throwaway_redis, {"client_name": "fallback", "share_pubsub": False})


async def test_a_server_refusing_hello_3_keeps_resp2_and_its_own_publishing_connections() -> None:
    """A server without HELLO (renamed away, as some managed services do) answers it
    with an error: the pub/sub connection stays in RESP2, and publishes, subscriptions
    and the health check work as with ``share_pubsub=False``."""
    with RedisServer(arguments=["--rename-command", "HELLO", ""]) as server:
        probe = redis.asyncio.Redis.from_url(server.url)
        try:
            with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
                await probe.execute_command("HELLO", 3)  # type: ignore[no-untyped-call]
        finally:
            await probe.aclose()
        await _publish_on_resp2(server, {"client_name": "refused"})


async def _publish_on_resp2(server: RedisServer, options: dict[str, Any]) -> None:
    admin = redis.asyncio.Redis.from_url(server.url, protocol=2)
    layer = RedisPubSubChannelLayer.from_url(server.url, **options)
    try:
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            for number in range(10):
                await channel.publish("g", number)
            with anyio.fail_after(5):
                assert [(await subscriber.receive()).message for _ in range(10)] == list(range(10))
            pubsub = await pubsub_client(admin, layer)
            assert pubsub["resp"] == "2"
            assert pubsub["cmd"] != "publish"
            await layer.check(timeout=5)
    finally:
        await admin.aclose()


async def test_a_pubsub_connection_killed_mid_publish_answers_every_caller(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, eventually: Eventually
) -> None:
    layer = make_redis_layer(publish_timeout=5)
    async with Channel(layer) as channel, channel.subscribe("g"):
        answered = 0

        async def publish(publisher: int) -> None:
            nonlocal answered
            for number in range(100):
                await channel.publish("g", [publisher, number])
                answered += 1

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                for publisher in range(5):
                    tasks.start_soon(publish, publisher)
                await eventually(lambda: answered >= 50)
                await admin.client_kill_filter(_id=str(layer.stats().pubsub_client_id))
        assert answered == 500
        await eventually(lambda: layer.stats().reconnects == 1)
