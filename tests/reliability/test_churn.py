"""Subscribe/unsubscribe churn with random cancellation leaves nothing behind.

Eight workers run 5,000 subscription cycles between them over a small set
of groups and patterns (so that local reference counts overlap), each cycle
ending one of several ways: normally, after receiving a message, cancelled
from a cancel scope, by a `move_on_after` / `fail_after` timeout that may
strike in the middle of the broker round trip, or by an error in a sibling
task of a task group. Afterwards:

* the broker holds no subscription of the layer (Redis: PUBSUB NUMSUB and
  NUMPAT on a private server; PostgreSQL: what the layer's LISTEN
  connection reports, and NOTIFY probes it must not hear),
* no task is left over, no connection beyond the layer's own,
* `channel.stats()` is back to zero, and the channel still works.

``CHANNELS_RELIABILITY_CYCLES`` changes the number of cycles (5,000 by
default: each ending some 800 times per layer, the timeouts striking at random
points of the subscribe and unsubscribe round trips; 10,000 before).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable

import anyio
import asyncpg
import pytest
import redis.asyncio

from channels_core import Channel, MessagesLost
from channels_core.testing import eventually
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer
from channels_layer_nats.testing import ToolMissing as NatsToolMissing
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio

CYCLES = int(os.environ.get("CHANNELS_RELIABILITY_CYCLES", "5000"))
WORKERS = 8
GROUPS = [f"churn-{number}" for number in range(12)]
#: Each pattern, and a group it matches.
PATTERNS = {"churn-1*": "churn-11", "churn-?": "churn-2", "churn-[23]": "churn-3"}
ENDINGS = ("normal", "message", "cancel", "move_on", "fail_after", "task_group")
#: Cycles whose cancellation struck before the subscription's block started.
EARLY = "cancelled while subscribing"


class Boom(Exception):
    """A sibling task's failure."""


async def cycle(channel: Channel, rng: random.Random, tally: dict[str, int]) -> None:
    """One subscription, ended in a randomly chosen way."""
    ending = rng.choice(ENDINGS)
    groups = rng.sample(GROUPS, rng.randint(1, 3))
    patterns = rng.sample(sorted(PATTERNS), 1) if rng.random() < 0.2 else []
    subscription = channel.subscribe_pattern(*patterns) if patterns else channel.subscribe(*groups)
    tally[ending] += 1
    if ending == "normal":
        async with subscription:
            await anyio.lowlevel.checkpoint()
    elif ending == "message":
        async with subscription as subscriber:
            group = PATTERNS[patterns[0]] if patterns else groups[0]
            ping = f"ping {rng.random()}"
            await channel.publish(group, ping)
            with anyio.fail_after(5):
                while True:
                    try:
                        event = await subscriber.receive()
                    except MessagesLost:
                        continue  # (none expected: no outage here)
                    if event.message == ping:  # others' pings may come first
                        break
    elif ending == "cancel":
        with anyio.CancelScope() as scope:
            async with subscription:
                scope.cancel()
                await anyio.sleep_forever()
    elif ending in ("move_on", "fail_after"):
        delay = rng.uniform(0, 0.002)  # often strikes during the broker round trip
        if ending == "move_on":
            with anyio.move_on_after(delay):
                async with subscription:
                    tally[EARLY] -= 1
                    await anyio.sleep_forever()
        else:
            try:
                with anyio.fail_after(delay):
                    async with subscription:
                        tally[EARLY] -= 1
                        await anyio.sleep_forever()
            except TimeoutError:
                pass
            else:
                pytest.fail("fail_after did not raise TimeoutError")
        tally[EARLY] += 1
    else:

        async def fail_soon() -> None:
            await anyio.sleep(rng.uniform(0, 0.002))
            raise Boom

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(fail_soon)
                async with subscription:
                    await anyio.sleep_forever()
        except* Boom:
            pass  # anything else the group holds fails the test
        else:
            pytest.fail("the task group did not fail")


