"""The measurements: end-to-end delivery rate, paced latency, memory per idle subscriber.

Each function takes an open `Session` (connections are made outside the
timed region) and measures one thing once; the runner repeats, warms up
and interleaves contenders. Messages are dicts ``{"i", "t", "pad"}`` whose
JSON encoding is about the requested size, built before the clock starts.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from channels_core.cli._stats import percentile

from .contenders import Session, Stream
from .contenders.base import dumps

__all__ = [
    "Chat",
    "Delivery",
    "IdleMemory",
    "Latency",
    "Probe",
    "encoded_size",
    "make_message",
    "measure_chat",
    "measure_delivery",
    "measure_idle_memory",
    "measure_latency",
]

_TIME_SAMPLE = 12345.678901234  # a perf_counter value of typical width


def make_message(index: int, size: int, t: float = _TIME_SAMPLE) -> dict[str, Any]:
    """A message whose compact JSON encoding is about `size` bytes."""
    overhead = len(dumps({"i": index, "t": t, "pad": ""}))
    return {"i": index, "t": t, "pad": "x" * max(0, size - overhead)}


def encoded_size(size: int) -> int:
    """The exact encoded size of a typical message of nominal `size`."""
    return len(dumps(make_message(0, size)).encode())


class Probe(Protocol):
    """Server-side observations around a timed region (see `benchmarks.redis_stats`)."""

    async def before(self, group: str) -> None: ...

    async def after(self, group: str, messages: int, message_bytes: int) -> dict[str, Any]: ...


@dataclass(slots=True)
class Delivery:
    """One delivery run: `delivered` events reached their subscribers in `seconds`."""

    seconds: float
    published: int
    delivered: int
    cpu_seconds: float = 0.0  # this process's CPU time over the timed region
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Latency:
    """Publish-to-receive latencies of one paced run, in seconds."""

    samples: list[float]

    def quantile_ms(self, quantile: float) -> float:
        return percentile(self.samples, quantile) * 1000.0


@dataclass(slots=True)
class Chat:
    """One chat run: what was offered, what was delivered, how late and at what CPU cost."""

    offered_rate: float  # messages per second the publishers were paced at
    published: int
    publish_seconds: float  # first scheduled send to the last publish's return
    delivered: int
    seconds: float  # first scheduled send to the last delivery
    cpu_seconds: float
    latency: Latency

    @property
    def events_per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class IdleMemory:
    """Python heap growth (tracemalloc) per idle subscriber, and how many were open."""

    subscribers: int
    bytes_per_subscriber: float


async def measure_delivery(
    session: Session,
    group: str,
    *,
    publishers: int,
    subscribers: int,
    messages: int,
    size: int,
    timeout: float,
    probe: Probe | None = None,
    groups: int = 1,
) -> Delivery:
    """Publish `messages` (split over `publishers` tasks) to `subscribers`; time until the last
    subscriber has the last message.

    With `groups` > 1 (a divisor of `subscribers` and `messages`), subscriber k
    listens to group k mod `groups` and message i goes to group i mod `groups`:
    each message reaches subscribers/groups subscribers. Raises TimeoutError
    if the messages do not all arrive within `timeout`.
    """
    names = [group] if groups == 1 else [f"{group}.{k}" for k in range(groups)]
    targets = [names[i % groups] for i in range(messages)]
    batches = _split([make_message(i, size) for i in range(messages)], publishers)
    group_of = {id(message): targets[message["i"]] for batch in batches for message in batch}
    per_subscriber = messages // groups
    finished: list[float] = []
    cpu_finished: list[float] = []
    async with AsyncExitStack() as stack:
        streams: list[Stream] = [
            await stack.enter_async_context(session.subscribe(names[k % groups]))
            for k in range(subscribers)
        ]
        if probe is not None:
            await probe.before(group)

        async def consume(stream: Stream) -> None:
            await stream.drain(per_subscriber, None)
            finished.append(time.perf_counter())
            cpu_finished.append(time.process_time())

        async def produce(batch: Sequence[dict[str, Any]]) -> None:
            publish = session.publish
            for message in batch:
                await publish(group_of[id(message)], message)

        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tasks:
                for stream in streams:
                    tasks.start_soon(consume, stream)
                await anyio.lowlevel.checkpoint()  # let the consumers start waiting
                started = time.perf_counter()
                cpu_started = time.process_time()
                for batch in batches:
                    tasks.start_soon(produce, batch)
        seconds = max(finished) - started
        cpu_seconds = max(cpu_finished) - cpu_started
        server: dict[str, Any] = {}
        if probe is not None:
            server = await probe.after(group, messages, encoded_size(size))
    delivered = per_subscriber * subscribers
    return Delivery(seconds, messages, delivered, cpu_seconds, server)


async def measure_latency(
    session: Session, group: str, *, messages: int, rate: float, size: int, timeout: float
) -> Latency:
    """Publish `messages` at `rate` per second, each stamped with its send time, to one
    subscriber that records how long each took to arrive."""
    samples: list[float] = []
    interval = 1.0 / rate
    pad = make_message(0, size)["pad"]

    def record(message: Any) -> None:
        samples.append(time.perf_counter() - message["t"])

    async with session.subscribe(group) as stream:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(stream.drain, messages, record)
                await anyio.lowlevel.checkpoint()
                started = time.perf_counter()
                for index in range(messages):
                    delay = started + index * interval - time.perf_counter()
                    if delay > 0:
                        await anyio.sleep(delay)
                    await session.publish(group, {"i": index, "t": time.perf_counter(), "pad": pad})
    return Latency(samples)


async def measure_chat(
    session: Session,
    group: str,
    *,
    groups: int,
    subscribers: int,
    publishers: int,
    messages: int,
    rate: float,
    size: int,
    timeout: float,
) -> Chat:
    """A chat server's load: `subscribers` spread evenly over `groups` (subscriber k in
    group k mod `groups`), `publishers` tasks together offering `rate` messages per
    second, each message to a group drawn at random (fixed seed).

    Message i is due at start + i / rate; publisher j sends the messages i = j mod
    `publishers`, sleeping until each is due. Latency is measured from when a message
    was *due*, not when it left, so a contender that falls behind pays for its
    backlog (no coordinated omission).
    """
    names = [f"{group}.{k}" for k in range(groups)]
    draw = random.Random(15)
    targets = [draw.randrange(groups) for _ in range(messages)]
    per_group = [0] * groups
    for target in targets:
        per_group[target] += 1
    pad = make_message(0, size)["pad"]
    interval = 1.0 / rate
    samples: list[float] = []
    finished: list[float] = []
    cpu_finished: list[float] = []
    published: list[float] = []

    def record(message: Any) -> None:
        samples.append(time.perf_counter() - message["t"])

    async with AsyncExitStack() as stack:
        streams = [
            (await stack.enter_async_context(session.subscribe(names[k % groups])), k % groups)
            for k in range(subscribers)
        ]

        async def consume(stream: Stream, count: int) -> None:
            await stream.drain(count, record)
            finished.append(time.perf_counter())
            cpu_finished.append(time.process_time())

        async def produce(first: int) -> None:
            publish = session.publish
            for index in range(first, messages, publishers):
                due = started + index * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                await publish(names[targets[index]], {"i": index, "t": due, "pad": pad})
            published.append(time.perf_counter())

        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tasks:
                for stream, k in streams:
                    tasks.start_soon(consume, stream, per_group[k])
                await anyio.lowlevel.checkpoint()
                started = time.perf_counter()
                cpu_started = time.process_time()
                for first in range(publishers):
                    tasks.start_soon(produce, first)
    return Chat(
        offered_rate=rate,
        published=messages,
        publish_seconds=max(published) - started,
        delivered=len(samples),
        seconds=max(finished) - started,
        cpu_seconds=max(cpu_finished) - cpu_started,
        latency=Latency(samples),
    )


async def measure_idle_memory(
    session: Session, group: str, *, subscribers: int, timeout: float
) -> IdleMemory:
    """Open `subscribers` subscriptions to one group, each with a task waiting for a message,
    and report the Python heap growth per subscriber (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with anyio.fail_after(timeout):
            async with AsyncExitStack() as stack:
                streams = [
                    await stack.enter_async_context(session.subscribe(group))
                    for _ in range(subscribers)
                ]
                async with anyio.create_task_group() as tasks:
                    for stream in streams:
                        tasks.start_soon(stream.drain, 1, None)
                    await anyio.sleep(0.05)  # every waiter parked
                    gc.collect()
                    after = tracemalloc.get_traced_memory()[0]
                    tasks.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    return IdleMemory(subscribers, (after - before) / subscribers)


def _split(items: list[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """`items` in `parts` interleaved batches (each publisher sends every parts-th message)."""
    return [items[start::parts] for start in range(parts)]
