"""Recovery under load: the subscriber's connection killed every second, with history on and off.

    python -m benchmarks.recovery [--layer redis|postgresql|nats ...] [--seconds 20]
                                  [--rate 2000] [--history-size 10000]

Starts a throwaway server for each layer (every layer of `FAULTS` unless
``--layer`` names some), a subscriber channel and a publisher channel on
it, and a publisher sending numbered messages at `--rate` msg/s (each
stamped with its send time). Every second the subscriber's connection is
killed (Redis: ``CLIENT KILL ID`` of its pub/sub connection; PostgreSQL:
``pg_terminate_backend`` of its LISTEN connection; NATS: the subscriber
connects through a `Relay` that cuts its connection, the publisher
directly). Reported, with history on (``?history_size=`` in the URL) and
then off: messages published and received, lost (published, never
received; target 0 with history), duplicates, out of order, `MessagesLost`
raised, and the recovery time of each kill: from the kill to the arrival
of the first message sent after it (delivery is in order, so everything
before it has arrived too), p50 and p99 (nearest rank).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import redis.asyncio

from channels_core import Channel, ChannelLayer, MessagesLost
from channels_core.cli._stats import percentile
from channels_core.reconnect import Backoff
from channels_layer_nats.testing import NatsServer, Relay
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_postgres.testing import PostgresServer
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

#: Kills the subscriber's connection (given its channel's layer).
Kill = Callable[[ChannelLayer], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Target:
    """A throwaway server as a run sees it: where the subscriber and the publisher
    connect, and how to open the fault injector (a connection of our own, if any)."""

    subscriber_url: str
    publisher_url: str
    killer: Callable[[], AbstractAsyncContextManager[Kill]]


@contextmanager
def redis_target() -> Iterator[Target]:
    """A throwaway ``redis-server`` (needs the program); kills by ``CLIENT KILL ID``."""
    with RedisServer() as server:
        yield Target(server.url, server.url, lambda: redis_kill(server.url))


@asynccontextmanager
async def redis_kill(url: str) -> AsyncIterator[Kill]:
    """``CLIENT KILL ID`` of the layer's pub/sub connection, through a connection of our own."""
    admin = redis.asyncio.Redis.from_url(url)

    async def kill(layer: ChannelLayer) -> None:
        assert isinstance(layer, RedisPubSubChannelLayer)
        client_id = layer.stats().pubsub_client_id
        if client_id is not None:  # None: still reconnecting from the last kill
            await admin.client_kill_filter(_id=str(client_id))

    try:
        yield kill
    finally:
        await admin.aclose()


@contextmanager
def postgres_target() -> Iterator[Target]:
    """A throwaway PostgreSQL cluster (needs ``initdb``); kills by ``pg_terminate_backend``."""
    with PostgresServer() as server:
        yield Target(server.url, server.url, lambda: postgres_kill(server.url))


@asynccontextmanager
async def postgres_kill(url: str) -> AsyncIterator[Kill]:
    """``pg_terminate_backend`` of the layer's LISTEN connection, from a connection of ours."""
    admin = await asyncpg.connect(url)

    async def kill(layer: ChannelLayer) -> None:
        assert isinstance(layer, PostgreSQLChannelLayer)
        pid = layer.stats().listener_pid
        if pid is not None:  # None: still reconnecting from the last kill
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

    try:
        yield kill
    finally:
        await admin.close()


@contextmanager
def nats_target() -> Iterator[Target]:
    """A throwaway ``nats-server -js``; the subscriber connects through a `Relay` that
    cuts its connection (the NATS server has no kill of one client without a system
    account), the publisher directly."""
    with NatsServer(jetstream=True) as server, Relay(server.port) as relay:
        yield Target(relay.url, server.url, lambda: nats_kill(relay))


@asynccontextmanager
async def nats_kill(relay: Relay) -> AsyncIterator[Kill]:
    """Cut every connection through `relay`: the subscriber's alone."""

    async def kill(layer: ChannelLayer) -> None:
        relay.cut()

    yield kill


