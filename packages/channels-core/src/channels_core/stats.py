"""`LayerStats`: the counters every layer reports, under the same names.

A layer's ``stats()`` returns a frozen snapshot: a `LayerStats`, or a
subclass adding the layer's own counters::

    @dataclass(frozen=True, slots=True, kw_only=True)
    class RedisLayerStats(LayerStats):
        #: Messages skipped because their channel name was not valid UTF-8.
        skipped: int
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerStats:
    """A snapshot of one layer's counters since it was built (see `ChannelLayer.stats`)."""

    #: True while the layer holds a working connection to its broker (for an
    #: in-process layer: while it is connected); False before, after, and
    #: during an outage.
    connected: bool
    #: Messages `publish` handed to the broker successfully.
    published: int
    #: Messages that arrived from the broker for this layer's subscriptions,
    #: counted before decoding (what the layer handed to its inbox).
    received: int
    #: Times an established broker connection was lost.
    connection_losses: int
    #: Times a lost connection was restored (and its subscriptions with it);
    #: ``connection_losses - reconnects`` is 1 during an outage, else 0.
    reconnects: int
