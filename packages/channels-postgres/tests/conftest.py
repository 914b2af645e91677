"""The PostgreSQL server the tests use, and layers on it.

`postgres_url` comes from the root conftest.py (configured, else loopback,
else outside CI a throwaway server). Each session uses its own namespace (its
own channels and tables, dropped at the end), so concurrent runs never meet.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import pytest

from channels_core.testing import eventually
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


#: ``async with stalled_fetches(layer, group) as until_received:`` see the fixture.
StalledFetches = Callable[
    [PostgreSQLChannelLayer, str],
    AbstractAsyncContextManager[Callable[[int], Awaitable[None]]],
]


@pytest.fixture
def stalled_fetches(pg: asyncpg.Connection, postgres_url: str, namespace: str) -> StalledFetches:
    """Within the block, `layer`'s notifications wait behind a fetch that cannot finish.

    A reference to a row that does not exist is notified on `group`'s
    channel while the payloads table is locked; the fetch (counted as
    missing) completes once the block is left. ``await until_received(n)``
    waits until the layer has received `n` notifications in all.
    """
    table = ChannelNames(namespace).payloads_table

    @asynccontextmanager
    async def stalled(
        layer: PostgreSQLChannelLayer, group: str
    ) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
        async def until_received(count: int) -> None:
            await eventually(lambda: layer.stats().received == count)

        notifier = await asyncpg.connect(postgres_url)
        try:
            async with pg.transaction():  # the fetch of the reference waits for this lock
                await pg.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
                await notifier.execute(
                    "SELECT pg_notify($1, $2)",
                    layer.channel_name(group),
                    f'chl1r0:"{group}"0123456789abcdef.999999999',
                )
                yield until_received
        finally:
            await notifier.close()

    return stalled


@pytest.fixture
def private_server(private_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The session's throwaway server (conftest.py at the root), which these tests may
    stop, crash and restart; running again after each test."""
    yield private_postgres
    private_postgres.ensure_running()
