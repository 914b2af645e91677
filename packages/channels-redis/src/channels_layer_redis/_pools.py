"""The layer's connections, to one server or to the master a Sentinel names.

`open_pool` builds redis-py's pool for the configured mode (commands other
than publishing: PING, CONFIG, history reads); `publishing_connections`
the connections PUBLISH and the history script take, made by that pool's
connection factory (so to the same server); `pubsub_connection` makes the
pub/sub connection (likewise); `run_until_lost` reads it until it is lost,
which in Sentinel mode includes "the master moved".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection

from ._publishing import PublishingConnections
from ._pubsub import ConnectionLost, PubSubConnection
from ._sentinel import SentinelPool, watch_master
from ._url import RedisConfig

__all__ = [
    "close_pool",
    "open_pool",
    "publishing_connections",
    "pubsub_connection",
    "run_until_lost",
]


def open_pool(config: RedisConfig, **pool_kwargs: Any) -> BlockingConnectionPool:
    """A bounded pool of publishing connections (options: `BlockingConnectionPool`'s)."""
    if config.sentinel is None:
        return BlockingConnectionPool(connection_class=config.connection_class, **pool_kwargs)
    return SentinelPool.for_target(
        config.sentinel, connection_class=config.connection_class, **pool_kwargs
    )


def publishing_connections(pool: BlockingConnectionPool, size: int) -> PublishingConnections:
    """Up to `size` publishing connections to `pool`'s server (Sentinel: the master's).

    A publish waits for a free one no longer than `pool`'s ``timeout``.
    """
    return PublishingConnections(
        pool.make_connection,
        size,
        wait_timeout=pool.timeout,
        demoted_is_lost=isinstance(pool, SentinelPool),
    )


def pubsub_connection(
    config: RedisConfig, pool: BlockingConnectionPool, kwargs: Mapping[str, Any]
) -> AbstractConnection:
    """A new connection outside `pool` to `pool`'s server (in Sentinel mode: the master)."""
    if isinstance(pool, SentinelPool):
        kwargs = {**kwargs, "connection_pool": pool}  # asks the pool, so the Sentinels
    connection: AbstractConnection = config.connection_class(**kwargs)
    return connection


async def close_pool(pool: BlockingConnectionPool) -> None:
    """Close every connection of `pool` (and, in Sentinel mode, those to the Sentinels)."""
    if isinstance(pool, SentinelPool):
        await pool.aclose()
    else:
        await pool.disconnect()


async def run_until_lost(
    pool: BlockingConnectionPool,
    pubsub: PubSubConnection,
    health_check_interval: float,
    publishing: PublishingConnections | None = None,
) -> None:
    """Read `pubsub` until it is lost; raise `ConnectionLost`, also when the master moved.

    When the master moved, `publishing`'s connections are closed too (see `watch_master`).
    """
    if not isinstance(pool, SentinelPool):
        await pubsub.run(health_check_interval)
        return
    moved: str | None = None
    lost: ConnectionLost | None = None
    async with anyio.create_task_group() as tasks:

        async def watch() -> None:
            nonlocal moved
            moved = await watch_master(pool, pubsub.address, publishing)
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch)
        try:
            await pubsub.run(health_check_interval)
        except ConnectionLost as exc:
            lost = exc
        tasks.cancel_scope.cancel()
    raise lost or ConnectionLost(moved or "the pub/sub connection ended")
