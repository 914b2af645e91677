"""Redis Sentinel mode: the master's address comes from the Sentinels, asked at every connect.

``redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB]``
(and ``rediss+sentinel://``, TLS to the Sentinels and the master). The user
info is the master's; the Sentinels' own credentials are the query (or
keyword) options ``sentinel_username`` / ``sentinel_password``.

redis-py's asyncio Sentinel does the discovery: its connection pool asks a
Sentinel for the master's address whenever a connection opens, and drops
idle connections when that address changed. What it does not do is move a
connection that stays open, which is exactly what the pub/sub connection
is: after a failover in which the old master survives (``SENTINEL
FAILOVER``), Sentinel kills the old master's clients only once it
reconfigures it as a replica, seconds later. So `watch_master` asks the
Sentinels every `MASTER_POLL_INTERVAL` seconds and ends the pub/sub
connection as soon as the master moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import anyio
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from ._addresses import parse_addresses
from ._publishing import PublishingConnections
from ._pubsub import TRANSIENT_ERRORS

__all__ = [
    "MASTER_POLL_INTERVAL",
    "SENTINEL_OPTIONS",
    "SENTINEL_SCHEMES",
    "SentinelPool",
    "SentinelTarget",
    "parse_sentinel_location",
    "sentinel_connection_class",
    "watch_master",
]

#: ``scheme -> whether it is TLS``.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}

#: Options for the Sentinels themselves (never sent to the master).
SENTINEL_OPTIONS = frozenset(("sentinel_username", "sentinel_password"))

#: Seconds between two questions to the Sentinels about the master's address.
MASTER_POLL_INTERVAL = 0.5

_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """Where the Sentinels are and which service to ask them for. May hold secrets."""

    service: str
    sentinels: tuple[tuple[str, int], ...]
    #: Connection options for the Sentinels (credentials, TLS, timeouts).
    sentinel_kwargs: Mapping[str, Any] = field(repr=False, default_factory=dict)


def sentinel_connection_class(tls: bool) -> type[SentinelManagedConnection]:
    """The master's connection class: asks the pool (so the Sentinels) for its address."""
    return SentinelManagedSSLConnection if tls else SentinelManagedConnection


def parse_sentinel_location(
    hosts: str, path: str, display_url: str
) -> tuple[str, str, list[tuple[str, int]]]:
    """``(service, database, [(host, port)...])`` from a Sentinel URL's host list and path.

    Raises `ValueError` (showing `display_url`, already redacted) if either is malformed.
    """
    addresses = parse_addresses(hosts, display_url, default_port=_SENTINEL_PORT, kind="Sentinel")
    service, _, database = path.strip("/").partition("/")
    if not service:
        raise ValueError(
            f"{display_url!r} names no service: use "
            "redis+sentinel://host:port[,host:port...]/SERVICE[/DB]"
        )
    if database and not (database.isascii() and database.isdigit()):
        raise ValueError(f"the database of {display_url!r} must be a number, got {database!r}")
    return unquote(service), database, addresses


class SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, bounded and waiting for a free connection like the plain one.

    The cooperative MRO runs `SentinelConnectionPool.__init__` (the service
    and the Sentinels) then `BlockingConnectionPool.__init__` (the bound).
    """

    sentinel_manager: Sentinel

    @classmethod
    def for_target(cls, target: SentinelTarget, **pool_kwargs: Any) -> SentinelPool:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=dict(target.sentinel_kwargs)
        )
        return cls(target.service, sentinel, **pool_kwargs)

    async def aclose(self) -> None:
        """Close every connection, to the master and to the Sentinels."""
        await self.disconnect()
        await self.sentinel_manager.aclose()


async def watch_master(
    pool: SentinelPool, address: tuple[str, int], publishing: PublishingConnections | None = None
) -> str:
    """Return, with the reason, once the Sentinels name a master other than `address`.

    Before returning, every connection of `pool` (and of `publishing`) is
    closed, so that no publish started afterwards goes to the old master.

    Sentinels that do not answer are not a reason (the pub/sub connection's
    own health check notices a dead master); the question is asked again.
    """
    while True:
        await anyio.sleep(MASTER_POLL_INTERVAL)
        try:
            master = await pool.get_master_address()  # type: ignore[no-untyped-call]
        except TRANSIENT_ERRORS:
            continue
        if master is not None and (str(master[0]), int(master[1])) != address:
            # Publishing connections in use right now still point at the old
            # master (redis-py only drops idle ones): closed too, so a publish
            # under way fails there and is retried on the new master.
            await pool.disconnect(inuse_connections=True)
            if publishing is not None:
                publishing.close_all()
            old, new = f"{address[0]}:{address[1]}", f"{master[0]}:{master[1]}"
            return f"the Sentinels moved the master from {old} to {new}"
