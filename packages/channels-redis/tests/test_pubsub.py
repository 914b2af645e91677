"""The pub/sub connection's own reader on a real server: bursts, huge frames, loss, cancellation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio

from channels_core.testing import handed_on
from channels_layer_redis._pubsub import ConnectionLost, Message, PubSubConnection
from channels_layer_redis._wire import pack_command

pytestmark = pytest.mark.anyio

Eventually = Callable[..., Awaitable[None]]

HUGE = bytes(range(256)) * (16 * 1024) + b"\r\n*3\r\n$7\r\nmessage\r\n"  # 4 MiB and a bit


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        yield client


async def _open(
    redis_url: str, received: list[Any], channels: list[bytes], *, resp3: bool = False
) -> PubSubConnection:
    pool = redis.asyncio.ConnectionPool.from_url(redis_url, protocol=2)
    pubsub, early = await PubSubConnection.open(
        pool.make_connection(),  # type: ignore[no-untyped-call]
        lambda *message: received.append(message),
        channels,
        [],
        5.0,
        resp3=resp3,
    )
    assert early == []
    return pubsub


async def _half_read_huge_frame(
    redis_url: str, client: redis.asyncio.Redis
) -> tuple[bytes, list[Message], PubSubConnection]:
    """A connection that received part of a `HUGE` message: its channel, deliveries, itself."""
    channel = b"test:" + uuid.uuid4().hex.encode()
    received: list[Message] = []
    pubsub = await _open(redis_url, received, [channel])
    await client.publish(channel, HUGE)
    with anyio.fail_after(10):
        while not pubsub._parser.wanted:  # cancelled at its first wait: a few chunks at most
            with anyio.move_on_after(0):
                await pubsub.run(30.0)
    assert received == []
    return channel, received, pubsub


async def test_a_burst_with_huge_and_binary_messages_arrives_whole_and_in_order(
    redis_url: str, client: redis.asyncio.Redis, eventually: Eventually
) -> None:
    channel = b"test:\xff\x00\r\n" + uuid.uuid4().hex.encode()
    received: list[Message] = []
    pubsub = await _open(redis_url, received, [channel])
    sent = [b"%d" % number for number in range(200)]
    sent[50] = HUGE
    sent[120] = b""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pubsub.run, 30.0)
        async with client.pipeline(transaction=False) as pipe:
            for payload in sent:
                pipe.publish(channel, payload)
            await pipe.execute()
        await eventually(lambda: len(received) >= len(sent), 10)
        tasks.cancel_scope.cancel()
    await pubsub.aclose()
    assert received == [(channel, payload, None) for payload in sent]


async def test_cancelling_the_reader_mid_frame_loses_nothing(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    channel, received, pubsub = await _half_read_huge_frame(redis_url, client)
    await client.publish(channel, b"after")
    with anyio.move_on_after(2):
        while len(received) < 2:
            with anyio.move_on_after(0.01):
                await pubsub.run(30.0)
    await pubsub.aclose()
    assert received == [(channel, HUGE, None), (channel, b"after", None)]


async def test_losing_the_connection_mid_frame_raises_connection_lost(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    channel, received, pubsub = await _half_read_huge_frame(redis_url, client)
    await client.client_kill_filter(_id=str(pubsub.client_id))
    with anyio.fail_after(10), pytest.raises(ConnectionLost):
        await pubsub.run(30.0)
    assert received in ([], [(channel, HUGE, None)])  # never a cut-short payload
    with pytest.raises(ConnectionLost):
        await pubsub.call("SUBSCRIBE", [b"test:other"])
    await pubsub.aclose()


async def test_health_check_pings_keep_a_quiet_connection_and_calls_still_answer(
    redis_url: str, client: redis.asyncio.Redis, eventually: Eventually
) -> None:
    channel = b"test:" + uuid.uuid4().hex.encode()
    received: list[Message] = []
    pubsub = await _open(redis_url, received, [])
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pubsub.run, 0.05)
        await anyio.sleep(0.5)  # ten health checks' worth of silence
        await pubsub.call("SUBSCRIBE", [channel])
        assert pubsub.channels == {channel}
        await client.publish(channel, b"hello")
        await eventually(lambda: bool(received))
        tasks.cancel_scope.cancel()
    await pubsub.aclose()
    assert received == [(channel, b"hello", None)]


async def _share_publishes(
    eventually: Eventually, pubsub: PubSubConnection, channel: bytes, *messages: bytes
) -> Any:
    """PUBLISH each of `messages` on the idle RESP3 connection; the replies once all are read."""
    await eventually(lambda: pubsub._sharing)  # `run` has started reading
    commands = b"".join(pack_command("PUBLISH", channel, message) for message in messages)
    loop = asyncio.get_running_loop()
    future = pubsub.share(commands, len(messages), loop.time() + 5)
    assert future is not None
    return await future


async def test_a_shared_publishs_own_messages_are_handed_on_once_the_publisher_has_resumed(
    redis_url: str, eventually: Eventually
) -> None:
    """The server delivers the process's own message before it answers the PUBLISH,
    in one read: the publisher runs first (a sequential publisher writes its next
    PUBLISH while its subscribers run), the messages right after, in order."""
    channel = b"test:" + uuid.uuid4().hex.encode()
    received: list[Any] = []
    pubsub = await _open(redis_url, received, [channel], resp3=True)
    assert pubsub.resp3
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pubsub.run, 30.0)
        assert await _share_publishes(eventually, pubsub, channel, b"first", b"second") == [1, 1]
        assert received == []  # the publisher resumed before anything was handed on
        await handed_on()
        assert received == [(channel, b"first", None), (channel, b"second", None)]
        await pubsub.call("UNSUBSCRIBE", [channel])  # a confirmation: after held messages
        assert await _share_publishes(eventually, pubsub, channel, b"unheard") == [0]
        await handed_on()
        assert len(received) == 2
        tasks.cancel_scope.cancel()
    await pubsub.aclose()


async def test_messages_held_when_the_connection_is_lost_go_on_before_the_loss(
    redis_url: str, eventually: Eventually
) -> None:
    """What arrived before the connection was lost is delivered before `run`
    reports the loss (and the layer the gap), once."""
    channel = b"test:" + uuid.uuid4().hex.encode()
    events: list[Any] = []
    pubsub = await _open(redis_url, events, [channel], resp3=True)

    async def read() -> None:
        with pytest.raises(ConnectionLost):
            await pubsub.run(30.0)
        events.append("lost")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        assert await _share_publishes(eventually, pubsub, channel, b"before") == [1]
        assert events == []
        feeder = pubsub._feeder
        assert feeder is not None
        feeder.connection_lost(None)  # as the transport reports it, before the hand-on ran
        assert events == [(channel, b"before", None)]
    assert events == [(channel, b"before", None), "lost"]  # handed on once, not again
    await pubsub.aclose()
