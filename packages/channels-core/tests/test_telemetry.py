"""`channels_core.telemetry`: exact metric values after a known workload (in-memory reader)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from channels_core import Channel
from channels_core.telemetry import instrument, uninstrument

pytestmark = pytest.mark.anyio

Points = dict[tuple[str, frozenset[tuple[str, Any]]], Any]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> Points:
    """``{(metric name, attributes): value}``; a histogram's value is its data point."""
    found: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    found[key] = point if isinstance(point, HistogramDataPoint) else point.value  # type: ignore[union-attr]
    return found


MEMORY = frozenset({("channels.layer", "memory")})


def value(found: Points, name: str, **extra: str) -> Any:
    attributes = MEMORY | {(f"channels.{key}".replace("_", "."), v) for key, v in extra.items()}
    return found[(name, frozenset(attributes))]


async def test_counts_after_a_known_workload(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with Channel.from_url("memory://") as channel:
        instrument(channel, meter_provider=provider, publish_duration=True)
        async with (
            channel.subscribe("g", buffer_size=2, overflow="drop_oldest") as oldest,
            channel.subscribe("g", "h", buffer_size=1, overflow="drop_newest") as newest,
        ):
            for number in range(5):
                await channel.publish("g", number)
            await channel.layer.publish("h", b"\xff not json")  # undecodable
            found = points(reader)
            assert value(found, "channels.subscribers") == 2
            assert value(found, "channels.groups") == 2
            assert (oldest.dropped, newest.dropped) == (3, 4)
        found = points(reader)
    assert value(found, "channels.messages.published") == 5
    assert value(found, "channels.messages.delivered") == 6
    assert value(found, "channels.messages.undecodable") == 1
    assert value(found, "channels.messages.dropped", overflow="drop_oldest") == 3
    assert value(found, "channels.messages.dropped", overflow="drop_newest") == 4
    assert value(found, "channels.gaps", gap_reason="reconnect") == 0
    assert value(found, "channels.layer.connection_losses") == 0
    assert value(found, "channels.layer.reconnects") == 0
    assert value(found, "channels.subscribers") == 0
    assert value(found, "channels.groups") == 0
    duration = value(found, "channels.publish.duration")
    assert duration.count == 5
    assert 0 < duration.sum < 1
    # never a group name in an attribute
    assert all(v not in ("g", "h") for _, attributes in found for _, v in attributes)


async def test_two_channels_on_one_layer_kind_add_up(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with Channel.from_url("memory://") as first, Channel.from_url("memory://") as second:
        instrument(first, meter_provider=provider, publish_duration=True)
        instrument(first, meter_provider=provider, publish_duration=True)  # idempotent
        instrument(second, meter_provider=provider, publish_duration=True)
        await first.publish("a", 1)
        await second.publish("a", 2)
        await second.publish("a", 3)
        assert value(points(reader), "channels.messages.published") == 3
        uninstrument(second)
        await second.publish("a", 4)
        found = points(reader)
    assert value(found, "channels.messages.published") == 1
    assert value(found, "channels.publish.duration").count == 3  # the 4th was not recorded


async def test_no_work_per_publish_unless_the_histogram_is_asked_for(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with Channel.from_url("memory://") as channel:
        assert channel._record_publish_duration is None
        instrument(channel, meter_provider=provider)
        assert channel._record_publish_duration is None  # counters only: read at collection
        await channel.publish("a", 1)
        found = points(reader)
        assert value(found, "channels.messages.published") == 1
        assert not [name for name, _ in found if name == "channels.publish.duration"]
        instrument(channel, meter_provider=provider, publish_duration=True)
        assert channel._record_publish_duration is not None
        uninstrument(channel)
        assert channel._record_publish_duration is None
        await channel.publish("a", 2)


def test_without_opentelemetry_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    channel = Channel.from_url("memory://")
    with pytest.raises(ImportError, match=r"channels-core\[otel\]"):
        instrument(channel)
