"""`ChannelHealth`: whether a channel can publish and its subscriptions are live, right now.

`Channel.health` builds it from two sources: what the layer already knows
(`ChannelLayer.stats`: connected, losses, reconnects) and an active round
trip to the broker (`ChannelLayer.check`) bounded by a timeout, so that a
wedged connection (a frozen broker, a half-open socket) reports unhealthy
even while the layer still believes it is connected. A web application
serves it as its health endpoint::

    report = await channel.health(timeout=2.0)
    status = 200 if report.healthy else 503
    return JSONResponse(report.as_dict(), status_code=status)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from .exceptions import ChannelsError, NotSupportedError
from .layer import ChannelLayer
from .stats import LayerStats

__all__ = ["DEFAULT_HEALTH_TIMEOUT", "ChannelHealth", "HealthRecord"]

#: Seconds `Channel.health` waits for the broker by default.
DEFAULT_HEALTH_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHealth:
    """A report of `Channel.health`: one check of the channel and its broker."""

    #: True if the channel is open, its layer connected with no reconnect
    #: pending, and the broker answered within the timeout.
    healthy: bool
    #: Why it is not healthy (None when healthy), e.g. "the broker did not
    #: answer within 3 s".
    reason: str | None
    #: The layer holds a working connection to its broker (its own view,
    #: `LayerStats.connected`; True for a layer that reports no statistics
    #: while the channel is open).
    connected: bool
    #: Subscriptions receive what is published: the connection carrying
    #: them is up and the broker answered on it.
    subscriptions_live: bool
    #: The layer lost its connection and is reconnecting.
    reconnect_pending: bool
    #: Seconds the broker took to answer this check (None if it did not).
    round_trip: float | None
    #: When the broker last answered a check of this channel (Unix time,
    #: seconds), this one included; None if it never has.
    last_round_trip_at: float | None
    #: Seconds since this channel last saw its broker lost (a failed check,
    #: the layer disconnected, or its loss counter grown since the previous
    #: check); None if it never has.
    since_last_loss: float | None
    #: When this report was made (Unix time, seconds).
    checked_at: float

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (for a health endpoint)."""
        return asdict(self)


class HealthRecord:
    """What a channel remembers between health checks: the last answer and the last loss."""

    __slots__ = ("_last_loss", "_last_round_trip_at", "_losses_seen")

    def __init__(self) -> None:
        self._last_round_trip_at: float | None = None
        self._last_loss: float | None = None  # anyio.current_time() of the last loss seen
        self._losses_seen = 0

    def closed(self, state: str) -> ChannelHealth:
        """The report for a channel that is not open (nothing to ask the broker)."""
        return self._report(
            reason=f"the channel is {state}",
            connected=False,
            reconnect_pending=False,
            round_trip=None,
            now=None,
        )

    async def check(self, layer: ChannelLayer, timeout: float) -> ChannelHealth:
        """Read the layer's state, then ask the broker within `timeout` seconds."""
        now = anyio.current_time()
        stats = _stats_of(layer)
        connected = True if stats is None else stats.connected
        pending = stats is not None and (
            not stats.connected or stats.connection_losses > stats.reconnects
        )
        if stats is not None and stats.connection_losses > self._losses_seen:
            self._losses_seen = stats.connection_losses
            self._last_loss = now
        round_trip: float | None = None
        if not connected or pending:
            reason: str | None = "the layer lost its broker connection and is reconnecting"
        else:
            reason, round_trip = await _ask(layer, timeout)
        if reason is not None:
            self._last_loss = anyio.current_time()
        else:
            self._last_round_trip_at = time.time()
        return self._report(
            reason=reason,
            connected=connected,
            reconnect_pending=pending,
            round_trip=round_trip,
            now=anyio.current_time(),
        )

    def _report(
        self,
        *,
        reason: str | None,
        connected: bool,
        reconnect_pending: bool,
        round_trip: float | None,
        now: float | None,
    ) -> ChannelHealth:
        since = None
        if self._last_loss is not None and now is not None:
            since = max(0.0, now - self._last_loss)
        return ChannelHealth(
            healthy=reason is None,
            reason=reason,
            connected=connected,
            subscriptions_live=reason is None,
            reconnect_pending=reconnect_pending,
            round_trip=round_trip,
            last_round_trip_at=self._last_round_trip_at,
            since_last_loss=since,
            checked_at=time.time(),
        )


async def _ask(layer: ChannelLayer, timeout: float) -> tuple[str | None, float | None]:
    """(why the broker failed the check or None, seconds it took to answer or None)."""
    started = anyio.current_time()
    try:
        # The layer bounds its own check; this bound holds whatever it does.
        with anyio.fail_after(timeout):
            await layer.check(timeout)
    except TimeoutError:
        return f"the broker did not answer within {timeout:g} s", None
    except ChannelsError as exc:
        return f"{type(exc).__name__}: {exc}", None
    return None, anyio.current_time() - started


def _stats_of(layer: ChannelLayer) -> LayerStats | None:
    try:
        return layer.stats()
    except NotSupportedError:
        return None
