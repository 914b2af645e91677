"""channels-layer-redis: the Redis pub/sub layer for channels-core.

    from channels_core import Channel

    async with Channel.from_url("redis://127.0.0.1:6379/0") as channel:
        ...

Entry points ``redis``, ``rediss`` and ``redis+unix`` in ``channels.layers``
serve `RedisPubSubChannelLayer`.
"""

from ._layer import RedisLayerStats, RedisPubSubChannelLayer
from ._options import LayerOptions

__all__ = ["LayerOptions", "RedisLayerStats", "RedisPubSubChannelLayer"]
