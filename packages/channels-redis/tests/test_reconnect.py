"""Outages: server restarts, killed connections, a dead line, an unreachable server.

The server-side tests run against a private ``redis-server`` that the test
stops and restarts; CLIENT KILL runs on the shared server, aimed at the
layer's own connection only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
import pytest
import redis.asyncio

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Channel,
    Event,
    MessagesLost,
    Subscriber,
)
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisPubSubChannelLayer

pytestmark = pytest.mark.anyio

Eventually = Callable[..., Awaitable[None]]


class Server(Protocol):
    """What the conftest's private `RedisServer` offers a test."""

    url: str
    pid: int

    def start(self) -> None: ...

    def stop(self) -> None: ...


FAST = Backoff(initial=0.02, maximum=0.2)


async def receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(5):
        return await subscriber.receive()


async def expect_gap(subscriber: Subscriber) -> None:
    with anyio.fail_after(5), pytest.raises(MessagesLost) as lost:
        await subscriber.receive()
    assert lost.value.reason == "reconnect"


@asynccontextmanager
async def restarted_soon(server: Server, delay: float = 0.3) -> AsyncIterator[None]:
    """Restart the stopped `server` after `delay` s, while the block runs."""
    async with anyio.create_task_group() as tasks:

        async def restart() -> None:
            await anyio.sleep(delay)
            server.start()

        tasks.start_soon(restart)
        yield


async def test_server_restart_resubscribes_everything_and_tells_subscribers(
    throwaway_redis: Server, eventually: Eventually
) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(server.url, reconnect_backoff=FAST)
    async with (
        Channel(layer) as channel,
        channel.subscribe("room", "lobby") as by_name,
        channel.subscribe_pattern("news.*") as by_pattern,
    ):
        await channel.publish("room", "before")
        assert (await receive(by_name)).message == "before"

        server.stop()
        await eventually(lambda: layer.stats().connection_losses == 1)
        server.start()
        await eventually(lambda: layer.stats().reconnects == 1)

        await channel.publish("lobby", "after")
        await channel.publish("news.sport", "goal")
        await expect_gap(by_name)
        await expect_gap(by_pattern)
        assert (await receive(by_name)) == Event("lobby", "after", None)
        assert (await receive(by_pattern)) == Event("news.sport", "goal", "news.*")
        assert channel.stats().gaps == 1
        stats = layer.stats()
        assert (stats.connected, stats.groups, stats.patterns) == (True, 2, 1)


async def test_killed_connection_is_replaced_on_the_shared_server(
    make_redis_layer: Callable[..., RedisPubSubChannelLayer],
    admin: redis.asyncio.Redis,
    eventually: Eventually,
) -> None:
    layer = make_redis_layer(reconnect_backoff=FAST)
    async with Channel(layer) as channel, channel.subscribe("kill-me") as subscriber:
        first_id = layer.stats().pubsub_client_id
        assert first_id is not None
        assert await admin.client_kill_filter(_id=str(first_id)) == 1
        await eventually(lambda: layer.stats().reconnects == 1)
        second_id = layer.stats().pubsub_client_id
        assert second_id not in (None, first_id)

        await channel.publish("kill-me", "still here")
        await expect_gap(subscriber)
        assert (await receive(subscriber)).message == "still here"
        subscribers = await admin.pubsub_numsub(layer.options.namespace + "kill-me")
        assert subscribers[0][1] == 1


async def test_publishing_does_not_wait_for_the_pubsub_connection(
    throwaway_redis: Server, eventually: Eventually
) -> None:
    server = throwaway_redis
    admin = redis.asyncio.Redis.from_url(server.url)
    try:
        await admin.acl_setuser(
            "app", enabled=True, passwords=["+pw"], commands=["+@all"], keys=["*"], channels=["*"]
        )
        url = server.url.replace("redis://", "redis://app:pw@")
        # The reader stays down: its re-subscription is refused, the next try is 30 s away.
        slow_to_return = Backoff(initial=30, maximum=30, jitter=0)
        layer = RedisPubSubChannelLayer.from_url(url, reconnect_backoff=slow_to_return)
        async with (
            Channel(layer) as channel,
            Channel(RedisPubSubChannelLayer.from_url(server.url)) as listener,
            channel.subscribe("mine"),
            listener.subscribe("elsewhere") as subscriber,
        ):
            await admin.acl_setuser("app", enabled=True, reset_channels=True, channels=["else*"])
            await eventually(lambda: layer.stats().reconnect_attempts == 1)
            assert not layer.stats().connected
            with anyio.fail_after(1):
                await channel.publish("elsewhere", "sent while our reader is down")
            assert (await receive(subscriber)).message == "sent while our reader is down"
    finally:
        await admin.aclose()