#: Layer name -> its throwaway server with a fault injector.
FAULTS: dict[str, Callable[[], AbstractContextManager[Target]]] = {
    "redis": redis_target,
    "postgresql": postgres_target,
    "nats": nats_target,
}

#: Reconnect at once, then quickly: the time measured is the layer's, not a backoff's.
BACKOFF = Backoff(initial=0.01, maximum=0.1)


def _with_query(url: str, query: str) -> str:
    """`url` with the layer options in `query` appended (none: unchanged)."""
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


async def measure(target: Target, query: str, seconds: float, rate: float) -> dict[str, Any]:
    """One run on `target` (layer options in `query`): publish at `rate` for `seconds`,
    killing the subscriber's connection every second."""
    url = _with_query(target.subscriber_url, query)
    received: list[tuple[int, float, float]] = []  # (number, sent at, received at)
    losses = 0
    kills: list[float] = []
    published = 0
    publish_seconds = 0.0
    async with (
        target.killer() as kill,
        Channel.from_url(url, reconnect_backoff=BACKOFF, buffer_size=1_000_000) as channel,
        Channel.from_url(_with_query(target.publisher_url, query), publish_timeout=10) as publisher,
        channel.subscribe("recovery") as subscriber,
    ):
        done = anyio.Event()
        caught_up = anyio.Event()  # the last message published has arrived

        async def publish() -> None:
            nonlocal published, publish_seconds
            start = time.perf_counter()
            total = int(seconds * rate)
            for number in range(total):
                delay = start + number / rate - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                await publisher.publish("recovery", [number, time.perf_counter()])
                published += 1
            publish_seconds = time.perf_counter() - start

        async def kill_every_second() -> None:
            while not done.is_set():
                await anyio.sleep(1.0)
                if done.is_set():
                    break
                kills.append(time.perf_counter())
                await kill(channel.layer)

        async def receive() -> None:
            nonlocal losses
            while True:
                try:
                    event = await subscriber.receive()
                except MessagesLost:
                    losses += 1
                    continue
                number, sent = event.message
                received.append((number, sent, time.perf_counter()))
                if done.is_set() and number == published - 1:
                    caught_up.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive)
            tasks.start_soon(kill_every_second)
            await publish()
            done.set()
            with anyio.move_on_after(5):  # the last messages still on their way
                if not received or received[-1][0] < published - 1:
                    await caught_up.wait()
            tasks.cancel_scope.cancel()
    numbers = [number for number, _, _ in received]
    recoveries = []
    for killed_at in kills:
        after = next((got for _, sent, got in received if sent > killed_at), None)
        if after is not None:
            recoveries.append((after - killed_at) * 1000)
    return {
        "published": published,
        "published_per_second": round(published / publish_seconds),
        "received": len(received),
        "lost": len(set(range(published)) - set(numbers)),
        "duplicates": len(numbers) - len(set(numbers)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(numbers) if b < a),
        "messages_lost_raised": losses,
        "kills": len(kills),
        "recovery_ms_p50": round(percentile(recoveries, 0.5), 1) if recoveries else None,
        "recovery_ms_p99": round(percentile(recoveries, 0.99), 1) if recoveries else None,
        "recovery_ms_max": round(max(recoveries), 1) if recoveries else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.recovery", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--layer",
        action="append",
        choices=sorted(FAULTS),
        default=[],
        help="run only these layers (repeatable; default: all)",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second offered")
    parser.add_argument("--history-size", type=int, default=10_000)
    args = parser.parse_args(argv)
    for layer in args.layer or FAULTS:
        with FAULTS[layer]() as target:
            for mode, query in (
                ("history on", f"history_size={args.history_size}"),
                ("history off", ""),
            ):
                result = anyio.run(measure, target, query, args.seconds, args.rate)
                print(f"{layer}, {mode}: {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
