"""`channels_core.telemetry`: exact metric values and spans after a known workload (in memory)."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from cryptography.fernet import Fernet
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from channels_core import BlockingChannel, Channel, MessagesLost, SerializationError, encrypted
from channels_core.envelope import MAGIC, SENT_FIELD, wrap
from channels_core.exceptions import LossReason
from channels_core.layer import Inbox
from channels_core.layers.local_memory import InMemoryChannelLayer
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
    for reason in ("reconnect", "overflow", "expired"):
        assert value(found, "channels.gaps", gap_reason=reason) == 0
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
        assert channel._observed_publish is None
        instrument(channel, meter_provider=provider)
        # counters only: read at collection; the channel publishes as if not instrumented
        assert channel._observed_publish is None
        assert channel._wrap_envelope is None
        await channel.publish("a", 1)
        found = points(reader)
        assert value(found, "channels.messages.published") == 1
        assert not [name for name, _ in found if name == "channels.publish.duration"]
        instrument(channel, meter_provider=provider, publish_duration=True)
        assert channel._observed_publish is not None
        assert channel._wrap_envelope is None  # no envelope field asked for
        uninstrument(channel)
        assert channel._observed_publish is None
        await channel.publish("a", 2)


def test_without_opentelemetry_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    channel = Channel.from_url("memory://")
    with pytest.raises(ImportError, match=r"channels-core\[otel\]"):
        instrument(channel)


# -- gaps by reason -------------------------------------------------------------


class ReportingLayer(InMemoryChannelLayer):
    """The memory layer, with its channel's inbox at hand to report losses as layers do."""

    inbox: Inbox | None = None

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        self.inbox = inbox
        async with super().connect(inbox):
            yield


async def test_gaps_are_counted_by_every_reason(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    layer = ReportingLayer(history_size=3)
    async with Channel(layer) as channel:
        instrument(channel, meter_provider=provider)
        async with channel.subscribe("log") as first:
            for number in range(10):
                await channel.publish("log", number)
            oldest = (await first.receive()).position
        assert oldest is not None
        for _ in range(2):  # the history keeps 3 events: the replay no longer reaches it
            async with channel.subscribe("log", since=oldest) as late:
                with anyio.fail_after(5), pytest.raises(MessagesLost) as lost:
                    await late.receive()
                assert lost.value.reason == "expired"
        assert layer.inbox is not None
        # a pattern subscription: no history to fill its gaps from, it is told of each
        async with channel.subscribe_pattern("live.*") as subscriber:
            reports: list[tuple[LossReason, int | None]] = [
                ("reconnect", None),
                ("overflow", 7),
                ("reconnect", None),
            ]
            for reason, count in reports:
                layer.inbox.messages_lost(reason, count)  # what the layers report
                with anyio.fail_after(5), pytest.raises(MessagesLost) as lost:
                    await subscriber.receive()
                assert (lost.value.reason, lost.value.count) == (reason, count)
            found = points(reader)
    assert value(found, "channels.gaps", gap_reason="expired") == 2
    assert value(found, "channels.gaps", gap_reason="reconnect") == 2
    assert value(found, "channels.gaps", gap_reason="overflow") == 1


# -- traces, the envelope, delivery latency --------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider, exporter
    tracer_provider.shutdown()


async def test_a_delivery_span_is_a_child_of_its_publish_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], provider: MeterProvider
) -> None:
    tracer_provider, exporter = spans
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        instrument(channel, meter_provider=provider, tracer_provider=tracer_provider, traces=True)
        with tracer_provider.get_tracer("app").start_as_current_span("request"):
            await channel.publish("g", {"text": "hi"})
        assert (await subscriber.receive()).message == {"text": "hi"}
    by_name = {span.name: span for span in exporter.get_finished_spans()}
    assert set(by_name) == {"request", "publish", "deliver"}
    request, publish, deliver = by_name["request"], by_name["publish"], by_name["deliver"]
    assert publish.kind is SpanKind.PRODUCER
    assert deliver.kind is SpanKind.CONSUMER
    assert publish.parent is not None
    assert deliver.parent is not None
    assert publish.parent.span_id == request.context.span_id
    assert deliver.parent.span_id == publish.context.span_id
    assert deliver.context.trace_id == request.context.trace_id
    assert dict(publish.attributes or {}) == {"channels.layer": "memory"}  # no group name
    assert dict(deliver.attributes or {}) == {"channels.layer": "memory"}


