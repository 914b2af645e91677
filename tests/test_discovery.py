"""Layers are found through the ``channels.layers`` entry points, never by special cases."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from pathlib import Path

import pytest

from channels_core import (
    Channel,
    ChannelLayer,
    LayerImportError,
    LayerNotFoundError,
    _installed,
    available_layers,
    get_layer,
    layer_capabilities,
)
from channels_core.layers.local_memory import InMemoryChannelLayer

#: A layer module for the distributions the tests install while the process runs
#: (each test its own module name: the plugin manager keeps the modules it registered).
LATE_LAYER = (
    "from channels_core.layers.local_memory import InMemoryChannelLayer\n"
    "class Late(InMemoryChannelLayer): pass\n"
)


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
    with pytest.raises(LayerImportError) as again:  # a failure is not kept: tried again
        get_layer("broken")
    assert str(again.value) == message
    assert isinstance(again.value.__cause__, RuntimeError)


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


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``entry_points`` calls discovery makes (each reads every distribution's metadata)."""
    calls: list[str] = []

    def counting(*, group: str) -> EntryPoints:
        calls.append(group)
        return entry_points(group=group)

    monkeypatch.setattr("channels_core.discovery.entry_points", counting)
    return calls


def test_lookups_read_the_installed_metadata_once_until_a_layer_is_installed(
    fake_distribution: Callable[..., None],
    tmp_path: Path,
    reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Modification times trusted at once: the test's own folders were written just now.
    monkeypatch.setattr(_installed, "SETTLE_NS", 0)
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path, (an_hour_ago, an_hour_ago))  # a sys.path folder installed long ago
    first = get_layer("memory")
    assert get_layer("memory") is first is InMemoryChannelLayer
    assert "late" not in available_layers()
    with pytest.raises(LayerNotFoundError, match="'late'"):
        get_layer("late")
    assert reads == ["channels.layers"]

    fake_distribution("fake-late-layer", "late = fake_late:Late", fake_late=LATE_LAYER)
    assert get_layer("late").__name__ == "Late"
    assert "late" in available_layers()
    assert get_layer("memory") is InMemoryChannelLayer
    assert len(reads) == 2


def test_under_a_folder_changed_too_recently_to_tell_lookups_read_the_metadata_again(
    fake_distribution: Callable[..., None], tmp_path: Path, reads: list[str]
) -> None:
    """A folder changed again within its clock's resolution keeps its modification time.

    So a folder on sys.path changed within the last seconds (here: ahead of
    the clock) does not vouch for what was read: an entry point added to an
    installed distribution in place is found without the folder changing.
    """
    fake_distribution("fake-in-place-layer", "early = fake_in_place:Late", fake_in_place=LATE_LAYER)
    ahead = time.time() + 3600
    os.utime(tmp_path, (ahead, ahead))
    assert get_layer("early").__name__ == "Late"
    assert "late" not in available_layers()

    entry_points_txt = tmp_path / "fake_in_place_layer-1.0.dist-info" / "entry_points.txt"
    entry_points_txt.write_text(
        "[channels.layers]\nearly = fake_in_place:Late\nlate = fake_in_place:Late\n"
    )
    assert os.stat(tmp_path).st_mtime == ahead
    assert get_layer("late") is get_layer("early")
    assert len(reads) == 4
