"""Turning a URL plus keyword options into everything the layer needs to connect.

redis-py parses the URL (db, username/password, ``rediss://`` TLS with
``ssl_*`` options, ``unix://`` sockets); this module adds the layer's own
options (`RedisLayerOptions`), and rejects unknown ones early (redis-py
would only fail at the first connection). URLs are shown through
channels-core's `redact_url` only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import AbstractConnection, Connection, parse_url

from channels_core import redact_url, url_secrets

from ._cluster import CLUSTER_SCHEMES, ClusterTarget, cluster_options, parse_cluster_location
from ._options import RedisLayerOptions
from ._sentinel import (
    SENTINEL_OPTIONS,
    SENTINEL_SCHEMES,
    SentinelTarget,
    parse_sentinel_location,
    sentinel_connection_class,
)

__all__ = ["DEFAULT_URL", "SCHEMES", "RedisConfig", "parse_config"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: Schemes understood here; ``redis+unix://`` is ``unix://`` under a name that
#: can be a ``channels.layers`` entry point.
SCHEMES = ("redis", "rediss", "unix", "redis+unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)

#: Connection-pool options (the rest go to each connection).
_POOL_OPTIONS = frozenset(("timeout",))

#: Option names that belong to the layer rather than to redis-py (old names included).
_LAYER_OPTIONS = RedisLayerOptions.names()

#: Options the layer sets itself, so they cannot be given.
_MANAGED = {
    "retry": "the layer retries on its own: use publish_timeout and reconnect_backoff",
    "connection_class": "the URL scheme picks it (redis://, rediss://, unix://)",
}


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """A parsed URL and options. `connection_kwargs` may hold secrets: never log it."""

    display_url: str
    connection_class: type[AbstractConnection]
    connection_kwargs: Mapping[str, Any] = field(repr=False)
    pool_timeout: float | None = None
    options: RedisLayerOptions = field(default_factory=RedisLayerOptions)
    #: Every secret of the URL and options, to mask in driver messages.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Set for ``redis+sentinel://``: the master is asked from these Sentinels.
    sentinel: SentinelTarget | None = field(default=None, repr=False)
    #: Set for ``redis+cluster://``: the nodes to learn the cluster from.
    cluster: ClusterTarget | None = field(default=None, repr=False)


def parse_config(
    url: str, options: Mapping[str, Any], *, alias: Callable[[str], bool] = lambda scheme: False
) -> RedisConfig:
    """Validate `url` and `options` (layer options and redis-py connection options).

    A scheme for which `alias` is true (another name the layer class is
    registered under) is read as ``redis://``.
    """
    if not isinstance(url, str):
        raise TypeError(f"the Redis URL must be a str, got {type(url).__name__}")
    display_url = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES and alias(scheme):
        scheme = "redis"
    if scheme not in SCHEMES:
        raise ValueError(
            f"{display_url!r} is not a Redis URL: use "
            f"{', '.join(f'{name}://' for name in SCHEMES)} (rediss: TLS; unix, "
            "redis+unix: a unix socket; redis+sentinel: the master named by Sentinels; "
            "redis+cluster: a Redis Cluster)"
        )
    sentinel_location: tuple[str, list[tuple[str, int]]] | None = None
    if scheme in SENTINEL_SCHEMES:
        userinfo, at, hosts = parts.netloc.rpartition("@")
        service, database, addresses = parse_sentinel_location(hosts, parts.path, display_url)
        sentinel_location = service, addresses
        scheme = "rediss" if SENTINEL_SCHEMES[scheme] else "redis"
        # The rest reads as a one-server URL; the master's address comes later.
        parts = parts._replace(netloc=f"{userinfo}{at}localhost", path=f"/{database}")
    cluster_nodes: list[tuple[str, int]] | None = None
    cluster_tls = CLUSTER_SCHEMES.get(scheme, False)
    if scheme in CLUSTER_SCHEMES:
        userinfo, at, hosts = parts.netloc.rpartition("@")
        cluster_nodes = parse_cluster_location(hosts, parts.path, display_url)
        scheme = "rediss" if cluster_tls else "redis"
        # The rest reads as a one-server URL; the nodes come from the cluster.
        parts = parts._replace(netloc=f"{userinfo}{at}localhost", path="")
    database = parts.path.strip("/")
    if (
        scheme in ("redis", "rediss")
        and database
        and not (database.isascii() and database.isdigit())
    ):
        # redis-py would silently use db 0 instead
        raise ValueError(
            f"the database of {display_url!r} must be a number, e.g. redis://host:6379/0; "
            f"got {database!r}"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    layer_query = [(name, value) for name, value in query if name in _LAYER_OPTIONS]
    sentinel_options: dict[str, Any] = {}
    if sentinel_location is not None:
        sentinel_options.update((n, v) for n, v in query if n in SENTINEL_OPTIONS)
        sentinel_options.update((n, v) for n, v in options.items() if n in SENTINEL_OPTIONS)
        options = {n: v for n, v in options.items() if n not in SENTINEL_OPTIONS}
        query = [(n, v) for n, v in query if n not in SENTINEL_OPTIONS]
    redis_query = [(name, value) for name, value in query if name not in _LAYER_OPTIONS]
    redis_url = urlunsplit(
        parts._replace(
            scheme="unix" if scheme == "redis+unix" else scheme, query=urlencode(redis_query)
        )
    )
    url_kwargs: dict[str, Any] = dict(parse_url(redis_url))
    connection_class: type[AbstractConnection] = url_kwargs.pop("connection_class", Connection)

    layer_kwargs = {name: value for name, value in options.items() if name in _LAYER_OPTIONS}
    redis_kwargs = {**url_kwargs}
    redis_kwargs.update(
        (name, value) for name, value in options.items() if name not in _LAYER_OPTIONS
    )
    _check_redis_options(connection_class, redis_kwargs, cluster=cluster_nodes is not None)
    layer_options = RedisLayerOptions.from_options(layer_kwargs, query=layer_query)

    pool_timeout = redis_kwargs.pop("timeout", None)
    if "socket_keepalive" in _connection_parameters(connection_class):  # TCP only
        redis_kwargs.setdefault("socket_keepalive", True)
    sentinel: SentinelTarget | None = None
    if sentinel_location is not None:
        service, addresses = sentinel_location
        redis_kwargs.pop("host", None)
        redis_kwargs.pop("port", None)
        connection_class = sentinel_connection_class(scheme == "rediss")
        sentinel = SentinelTarget(
            service,
            tuple(addresses),
            _sentinel_kwargs(redis_kwargs, sentinel_options, layer_options, tls=scheme == "rediss"),
        )
    cluster: ClusterTarget | None = None
    if cluster_nodes is not None:
        for name in ("host", "port", "db"):
            redis_kwargs.pop(name, None)
        cluster = ClusterTarget(tuple(cluster_nodes), cluster_tls, dict(redis_kwargs))
    return RedisConfig(
        display_url=display_url,
        connection_class=connection_class,
        connection_kwargs=redis_kwargs,
        pool_timeout=pool_timeout,
        options=layer_options,
        secrets=tuple(_secrets(url, {**redis_kwargs, **sentinel_options})),
        sentinel=sentinel,
        cluster=cluster,
    )


def _sentinel_kwargs(
    redis_kwargs: Mapping[str, Any],
    given: Mapping[str, Any],
    options: RedisLayerOptions,
    *,
    tls: bool,
) -> dict[str, Any]:
    """How to reach the Sentinels: their own credentials, the master's TLS, bounded waits.

    RESP2, which every Sentinel speaks (redis-py 8 would send ``HELLO 3``).
    """
    kwargs: dict[str, Any] = {
        name: value for name, value in redis_kwargs.items() if name.startswith("ssl")
    }
    kwargs["protocol"] = 2
    if tls:
        kwargs["ssl"] = True
    if "sentinel_username" in given:
        kwargs["username"] = given["sentinel_username"]
    if "sentinel_password" in given:
        kwargs["password"] = given["sentinel_password"]
    kwargs["socket_connect_timeout"] = options.connect_timeout
    kwargs["socket_timeout"] = options.connect_timeout
    return kwargs


def _secrets(url: str, redis_kwargs: Mapping[str, Any]) -> list[str]:
    given = [redis_kwargs.get(name) for name in ("password", "ssl_password", "sentinel_password")]
    return [*url_secrets(url), *(value for value in given if isinstance(value, str) and value)]


def _check_redis_options(
    connection_class: type[AbstractConnection], given: Mapping[str, Any], *, cluster: bool
) -> None:
    """Refuse options neither the layer nor redis-py takes (in cluster mode: both node clients)."""
    for name, reason in _MANAGED.items():
        if name in given:
            raise TypeError(f"the Redis layer does not take {name!r}: {reason}")
    connection = _connection_parameters(connection_class)
    if cluster:  # the publishing client and the pub/sub connections must both take it
        connection &= cluster_options() | {"host", "port", "db"}
    accepted = connection | _POOL_OPTIONS | _LAYER_OPTIONS
    unknown = sorted(set(given) - accepted)
    if unknown:
        current = sorted(_LAYER_OPTIONS - set(RedisLayerOptions.renamed))
        raise TypeError(
            f"unknown option(s) for the Redis layer ({connection_class.__name__}): "
            f"{', '.join(unknown)}. Layer options: {', '.join(current)}; "
            "every other option must be a redis-py connection option "
            "(see redis.asyncio.Connection)"
        )


def _connection_parameters(connection_class: type[AbstractConnection]) -> frozenset[str]:
    """Keyword names `connection_class` accepts, through its ``**kwargs`` chain."""
    names: set[str] = set()
    for cls in connection_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
    names.discard("self")
    return frozenset(names)
