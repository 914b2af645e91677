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

import argparse
import secrets
import statistics
import time

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from channels_core import Channel
from channels_core.telemetry import instrument

MODES = ("off", "counters", "histogram")


async def cpu_per_message(
    url: str, mode: str, provider: MeterProvider, messages: int, size: int
) -> float:
    """Seconds of this process's CPU per message, publish to delivery."""
    message = {"i": 0, "pad": "x" * max(0, size - len('{"i":0,"pad":""}'))}
    group = f"bench-telemetry-{secrets.token_hex(4)}"
    async with (
        Channel.from_url(url, buffer_size=messages) as channel,
        channel.subscribe(group) as subscriber,
    ):
        if mode != "off":
            instrument(channel, meter_provider=provider, publish_duration=mode == "histogram")

        async def consume(received: anyio.Event) -> None:
            for _ in range(messages):
                await subscriber.receive()
            received.set()

        received = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume, received)
            started = time.process_time()
            for _ in range(messages):
                await channel.publish(group, message)
            await received.wait()
            elapsed = time.process_time() - started
    return elapsed / messages


async def main(url: str, messages: int, repeat: int, size: int) -> dict[str, float]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    await cpu_per_message(url, "off", provider, messages // 10, size)  # warm up
    for _ in range(repeat):
        for mode in MODES:
            samples[mode].append(await cpu_per_message(url, mode, provider, messages, size))
    reader.get_metrics_data()  # what a scrape does; proves the numbers were there
    return {mode: statistics.median(values) for mode, values in samples.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    medians = anyio.run(main, args.url, args.messages, args.repeat, args.size)
    off = medians["off"] * 1e6
    print(f"{args.size} B JSON messages, {args.url}, median of {args.repeat} alternating runs")
    for mode in MODES:
        cost = medians[mode] * 1e6
        print(
            f"{mode:>9}: {cost:7.2f} us CPU per message "
            f"({cost - off:+.2f} us, {100 * (cost - off) / off:+.1f}%)"
        )
