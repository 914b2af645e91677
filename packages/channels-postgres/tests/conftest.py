"""The PostgreSQL server the tests use, and layers on it.

`postgres_url` comes from the root conftest.py (configured, else loopback,
else outside CI a throwaway server). Each session uses its own namespace (its
own channels and tables, dropped at the end), so concurrent runs never meet.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres.testing import LayerMaker, PostgresServer, drop_tables


@pytest.fixture(scope="session")
def namespace(postgres_url: str) -> Iterator[str]:
    name = f"t{secrets.token_hex(6)}"
    yield name
    asyncio.run(drop_tables(postgres_url, ChannelNames(name)))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


#: Short timeouts so that outage tests stay fast.
FAST = {
    "connect_timeout": 5.0,
    "publish_timeout": 2.0,
    "subscribe_timeout": 5.0,
    "health_check_interval": 0.5,
    "health_check_timeout": 0.5,
}


@pytest.fixture
def make_layer(postgres_url: str, namespace: str) -> LayerMaker:
    """Builds layers on the test server; keyword options override the defaults."""

    def make(url: str | None = None, **options: Any) -> PostgreSQLChannelLayer:
        return PostgreSQLChannelLayer(
            url or postgres_url, **{"namespace": namespace, **FAST, **options}
        )

    return make


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test server (the application's, or an admin's)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def private_server(private_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The session's throwaway server (conftest.py at the root), which these tests may
    stop, crash and restart; running again after each test."""
    yield private_postgres
    private_postgres.ensure_running()
