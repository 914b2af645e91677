"""channels-layer-redis: the Redis pub/sub layer for channels-core.

    from channels_core import Channel

    async with Channel.from_url("redis://127.0.0.1:6379/0") as channel:
        ...

Entry points ``redis``, ``rediss``, ``redis+unix``, ``redis+sentinel`` and
``rediss+sentinel`` in ``channels.layers`` serve `RedisPubSubChannelLayer`;
``redis+cluster`` and ``rediss+cluster`` its cluster mode,
`RedisClusterChannelLayer` (sharded pub/sub, no patterns). ``LayerOptions``
is the deprecated name of `RedisLayerOptions` (kept for one release).
"""

import warnings
from typing import Any

from ._cluster_layer import RedisClusterChannelLayer, RedisClusterLayerStats
from ._layer import RedisLayerStats, RedisPubSubChannelLayer
from ._options import RedisLayerOptions

__all__ = [
    "RedisClusterChannelLayer",
    "RedisClusterLayerStats",
    "RedisLayerOptions",
    "RedisLayerStats",
    "RedisPubSubChannelLayer",
    "__version__",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "LayerOptions":
        warnings.warn(
            "channels_layer_redis.LayerOptions is deprecated: use RedisLayerOptions",
            DeprecationWarning,
            stacklevel=2,
        )
        return RedisLayerOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
