"""A layer from another distribution plugs in by entry point alone.

`channels-layer-example` (tests/plugins/) is installed into the test
environment like any third-party package. Nothing in the core names it.
"""

from __future__ import annotations

import pytest

from channels_core import Channel, NotSupportedError, get_layer, layer_capabilities
from channels_core.testing import BadOptions, ChannelLayerConformance, LayerFactory
from channels_layer_example import ExampleChannelLayer


def test_get_layer_finds_the_third_party_layer() -> None:
    assert get_layer("example") is ExampleChannelLayer


def test_its_class_attribute_declares_its_capability_without_pluggy_code() -> None:
    assert layer_capabilities(ExampleChannelLayer) == {"multi-group"}


def test_options_come_from_keywords_and_the_url() -> None:
    assert ExampleChannelLayer.from_url("example://x?queue_size=5").options.queue_size == 5
    assert ExampleChannelLayer.from_url("example://x", queue_size=7).options.queue_size == 7
    with pytest.raises(ValueError, match="queue_size must be an int, got 'many'"):
        ExampleChannelLayer.from_url("example://x?queue_size=many")


@pytest.mark.anyio
async def test_from_url_builds_it_and_its_group_subscriptions_work() -> None:
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

    @pytest.fixture
    def layer_url(self) -> str:
        return "example://conformance"

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        return [
            ({"no_such_option": 1}, TypeError),
            ({"queue_size": "10"}, TypeError),
            ({"queue_size": 0}, ValueError),
        ]

    @pytest.fixture
    def secret_url(self) -> str:
        return "example://user:kit-password-1@conformance?queue_size=10"
