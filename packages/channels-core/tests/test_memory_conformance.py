"""The in-memory layer passes the conformance suite on asyncio and trio."""

from __future__ import annotations

import pytest

from channels_core.layers.local_memory import InMemoryChannelLayer, MemoryHub
from channels_core.testing import ChannelLayerConformance, LayerFactory


class TestInMemoryConformance(ChannelLayerConformance):
    @pytest.fixture
    def make_layer(self) -> LayerFactory:
        hub = MemoryHub()
        return lambda: InMemoryChannelLayer(hub)


class TestNamedHubConformance(ChannelLayerConformance):
    """Layers built from the same ``memory://NAME`` URL share a hub."""

    @pytest.fixture
    def make_layer(self) -> LayerFactory:
        return lambda: InMemoryChannelLayer.from_url("memory://conformance")

    @pytest.fixture
    def layer_url(self) -> str:
        return "memory://conformance"

    @pytest.fixture
    def secret_url(self) -> str:
        return "memory://user:kit-password-1@conformance-secret"
