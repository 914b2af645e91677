"""The test servers every test directory shares: one policy, in one place.

`redis_url`, `postgres_url` and `nats_url` are ``CHANNELS_TEST_REDIS_URL`` /
``CHANNELS_TEST_POSTGRES_URL`` / ``CHANNELS_TEST_NATS_URL``, else the
loopback defaults. If one is
unreachable outside CI, a throwaway server is started for the session (the
layers' own test helpers); in CI an unreachable server fails the run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from channels_core import Channel
from channels_layer_nats.testing import NatsServer
from channels_layer_nats.testing import ToolMissing as NatsToolMissing
from channels_layer_nats.testing import reachable as nats_reachable
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres.testing import (
    PostgresServer,
    TemporaryPostgres,
    find_postgres_bin,
    probe,
)
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
def private_postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session, never the shared one: tests may
    stop, crash, restart and pause it, and leave it running (initdb and a start take
    some 2 s, once instead of once per test directory).

    A skip without the server binaries, a failure in CI.
    """
    if find_postgres_bin() is None:
        message = "restart, crash and fault tests need initdb/pg_ctl (PostgreSQL server binaries)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer()
    # Statement statistics too, as many servers keep them: what the layer's
    # statements leave in them is tested.
    if server.has_library("pg_stat_statements"):
        server.settings["shared_preload_libraries"] = "pg_stat_statements"
    with server:
        yield server


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


# -- PostgreSQL: a role with the least privileges the layer needs -----------------------

#: What the PostgreSQL layer's README grants a role on tables an owner made, and
#: what history adds ({schema} and the tables of `ChannelNames` filled in).
POSTGRES_GRANTS = (
    "USAGE ON SCHEMA {schema}",
    "SELECT, INSERT, UPDATE, DELETE ON {schema}.{names.payloads_table}",
    "USAGE ON SEQUENCE {schema}.{names.payloads_table}_id_seq",
)
POSTGRES_HISTORY_GRANTS = (
    "SELECT, INSERT, UPDATE ON {schema}.{names.heads_table}",
    "SELECT, INSERT, UPDATE, DELETE ON {schema}.{names.history_table}",
)

#: least_privilege_role(admin, prefix, history_size=0) -> async context of the role's
#: ``url``, ``namespace``, ``schema`` and ``role``.
LeastPrivilegeRole = Callable[..., AbstractAsyncContextManager[dict[str, str]]]


@asynccontextmanager
async def _least_privilege_role(
    postgres_url: str, admin: asyncpg.Connection, prefix: str, history_size: int = 0
) -> AsyncIterator[dict[str, str]]:
    token = secrets.token_hex(4)
    role, schema, namespace = f"channels_{prefix}_{token}", f"{prefix}_{token}", f"{prefix}{token}"
    names = ChannelNames(namespace)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        owner = PostgreSQLChannelLayer(
            f"{postgres_url}?search_path={schema}", namespace=namespace, history_size=history_size
        )
        async with Channel(owner):
            pass  # creates the tables
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            await admin.execute(f"ALTER ROLE {role} SET search_path = {schema}")
            grants = POSTGRES_GRANTS + (POSTGRES_HISTORY_GRANTS if history_size else ())
            for grant in grants:
                await admin.execute(f"GRANT {grant.format(schema=schema, names=names)} TO {role}")
            parts = urlsplit(postgres_url)
            netloc = f"{role}@{parts.hostname}:{parts.port or 5432}"
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
            yield {"url": url, "namespace": namespace, "schema": schema, "role": role}
        finally:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def least_privilege_role(postgres_url: str) -> LeastPrivilegeRole:
    """A schema whose layer tables an owner made (history on with ``history_size``), and a
    role with exactly the privileges the README lists on them; all dropped after.

    Used as ``async with least_privilege_role(admin_connection, "prefix") as role:``.
    """
    return functools.partial(_least_privilege_role, postgres_url)
