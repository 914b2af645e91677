"""``channels bench``: throughput and publish-to-receive latency through one channel.

Two phases on one `Channel` (so it works on every layer, ``memory://``
included): a burst of messages published back to back, counted as
delivered events per second across all subscribers; then a paced run whose
messages carry their send time, giving latency percentiles.

Every subscriber is read inside its own ``subscribe`` block, until the last
message or the end of the subscription, and `BenchSettings.timeout` bounds
the whole run (connecting included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..channel import Channel
from ..exceptions import MessagesLost
from ..subscriber import Subscriber
from ._stats import percentile

Progress = Callable[[str, int, int], None]
_GROUP = "channels.bench"


@dataclass(frozen=True, slots=True)
class BenchSettings:
    url: str
    size: int = 100
    subscribers: int = 1
    messages: int = 10_000
    latency_messages: int = 1_000
    rate: float = 1_000.0
    timeout: float = 60.0


@dataclass(slots=True)
class BenchResult:
    settings: BenchSettings
    publish_seconds: float = 0.0
    deliver_seconds: float = 0.0
    delivered: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def publish_rate(self) -> float:
        return self.settings.messages / self.publish_seconds if self.publish_seconds else 0.0

    @property
    def delivered_rate(self) -> float:
        return self.delivered / self.deliver_seconds if self.deliver_seconds else 0.0

    def latency_ms(self, quantile: float) -> float:
        return percentile(self.latencies, quantile) * 1000


def _payload(size: int) -> str:
    """Padding that makes an encoded bench message about `size` bytes."""
    overhead = len('{"i":1000000,"t":1000000.123456789,"pad":""}')
    return "x" * max(0, size - overhead)


async def run_bench(settings: BenchSettings, progress: Progress | None = None) -> BenchResult:
    """Run both phases and return what they measured."""
    report = progress or (lambda phase, done, total: None)
    result = BenchResult(settings)
    pad = _payload(settings.size)
    buffer = max(settings.messages, settings.latency_messages) + 16
    channel = Channel.from_url(settings.url, buffer_size=buffer)
    try:
        with anyio.fail_after(settings.timeout):
            async with channel:
                await _throughput(channel, settings, pad, result, report)
                await _latency(channel, settings, pad, result, report)
    except TimeoutError as exc:
        raise TimeoutError(
            f"the bench did not finish within {settings.timeout:g} s (--timeout): the broker "
            "is slow or messages were lost; try fewer --messages or a longer --timeout"
        ) from exc
    return result


async def _collect(subscriber: Subscriber, last: int, on_event: Callable[[Any], None]) -> int:
    """Read until message number `last` or the end of the subscription; count the events."""
    received = 0
    while True:
        try:
            async for event in subscriber:
                received += 1
                on_event(event.message)
                if event.message["i"] == last:
                    return received
            return received  # the subscription ended
        except MessagesLost:
            continue


async def _throughput(
    channel: Channel, settings: BenchSettings, pad: str, result: BenchResult, report: Progress
) -> None:
    total = settings.messages
    counts: list[int] = []
    async with anyio.create_task_group() as tasks:
        subscribed = 0
        ready = anyio.Event()
        finished = anyio.Event()

        async def subscriber_task() -> None:
            nonlocal subscribed
            async with channel.subscribe(_GROUP) as subscriber:
                subscribed += 1
                if subscribed == settings.subscribers:
                    ready.set()
                counts.append(await _collect(subscriber, total - 1, lambda _: None))
                if len(counts) == settings.subscribers:
                    finished.set()

        for _ in range(settings.subscribers):
            tasks.start_soon(subscriber_task)
        await ready.wait()
        started = time.perf_counter()
        for number in range(total):
            await channel.publish(_GROUP, {"i": number, "t": 0.0, "pad": pad})
            if number % 1000 == 999 and number + 1 < total:
                report("throughput", number + 1, total)
        result.publish_seconds = time.perf_counter() - started
        await finished.wait()
        result.deliver_seconds = time.perf_counter() - started
    report("throughput", total, total)
    result.delivered = sum(counts)
    result.lost = settings.subscribers * total - result.delivered


async def _latency(
    channel: Channel, settings: BenchSettings, pad: str, result: BenchResult, report: Progress
) -> None:
    total = settings.latency_messages
    if total <= 0:
        return
    interval = 1.0 / settings.rate if settings.rate > 0 else 0.0

    def record(message: Any) -> None:
        result.latencies.append(time.perf_counter() - message["t"])

    # The collector runs inside the subscribe block: the block is left only
    # once the collector has seen the last message.
    async with channel.subscribe(_GROUP) as subscriber, anyio.create_task_group() as tasks:
        tasks.start_soon(_collect, subscriber, total - 1, record)
        started = time.perf_counter()
        for number in range(total):
            delay = started + number * interval - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            await channel.publish(_GROUP, {"i": number, "t": time.perf_counter(), "pad": pad})
            if number % 100 == 99 and number + 1 < total:
                report("latency", number + 1, total)
    report("latency", total, total)


def format_result(result: BenchResult) -> str:
    s = result.settings
    rows = [
        ("layer", s.url),
        ("message size", f"{s.size} B"),
        ("subscribers", str(s.subscribers)),
        ("messages", f"{s.messages:,}"),
        ("publish rate", f"{result.publish_rate:,.0f} msg/s"),
        ("delivered", f"{result.delivered_rate:,.0f} events/s ({result.delivered:,} events)"),
        ("lost", f"{result.lost:,}"),
        ("latency p50", f"{result.latency_ms(0.50):.3f} ms ({len(result.latencies):,} samples)"),
        ("latency p99", f"{result.latency_ms(0.99):.3f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
