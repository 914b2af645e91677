"""A subscriber that never reads: the others get everything, memory stays bounded.

One stuck subscriber sits on the same group as two readers while a large
flow passes. Its bounded buffer keeps the newest (``drop_oldest``) or the
oldest (``drop_newest``) `buffer_size` events; its iteration then raises
`MessagesLost(reason="overflow", count=...)` where the gap is. The readers
receive every message, in order, at the speed they have without the stuck
one, and the process's memory (RSS) grows by far less than the stuck buffer
would hold if it were unbounded.

The Redis flow is 50,000 messages. ``CHANNELS_RELIABILITY_LONG=1`` runs the
in-memory flow with 1,000,000 messages (the default run uses 200,000 to stay
fast).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import pytest

from channels_core import Channel, ChannelLayer, MessagesLost, Subscriber
from channels_core.layers.local_memory import InMemoryChannelLayer, MemoryHub
from channels_core.subscriber import OverflowPolicy
from channels_layer_redis import RedisPubSubChannelLayer
from tests.reliability.support import rss_bytes

pytestmark = pytest.mark.anyio

LONG = os.environ.get("CHANNELS_RELIABILITY_LONG") == "1"
MEMORY_FLOW = 1_000_000 if LONG else 200_000
REDIS_FLOW = 50_000
BUFFER = 1000
#: Each message carries 256 characters, so that an unbounded buffer would show.
FILLER = "x" * 256
MiB = 1024 * 1024


async def read_all(subscriber: Subscriber, count: int, done: list[int]) -> None:
    """Read `count` messages in order; a `MessagesLost` here fails the test."""
    for number in range(count):
        event = await subscriber.receive()
        assert event.message["n"] == number
    done.append(count)


async def check_stuck(stuck: Subscriber, total: int, overflow: OverflowPolicy) -> None:
    """What the stuck subscriber reads once it wakes up, per the overflow policy."""
    lost = total - BUFFER
    assert stuck.dropped == lost
    with anyio.fail_after(5):
        if overflow == "drop_oldest":  # the newest are kept: the gap comes first
            with pytest.raises(MessagesLost) as gap:
                await stuck.receive()
        kept = [(await stuck.receive()).message["n"] for _ in range(BUFFER)]
        if overflow == "drop_newest":  # the oldest are kept: the gap comes after them
            with pytest.raises(MessagesLost) as gap:
                await stuck.receive()
    assert (gap.value.reason, gap.value.count) == ("overflow", lost)
    assert kept == list(range(lost, total) if overflow == "drop_oldest" else range(BUFFER))


async def run_flow(
    make_layer: Callable[[], ChannelLayer], count: int, overflow: OverflowPolicy | None
) -> tuple[float, int]:
    """Publish `count` messages to two readers, and to a stuck subscriber unless `overflow` is None.

    Returns the seconds the flow took and the RSS growth measured while the
    stuck subscriber still holds its buffer.
    """
    async with Channel(make_layer()) as listener, Channel(make_layer()) as sender:
        async with AsyncExitStack() as stack:
            stuck = None
            if overflow is not None:
                stuck = await stack.enter_async_context(
                    listener.subscribe("flow", buffer_size=BUFFER, overflow=overflow)
                )
            first = await stack.enter_async_context(listener.subscribe("flow", buffer_size=BUFFER))
            second = await stack.enter_async_context(listener.subscribe("flow", buffer_size=BUFFER))
            done: list[int] = []
            before = rss_bytes()
            started = time.perf_counter()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_all, first, count, done)
                tasks.start_soon(read_all, second, count, done)
                for number in range(count):
                    await sender.publish("flow", {"n": number, "f": FILLER})
            seconds = time.perf_counter() - started
            growth = rss_bytes() - before
            assert done == [count, count]
            if stuck is not None:
                assert overflow is not None
                await check_stuck(stuck, count, overflow)
        assert listener.stats().subscribers == 0
    return seconds, growth


def report(what: str, count: int, seconds: float, growth: int) -> None:
    print(
        f"{what}: {count:,} messages in {seconds:.2f} s ({seconds / count * 1e6:.1f} us each), "
        f"RSS {growth / MiB:+.1f} MiB"
    )


async def check_flow(
    make_layer: Callable[[], ChannelLayer], count: int, baseline_count: int, what: str
) -> None:
    baseline, _ = await run_flow(make_layer, baseline_count, None)
    report(f"{what}, no stuck subscriber", baseline_count, baseline, 0)
    for overflow in ("drop_oldest", "drop_newest"):
        seconds, growth = await run_flow(make_layer, count, overflow)
        report(f"{what}, {overflow}", count, seconds, growth)
        # Bounded: an unbounded stuck buffer would hold count * 256 bytes of filler alone
        # (a decoded string per message, besides its event), twice this bound.
        assert growth < count * len(FILLER) / 2
        assert growth < 32 * MiB
        # The stuck subscriber never blocks the readers. (It does cost them: with it,
        # readers are woken once per message instead of once per batch; measured
        # about 3x the per-message time of the same flow without it, in-memory.)
        assert seconds / count < 5 * baseline / baseline_count
        count //= 4  # the second policy on a shorter flow


async def test_in_memory_flow_with_a_stuck_subscriber() -> None:
    hub = MemoryHub()
    await check_flow(lambda: InMemoryChannelLayer(hub), MEMORY_FLOW, 20_000, "memory")


async def test_redis_flow_with_a_stuck_subscriber(redis_url: str, prefix: str) -> None:
    await check_flow(
        lambda: RedisPubSubChannelLayer.from_url(redis_url, namespace=prefix),
        REDIS_FLOW,
        REDIS_FLOW // 6,
        "redis",
    )
