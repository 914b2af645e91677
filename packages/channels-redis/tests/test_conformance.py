"""The Redis layer passes the channels-core conformance suite against a real server."""

from __future__ import annotations

import pytest

from channels_core.testing import BadOptions, ChannelLayerConformance, LayerFactory
from channels_layer_redis import RedisPubSubChannelLayer


class TestRedisConformance(ChannelLayerConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # redis-py is asyncio-only; trio is refused at connect

    @pytest.fixture
    def make_layer(self, redis_url: str, namespace: str) -> LayerFactory:
        return lambda: RedisPubSubChannelLayer.from_url(redis_url, namespace=namespace)

    @pytest.fixture
    def layer_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        return [
            ({"no_such_option": 1}, TypeError),
            ({"retry": None}, TypeError),
            ({"namespace": 1}, TypeError),
            ({"publish_timeout": "5"}, TypeError),
            ({"publish_timeout": -1}, ValueError),
            ({"connect_timeout": 0}, ValueError),
            ({"health_check_interval": float("nan")}, ValueError),
            ({"pool_size": 0}, ValueError),
            ({"max_payload_bytes": 0}, ValueError),
            ({"reconnect_backoff": 1.0}, TypeError),
        ]

    @pytest.fixture
    def secret_url(self) -> str:
        # Port 1 refuses at once: connecting fails, and its error must not show the secrets.
        return "redis://app:hunter2@127.0.0.1:1/0?connect_timeout=0.5&password=hunter3"
