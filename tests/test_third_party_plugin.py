"""A layer from another distribution plugs in by entry point alone.

`channels-layer-example` (tests/plugins/) is installed into the test
environment like any third-party package. Nothing in the core names it.
"""

from __future__ import annotations

import pytest

from channels_core import Channel, NotSupportedError, get_layer, layer_capabilities
from channels_core.testing import ChannelLayerConformance, LayerFactory
from channels_layer_example import ExampleChannelLayer


def test_get_layer_finds_the_third_party_layer() -> None:
    assert get_layer("example") is ExampleChannelLayer


def test_it_has_no_optional_capabilities() -> None:
    assert layer_capabilities(ExampleChannelLayer) == frozenset()


@pytest.mark.anyio
async def test_from_url_builds_it_and_the_core_merges_groups_for_it() -> None:
    async with (
        Channel.from_url("example://from-url") as listener,
        Channel.from_url("example://from-url") as sender,
    ):
        assert isinstance(listener.layer, ExampleChannelLayer)
        async with listener.subscribe("a", "b") as subscriber:
            await sender.publish("b", "to b")
            await sender.publish("a", "to a")
            assert [(await subscriber.receive()).group for _ in range(2)] == ["b", "a"]
        with pytest.raises(NotSupportedError, match="ExampleChannelLayer"):
            listener.subscribe_pattern("a*")


class TestExampleLayerConformance(ChannelLayerConformance):
    @pytest.fixture
    def make_layer(self) -> LayerFactory:
        return lambda: ExampleChannelLayer("conformance")
