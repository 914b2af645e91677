"""The core's conformance suite against a real PostgreSQL (asyncio only)."""

from __future__ import annotations

import pytest

from channels_core.testing import ChannelLayerConformance, LayerFactory
from channels_layer_postgres.testing import LayerMaker


class TestPostgreSQLConformance(ChannelLayerConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def make_layer(self, make_layer: LayerMaker) -> LayerFactory:
        return make_layer
