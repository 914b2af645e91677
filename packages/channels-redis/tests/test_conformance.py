"""The Redis layer passes the channels-core conformance suite in every mode, on real servers.

One server (``redis://``, the shared server), Sentinel (``redis+sentinel://``)
and Cluster (``redis+cluster://``): the private setups come from conftest.py.
"""

from __future__ import annotations

import pytest

from channels_core.testing import BadOptions, ChannelLayerConformance, LayerFactory
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import ClusterSetup, SentinelSetup

#: Kit checks comparing a received `Event` with one built without a position.
WHOLE_EVENT_CHECKS = frozenset(
    {
        "test_subscriber_receives_what_is_published",
        "test_pattern_and_group_subscribers_both_receive",
    }
)


class RedisConformance(ChannelLayerConformance):
    """The suite on the URL of `layer_url`, every test under a namespace of its own."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # redis-py is asyncio-only; trio is refused at connect

    @pytest.fixture
    def make_layer(self, layer_url: str, namespace: str) -> LayerFactory:
        return lambda: RedisPubSubChannelLayer.from_url(layer_url, namespace=namespace)


class TestRedisConformance(RedisConformance):
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


class TestRedisConformanceWithHistory(RedisConformance):
    """Every check with history on: single, batched and coalesced publishes run the log script."""

    @pytest.fixture
    def layer_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture
    def make_layer(self, layer_url: str, namespace: str) -> LayerFactory:
        return lambda: RedisPubSubChannelLayer.from_url(
            layer_url, namespace=namespace, history_size=1000
        )

    @pytest.fixture(autouse=True)
    def _events_carry_positions(self, request: pytest.FixtureRequest) -> None:
        if request.node.originalname in WHOLE_EVENT_CHECKS:
            pytest.skip("compares whole events, whose position is None only with history off")


class TestSentinelConformance(RedisConformance):
    @pytest.fixture
    def layer_url(self, sentinels: SentinelSetup) -> str:
        return sentinels.url

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        return [
            ({"no_such_option": 1}, TypeError),
            ({"publish_timeout": -1}, ValueError),
            ({"pool_size": 0}, ValueError),
        ]

    @pytest.fixture
    def secret_url(self) -> str:
        # No Sentinel on port 1: connecting fails, and its error must not show the secrets.
        return (
            "redis+sentinel://app:hunter2@127.0.0.1:1,127.0.0.1:2/svc"
            "?connect_timeout=0.5&sentinel_password=hunter3"
        )


class TestClusterConformance(RedisConformance):
    """Through `RedisPubSubChannelLayer.from_url`: a cluster URL builds the cluster mode's class."""

    @pytest.fixture
    def layer_url(self, redis_cluster: ClusterSetup) -> str:
        return redis_cluster.url

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        return [
            ({"no_such_option": 1}, TypeError),
            ({"socket_type": 1}, TypeError),  # a connection option the cluster client lacks
            ({"publish_timeout": -1}, ValueError),
            ({"pool_size": 0}, ValueError),
        ]

    @pytest.fixture
    def secret_url(self) -> str:
        # Nothing listens on port 1: connecting fails, and its error must not show the secrets.
        return "redis+cluster://app:hunter2@127.0.0.1:1?connect_timeout=0.5&password=hunter3"
