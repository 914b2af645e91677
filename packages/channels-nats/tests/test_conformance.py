"""The NATS layer passes the channels-core conformance suite against a real server."""

from __future__ import annotations

import pytest

from channels_core.testing import (
    BadOptions,
    ChannelLayerConformance,
    HistoryLayerFactory,
    LayerFactory,
)
from channels_layer_nats import NatsChannelLayer


class TestNatsConformance(ChannelLayerConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # nats-py is asyncio-only; trio is refused at connect

    @pytest.fixture
    def make_layer(self, nats_url: str, namespace: str) -> LayerFactory:
        return lambda: NatsChannelLayer.from_url(nats_url, namespace=namespace)

    @pytest.fixture
    def layer_url(self, nats_url: str) -> str:
        return nats_url

    @pytest.fixture
    def make_history_layer(self, nats_url: str, namespace: str) -> HistoryLayerFactory:
        # In the test's namespace: its own stream, deleted afterwards.
        return lambda **options: NatsChannelLayer.from_url(nats_url, namespace=namespace, **options)

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        return [
            ({"no_such_option": 1}, TypeError),
            ({"namespace": "has space"}, ValueError),
            ({"namespace": "wild.*"}, ValueError),
            ({"namespace": ""}, ValueError),
            ({"publish_timeout": "5"}, TypeError),
            ({"publish_timeout": -1}, ValueError),
            ({"connect_timeout": 0}, ValueError),
            ({"pending_size": 0}, ValueError),
            ({"reconnect_backoff": 1.0}, TypeError),
            ({"ssl": "yes"}, TypeError),
            ({"history_size": -1}, ValueError),
            ({"history_size": "10"}, TypeError),
            ({"history_ttl": 5}, ValueError),  # without history_size
        ]

    @pytest.fixture
    def secret_url(self) -> str:
        # Port 1 refuses at once: connecting fails, and its error must not show the secrets.
        # (A well-formed NKEY seed of 32 bytes 0..31: a test key, trusted by no server.)
        seed = "SUAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4H776Y"
        return f"nats://app:hunter2@127.0.0.1:1?token=t0k3n&nkey_seed={seed}&connect_timeout=0.5"
