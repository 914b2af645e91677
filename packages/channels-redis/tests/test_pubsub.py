"""The pub/sub connection's own reader on a real server: bursts, huge frames, loss, cancellation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
import redis.asyncio

from channels_layer_redis._pubsub import ConnectionLost, Message, PubSubConnection

pytestmark = pytest.mark.anyio

Eventually = Callable[..., Awaitable[None]]

HUGE = bytes(range(256)) * (16 * 1024) + b"\r\n*3\r\n$7\r\nmessage\r\n"  # 4 MiB and a bit


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        yield client


async def _open(redis_url: str, received: list[Message], channels: list[bytes]) -> PubSubConnection:
    pool = redis.asyncio.ConnectionPool.from_url(redis_url, protocol=2)
    pubsub, early = await PubSubConnection.open(
        pool.make_connection(),  # type: ignore[no-untyped-call]
        lambda *message: received.append(message),
        channels,
        [],
        5.0,
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