async def test_cancellation_leaves_no_connection_behind(
    throwaway_redis: Server, eventually: Eventually
) -> None:
    server = throwaway_redis
    admin = redis.asyncio.Redis.from_url(server.url)

    async def ours_left() -> bool:  # every client but `admin` is gone
        return len(await admin.client_list()) == 1

    try:
        layer = RedisPubSubChannelLayer.from_url(server.url)
        with anyio.move_on_after(0.3):
            async with Channel(layer) as channel, channel.subscribe("group"):
                await channel.publish("group", "uses the pool too")
                await anyio.sleep_forever()
        await eventually(ours_left)

        os.kill(server.pid, signal.SIGSTOP)  # connecting now hangs in the handshake
        try:
            with anyio.move_on_after(0.3) as scope:
                async with Channel(layer):
                    pytest.fail("connected to a frozen server")
            assert scope.cancelled_caught
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await eventually(ours_left)
        assert not layer.stats().connected
    finally:
        await admin.aclose()


async def test_subscriptions_churning_through_repeated_kills_stay_in_step(
    make_redis_layer: Callable[..., RedisPubSubChannelLayer],
    admin: redis.asyncio.Redis,
    eventually: Eventually,
) -> None:
    """Whatever the timing of kills, the server ends up subscribed to exactly what is live."""
    layer = make_redis_layer(reconnect_backoff=FAST, subscribe_timeout=5)
    groups = [f"churn-{number}" for number in range(8)]
    async with Channel(layer, unsubscribe_timeout=5) as channel:

        async def churn(number: int) -> None:
            for round_number in range(15):
                names = groups[(number + round_number) % 8 :][:3] or groups[:1]
                async with channel.subscribe(*names):
                    await anyio.sleep(0.005 * (number % 3))

        async def kill_repeatedly() -> None:
            killed: int | None = None
            for _ in range(5):
                await anyio.sleep(0.04)
                # A new connection, not the one killed before and not yet noticed dead.
                await eventually(
                    lambda before=killed: (
                        layer.stats().connected and layer.stats().pubsub_client_id != before
                    )
                )
                killed = layer.stats().pubsub_client_id
                await admin.client_kill_filter(_id=str(killed))

        async with anyio.create_task_group() as tasks:
            for number in range(6):
                tasks.start_soon(churn, number)
            tasks.start_soon(kill_repeatedly)
        assert layer.stats().connection_losses == 5

        async with channel.subscribe("churn-0", "churn-5") as survivor:
            await eventually(lambda: layer.stats().connected)
            counts = dict(await admin.pubsub_numsub(*(layer.options.namespace + g for g in groups)))
            live = {g: counts[(layer.options.namespace + g).encode()] for g in groups}
            assert live == {g: int(g in ("churn-0", "churn-5")) for g in groups}
            await channel.publish("churn-5", "in step")
            while True:  # gap signals from the kills may come first
                try:
                    event = await receive(survivor)
                except MessagesLost:
                    continue
                break
            assert event.message == "in step"


async def test_publish_during_an_outage_fails_within_the_bound(
    throwaway_redis: Server,
) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(server.url, publish_timeout=0.5)
    async with Channel(layer) as channel:
        server.stop()
        started = time.monotonic()
        with pytest.raises(
            BrokerUnavailableError, match=r"could not publish to redis://127\.0\.0\.1"
        ):
            await channel.publish("group", "lost")
        assert 0.4 < time.monotonic() - started < 2.0
        assert channel.stats().published == 0


