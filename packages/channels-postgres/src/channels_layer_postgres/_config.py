"""Layer settings: URL checks, password redaction and the tunable options."""

from __future__ import annotations

import math
import ssl as ssl_module
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from channels_core.reconnect import Backoff

__all__ = ["DEFAULT_URL", "SCHEMES", "Settings", "check_url", "redact_url"]

SCHEMES = ("postgres", "postgresql")
DEFAULT_URL = "postgresql://"
#: libpq's ``sslmode`` values (asyncpg would only refuse another at the first connection).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every layer option, with its default (see the package README for tuning)."""

    #: Prefix of every channel and table name the layer uses in the database.
    namespace: str = "channels"
    #: Seconds to reach the server when the channel is entered.
    connect_timeout: float = 10.0
    #: Seconds a publish keeps retrying through an outage before BrokerUnavailableError.
    publish_timeout: float = 5.0
    #: Seconds a subscribe waits for the listening connection during an outage.
    subscribe_timeout: float = 10.0
    #: Seconds one LISTEN/UNLISTEN batch or payload fetch may take.
    command_timeout: float = 5.0
    #: Seconds between liveness queries on the listening connection.
    liveness_interval: float = 5.0
    #: Seconds a liveness query may take before the connection counts as dead.
    liveness_timeout: float = 2.0
    #: How reconnection attempts are spaced.
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    #: Largest encoded message in bytes (larger ones raise PayloadTooLargeError).
    max_payload_bytes: int = 1024 * 1024
    #: Seconds a large payload stays in the payloads table for receivers to fetch.
    large_payload_ttl: float = 60.0
    #: Size of the publishing pool the layer opens (when not given one).
    pool_size: int = 4
    #: ``application_name`` of the layer's connections (visible in pg_stat_activity).
    application_name: str = "channels-layer-postgres"
    #: An ``ssl.SSLContext`` or libpq sslmode name, passed to asyncpg (overrides ``?sslmode=``).
    ssl: ssl_module.SSLContext | str | None = None

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "publish_timeout",
            "subscribe_timeout",
            "command_timeout",
            "liveness_interval",
            "liveness_timeout",
            "large_payload_ttl",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive, finite number of seconds")
        for name in ("max_payload_bytes", "pool_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.reconnect_backoff, Backoff):
            raise TypeError("reconnect_backoff must be a channels_core.reconnect.Backoff")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Settings:
        """Build from keyword options; unknown ones raise TypeError naming all of them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown PostgreSQL layer option(s): {', '.join(unknown)}; "
                f"valid options are {', '.join(sorted(known | {'pool', 'connection'}))}"
            )
        return cls(**options)


def check_url(url: object) -> str:
    """Return `url` if it is a postgres:// or postgresql:// URL, else raise ValueError."""
    if not isinstance(url, str):
        raise TypeError(f"the PostgreSQL URL must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{redact_url(url)!r} is not a PostgreSQL URL; "
            "use postgresql://user@host:5432/database (or postgres://)"
        )
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name == "sslmode" and value not in SSL_MODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, got {value!r}")
    return url


def redact_url(url: str) -> str:
    """`url` with any password (in the user info or a ``password=`` parameter) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostinfo}"
    query = "&".join(
        "password=***" if item.split("=", 1)[0].lower() == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
