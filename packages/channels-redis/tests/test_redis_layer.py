"""Redis-specific behaviour: processes, several layers, one connection, odd payloads."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest
import redis.asyncio
from anyio.streams.text import TextReceiveStream

from channels_core import (
    Channel,
    Event,
    NotSupportedError,
    Serializer,
    Subscriber,
    layer_capabilities,
)
from channels_layer_redis import RedisPubSubChannelLayer

pytestmark = pytest.mark.anyio

LayerMaker = Callable[..., RedisPubSubChannelLayer]
Eventually = Callable[..., Awaitable[None]]
Subscribe = Callable[..., AbstractAsyncContextManager[Subscriber]]
PEER = Path(__file__).with_name("peer.py")


async def receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(5):
        return await subscriber.receive()


async def test_two_processes_exchange_messages(redis_url: str, namespace: str) -> None:
    count = 50
    group = "cross-process ünïcødé"
    command = [sys.executable, str(PEER), "{role}", redis_url, namespace, group, str(count)]
    with anyio.fail_after(30):
        async with await anyio.open_process(
            [part.format(role="subscribe") for part in command]
        ) as subscriber:
            assert subscriber.stdout is not None
            output, published = "", False
            async for chunk in TextReceiveStream(subscriber.stdout):
                output += chunk
                if output.startswith("ready\n") and not published:
                    publisher = await anyio.run_process(
                        [part.format(role="publish") for part in command]
                    )
                    assert publisher.returncode == 0
                    published = True
            assert await subscriber.wait() == 0
    events = [json.loads(line) for line in output.splitlines()[1:]]
    sent = [{"n": number} for number in range(count)]
    for pattern in (None, f"{group}*"):
        assert [(g, m) for g, m, p in events if p == pattern] == [
            *((group, message) for message in sent),
            *((f"{group}-2", message) for message in sent),
        ]


async def test_several_layers_in_one_process(make_redis_layer: LayerMaker) -> None:
    layers = [make_redis_layer() for _ in range(3)]
    async with (
        Channel(layers[0]) as first,
        Channel(layers[1]) as second,
        Channel(layers[2]) as third,
        first.subscribe("shared") as on_first,
        second.subscribe("shared") as on_second,
    ):
        await third.publish("shared", "to all")
        assert (await receive(on_first)).message == "to all"
        assert (await receive(on_second)).message == "to all"
        ids = {layer.stats().pubsub_client_id for layer in layers}
        assert len(ids) == 3
        assert None not in ids
    assert all(not layer.stats().connected for layer in layers)


async def test_one_pubsub_connection_carries_every_subscription(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, namespace: str, eventually: Eventually
) -> None:
    name = "channels-" + namespace.rstrip(":")
    layer = make_redis_layer(client_name=name, share_pubsub=False)
    groups = [f"group-{number}" for number in range(10)]
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        subscribed = anyio.Event()
        entered = 0

        async def hold(subscribe: Subscribe, *names: str) -> None:
            nonlocal entered
            async with subscribe(*names):
                entered += 1
                if entered == 22:
                    subscribed.set()
                await anyio.sleep_forever()

        for group in groups:  # two subscribers per group
            tasks.start_soon(hold, channel.subscribe, group)
            tasks.start_soon(hold, channel.subscribe, group, "group-0")
        tasks.start_soon(hold, channel.subscribe_pattern, "group-*", "other-?")
        tasks.start_soon(hold, channel.subscribe_pattern, "group-*")
        with anyio.fail_after(5):
            await subscribed.wait()
        await channel.publish("group-1", "through the pool")

        clients = [c for c in await admin.client_list() if c["name"] == name]
        subscribing = [c for c in clients if int(c["sub"]) or int(c["psub"])]
        assert len(subscribing) == 1
        assert int(subscribing[0]["id"]) == layer.stats().pubsub_client_id
        assert (int(subscribing[0]["sub"]), int(subscribing[0]["psub"])) == (10, 2)
        assert any(c["cmd"] == "publish" for c in clients if c not in subscribing)
        numsub = await admin.pubsub_numsub(*(namespace + group for group in groups))
        assert [count for _, count in numsub] == [1] * 10
        tasks.cancel_scope.cancel()

    async def all_closed() -> bool:
        return not [c for c in await admin.client_list() if c["name"] == name]

    await eventually(all_closed)  # the server notices closed sockets asynchronously


async def test_garbage_payload_is_skipped_and_the_subscription_survives(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, namespace: str
) -> None:
    async with Channel(make_redis_layer()) as channel, channel.subscribe("g") as subscriber:
        await admin.publish(namespace + "g", b"\xff\x00 not json")
        await channel.publish("g", "valid")
        assert await receive(subscriber) == Event("g", "valid", None)
        assert channel.stats().undecodable == 1


async def test_channel_name_that_is_not_utf8_is_skipped(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, namespace: str
) -> None:
    layer = make_redis_layer()
    async with Channel(layer) as channel, channel.subscribe_pattern("*") as subscriber:
        await admin.publish(namespace.encode() + b"\xff\xfe", b'"odd name"')
        await channel.publish("fine", "valid")
        assert await receive(subscriber) == Event("fine", "valid", "*")
        assert layer.stats().skipped == 1


async def test_prefix_keeps_applications_apart(make_redis_layer: LayerMaker) -> None:
    async with (
        Channel(make_redis_layer(namespace="app-a:")) as app_a,
        Channel(make_redis_layer(namespace="app-b:")) as app_b,
        app_a.subscribe("news") as on_a,
        app_a.subscribe_pattern("n*") as pattern_on_a,
    ):
        await app_b.publish("news", "for b")
        await app_a.publish("news", "for a")
        assert (await receive(on_a)).message == "for a"
        assert (await receive(pattern_on_a)).message == "for a"


async def test_prefix_with_glob_characters_is_matched_literally(
    redis_url: str, namespace: str
) -> None:
    odd = namespace + "[x]*?:"
    async with (
        Channel.from_url(redis_url, namespace=odd) as channel,
        Channel.from_url(redis_url, namespace=namespace + "x-other:") as lookalike,
        channel.subscribe_pattern("room.*") as subscriber,
    ):
        await lookalike.publish("room.1", "not mine")
        await channel.publish("room.2", "mine")
        assert await receive(subscriber) == Event("room.2", "mine", "room.*")


class Reversed:
    """A user serializer: JSON, reversed on the wire."""

    def dumps(self, message: object) -> bytes:
        return json.dumps(message).encode()[::-1]

    def loads(self, payload: bytes) -> object:
        return json.loads(payload[::-1])


@pytest.mark.parametrize("serializer", ["msgpack", Reversed()], ids=["msgpack", "custom"])
async def test_other_serializers_travel_through_redis(
    make_redis_layer: LayerMaker, serializer: str | Serializer
) -> None:
    async with (
        Channel(make_redis_layer(), serializer=serializer) as sender,
        Channel(make_redis_layer(), serializer=serializer) as receiver,
        receiver.subscribe("codec") as subscriber,
    ):
        await sender.publish("codec", {"list": [1, 2.5, "three"], "none": None})
        assert (await receive(subscriber)).message == {"list": [1, 2.5, "three"], "none": None}


def test_capabilities_are_declared_by_class_attributes() -> None:
    assert layer_capabilities(RedisPubSubChannelLayer) == {
        "multi-group",
        "patterns",
        "history",
        "publish-many",
    }


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_at_connect_with_a_clear_error(
    make_redis_layer: LayerMaker,
) -> None:
    channel = Channel(make_redis_layer())
    with pytest.raises(NotSupportedError, match="asyncio"):
        async with channel:
            pass
