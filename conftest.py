"""The test servers every test directory shares: one policy, in one place.

`redis_url`, `postgres_url` and `nats_url` are ``CHANNELS_TEST_REDIS_URL`` /
``CHANNELS_TEST_POSTGRES_URL`` / ``CHANNELS_TEST_NATS_URL``, else the
loopback defaults. If one is
unreachable outside CI, a throwaway server is started for the session (the
layers' own test helpers); in CI an unreachable server fails the run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from channels_layer_nats.testing import NatsServer
from channels_layer_nats.testing import ToolMissing as NatsToolMissing
from channels_layer_nats.testing import reachable as nats_reachable
from channels_layer_postgres.testing import TemporaryPostgres, probe
from channels_layer_redis.testing import RedisServer, ToolMissing, reachable

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _unreachable(variable: str, url: str, why: str) -> None:
    """Fail in CI (no fallback there); outside CI, return to start a throwaway server."""
    if os.environ.get("CI"):
        where = urlsplit(url)  # host and port only: the URL may hold a password
        pytest.fail(
            f"the test server {where.hostname}:{where.port} ({variable}) is unreachable "
            f"in CI: {why}",
            pytrace=False,  # the traceback would show the URL, password included
        )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("CHANNELS_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if reachable(url):
        yield url
        return
    _unreachable("CHANNELS_TEST_REDIS_URL", url, "no answer to PING")
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis-shared"))
    except ToolMissing as missing:
        pytest.skip(f"no Redis server and no way to start one: {missing}")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("CHANNELS_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    problem = asyncio.run(probe(url))
    if problem is None:
        yield url
        return
    _unreachable("CHANNELS_TEST_POSTGRES_URL", url, problem)
    with TemporaryPostgres() as server:
        yield server.url


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    url = os.environ.get("CHANNELS_TEST_NATS_URL", DEFAULT_NATS_URL)
    if nats_reachable(url):
        yield url
        return
    _unreachable("CHANNELS_TEST_NATS_URL", url, "no INFO from the server")
    try:
        server = NatsServer()
    except NatsToolMissing as missing:
        pytest.skip(f"no NATS server and no way to start one: {missing}")
    with server:
        yield server.url
