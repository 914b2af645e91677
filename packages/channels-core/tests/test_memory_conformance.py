"""The in-memory layer passes the conformance suite on asyncio and trio.

Every layer is built from a ``memory://NAME`` URL of the test's own: the
suite's two-channel checks prove that layers built from the same URL share a
hub, its URL checks (options, secrets) run, and no test meets another's
messages. (A layer built on a `MemoryHub` object is the same layer: the core's
other tests build them so.)
"""

from __future__ import annotations

import uuid

import pytest

from channels_core.layers.local_memory import InMemoryChannelLayer
from channels_core.testing import ChannelLayerConformance, HistoryLayerFactory, LayerFactory


class TestInMemoryConformance(ChannelLayerConformance):
    @pytest.fixture
    def layer_url(self) -> str:
        return f"memory://conformance-{uuid.uuid4().hex}"

    @pytest.fixture
    def make_layer(self, layer_url: str) -> LayerFactory:
        return lambda: InMemoryChannelLayer.from_url(layer_url)

    @pytest.fixture
    def secret_url(self) -> str:
        return "memory://user:kit-password-1@conformance-secret"

    @pytest.fixture
    def make_history_layer(self) -> HistoryLayerFactory:
        """A hub of its own (not `layer_url`'s): the history settings belong to the hub."""
        url = f"memory://conformance-history-{uuid.uuid4().hex}"

        def make(**options: object) -> InMemoryChannelLayer:
            query = "&".join(f"{name}={value}" for name, value in options.items())
            return InMemoryChannelLayer.from_url(f"{url}?{query}")

        return make
