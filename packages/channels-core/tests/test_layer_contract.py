"""What the core does for every layer: capabilities from class attributes, the connect checks,
and the memory layer's `stats()` snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from channels_core import (
    Channel,
    ChannelLayer,
    Inbox,
    LayerInUseError,
    LayerStats,
    NotSupportedError,
    layer_capabilities,
)
from channels_core.layers.local_memory import InMemoryChannelLayer, MemoryHub
from channels_core.plugins import SubscribeMethods, capabilities_of, hookimpl, plugin_manager


class AsyncioOnlyMemoryLayer(InMemoryChannelLayer):
    asyncio_only = True


class NoPatternsMemoryLayer(InMemoryChannelLayer):
    supports_patterns = False


# -- capabilities ---------------------------------------------------------------------


def test_capabilities_come_from_class_attributes() -> None:
    assert layer_capabilities(InMemoryChannelLayer) == {
        "multi-group",
        "patterns",
        "history",
        "publish-many",
    }
    assert layer_capabilities(NoPatternsMemoryLayer) == {"multi-group", "history", "publish-many"}
    methods = capabilities_of(InMemoryChannelLayer).patterns
    assert methods == SubscribeMethods(
        InMemoryChannelLayer.subscribe_patterns, InMemoryChannelLayer.unsubscribe_patterns
    )


@pytest.mark.anyio
async def test_a_subclass_turning_patterns_off_refuses_them_and_still_works() -> None:
    async with Channel(NoPatternsMemoryLayer()) as channel:
        with pytest.raises(NotSupportedError, match="NoPatternsMemoryLayer"):
            channel.subscribe_pattern("a.*")
        async with channel.subscribe("a.1", "a.2") as subscriber:
            await channel.publish("a.2", "two")
            assert (await subscriber.receive()).message == "two"


def test_declaring_a_capability_without_its_methods_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"supports_patterns.*subscribe_patterns and unsubscribe"):

        class Incomplete(ChannelLayer):
            supports_patterns = True

            def connect(self, inbox: Inbox) -> Any:
                raise NotImplementedError

            async def publish(self, group: str, payload: bytes) -> None:
                pass

            async def subscribe(self, group: str) -> None:
                pass

            async def unsubscribe(self, group: str) -> None:
                pass


def test_declaring_publish_many_without_defining_it_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"supports_publish_many = True .* define publish_many"):

        class NoBatch(InMemoryChannelLayer):
            supports_publish_many = True
            publish_many = ChannelLayer.publish_many


@pytest.mark.anyio
async def test_publish_many_without_the_capability_publishes_one_by_one_in_order() -> None:
    """A third-party layer without ``publish-many`` still gets `Channel.publish_many`."""
    published: list[tuple[str, bytes]] = []

    class OneByOne(InMemoryChannelLayer):
        supports_publish_many = False
        publish_many = ChannelLayer.publish_many

        async def publish(self, group: str, payload: bytes) -> None:
            published.append((group, payload))
            await super().publish(group, payload)

    assert "publish-many" not in layer_capabilities(OneByOne)
    async with Channel(OneByOne()) as channel, channel.subscribe("a", "b") as subscriber:
        await channel.publish_many([("a", 1), ("b", 2), ("a", 3)])
        received = [(await subscriber.receive()).message for _ in range(3)]
    assert published == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    assert received == [1, 2, 3]


def test_a_layer_without_subscribe_fails_at_class_definition_unless_multi_group() -> None:
    with pytest.raises(TypeError, match=r"Single does not define subscribe and unsubscribe"):

        class Single(ChannelLayer):
            def connect(self, inbox: Inbox) -> Any:
                raise NotImplementedError

            async def publish(self, group: str, payload: bytes) -> None:
                pass

    class Abstract(ChannelLayer):  # still abstract: checked where it becomes concrete
        pass

    with pytest.raises(TypeError, match="abstract"):
        Abstract()  # type: ignore[abstract]


@pytest.mark.anyio
async def test_a_multi_group_layer_subscribes_one_group_through_its_bulk_methods() -> None:
    calls: list[tuple[str, list[str]]] = []

    class Bulk(InMemoryChannelLayer):
        async def subscribe_groups(self, groups: Sequence[str]) -> None:
            calls.append(("subscribe", list(groups)))
            await super().subscribe_groups(groups)

        async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
            calls.append(("unsubscribe", list(groups)))
            await super().unsubscribe_groups(groups)

    assert Bulk.subscribe is ChannelLayer.subscribe
    layer = Bulk()
    async with Channel(layer):
        await layer.subscribe("one")
        await layer.unsubscribe("one")
    assert calls == [("subscribe", ["one"]), ("unsubscribe", ["one"])]


class _OwnPatternHook:
    """A plugin's hookimpl: it answers before the core's class-attribute hook."""

    @staticmethod
    async def psubscribe(layer: Any, patterns: Sequence[str]) -> None:
        await layer.subscribe_patterns(patterns)

    @hookimpl
    def channels_pattern_support(self, layer_class: type[ChannelLayer]) -> SubscribeMethods | None:
        if issubclass(layer_class, NoPatternsMemoryLayer):
            return SubscribeMethods(self.psubscribe, InMemoryChannelLayer.unsubscribe_patterns)
        return None


def test_pluggy_hookimpls_still_answer_first() -> None:
    plugin = _OwnPatternHook()
    plugin_manager().register(plugin)
    try:
        patterns = capabilities_of(NoPatternsMemoryLayer).patterns
        assert patterns is not None
        assert patterns.subscribe == plugin.psubscribe
        assert layer_capabilities(NoPatternsMemoryLayer) == {
            "multi-group",
            "patterns",
            "history",
            "publish-many",
        }
    finally:
        plugin_manager().unregister(plugin)
    assert layer_capabilities(NoPatternsMemoryLayer) == {"multi-group", "history", "publish-many"}


# -- the connect checks -------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_asyncio_only_layer_is_refused_on_trio_with_a_clear_error(
    anyio_backend: str,
) -> None:
    channel = Channel(AsyncioOnlyMemoryLayer())
    if anyio_backend == "asyncio":
        async with channel:
            await channel.publish("x", 1)
        return
    with pytest.raises(NotSupportedError, match="AsyncioOnlyMemoryLayer runs on asyncio only"):
        async with channel:
            pass


@pytest.mark.anyio
async def test_a_layer_serves_one_channel_at_a_time() -> None:
    layer = InMemoryChannelLayer()
    async with Channel(layer):
        with pytest.raises(LayerInUseError, match="already connected") as caught:
            async with Channel(layer):
                pass
        assert isinstance(caught.value, RuntimeError)  # what layers raised before
    with anyio.move_on_after(0.05):
        async with Channel(layer):
            await anyio.sleep_forever()
    async with Channel(layer) as channel, channel.subscribe("again") as subscriber:
        await channel.publish("again", "free once the channel is left")
        assert (await subscriber.receive()).message == "free once the channel is left"


@pytest.mark.anyio
async def test_a_failed_connect_frees_the_layer() -> None:
    class FailingOnce(InMemoryChannelLayer):
        failed = False

        @asynccontextmanager
        async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
            if not self.failed:
                self.failed = True
                raise OSError("the first connection fails")
            async with super().connect(inbox):
                yield

    layer = FailingOnce()
    with pytest.raises(OSError, match="first connection"):
        async with Channel(layer):
            pass
    async with Channel(layer) as channel:
        await channel.publish("x", 1)


# -- stats --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_stats_are_frozen_snapshots_of_the_shared_counters() -> None:
    hub = MemoryHub()
    sender, listener = InMemoryChannelLayer(hub), InMemoryChannelLayer(hub)
    assert sender.stats() == LayerStats(
        connected=False, published=0, received=0, connection_losses=0, reconnects=0
    )
    async with Channel(sender) as out, Channel(listener) as into:
        async with into.subscribe("a") as subscriber, into.subscribe_pattern("a*") as by_pattern:
            before = sender.stats()
            for number in range(3):
                await out.publish("a", number)
            for _ in range(3):
                await subscriber.receive()
                await by_pattern.receive()
        assert before.published == 0
        assert before.connected
        assert dataclasses.astuple(sender.stats()) == (True, 3, 0, 0, 0)
        assert listener.stats().received == 6  # one delivery per subscription kind
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.published = 5  # type: ignore[misc]
    assert not sender.stats().connected
    assert sender.stats().published == 3


def test_a_layer_without_counters_says_so() -> None:
    class Quiet(NoPatternsMemoryLayer):
        stats = ChannelLayer.stats

    with pytest.raises(NotSupportedError, match="Quiet does not report statistics"):
        Quiet().stats()


def test_memory_repr_never_shows_a_password() -> None:
    layer = InMemoryChannelLayer.from_url("memory://user:hunter2@hub")
    assert "hunter2" not in repr(layer)
    assert repr(layer) == "<InMemoryChannelLayer memory://user:***@hub>"


@pytest.mark.parametrize(
    "method",
    [
        "from_url",
        "connect",
        "publish",
        "publish_many",
        "subscribe",
        "unsubscribe",
        "subscribe_groups",
        "unsubscribe_groups",
        "subscribe_patterns",
        "unsubscribe_patterns",
        "stats",
    ],
)
def test_every_layer_method_states_what_it_raises(method: str) -> None:
    doc = getattr(ChannelLayer, method).__doc__ or ""
    assert "\n        Raises:\n" in doc, f"ChannelLayer.{method} has no Raises: section"