async def test_a_failed_publish_ends_its_span_with_the_error(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = spans
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        instrument(channel, tracer_provider=tracer_provider, traces=True)
        with pytest.raises(SerializationError):
            await channel.publish("g", {1, 2})  # a set is not JSON
        await channel.publish("g", "next")
        assert (await subscriber.receive()).message == "next"  # nothing else was sent
        assert channel.stats().published == 1
    failed, *_ = exporter.get_finished_spans()
    assert failed.name == "publish"
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]


async def test_group_names_only_for_the_groups_allowed(
    spans: tuple[TracerProvider, InMemorySpanExporter],
    reader: InMemoryMetricReader,
    provider: MeterProvider,
) -> None:
    tracer_provider, exporter = spans
    async with Channel.from_url("memory://") as channel:
        instrument(
            channel,
            meter_provider=provider,
            tracer_provider=tracer_provider,
            publish_duration=True,
            delivery_latency=True,
            traces=True,
            group_attributes=["orders"],
        )
        async with channel.subscribe("orders", "user.42") as subscriber:
            for group in ("orders", "orders", "user.42"):
                await channel.publish(group, group)
                await subscriber.receive()
        found = points(reader)
        names = sorted(span.name for span in exporter.get_finished_spans())
        exporter.clear()
        instrument(
            channel,
            meter_provider=provider,
            tracer_provider=tracer_provider,
            traces=True,
            group_attributes=lambda group: group.startswith("room."),
        )
        async with channel.subscribe("room.1", "user.42") as subscriber:
            await channel.publish("room.1", 1)
            await channel.publish("user.42", 2)
            assert [(await subscriber.receive()).message for _ in range(2)] == [1, 2]
        by_predicate = sorted(span.name for span in exporter.get_finished_spans())
    assert names == ["deliver", *["deliver orders"] * 2, "publish", *["publish orders"] * 2]
    assert by_predicate == ["deliver", "deliver room.1", "publish", "publish room.1"]
    for name in ("channels.publish.duration", "channels.delivery.latency"):
        assert value(found, name, group="orders").count == 2
        assert value(found, name).count == 1  # user.42: under the layer's attributes only
    assert not [key for key in found if ("channels.group", "user.42") in key[1]]


@pytest.mark.parametrize("bad", ["orders", [1], [""]])
def test_group_attributes_must_be_names_or_a_predicate(bad: Any) -> None:
    channel = Channel.from_url("memory://")
    with pytest.raises((TypeError, ValueError), match="group_attributes"):
        instrument(channel, group_attributes=bad)


