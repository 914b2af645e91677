"""The layer's options: one frozen dataclass, checked by the core's field functions."""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from channels_core import Backoff, options
from channels_core.history import HistoryOptions

__all__ = ["PostgreSQLLayerOptions"]


@dataclass(frozen=True, slots=True)
class PostgreSQLLayerOptions(HistoryOptions):
    """Every option of the PostgreSQL layer, with its default (see the package README).

    `history_size` and `history_ttl` come from `HistoryOptions` (0: history off).
    """

    #: Old option names, accepted for one release with a DeprecationWarning.
    renamed: ClassVar[Mapping[str, str]] = {
        "liveness_interval": "health_check_interval",
        "liveness_timeout": "health_check_timeout",
    }

    #: Prefix of every channel and table name the layer uses in the database.
    namespace: str = options.text("channels", allow_empty=False)
    #: Seconds to reach the server when the channel is entered.
    connect_timeout: float = options.seconds(10.0)
    #: Seconds a publish keeps retrying through an outage before BrokerUnavailableError.
    publish_timeout: float = options.seconds(5.0)
    #: Seconds a subscribe waits for the listening connection during an outage.
    subscribe_timeout: float = options.seconds(10.0)
    #: Seconds one LISTEN/UNLISTEN batch or payload fetch may take.
    command_timeout: float = options.seconds(5.0)
    #: Seconds between health checks (a query) on the idle listening connection.
    health_check_interval: float = options.seconds(5.0)
    #: Seconds a health check may take before the connection counts as dead.
    health_check_timeout: float = options.seconds(2.0)
    #: How reconnection attempts are spaced.
    reconnect_backoff: Backoff = options.instance(Backoff, default_factory=Backoff)
    #: Largest encoded message in bytes (larger ones raise PayloadTooLargeError).
    max_payload_bytes: int = options.count(1024 * 1024)
    #: Seconds a large payload stays in the payloads table for receivers to fetch.
    large_payload_ttl: float = options.seconds(60.0)
    #: Notifications that may wait behind large payloads being fetched; beyond
    #: it, new ones are dropped, counted and reported as a gap (`MessagesLost`).
    max_backlog: int = options.count(10_000)
    #: Size of the publishing pool the layer opens (when not given one).
    pool_size: int = options.count(4)
    #: ``application_name`` of the layer's connections (visible in pg_stat_activity).
    application_name: str = options.text("channels-layer-postgres")
    #: An ``ssl.SSLContext`` or libpq sslmode name, passed to asyncpg (overrides ``?sslmode=``).
    ssl: ssl_module.SSLContext | str | None = options.instance(
        (ssl_module.SSLContext, str), default=None, allow_none=True
    )
