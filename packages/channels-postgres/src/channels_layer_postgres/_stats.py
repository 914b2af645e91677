"""What a layer counts: the live tally its pieces update, and the frozen snapshot it reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from channels_core import LayerStats

__all__ = ["Counters", "PostgreSQLLayerStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgreSQLLayerStats(LayerStats):
    """The shared counters, and the PostgreSQL layer's own (`PostgreSQLChannelLayer.stats`)."""

    #: Notifications skipped because they were not the layer's (not a
    #: well-formed envelope, or a group that does not belong on its channel).
    skipped: int
    #: Notifications dropped because `max_backlog` were already waiting behind
    #: large payloads being fetched (subscribers are told: `MessagesLost`).
    dropped: int
    #: Health checks of the listening connection that failed or timed out
    #: (each ends the connection).
    health_check_failures: int
    #: Messages published through the payloads table (too large for a NOTIFY).
    large_published: int
    #: Large payloads fetched from the payloads table.
    large_fetched: int
    #: Large payloads that could not be fetched (expired or unreachable) and were skipped.
    large_missing: int
    #: Backend process id of the listening connection (None while disconnected).
    listener_pid: int | None


@dataclass(slots=True)
class Counters:
    """The live tally behind `PostgreSQLLayerStats` (private: each piece adds to its own)."""

    published: int = 0
    received: int = 0
    connection_losses: int = 0
    reconnects: int = 0
    skipped: int = 0
    dropped: int = 0
    health_check_failures: int = 0
    large_published: int = 0
    large_fetched: int = 0
    large_missing: int = 0

    def snapshot(self, *, connected: bool, listener_pid: int | None) -> PostgreSQLLayerStats:
        """The frozen snapshot of the tally, with what only the layer knows."""
        return PostgreSQLLayerStats(connected=connected, listener_pid=listener_pid, **asdict(self))
