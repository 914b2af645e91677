"""Redis Cluster mode: where the nodes are, and the client that publishes to them.

``redis+cluster://[user:password@]host:port[,host:port...][?option=value...]``
(and ``rediss+cluster://``, TLS to every node). Any one reachable node is
enough: the others, and which master owns which of the 16,384 hash slots,
are learnt from it (``CLUSTER SLOTS``). A cluster has database 0 only.

Publishing goes through redis-py's asyncio `RedisCluster`: it keeps the
slot map, routes ``SPUBLISH channel message`` to the master owning the
channel's slot (the channel is the command's key) and follows ``MOVED`` /
``ASK`` redirections and failovers by refreshing that map. Its slot map is
also the one the subscriptions follow (`_shards`). Its pub/sub is not
used (see `_shards` for why).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from channels_core import BrokerUnavailableError, ErrorMapping

from ._addresses import parse_addresses

__all__ = [
    "CLUSTER_ERRORS",
    "CLUSTER_SCHEMES",
    "ClusterTarget",
    "cluster_options",
    "open_cluster_client",
    "parse_cluster_location",
]

#: ``scheme -> whether it is TLS``.
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}

#: redis-py's cluster exceptions -> what the application sees. Every one of
#: them is the cluster changing under the client (a failover or slot
#: migration under way, no node reachable): worth retrying, so "unavailable".
#: Checked before the one-server mapping, where `ResponseError`, their base,
#: means a refusal.
CLUSTER_ERRORS: ErrorMapping = {
    ClusterDownError: BrokerUnavailableError,
    TryAgainError: BrokerUnavailableError,
    MovedError: BrokerUnavailableError,
    AskError: BrokerUnavailableError,
    SlotNotCoveredError: BrokerUnavailableError,
    ClusterError: BrokerUnavailableError,
    RedisClusterException: BrokerUnavailableError,
}

_DEFAULT_PORT = 6379

#: `RedisCluster` parameters that are about the cluster, not about one
#: connection: the layer decides them, they are not options.
_NOT_OPTIONS = frozenset(
    (
        "self", "host", "port", "startup_nodes", "require_full_coverage", "read_from_replicas",
        "load_balancing_strategy", "dynamic_startup_nodes", "reinitialize_steps",
        "cluster_error_retry_attempts", "max_connections", "retry", "retry_on_error", "db",
        "path", "ssl", "address_remap", "event_dispatcher", "policy_resolver",
        "encoding", "encoding_errors", "decode_responses", "protocol", "legacy_responses",
        "maint_notifications_config",
    )
)  # fmt: skip


def cluster_options() -> frozenset[str]:
    """Connection options `RedisCluster` passes on to each node (so the layer accepts)."""
    parameters = inspect.signature(RedisCluster.__init__).parameters
    return frozenset(parameters) - _NOT_OPTIONS


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """The nodes named in the URL (any one is enough) and how to connect to every node."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool
    #: Connection options of every node (credentials, TLS files, timeouts). May hold secrets.
    connection_kwargs: Mapping[str, Any] = field(repr=False, default_factory=dict)


def parse_cluster_location(hosts: str, path: str, display_url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` list of a Cluster URL; `ValueError` if it or the path is malformed."""
    addresses = parse_addresses(hosts, display_url, default_port=_DEFAULT_PORT, kind="cluster node")
    if path.strip("/") not in ("", "0"):
        raise ValueError(
            f"{display_url!r} names a database, {path.strip('/')!r}: a Redis Cluster has "
            "database 0 only; use redis+cluster://host:port[,host:port...]"
        )
    return addresses


def open_cluster_client(
    target: ClusterTarget, *, pool_size: int, health_check_interval: float
) -> RedisCluster:
    """A `RedisCluster` over `target` (not connected yet: `initialize` it).

    Its own retries (a few, with a slot map refresh in between) follow
    ``MOVED`` and failovers quickly; the layer's `publish_timeout` bounds
    them and retries beyond. `pool_size` bounds the connections per node.
    Its connections speak RESP2, as every other connection of the layer's
    but the pub/sub one: redis-py 8 would open each with ``HELLO 3``,
    which a node may refuse (HELLO renamed away or denied by its ACL).
    """
    kwargs = {"health_check_interval": health_check_interval, **target.connection_kwargs}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        require_full_coverage=False,  # a shard failing over leaves the others usable
        max_connections=pool_size,
        ssl=target.tls,
        protocol=2,
        **kwargs,
    )
