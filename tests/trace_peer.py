"""The subscribing process of tests/test_traces.py: what it saw of the messages, as JSON.

``python tests/trace_peer.py URL GROUP COUNT`` enters an instrumented
channel (traces and delivery latency, the SDK's in-memory span exporter and
metric reader), subscribes to GROUP, prints "ready", receives COUNT
messages, then prints one JSON line: its pid, the messages, the finished
spans and the latency histogram's count and sum.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from channels_core import Channel
from channels_core.telemetry import instrument


async def main(url: str, group: str, count: int) -> dict[str, Any]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    async with Channel.from_url(url) as channel, channel.subscribe(group) as subscriber:
        instrument(
            channel,
            meter_provider=meter_provider,
            tracer_provider=tracer_provider,
            traces=True,
            delivery_latency=True,
        )
        print("ready", flush=True)
        with anyio.fail_after(20):
            messages = [(await subscriber.receive()).message for _ in range(count)]
    latency = [
        point
        for resource in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "channels.delivery.latency"
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
    ]
    return {
        "pid": os.getpid(),
        "messages": messages,
        "spans": [
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": span.context.trace_id,
                "parent_span_id": span.parent.span_id if span.parent else None,
                "attributes": dict(span.attributes or {}),
            }
            for span in exporter.get_finished_spans()
        ],
        "latency": {"count": sum(p.count for p in latency), "sum": sum(p.sum for p in latency)},
    }


if __name__ == "__main__":
    report = anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print(json.dumps(report), flush=True)
