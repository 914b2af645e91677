"""The layer's own options (as opposed to redis-py's connection options).

They can be given as keyword arguments or in the URL's query string
(``redis://host/0?publish_timeout=2&prefix=myapp:``); keywords win.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from channels_core.reconnect import Backoff

__all__ = ["LAYER_OPTION_NAMES", "LayerOptions"]


@dataclass(frozen=True, slots=True)
class LayerOptions:
    """How the layer behaves around the broker; every field is a `from_url` option.

    * `prefix`: prepended to every group on the wire, so that several
      applications (or test runs) share one server without hearing each other.
      Redis pub/sub ignores the db number: channels are server-wide.
    * `connect_timeout`: how long entering the channel keeps trying to reach
      the server before raising `BrokerUnavailableError`.
    * `publish_timeout`: how long `publish` retries during an outage.
    * `subscribe_timeout`: how long `subscribe` waits for the server's
      confirmation (also while reconnecting) before raising.
    * `health_check_interval`: seconds of silence on the pub/sub connection
      before it is PINGed; no answer within as long again means it is dead.
    * `reconnect_backoff`: delays between reconnection attempts (and
      publish retries).
    * `max_payload_bytes`: the largest encoded message `publish` accepts.
      None (the default): derived at connect from the server's
      ``client-output-buffer-limit pubsub`` (see `_limits`).
    """

    prefix: str = ""
    connect_timeout: float = 5.0
    publish_timeout: float = 5.0
    subscribe_timeout: float = 5.0
    health_check_interval: float = 30.0
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    max_payload_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise TypeError(f"prefix must be a str, got {type(self.prefix).__name__}")
        for name in ("connect_timeout", "publish_timeout", "subscribe_timeout"):
            _check_seconds(name, getattr(self, name))
        _check_seconds("health_check_interval", self.health_check_interval)
        if not isinstance(self.reconnect_backoff, Backoff):
            raise TypeError(
                "reconnect_backoff must be a channels_core.reconnect.Backoff, "
                f"got {type(self.reconnect_backoff).__name__}"
            )
        limit = self.max_payload_bytes
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise TypeError(f"max_payload_bytes must be an int, got {type(limit).__name__}")
            if limit < 1:
                raise ValueError(f"max_payload_bytes must be positive, got {limit!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LayerOptions:
        """Build from option values; strings (from a URL) are converted."""
        converted: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, str) and name in _SECONDS:
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
            elif isinstance(value, str) and name == "max_payload_bytes":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"{name} must be a whole number, got {value!r}") from None
            converted[name] = value
        return cls(**converted)


_SECONDS = frozenset(
    ("connect_timeout", "publish_timeout", "subscribe_timeout", "health_check_interval")
)

#: Option names that belong to the layer rather than to redis-py.
LAYER_OPTION_NAMES = frozenset(f.name for f in fields(LayerOptions))


def _check_seconds(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
