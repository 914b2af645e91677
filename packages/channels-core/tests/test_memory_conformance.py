"""The in-memory layer passes the conformance suite on asyncio and trio."""

from __future__ import annotations

import uuid

import pytest

from channels_core.layers.local_memory import InMemoryChannelLayer, MemoryHub
from channels_core.testing import ChannelLayerConformance, HistoryLayerFactory, LayerFactory


class TestInMemoryConformance(ChannelLayerConformance):
    @pytest.fixture
    def make_layer(self) -> LayerFactory:
        hub = MemoryHub()
        return lambda: InMemoryChannelLayer(hub)

    @pytest.fixture
    def make_history_layer(self) -> HistoryLayerFactory:
        hub = MemoryHub()
        return lambda **options: InMemoryChannelLayer(hub, **options)


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

    @pytest.fixture
    def make_history_layer(self) -> HistoryLayerFactory:
        """A hub of its own per test: the history settings belong to the hub."""
        url = f"memory://conformance-history-{uuid.uuid4().hex}"

        def make(**options: object) -> InMemoryChannelLayer:
            query = "&".join(f"{name}={value}" for name, value in options.items())
            return InMemoryChannelLayer.from_url(f"{url}?{query}")

        return make