async def churn(channel: Channel, seed: int) -> dict[str, int]:
    """`CYCLES` cycles over `WORKERS` concurrent workers; returns how each ended."""
    tally = dict.fromkeys((*ENDINGS, EARLY), 0)

    async def worker(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        for _ in range(CYCLES // WORKERS):
            await cycle(channel, rng, tally)

    async with anyio.create_task_group() as tasks:
        for number in range(WORKERS):
            tasks.start_soon(worker, number)
    return tally


async def still_works(channel: Channel) -> None:
    async with channel.subscribe("churn-after") as subscriber:
        await channel.publish("churn-after", "still works")
        with anyio.fail_after(5):
            assert (await subscriber.receive()).message == "still works"


def tasks_now() -> int:
    return len(asyncio.all_tasks())


async def run_churn(
    channel: Channel, connections: Callable[[], Awaitable[int]], own_connections: int
) -> dict[str, int]:
    """Churn on an open channel; check tasks, connections and stats around it."""
    await still_works(channel)  # the publishing pool has a connection now
    tasks_before = tasks_now()
    connections_before = await connections()
    started = time.monotonic()
    tally = await churn(channel, seed=7)
    seconds = time.monotonic() - started
    print(f"{type(channel.layer).__name__}: {CYCLES:,} cycles in {seconds:.1f} s {tally}")
    stats = channel.stats()
    assert (stats.subscribers, stats.groups, stats.patterns) == (0, 0, 0)
    assert tasks_now() == tasks_before
    assert connections_before <= await connections() <= own_connections
    assert all(tally[ending] > CYCLES // len(ENDINGS) // 2 for ending in ENDINGS), tally
    assert tally[EARLY] > 0, "no cancellation struck while subscribing"
    return tally


# -- Redis -------------------------------------------------------------------------------


async def test_redis_churn_leaves_nothing_behind(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    admin = redis.asyncio.Redis.from_url(server.url)

    async def connections() -> int:  # every client but `admin`
        return len(await admin.client_list()) - 1

    try:
        layer = RedisPubSubChannelLayer.from_url(server.url, pool_size=4)
        async with Channel(layer) as channel:
            # Our own: the pub/sub connection and at most pool_size for publishing.
            await run_churn(channel, connections, own_connections=1 + 4)
            counts = dict(await admin.pubsub_numsub(*GROUPS))
            assert set(counts.values()) == {0}
            assert await admin.pubsub_numpat() == 0
            assert await admin.pubsub_channels() == []
            assert layer.stats().groups == layer.stats().patterns == 0
            await still_works(channel)
        assert await connections() == 0
    finally:
        await admin.aclose()


# -- PostgreSQL --------------------------------------------------------------------------


async def test_postgres_churn_leaves_nothing_behind(
    postgres_url: str, pg_namespace: str, pg_admin: asyncpg.Connection
) -> None:
    application = f"churn-{os.getpid()}"

    async def connections() -> int:
        count = await pg_admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
        )
        return int(count)

    layer = PostgreSQLChannelLayer(
        postgres_url, namespace=pg_namespace, application_name=application, pool_size=4
    )
    async with Channel(layer) as channel:
        # Our own: the LISTEN connection and at most pool_size for publishing.
        await run_churn(channel, connections, own_connections=1 + 4)
        assert await layer.listening_channels() == []
        # Probes on every churned channel must not reach the layer: only the control does.
        heard_before = layer.stats().received
        for name in GROUPS:
            await pg_admin.execute("SELECT pg_notify($1, 'probe')", layer.channel_name(name))
        await still_works(channel)  # committed after the probes, so heard after them
        assert layer.stats().received == heard_before + 1
    assert await connections() == 0


# -- NATS --------------------------------------------------------------------------------


async def test_nats_churn_leaves_nothing_behind() -> None:
    try:
        server = NatsServer()
    except NatsToolMissing as missing:  # a failure in CI, a skip elsewhere
        if os.environ.get("CI"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    with server:
        baseline = server.subscriptions()

        async def connections() -> int:
            return int(server.monitor("connz")["num_connections"])

        layer = NatsChannelLayer.from_url(server.url)
        async with Channel(layer) as channel:
            await still_works(channel)  # and the layer's confirmation inbox is subscribed
            with_channel = server.subscriptions()
            # Our own: one connection carries publishing and every subscription.
            await run_churn(channel, connections, own_connections=1)
            assert layer.stats().subscriptions == 0
            await still_works(channel)  # a round trip after the last UNSUBSCRIBE
            assert server.subscriptions() == with_channel
        # The server drops the connection once it has read the close.
        await eventually(lambda: server.monitor("connz")["num_connections"] == 0, timeout=5)
        assert server.subscriptions() == baseline
