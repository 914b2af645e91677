"""Brokers for the reliability tests.

The shared servers (`redis_url` and `postgres_url`, from tests/conftest.py)
carry the tests that do not hurt the server.
Faults (restarts, pauses, killed connections) only ever hit private
throwaway servers on other free loopback ports, started here and stopped in
the fixtures' teardown: the layers' own test helpers (`channels_layer_redis.testing.RedisServer`
and `channels_layer_postgres.testing.PostgresServer`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
import redis
import redis.asyncio

from channels_layer_nats.testing import NatsServer
from channels_layer_nats.testing import ToolMissing as NatsToolMissing
from channels_layer_postgres import ChannelNames
from channels_layer_postgres.testing import PostgresServer, drop_tables
from channels_layer_redis.testing import RedisServer, ToolMissing, redis_servers


def _unavailable(message: str) -> None:
    """Skip outside CI, fail in CI (where every broker must be there)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # both network layers are asyncio-only


@pytest.fixture
def prefix() -> str:
    """A channel prefix of this test's own on the shared Redis server."""
    return f"rel-{secrets.token_hex(6)}:"


@pytest.fixture
async def redis_admin(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def start_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Starts private redis-servers (``password=``, ``tls=True``); all stopped afterwards."""
    try:
        with redis_servers(lambda: tmp_path_factory.mktemp("redis")) as start:
            yield start
    except ToolMissing as missing:
        _unavailable(str(missing))


@pytest.fixture(scope="session")
def pg_namespace(postgres_url: str) -> Iterator[str]:
    """This session's namespace on the shared server (its tables dropped at the end)."""
    name = f"rel{secrets.token_hex(6)}"
    yield name
    asyncio.run(drop_tables(postgres_url, ChannelNames(name)))


@pytest.fixture
async def pg_admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def private_postgres_url(private_postgres: PostgresServer) -> Iterator[str]:
    """The private server's URL (the session's, conftest.py at the root); the server is
    running again after each test."""
    yield private_postgres.url
    private_postgres.ensure_running()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A private nats-server that a test may freeze, stop and restart (on the same port)."""
    try:
        server = NatsServer()
    except NatsToolMissing as missing:
        _unavailable(str(missing))
    with server:
        yield server
