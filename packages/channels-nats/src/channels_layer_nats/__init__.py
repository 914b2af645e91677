"""channels-layer-nats: the NATS layer for channels-core.

    from channels_core import Channel

    async with Channel.from_url("nats://127.0.0.1:4222") as channel:
        ...

Entry points ``nats`` and ``nats+tls`` in ``channels.layers`` serve
`NatsChannelLayer`. Written only against channels-core's public API: the
worked example of a layer distributed on its own.
"""

from ._layer import NatsChannelLayer, NatsLayerStats
from ._options import NatsLayerOptions

__all__ = ["NatsChannelLayer", "NatsLayerOptions", "NatsLayerStats", "__version__"]

__version__ = "0.1.0"
