"""The Redis layer passes the channels-core conformance suite against a real server."""

from __future__ import annotations

import pytest

from channels_core.testing import ChannelLayerConformance, LayerFactory
from channels_layer_redis import RedisPubSubChannelLayer


class TestRedisConformance(ChannelLayerConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # redis-py is asyncio-only; trio is refused at connect

    @pytest.fixture
    def make_layer(self, redis_url: str, prefix: str) -> LayerFactory:
        return lambda: RedisPubSubChannelLayer.from_url(redis_url, prefix=prefix)
