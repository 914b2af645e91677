"""The layer's own options (as opposed to redis-py's connection options).

They can be given as keyword arguments or in the URL's query string
(``redis://host/0?publish_timeout=2&namespace=myapp:``); keywords win.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from channels_core import Backoff, options
from channels_core.history import HistoryOptions

__all__ = ["RedisLayerOptions"]


@dataclass(frozen=True, slots=True)
class RedisLayerOptions(HistoryOptions):
    """How the layer behaves around the broker; every field is a `from_url` option.

    `history_size` and `history_ttl` (from `HistoryOptions`) turn on a log
    per group in a Redis stream (see `channels_layer_redis._history`).

    Old names, accepted for one release with a `DeprecationWarning`:
    ``prefix`` (now `namespace`) and ``max_connections`` (now `pool_size`).
    """

    renamed: ClassVar[Mapping[str, str]] = {"prefix": "namespace", "max_connections": "pool_size"}

    #: Prepended to every group on the wire, so that several applications (or
    #: test runs) share one server without hearing each other. Redis pub/sub
    #: ignores the db number: channels are server-wide.
    namespace: str = options.text("")
    #: Seconds entering the channel keeps trying to reach the server.
    connect_timeout: float = options.seconds(5.0)
    #: Seconds `publish` retries during an outage, pool wait included.
    publish_timeout: float = options.seconds(5.0)
    #: Seconds `subscribe` waits for the server's confirmation (also while reconnecting).
    subscribe_timeout: float = options.seconds(5.0)
    #: Seconds of silence on the pub/sub connection before it is PINGed; no
    #: answer within as long again means it is dead.
    health_check_interval: float = options.seconds(30.0)
    #: Delays between reconnection attempts (and publish retries).
    reconnect_backoff: Backoff = options.instance(Backoff, default_factory=Backoff)
    #: The largest encoded message `publish` accepts; None: derived at connect
    #: from the server's ``client-output-buffer-limit pubsub`` (see `_limits`).
    max_payload_bytes: int | None = options.count(None, allow_none=True)
    #: Publishing connections (concurrent publishes of one layer).
    pool_size: int = options.count(10)
    #: Ask RESP3 (``HELLO 3``) on the pub/sub connection, so that a publish
    #: finding it idle runs there (one read brings the reply and the
    #: process's own message); False: RESP2, publishes on their own connections.
    share_pubsub: bool = options.flag(True)

    @property
    def prefix(self) -> str:
        """Deprecated: `namespace`."""
        _deprecated("RedisLayerOptions.prefix", "RedisLayerOptions.namespace")
        return self.namespace

    @property
    def max_connections(self) -> int:
        """Deprecated: `pool_size`."""
        _deprecated("RedisLayerOptions.max_connections", "RedisLayerOptions.pool_size")
        return self.pool_size

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Self:
        """Deprecated: `from_options` (text values count as URL query text, as before)."""
        _deprecated("RedisLayerOptions.from_mapping", "RedisLayerOptions.from_options")
        text = [(name, value) for name, value in values.items() if isinstance(value, str)]
        rest = {name: value for name, value in values.items() if not isinstance(value, str)}
        return cls.from_options(rest, query=text)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)
