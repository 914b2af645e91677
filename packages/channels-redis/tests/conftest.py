"""Redis servers for the tests.

`redis_url` is the shared server (the root conftest.py: configured, else
loopback, else outside CI a throwaway one). `throwaway_redis` is a private
server per test, on another free loopback port, that the test may stop and
restart. Pub/sub ignores db
numbers, so tests keep apart through a unique `namespace`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

import channels_core.testing
from channels_core import Channel, MessagesLost, Subscriber
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import (
    ClusterSetup,
    RedisServer,
    SentinelSetup,
    ToolMissing,
    redis_servers,
)

LayerMaker = Callable[..., RedisPubSubChannelLayer]


@pytest.fixture
def start_redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """Starts private servers (``password=``: requirepass, ``tls=True``: a TLS port too)."""
    with tools_required(), redis_servers(lambda: tmp_path_factory.mktemp("redis")) as start:
        yield start


@contextmanager
def tools_required() -> Iterator[None]:
    """A missing ``redis-server`` or ``openssl``: a skip, or a failure in CI."""
    try:
        yield
    except ToolMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def sentinels() -> Iterator[SentinelSetup]:
    """A Sentinel setup for tests that do not fail it over: master and Sentinels have passwords.

    One for the session: test_sentinel.py and the conformance suite share it.
    """
    with (
        tools_required(),
        SentinelSetup(password="master-pw", sentinel_password="sentinel-pw") as setup,
    ):
        yield setup


@pytest.fixture
def tls_sentinels() -> Iterator[SentinelSetup]:
    """A Sentinel setup over TLS (``rediss+sentinel://``), the Sentinels with a password."""
    with tools_required(), SentinelSetup(tls=True, sentinel_password="tls-pw") as setup:
        yield setup


@pytest.fixture
def failing_over() -> Iterator[SentinelSetup]:
    """A Sentinel setup of the test's own, to fail over."""
    with tools_required(), SentinelSetup() as setup:
        yield setup


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterSetup]:
    """One Redis Cluster (3 masters, 3 replicas) for the whole session, with a password.

    Tests may fail a master over or move slots, but leave every node
    running and the cluster settled (`ClusterSetup.wait_until_ok`).
    """
    with tools_required(), ClusterSetup(password="cluster-pw") as cluster:
        yield cluster


@pytest.fixture
def tls_cluster() -> Iterator[ClusterSetup]:
    """A small Redis Cluster over TLS (``rediss+cluster://``): 2 masters, no replicas."""
    with tools_required(), ClusterSetup(2, 0, tls=True) as cluster:
        yield cluster


@pytest.fixture
def throwaway_redis(start_redis_server: Callable[..., RedisServer]) -> RedisServer:
    return start_redis_server()


async def publish_through_fault(
    channel: Channel,
    subscriber: Subscriber,
    groups: list[str],
    fault: Callable[[], Coroutine[Any, Any, object]],
    *,
    timeout: float = 30,
) -> list[str]:
    """One publisher per group (a message every 5 ms each) while `fault` happens.

    `subscriber` (of every group) reads 20 messages, then `fault` runs in a
    task of its own; reading goes on through the gap (`MessagesLost`) until
    200 more publishes have started, then until every message whose publish
    started after the gap has arrived. Fails the test if a message arrives
    twice or one published after the gap never does; returns the reasons
    of the `MessagesLost` seen, for the test to check.
    """
    started: list[int] = []  # message numbers, in the order their publish started
    received: list[int] = []
    losses: list[str] = []
    gap_at: int | None = None  # how many publishes had started when the gap showed
    stop = anyio.Event()

    async def publish(publisher: int) -> None:
        number = publisher
        while not stop.is_set():
            started.append(number)
            await channel.publish(groups[publisher], number)
            number += len(groups)
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tasks:
        for publisher in range(len(groups)):
            tasks.start_soon(publish, publisher)
        with anyio.fail_after(5):
            while len(received) < 20:
                received.append((await subscriber.receive()).message)
        tasks.start_soon(fault)
        with anyio.fail_after(timeout):
            while gap_at is None or len(started) < gap_at + 200:
                try:
                    received.append((await subscriber.receive()).message)
                except MessagesLost as lost:
                    losses.append(lost.reason)
                    gap_at = len(started)
        stop.set()
    # Everything whose publish started after the gap arrives (the last ones too).
    after_gap = set(started[gap_at:])
    with anyio.fail_after(5):
        while not after_gap <= set(received):
            received.append((await subscriber.receive()).message)
    assert len(received) == len(set(received))  # nothing twice
    return losses


@pytest.fixture
def through_fault() -> Callable[..., Awaitable[list[str]]]:
    """`publish_through_fault`, for the failover tests of every mode."""
    return publish_through_fault


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """`channels_core.testing.eventually`, for the tests that take it as a fixture."""
    return channels_core.testing.eventually


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own: no cross-talk on a shared server."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_redis_layer(redis_url: str, namespace: str) -> LayerMaker:
    """Builds layers on the shared server under this test's namespace (options pass through)."""

    def make(**options: object) -> RedisPubSubChannelLayer:
        return RedisPubSubChannelLayer.from_url(redis_url, **{"namespace": namespace, **options})

    return make


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client on the shared server, to look at it from outside."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
