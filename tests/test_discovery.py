"""Layers are found through the ``channels.layers`` entry points, never by special cases."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

import pytest

from channels_core import (
    Channel,
    ChannelLayer,
    LayerImportError,
    LayerNotFoundError,
    available_layers,
    get_layer,
    layer_capabilities,
)
from channels_core.layers.local_memory import InMemoryChannelLayer


def test_shipped_layers_are_listed() -> None:
    names = available_layers()
    for name in ("memory", "redis", "rediss", "postgres", "postgresql", "example"):
        assert name in names
    assert names == sorted(names)


def test_memory_layer_comes_from_its_entry_point() -> None:
    assert get_layer("memory") is InMemoryChannelLayer
    assert layer_capabilities(InMemoryChannelLayer) == {
        "multi-group",
        "patterns",
        "history",
        "publish-many",
    }


def test_unknown_layer_lists_installed_layers_and_how_to_install() -> None:
    with pytest.raises(LayerNotFoundError) as error:
        get_layer("amqp")
    message = str(error.value)
    assert "'amqp'" in message
    assert "memory" in message
    assert "pip install 'channels-core[redis]' (or [postgres], [nats], [all])" in message
    assert "pip install ./packages/channels-core ./packages/channels-redis" in message


def test_unknown_url_scheme_is_a_layer_not_found_error() -> None:
    with pytest.raises(LayerNotFoundError, match="'amqp'"):
        Channel.from_url("amqp://127.0.0.1:5672")


def test_unknown_url_scheme_is_also_a_value_error() -> None:
    """Code written for other pub/sub libraries catches a bad URL as ValueError."""
    with pytest.raises(ValueError, match="'amqp'"):
        Channel.from_url("amqp://127.0.0.1:5672")
    with pytest.raises(LookupError):
        get_layer("amqp")


@pytest.mark.parametrize("url", ["", "localhost:6379", "redis-without-scheme"])
def test_url_without_scheme_is_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        Channel.from_url(url)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/notadb", "rediss://h:6380/1x"])
def test_a_redis_database_that_is_not_a_number_is_refused(url: str) -> None:
    database = url.rpartition("/")[2]
    with pytest.raises(ValueError, match=f"database .* must be a number.*got '{database}'"):
        Channel.from_url(url)


def test_missing_shipped_layer_names_its_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def without_redis(*, group: str) -> list[EntryPoint]:
        return [ep for ep in entry_points(group=group) if not ep.name.startswith("redis")]

    monkeypatch.setattr("channels_core.discovery.entry_points", without_redis)
    with pytest.raises(LayerNotFoundError) as error:
        Channel.from_url("rediss://127.0.0.1:6380")
    message = str(error.value)
    assert "pip install 'channels-core[redis]' from the package index" in message
    assert "pip install ./packages/channels-core ./packages/channels-redis" in message


def test_broken_plugin_names_itself_and_its_cause_and_spares_the_others(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution(
        "fake-broken-layer",
        "broken = fake_broken:Layer",
        fake_broken="raise RuntimeError('cannot start: missing native library')\n",
    )
    assert "broken" in available_layers()
    with pytest.raises(LayerImportError) as error:
        get_layer("broken")
    message = str(error.value)
    assert "'broken'" in message
    assert "fake-broken-layer" in message
    assert "missing native library" in message
    assert isinstance(error.value.__cause__, RuntimeError)
    assert get_layer("memory") is InMemoryChannelLayer


def test_entry_point_that_is_not_a_layer_class_is_refused(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution("fake-not-a-layer", "notalayer = fake_thing:thing", fake_thing="thing = 42\n")
    with pytest.raises(LayerImportError, match="does not point to a ChannelLayer subclass"):
        get_layer("notalayer")


def test_two_distributions_claiming_one_name_is_an_error(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution(
        "fake-memory-clone",
        "memory = fake_clone:Clone",
        fake_clone=(
            "from channels_core.layers.local_memory import InMemoryChannelLayer\n"
            "class Clone(InMemoryChannelLayer): pass\n"
        ),
    )
    with pytest.raises(LayerImportError, match="several installed distributions"):
        get_layer("memory")


def test_plugin_found_by_entry_point_brings_its_hookimpls(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution(
        "fake-pattern-layer",
        "fakepattern = fake_pattern_layer:PatternLayer",
        fake_pattern_layer=(
            "from channels_core.layers.local_memory import InMemoryChannelLayer\n"
            "from channels_core.plugins import SubscribeMethods, hookimpl\n"
            "class PatternLayer(InMemoryChannelLayer):\n"
            "    pass\n"
            "@hookimpl\n"
            "def channels_pattern_support(layer_class):\n"
            "    if issubclass(layer_class, PatternLayer):\n"
            "        return SubscribeMethods(PatternLayer.subscribe_patterns,\n"
            "                                PatternLayer.unsubscribe_patterns)\n"
            "    return None\n"
        ),
    )
    layer_class = get_layer("fakepattern")
    assert issubclass(layer_class, ChannelLayer)
    assert "patterns" in layer_capabilities(layer_class)


def test_get_layer_needs_a_name() -> None:
    with pytest.raises(TypeError, match="str"):
        get_layer(None)  # type: ignore[arg-type]
