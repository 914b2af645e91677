"""CPU per message with metrics and traces on and off (issue #18).

    hatch run python -m benchmarks.telemetry [--url URL] [--messages N] [--repeat R] [--size BYTES]
                                             [--mode MODE ...]

One process publishes `messages` JSON messages of about `size` bytes to one
subscriber of its own on `url` (default ``memory://``), on a channel that
is not instrumented ("off"), on one passed to
`channels_core.telemetry.instrument` with the OpenTelemetry SDK's
`MeterProvider` and a metric reader ("counters": read at collection, once
per run here, as a scrape would), and with ``publish_duration=True`` as
well ("histogram": every publish records its duration), with
``delivery_latency=True`` ("latency": the send time in the envelope, the
latency recorded at delivery) and with ``traces=True`` ("traces": a span
per publish and one per delivery, the trace context in the envelope; the
SDK's `TracerProvider` with a `BatchSpanProcessor` whose exporter discards
the spans, so its thread's work is counted but no I/O), and the same with
1% of the traces sampled ("sampled": ``TraceIdRatioBased(0.01)``, the
other spans are not recorded). The channel
subscribes to its own messages, so each one's cost includes both ends. The
modes alternate `repeat` times, so that a busy machine slows all alike; the
medians of the process CPU time per message are printed. ``--mode``
(repeatable) measures only those modes against "off". Needs
``opentelemetry-sdk`` (hatch's default environment has it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from benchmarks.encryption import cpu_per_message, parse_args
from channels_core import Channel
from channels_core.telemetry import instrument

MODES = ("off", "counters", "histogram", "latency", "traces", "sampled")


class Discarding(SpanExporter):
    """Takes the spans and drops them: the SDK's work without an exporter's I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def instrumented(
    mode: str, provider: MeterProvider, tracer_providers: dict[str, TracerProvider]
) -> Callable[[Channel], object]:
    """What to do to the open channel in `mode`."""

    def prepare(channel: Channel) -> None:
        if mode != "off":
            instrument(
                channel,
                meter_provider=provider,
                tracer_provider=tracer_providers.get(mode),
                publish_duration=mode == "histogram",
                delivery_latency=mode == "latency",
                traces=mode in tracer_providers,
            )

    return prepare


async def main(
    url: str, messages: int, repeat: int, size: int, modes: Sequence[str] = MODES
) -> dict[str, float]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tracer_providers = {
        "traces": TracerProvider(),
        "sampled": TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01))),
    }
    for tracer_provider in tracer_providers.values():
        # a queue for a whole run: no span dropped before it is exported
        tracer_provider.add_span_processor(BatchSpanProcessor(Discarding(), max_queue_size=2**17))
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    await cpu_per_message(url, "json", messages // 10, size)  # warm up
    for _ in range(repeat):
        for mode in modes:
            prepare = instrumented(mode, provider, tracer_providers)
            samples[mode].append(await cpu_per_message(url, "json", messages, size, prepare))
    reader.get_metrics_data()  # what a scrape does; proves the numbers were there
    for tracer_provider in tracer_providers.values():
        tracer_provider.shutdown()
    provider.shutdown()
    return {mode: statistics.median(values) for mode, values in samples.items()}


if __name__ == "__main__":
    args = parse_args(__doc__, MODES)
    medians = anyio.run(main, args.url, args.messages, args.repeat, args.size, args.modes)
    off = medians["off"] * 1e6
    print(f"{args.size} B JSON messages, {args.url}, median of {args.repeat} alternating runs")
    for mode, median in medians.items():
        cost = median * 1e6
        print(
            f"{mode:>9}: {cost:7.2f} us CPU per message "
            f"({cost - off:+.2f} us, {100 * (cost - off) / off:+.1f}%)"
        )
