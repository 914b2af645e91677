"""Counters a layer keeps, for monitoring and tests."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerCounters"]


@dataclass(slots=True)
class LayerCounters:
    """What happened on one layer since it was built (`PostgreSQLChannelLayer.counters`)."""

    #: Times the listening connection was lost and restored.
    reconnects: int = 0
    #: Liveness queries that failed or timed out (each ends the connection).
    liveness_failures: int = 0
    #: Notifications received on the listening connection.
    notifications: int = 0
    #: Notifications skipped because they were not well-formed envelopes.
    undecodable: int = 0
    #: Notifications skipped because their group did not belong on their channel.
    misrouted: int = 0
    #: Messages published through the payloads table (too large for a NOTIFY).
    large_published: int = 0
    #: Large payloads fetched from the payloads table.
    large_fetched: int = 0
    #: Large payloads that could not be fetched (expired or unreachable) and were skipped.
    large_missing: int = 0
