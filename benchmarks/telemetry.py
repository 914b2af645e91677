"""CPU per message with metrics on and off (issue #18).

    hatch run python -m benchmarks.telemetry [--url URL] [--messages N] [--repeat R] [--size BYTES]

One process publishes `messages` JSON messages of about `size` bytes to one
subscriber of its own on `url` (default ``memory://``), on a channel that
is not instrumented ("off"), on one passed to
`channels_core.telemetry.instrument` with the OpenTelemetry SDK's
`MeterProvider` and a metric reader ("counters": read at collection, once
per run here, as a scrape would), and with ``publish_duration=True`` as
well ("histogram": every publish records its duration). The modes
alternate `repeat` times, so that a busy machine slows all alike; the
medians of the process CPU time per message are printed. Needs
``opentelemetry-sdk`` (hatch's default environment has it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from benchmarks.encryption import cpu_per_message, parse_args
from channels_core import Channel
from channels_core.telemetry import instrument

MODES = ("off", "counters", "histogram")


def instrumented(mode: str, provider: MeterProvider) -> Callable[[Channel], object]:
    """What to do to the open channel in `mode`."""

    def prepare(channel: Channel) -> None:
        if mode != "off":
            instrument(channel, meter_provider=provider, publish_duration=mode == "histogram")

    return prepare


async def main(url: str, messages: int, repeat: int, size: int) -> dict[str, float]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    await cpu_per_message(url, "json", messages // 10, size)  # warm up
    for _ in range(repeat):
        for mode in MODES:
            prepare = instrumented(mode, provider)
            samples[mode].append(await cpu_per_message(url, "json", messages, size, prepare))
    reader.get_metrics_data()  # what a scrape does; proves the numbers were there
    return {mode: statistics.median(values) for mode, values in samples.items()}


if __name__ == "__main__":
    args = parse_args(__doc__)
    medians = anyio.run(main, args.url, args.messages, args.repeat, args.size)
    off = medians["off"] * 1e6
    print(f"{args.size} B JSON messages, {args.url}, median of {args.repeat} alternating runs")
    for mode in MODES:
        cost = medians[mode] * 1e6
        print(
            f"{mode:>9}: {cost:7.2f} us CPU per message "
            f"({cost - off:+.2f} us, {100 * (cost - off) / off:+.1f}%)"
        )
