"""Sustained load per network layer: throughput holds and memory stays flat.

Four publishers (each a channel of its own, so a connection of its own)
publish as fast as they can to ten groups for `DURATION` seconds; one
listening channel carries 100 subscribers, ten per group, each reading
everything. Twenty times in the run the test samples what was published and
received, the process's CPU time and its RSS. Then:

* the last third costs at most 1/0.7 times the first third's process CPU
  per message (CPU, not wall-clock rate: other processes on a busy machine
  change the rate, not the work a message takes),
* RSS in the last third is within 8 MiB of the first third's peak (in the
  default 20 s, a leak of 0.6 MiB/s or more fails it),
* every subscriber received every message of its group, in order per
  publisher, nothing lost (no `MessagesLost`) and nothing twice.

``CHANNELS_RELIABILITY_LOAD_SECONDS`` sets the duration (default 20 s: some
30,000 to 70,000 messages, ten deliveries each, per layer on a busy 2-core
host; 60 s for the long run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import pytest

from channels_core import Channel, ChannelLayer, Subscriber
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_redis import RedisPubSubChannelLayer
from tests.reliability.support import rss_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DURATION = float(os.environ.get("CHANNELS_RELIABILITY_LOAD_SECONDS", "20"))
#: Seconds between samples: twenty in the run, so that each third has several.
SAMPLE_EVERY = DURATION / 20
PUBLISHERS = 4
GROUPS = [f"load-{number}" for number in range(10)]
PER_GROUP = 10
MiB = 1024 * 1024
END = "end"


@dataclass
class Sample:
    at: float
    published: int
    received: int
    rss: int
    cpu: float  # process CPU seconds


@dataclass
class Load:
    published: list[int] = field(default_factory=lambda: [0] * PUBLISHERS)
    received: int = 0
    samples: list[Sample] = field(default_factory=list)
    #: Per publisher and group, the last number published.
    last: dict[tuple[int, str], int] = field(default_factory=dict)


async def read(subscriber: Subscriber, group: str, load: Load) -> None:
    """Receive until the end marker, checking each publisher's numbers: in order, none twice.

    At the end marker (published after every publisher stopped), nothing may be missing.
    """
    expected: dict[int, int] = {}
    async for event in subscriber:  # a MessagesLost fails the test
        load.received += 1
        if event.message == END:
            break
        source, number = event.message
        assert number == expected.get(source, 0), (group, source, number, expected)
        expected[source] = number + 1
    for source in range(PUBLISHERS):
        assert expected.get(source, 0) == load.last.get((source, group), -1) + 1, (group, source)


async def publish(channel: Channel, source: int, load: Load, stop: anyio.Event) -> None:
    numbers = dict.fromkeys(GROUPS, 0)
    turn = 0
    while not stop.is_set():
        group = GROUPS[(source + turn) % len(GROUPS)]
        turn += 1
        await channel.publish(group, [source, numbers[group]])
        load.last[source, group] = numbers[group]
        numbers[group] += 1
        load.published[source] += 1


def third(samples: list[Sample], which: int) -> list[Sample]:
    size = len(samples) // 3
    return samples[which * size : (which + 1) * size + 1]


def rate(samples: list[Sample], attribute: str) -> float:
    first, last = samples[0], samples[-1]
    return float(getattr(last, attribute) - getattr(first, attribute)) / (last.at - first.at)


def cpu_per_message(samples: list[Sample]) -> float:
    """Process CPU seconds per published message (and its deliveries) over `samples`."""
    first, last = samples[0], samples[-1]
    return (last.cpu - first.cpu) / max(1, last.published - first.published)


async def run_load(make_layer: Callable[[], ChannelLayer], name: str) -> None:
    load = Load()
    stop = anyio.Event()
    async with AsyncExitStack() as stack:
        listener = await stack.enter_async_context(Channel(make_layer()))
        publishers = [
            await stack.enter_async_context(Channel(make_layer())) for _ in range(PUBLISHERS)
        ]
        with anyio.fail_after(DURATION + 60):  # (readers stop at the end markers)
            async with anyio.create_task_group() as readers:
                for group in GROUPS:
                    for _ in range(PER_GROUP):
                        subscriber = await stack.enter_async_context(listener.subscribe(group))
                        readers.start_soon(read, subscriber, group, load)
                async with anyio.create_task_group() as tasks:
                    for source, channel in enumerate(publishers):
                        tasks.start_soon(publish, channel, source, load, stop)
                    started = time.monotonic()
                    while time.monotonic() - started < DURATION:
                        load.samples.append(
                            Sample(
                                time.monotonic(),
                                sum(load.published),
                                load.received,
                                rss_bytes(),
                                time.process_time(),
                            )
                        )
                        await anyio.sleep(SAMPLE_EVERY)
                    stop.set()
                for group in GROUPS:
                    await publishers[0].publish(group, END)
    assert listener.stats().gaps == 0
    samples = load.samples
    first, last = third(samples, 0), third(samples, 2)
    published = sum(load.published)
    print(
        f"{name}: {published:,} messages published in {DURATION:g} s "
        f"({published / DURATION:,.0f}/s, {PER_GROUP * published / DURATION:,.0f} deliveries/s); "
        f"first third {rate(first, 'published'):,.0f}/s, "
        f"last third {rate(last, 'published'):,.0f}/s; CPU per message "
        f"{cpu_per_message(first) * 1e6:.0f} -> {cpu_per_message(last) * 1e6:.0f} us; "
        f"RSS first third peak {max(s.rss for s in first) / MiB:.1f} MiB, "
        f"last third peak {max(s.rss for s in last) / MiB:.1f} MiB"
    )
    assert load.received == PER_GROUP * (published + len(GROUPS))  # (with the end markers)
    assert cpu_per_message(last) * 0.7 <= cpu_per_message(first)
    assert max(s.rss for s in last) - max(s.rss for s in first) < 8 * MiB


async def test_redis_sustained_load(redis_url: str, prefix: str) -> None:
    await run_load(lambda: RedisPubSubChannelLayer.from_url(redis_url, namespace=prefix), "redis")


async def test_postgres_sustained_load(postgres_url: str, pg_namespace: str) -> None:
    await run_load(lambda: PostgreSQLChannelLayer(postgres_url, namespace=pg_namespace), "postgres")
