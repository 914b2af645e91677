"""The layer's own publishing connections (`_publishing`): replies, errors, breakage.

PUBLISH and the history script are written and their replies read by the
layer itself. Every call must get its own answer: an error reply fails its
call once every reply of the batch is read (the connection stays usable);
a connection that breaks, times out or is cancelled part-way is closed,
never reused with replies unread; replies arriving in pieces are put
together.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from channels_core import BrokerUnavailableError, Channel
from channels_core.testing import TcpProxy, free_port
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis._publishing import PublishingConnections
from channels_layer_redis._wire import pack_command, pack_publish
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio

Eventually = Callable[..., Awaitable[None]]
LayerMaker = Callable[..., RedisPubSubChannelLayer]


def factory(url: str) -> Callable[[], AbstractConnection]:
    """Connections to `url` as the layer makes them (redis-py opens them)."""
    pool = redis.asyncio.ConnectionPool.from_url(url)
    return pool.make_connection


def soon(seconds: float = 5.0) -> float:
    """A deadline `seconds` from now, in event loop time."""
    return anyio.current_time() + seconds


async def test_an_error_reply_inside_a_batch_fails_the_call_and_keeps_the_connection(
    redis_url: str, make_redis_layer: LayerMaker
) -> None:
    connections = PublishingConnections(factory(redis_url), 2)
    listener = make_redis_layer()
    wire = listener._wire.channel("g")
    try:
        async with Channel(listener) as channel, channel.subscribe("g") as subscriber:
            before = await connections.execute(soon(), "CLIENT", "ID")
            batch = (
                pack_publish(wire, b'"first"')
                + pack_command("PUBLISH", wire)  # wrong number of arguments
                + pack_publish(wire, b'"second"')
            )
            with pytest.raises(ResponseError, match="wrong number of arguments"):
                await connections.call(batch, 3, soon())
            # Every reply was read: the same connection serves the next call.
            assert await connections.execute(soon(), "CLIENT", "ID") == before
            with anyio.fail_after(5):  # the commands around the error ran
                assert (await subscriber.receive()).message == "first"
                assert (await subscriber.receive()).message == "second"
    finally:
        connections.close()


async def test_replies_that_arrive_in_pieces_are_put_together(
    throwaway_redis: RedisServer,
) -> None:
    async with TcpProxy(throwaway_redis.url, piece=3).running() as proxy:
        connections = PublishingConnections(factory(proxy.url), 1)
        try:
            replies = await connections.call(
                b"".join(pack_publish(b"nobody", b"x" * n) for n in range(300)), 300, soon()
            )
            assert replies == [0] * 300
            assert await connections.execute(soon(), "ECHO", b"a\r\nb" * 50) == b"a\r\nb" * 50
        finally:
            connections.close()

        # The whole layer through the proxy: publishing, batches, the history
        # script (whose EVALSHA fails with NOSCRIPT first) and the subscriber.
        layer = RedisPubSubChannelLayer.from_url(proxy.url, history_size=100)
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            await channel.publish("g", "one")
            await channel.publish_many([("g", n) for n in range(50)])
            with anyio.fail_after(10):
                received = [(await subscriber.receive()).message for _ in range(51)]
            assert received == ["one", *range(50)]


async def test_publishing_connections_killed_mid_batch_answer_every_caller_once(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis
) -> None:
    """Ten publishers; their connections are killed under them again and again.

    Every publish returns (its retry went through) and every message
    arrives once, in each publisher's order.
    """
    name = f"pub-{uuid.uuid4().hex[:12]}"
    layer = make_redis_layer(client_name=name, publish_timeout=10)
    listener = make_redis_layer()
    per_publisher = 400
    killed = 0

    async def kill_publishing_connections() -> None:
        nonlocal killed
        for _ in range(10):
            await anyio.sleep(0.03)
            for client in await admin.client_list():
                if client["name"] == name and client["cmd"] in ("publish", "NULL"):
                    killed += await admin.client_kill_filter(_id=client["id"])

    async with (
        Channel(listener, buffer_size=10**5) as receiving,
        receiving.subscribe("g") as subscriber,
        Channel(layer) as channel,
    ):

        async def publish(publisher: int) -> None:
            for number in range(per_publisher):
                await channel.publish("g", [publisher, number])

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(kill_publishing_connections)
                for publisher in range(10):
                    tasks.start_soon(publish, publisher)
            received = [(await subscriber.receive()).message for _ in range(10 * per_publisher)]
        assert killed > 0
        assert layer.stats().published == 10 * per_publisher
        for publisher in range(10):  # each once, in order
            assert [n for p, n in received if p == publisher] == list(range(per_publisher))


async def test_a_cancelled_or_timed_out_publish_closes_its_connection(
    throwaway_redis: RedisServer, eventually: Eventually
) -> None:
    server = throwaway_redis
    admin = redis.asyncio.Redis.from_url(server.url)
    layer = RedisPubSubChannelLayer.from_url(
        server.url, publish_timeout=0.3, pool_size=1, share_pubsub=False
    )

    async def clients() -> int:
        return len(await admin.client_list())

    try:
        async with Channel(layer) as channel:
            await channel.publish("g", "opens the publishing connection")
            # admin, pub/sub, redis-py's pool (CONFIG GET at connect), publishing
            assert await clients() == 4
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with anyio.move_on_after(0.1) as scope:
                    await channel.publish("g", "cancelled")
                assert scope.cancelled_caught
                with anyio.fail_after(3), pytest.raises(BrokerUnavailableError):
                    await channel.publish("g", "timed out")
            finally:
                os.kill(server.pid, signal.SIGCONT)
            # Neither connection was kept: the one slot (pool_size=1) is free again.
            await eventually(lambda: clients_are(admin, 3))
            await channel.publish("g", "back")
            assert await clients() == 4
    finally:
        await admin.aclose()


async def test_readonly_is_a_lost_connection_in_sentinel_mode_only(
    throwaway_redis: RedisServer, eventually: Eventually
) -> None:
    """A master demoted to replica answers writes with READONLY (Sentinel: retry elsewhere)."""
    admin = redis.asyncio.Redis.from_url(throwaway_redis.url)
    try:
        # A master that is not there: still a replica, refusing writes.
        await admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # type: ignore[no-untyped-call]
        plain = PublishingConnections(factory(throwaway_redis.url), 1)
        sentinel = PublishingConnections(factory(throwaway_redis.url), 1, demoted_is_lost=True)
        try:
            with pytest.raises(ReadOnlyError):
                await plain.execute(soon(), "SET", "k", "v")
            assert await plain.execute(soon(), "PING") == b"PONG"  # still usable
            with pytest.raises(RedisConnectionError, match="no longer the master"):
                await sentinel.execute(soon(), "SET", "k", "v")
            await eventually(lambda: clients_are(admin, 2))  # admin and `plain`'s connection
        finally:
            plain.close()
            sentinel.close()
    finally:
        await admin.aclose()


async def clients_are(admin: redis.asyncio.Redis, count: int) -> bool:
    return len(await admin.client_list()) == count


async def test_calls_beyond_the_size_wait_their_turn_and_cancelled_waiters_leak_no_slot(
    redis_url: str,
) -> None:
    connections = PublishingConnections(factory(redis_url), 2)
    answered = 0

    async def ping(rounds: int) -> None:
        nonlocal answered
        for _ in range(rounds):
            assert await connections.execute(soon(), "PING") == b"PONG"
            answered += 1

    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                for _ in range(20):
                    tasks.start_soon(ping, 50)
                for _ in range(20):  # these are cancelled, waiting or on the wire
                    with anyio.move_on_after(0.001):
                        await ping(10**6)
        assert answered >= 20 * 50
        # Every slot is back: two connections at most, both idle now.
        assert connections._slots.free + len(connections._slots.idle) == 2
        assert not connections._busy
        assert not connections._slots.waiting
    finally:
        connections.close()


async def test_a_call_finding_every_connection_busy_waits_no_longer_than_the_pool_timeout(
    throwaway_redis: RedisServer,
) -> None:
    connections = PublishingConnections(factory(throwaway_redis.url), 1, wait_timeout=0.2)
    try:
        await connections.execute(soon(), "PING")
        os.kill(throwaway_redis.pid, signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as tasks:
                # The one connection hangs on the frozen server (until its deadline)...
                tasks.start_soon(connections.execute, soon(2), "PING")
                await anyio.sleep(0.05)
                # ...so the next call waits for it, and gives up after `wait_timeout`.
                with anyio.fail_after(1), pytest.raises(RedisConnectionError, match="free"):
                    await connections.execute(soon(), "PING")
                tasks.cancel_scope.cancel()
        finally:
            os.kill(throwaway_redis.pid, signal.SIGCONT)
        assert await connections.execute(soon(), "PING") == b"PONG"
    finally:
        connections.close()


async def test_an_idle_connection_the_server_closed_is_replaced_unseen(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis
) -> None:
    name = f"pub-{uuid.uuid4().hex[:12]}"
    layer = make_redis_layer(client_name=name, publish_timeout=2, share_pubsub=False)
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        await channel.publish("g", "first")
        publishing = [c for c in await admin.client_list() if c["name"] == name]
        publishing = [c for c in publishing if c["cmd"] == "publish"]
        assert len(publishing) == 1
        await admin.client_kill_filter(_id=publishing[0]["id"])
        await anyio.sleep(0.05)  # the close reaches us while the connection is idle
        await channel.publish("g", "second")  # on a new connection, no error
        with anyio.fail_after(5):
            assert (await subscriber.receive()).message == "first"
            assert (await subscriber.receive()).message == "second"
        assert layer.stats().published == 2


async def test_call_each_answers_every_server_and_a_cancelled_one_leaks_no_connection(
    redis_url: str, throwaway_redis: RedisServer
) -> None:
    """Several servers from one task (a cluster's masters): each call its own answer."""
    live = PublishingConnections(factory(redis_url), 1)
    stopped = PublishingConnections(factory(throwaway_redis.url), 1)
    dead = PublishingConnections(factory(f"redis://127.0.0.1:{free_port()}"), 1)
    echo = pack_command("ECHO", "a") + pack_command("ECHO", "b")
    try:
        results = await PublishingConnections.call_each(
            [(live, echo, 2), (dead, echo, 2), (stopped, echo, 2)], soon()
        )
        assert results[0] == results[2] == [b"a", b"b"]
        assert isinstance(results[1], RedisConnectionError)
        os.kill(throwaway_redis.pid, signal.SIGSTOP)
        try:
            with anyio.move_on_after(0.2) as scope:
                await PublishingConnections.call_each([(live, echo, 2), (stopped, echo, 2)], soon())
            assert scope.cancelled_caught
        finally:
            os.kill(throwaway_redis.pid, signal.SIGCONT)
        # The unanswered connection was closed and its slot freed: a new one serves.
        assert not stopped._busy
        assert not stopped._slots.idle
        assert await stopped.call(echo, 2, soon()) == [b"a", b"b"]
        assert await live.call(echo, 2, soon()) == [b"a", b"b"]
    finally:
        for connections in (live, stopped, dead):
            connections.close()


async def test_call_each_in_opposite_orders_from_two_tasks_never_deadlocks(redis_url: str) -> None:
    """Each task holds one server's only connection while it needs the other's."""
    first = PublishingConnections(factory(redis_url), 1)
    second = PublishingConnections(factory(redis_url), 1)
    echo = pack_command("ECHO", "a")
    results: list[list[Any]] = []

    async def both(order: list[PublishingConnections]) -> None:
        for _ in range(50):
            answers = await PublishingConnections.call_each(
                [(connections, echo, 1) for connections in order], soon()
            )
            results.append(answers)

    try:
        with anyio.fail_after(4):  # the calls' deadline is 5 s: no one waits for it
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(both, [first, second])
                tasks.start_soon(both, [second, first])
        assert results == [[[b"a"], [b"a"]]] * 100
    finally:
        first.close()
        second.close()


async def test_each_call_times_out_at_its_own_deadline_not_another_calls(
    throwaway_redis: RedisServer,
) -> None:
    """One timer serves every call: a later call due sooner still times out on time."""
    connections = PublishingConnections(factory(throwaway_redis.url), 2)
    echo = pack_command("ECHO", "a")
    results: list[object] = []

    async def patient() -> None:
        results.append(await connections.call(echo, 1, soon(60)))

    try:
        async with anyio.create_task_group() as tasks:  # two calls at once: two connections
            for _ in range(2):
                tasks.start_soon(connections.call, echo, 1, soon(60))
        os.kill(throwaway_redis.pid, signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(patient)
                await anyio.wait_all_tasks_blocked()
                with anyio.fail_after(5), pytest.raises(RedisTimeoutError):
                    await connections.call(echo, 1, soon(0.2))
                assert results == []  # the patient call is still waiting, on its connection
                os.kill(throwaway_redis.pid, signal.SIGCONT)
        finally:
            os.kill(throwaway_redis.pid, signal.SIGCONT)
        assert results == [[b"a"]]
        # The timed-out connection was closed; its slot serves again.
        assert await connections.call(echo, 1, soon()) == [b"a"]
    finally:
        connections.close()


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
@pytest.mark.parametrize("anyio_backend", [pytest.param(("asyncio", {"use_uvloop": True}))])
async def test_publishing_and_the_pubsub_reader_work_on_uvloop(
    make_redis_layer: LayerMaker,
) -> None:
    """uvloop's transports are not asyncio's classes: both own-protocol paths run on them."""
    async with Channel(make_redis_layer()) as channel, channel.subscribe("uv") as subscriber:
        await channel.publish("uv", "one")
        await channel.publish_many([("uv", "two"), ("uv", "three")])
        with anyio.fail_after(5):
            got = [(await subscriber.receive()).message for _ in range(3)]
        assert got == ["one", "two", "three"]