async def test_publish_waits_out_a_short_outage(throwaway_redis: Server) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(
        server.url,
        publish_timeout=5,
        reconnect_backoff=FAST,
    )
    async with Channel(layer) as channel, channel.subscribe("group") as subscriber:
        server.stop()
        async with restarted_soon(server):
            await channel.publish("group", "delivered late")
        await expect_gap(subscriber)
        # Published once the pub/sub connection was (or was being) restored:
        # it may or may not arrive, but nothing else can.
        await channel.publish("group", "after")
        messages = [(await receive(subscriber)).message]
        if messages[0] == "delivered late":
            messages.append((await receive(subscriber)).message)
        assert messages[-1] == "after"


async def test_subscribe_during_an_outage_is_bounded_and_keeps_state(
    throwaway_redis: Server, eventually: Eventually
) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(
        server.url,
        subscribe_timeout=0.5,
        reconnect_backoff=FAST,
    )
    async with Channel(layer, unsubscribe_timeout=0.5) as channel:
        async with channel.subscribe("kept") as kept:
            async with channel.subscribe("left-during-outage"):
                server.stop()
                await eventually(lambda: not layer.stats().connected)
            # Leaving during the outage returns at once, and is not forgotten.
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError, match="could not SUBSCRIBE"):
                async with channel.subscribe("refused"):
                    pass
            assert 0.4 < time.monotonic() - started < 2.0
            assert layer.stats().groups == 1

            server.start()
            await eventually(lambda: layer.stats().reconnects == 1)
            probe = redis.asyncio.Redis.from_url(server.url)
            try:
                counts = dict(await probe.pubsub_numsub("kept", "left-during-outage", "refused"))
            finally:
                await probe.aclose()
            assert counts == {b"kept": 1, b"left-during-outage": 0, b"refused": 0}
            await channel.publish("kept", "back")
            await expect_gap(kept)
            assert (await receive(kept)).message == "back"


async def test_subscribe_started_in_an_outage_completes_when_the_server_returns(
    throwaway_redis: Server, eventually: Eventually
) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(
        server.url,
        subscribe_timeout=5,
        reconnect_backoff=FAST,
    )
    async with Channel(layer) as channel:
        server.stop()
        await eventually(lambda: not layer.stats().connected)
        async with restarted_soon(server):
            async with channel.subscribe("late") as subscriber:
                await channel.publish("late", "made it")
                # Its block started after the outage: no gap to report.
                assert (await receive(subscriber)).message == "made it"


async def test_silent_dead_connection_is_detected_by_the_health_check(
    throwaway_redis: Server, eventually: Eventually
) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(
        server.url,
        health_check_interval=0.2,
        connect_timeout=0.3,
        reconnect_backoff=FAST,
    )
    async with Channel(layer) as channel, channel.subscribe("quiet") as subscriber:
        pid = server.pid
        os.kill(pid, signal.SIGSTOP)  # the server hangs without closing anything
        try:
            await eventually(lambda: layer.stats().connection_losses == 1)
        finally:
            os.kill(pid, signal.SIGCONT)
        await eventually(lambda: layer.stats().reconnects == 1)
        await channel.publish("quiet", "awake")
        await expect_gap(subscriber)
        assert (await receive(subscriber)).message == "awake"


async def test_unreachable_server_at_connect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://user:hunter2-secret@127.0.0.1:{port}/3"
    layer = RedisPubSubChannelLayer.from_url(url, connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as error:
        async with Channel(layer):
            pytest.fail("entered a channel whose server is unreachable")
    assert time.monotonic() - started < 2.0
    message = str(error.value)
    assert f"connect to redis://user:***@127.0.0.1:{port}/3" in message
    assert "hunter2" not in message + repr(layer) + caplog.text


async def test_wrong_password_fails_at_once_without_showing_it(
    start_redis_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis_server(password="right-password")
    url = server.url.replace("right-password", "wrong-password")
    layer = RedisPubSubChannelLayer.from_url(url, connect_timeout=5)
    started = time.monotonic()
    with pytest.raises(BrokerRefusedError, match="AuthenticationError") as error:
        async with Channel(layer):
            pass
    assert time.monotonic() - started < 1.0
    assert "wrong-password" not in str(error.value) + repr(layer) + caplog.text
    async with Channel(RedisPubSubChannelLayer.from_url(server.url)) as channel:
        async with channel.subscribe("authenticated") as subscriber:
            await channel.publish("authenticated", "ok")
            assert (await receive(subscriber)).message == "ok"
