"""`Channel.health` on a broker that freezes (SIGSTOP) or restarts, on every network layer.

Each test freezes (or stops, then restarts) a private throwaway server under a channel
with one live subscription, and measures when `health()` says unhealthy:
within 2 x the layer's health check interval. Once the server runs again
the report turns healthy, and the subscription receives again: a healthy
report means what it says.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import anyio
import pytest

from channels_core import Backoff, Channel, ChannelLayer, MessagesLost, Subscriber
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_postgres.testing import PostgresServer
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer
from tests.reliability.support import postgres_processes, signal_all

pytestmark = pytest.mark.anyio

#: The layers' health check interval in these tests (seconds).
INTERVAL = 0.5
QUICK = Backoff(initial=0.05, maximum=0.25)


async def unhealthy_after(channel: Channel, freeze: Callable[[], None]) -> float:
    """Freeze the broker; seconds until `health()` reports unhealthy (checked back to back)."""
    report = await channel.health(timeout=INTERVAL)
    assert report.healthy, report
    freeze()
    frozen = time.monotonic()
    with anyio.fail_after(10):
        while (report := await channel.health(timeout=INTERVAL)).healthy:  # noqa: ASYNC110 - polling the broker is the point
            await anyio.sleep(0.02)
    assert report.reason
    assert not report.subscriptions_live
    return time.monotonic() - frozen


async def healthy_and_delivering(channel: Channel, subscriber: Subscriber) -> None:
    """Wait for a healthy report, then prove the subscription held across the fault receives."""
    with anyio.fail_after(15):
        while not (report := await channel.health(timeout=INTERVAL)).healthy:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert report.subscriptions_live
    assert report.since_last_loss is not None
    await channel.publish(subscriber.groups[0], "after")
    with anyio.fail_after(5):
        while True:
            try:
                if (await subscriber.receive()).message == "after":
                    return
            except MessagesLost:
                continue  # the gap of a reconnect, told before what follows it


async def freeze_and_thaw(
    layer: ChannelLayer, freeze: Callable[[], None], thaw: Callable[[], None]
) -> float:
    async with Channel(layer) as channel, channel.subscribe("health") as subscriber:
        try:
            seconds = await unhealthy_after(channel, freeze)
        finally:
            thaw()
        print(f"{type(layer).__name__}: unhealthy {seconds:.2f} s after the freeze")
        assert seconds <= 2 * INTERVAL
        await healthy_and_delivering(channel, subscriber)
    return seconds


async def stop_and_restart(
    layer: ChannelLayer, stop: Callable[[], None], start: Callable[[], None]
) -> None:
    """Stop the server (its connections cut); unhealthy in time, healthy once it is back."""
    async with Channel(layer) as channel, channel.subscribe("health") as subscriber:
        seconds = await unhealthy_after(channel, stop)
        print(f"{type(layer).__name__}: unhealthy {seconds:.2f} s after the stop")
        assert seconds <= 2 * INTERVAL
        await anyio.to_thread.run_sync(start)
        await healthy_and_delivering(channel, subscriber)
    assert layer.stats().reconnects == 1


# -- Redis ----------------------------------------------------------------------------


def redis_layer(server: RedisServer) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer.from_url(
        server.url,
        health_check_interval=INTERVAL,
        reconnect_backoff=QUICK,
        connect_timeout=1.0,
        publish_timeout=2.0,
    )


async def test_redis_frozen_then_thawed(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    await freeze_and_thaw(
        redis_layer(server),
        lambda: os.kill(server.pid, signal.SIGSTOP),
        lambda: os.kill(server.pid, signal.SIGCONT),
    )


async def test_redis_stopped_then_restarted(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    await stop_and_restart(redis_layer(server), server.stop, server.start)


# -- PostgreSQL -----------------------------------------------------------------------


def postgres_layer(url: str) -> PostgreSQLChannelLayer:
    return PostgreSQLChannelLayer.from_url(
        url,
        namespace="health",
        health_check_interval=INTERVAL,
        health_check_timeout=INTERVAL,
        reconnect_backoff=QUICK,
        connect_timeout=1.0,
        publish_timeout=2.0,
    )


async def test_postgres_frozen_then_thawed(private_postgres_url: str) -> None:
    layer = postgres_layer(private_postgres_url)
    processes: list[int] = []

    def freeze() -> None:
        pid = layer.stats().listener_pid
        assert pid is not None
        processes.extend(postgres_processes(pid))
        signal_all(processes, signal.SIGSTOP)

    await freeze_and_thaw(layer, freeze, lambda: signal_all(processes[::-1], signal.SIGCONT))


async def test_postgres_stopped_then_restarted(
    private_postgres: PostgresServer, private_postgres_url: str
) -> None:
    await stop_and_restart(
        postgres_layer(private_postgres_url), private_postgres.stop, private_postgres.start
    )


# -- NATS -----------------------------------------------------------------------------


def nats_layer(server: NatsServer) -> NatsChannelLayer:
    return NatsChannelLayer.from_url(
        server.url,
        ping_interval=INTERVAL,
        reconnect_backoff=QUICK,
        connect_timeout=1.0,
        publish_timeout=2.0,
    )


async def test_nats_frozen_then_thawed(nats_server: NatsServer) -> None:
    await freeze_and_thaw(nats_layer(nats_server), nats_server.freeze, nats_server.thaw)


async def test_nats_stopped_then_restarted(nats_server: NatsServer) -> None:
    await stop_and_restart(nats_layer(nats_server), nats_server.stop, nats_server.start)