async def test_delivery_latency_from_the_send_time_in_the_envelope(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        instrument(channel, meter_provider=provider, delivery_latency=True)
        for number in range(5):
            await channel.publish("g", number)
        assert [(await subscriber.receive()).message for _ in range(5)] == list(range(5))
        latency = value(points(reader), "channels.delivery.latency")
        assert latency.count == 5
        assert 0 <= latency.sum < 1
        # a message sent two seconds ago, by another process's clock
        sent = str(time.time_ns() - 2_000_000_000)
        await channel.layer.publish("g", wrap({SENT_FIELD: sent}, b'"late"'))
        assert (await subscriber.receive()).message == "late"
        latency = value(points(reader), "channels.delivery.latency")
    assert latency.count == 6
    assert 2 <= latency.sum < 3


async def test_the_envelope_between_channels_instrumented_or_not(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    url = f"memory://envelope-{secrets.token_hex(4)}"
    async with (
        Channel.from_url(url) as sender,
        Channel.from_url(url) as counting,
        Channel.from_url(url) as plain,
        counting.subscribe("g") as counted,
        plain.subscribe("g") as unaware,
    ):
        instrument(sender, meter_provider=provider, delivery_latency=True)
        instrument(counting, meter_provider=provider)  # reads envelopes, records nothing
        await sender.publish("g", "enveloped")
        await sender.layer.publish("g", MAGIC + b"no end of fields")  # malformed
        uninstrument(sender)
        await sender.publish("g", "plain")
        assert [(await counted.receive()).message for _ in range(2)] == ["enveloped", "plain"]
        assert (await unaware.receive()).message == "plain"
        assert counting.stats().undecodable == 1  # the malformed envelope
        assert plain.stats().undecodable == 2  # an enveloped payload is not JSON to it
        assert not [name for name, _ in points(reader) if name == "channels.delivery.latency"]


async def test_enveloped_history_replays_without_observing_them_again(
    spans: tuple[TracerProvider, InMemorySpanExporter],
    reader: InMemoryMetricReader,
    provider: MeterProvider,
) -> None:
    tracer_provider, exporter = spans
    key = Fernet.generate_key()
    async with Channel.from_url(
        "memory://?history_size=10", serializer=encrypted("json", keys=[key])
    ) as channel:
        instrument(
            channel,
            meter_provider=provider,
            tracer_provider=tracer_provider,
            delivery_latency=True,
            traces=True,
        )
        async with channel.subscribe("g") as subscriber:
            for number in range(3):
                await channel.publish("g", number)
            first = await subscriber.receive()
        assert [event.message for event in await channel.history("g")] == [0, 1, 2]
        async with channel.subscribe("g", since=first.position) as replay:
            assert [(await replay.receive()).message for _ in range(2)] == [1, 2]
        assert value(points(reader), "channels.delivery.latency").count == 3  # live ones only
    names = sorted(span.name for span in exporter.get_finished_spans())
    assert names == ["deliver"] * 3 + ["publish"] * 3


def test_a_blocking_channel_is_instrumented_through_its_channel(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    with BlockingChannel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        instrument(channel, meter_provider=provider, delivery_latency=True)
        channel.publish("g", "hi")
        assert subscriber.receive(timeout=5).message == "hi"
        found = points(reader)
        uninstrument(channel)
        channel.publish("g", "again")
        assert subscriber.receive(timeout=5).message == "again"
        assert value(points(reader), "channels.delivery.latency").count == 1
    assert value(found, "channels.messages.published") == 1
    assert value(found, "channels.delivery.latency").count == 1
    with pytest.raises(TypeError, match="Channel or BlockingChannel"):
        instrument("memory://")  # type: ignore[arg-type]


async def test_a_trace_not_sampled_sends_no_context() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = f"memory://unsampled-{secrets.token_hex(4)}"
    async with (
        Channel.from_url(url) as sender,
        Channel.from_url(url) as plain,
        plain.subscribe("g") as subscriber,
    ):
        instrument(sender, tracer_provider=tracer_provider, traces=True)
        await sender.publish("g", "hi")
        assert (await subscriber.receive()).message == "hi"  # no envelope: plain JSON
    assert exporter.get_finished_spans() == ()


async def test_instrumented_before_entering_and_across_reentries(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    channel = Channel.from_url("memory://")
    instrument(channel, meter_provider=provider, delivery_latency=True)
    for _ in range(2):  # each entry is a fresh connection, still instrumented
        async with channel, channel.subscribe("g") as subscriber:
            await channel.publish("g", "hi")
            assert (await subscriber.receive()).message == "hi"
            assert channel.stats().undecodable == 0
    assert value(points(reader), "channels.delivery.latency").count == 2
