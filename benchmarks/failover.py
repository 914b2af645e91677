"""What a broker fault costs a running channel: the loop both failover measurements share.

Used by `sentinel_failover` and `cluster_failover`.

`publish_through_fault` publishes to one group every 5 ms from one task,
lets `fault` happen after 0.5 s, and reads the subscriber until the fault
is over and 200 publishes after it (and after the gap, `MessagesLost`, if
one shows: with history on there may be none, the log filling the gap).
It returns seconds from the fault to the gap (None without one), the
longest single publish, the longest delivery (from a publish's start to
its arrival: what a failover costs when history recovers the gap), and
how many messages published before the gap (all, without one) never arrived.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from channels_core import Channel, MessagesLost, Subscriber


async def publish_through_fault(
    channel: Channel,
    subscriber: Subscriber,
    group: str,
    fault: Callable[[], Coroutine[Any, Any, None]],
) -> dict[str, float | None]:
    published: list[int] = []
    began: dict[int, float] = {}
    received: set[int] = set()
    longest = longest_delivery = 0.0
    stop = anyio.Event()
    fault_over = anyio.Event()
    published_at_end = 0  # published when the fault's task returned

    async def publish() -> None:
        nonlocal longest
        number = 0
        while not stop.is_set():
            began[number] = time.monotonic()
            await channel.publish(group, number)
            longest = max(longest, time.monotonic() - began[number])
            published.append(number)
            number += 1
            await anyio.sleep(0.005)

    async def fail() -> None:
        nonlocal published_at_end
        await fault()
        published_at_end = len(published)
        fault_over.set()

    def receive(number: int) -> None:
        nonlocal longest_delivery
        received.add(number)
        longest_delivery = max(longest_delivery, time.monotonic() - began[number])

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publish)
        await anyio.sleep(0.5)
        fault_at = time.monotonic()
        tasks.start_soon(fail)
        gap_after: float | None = None
        published_at_gap = 0
        while (
            not fault_over.is_set()
            or len(published) < max(published_at_end, published_at_gap) + 200
        ):
            try:
                receive((await subscriber.receive()).message)
            except MessagesLost:
                gap_after = time.monotonic() - fault_at
                published_at_gap = len(published)
        stop.set()
    with anyio.move_on_after(2):  # the last ones still on their way
        while not set(published) <= received:
            receive((await subscriber.receive()).message)
    before_gap = published[:published_at_gap] if gap_after is not None else published
    lost = len(set(before_gap) - received)
    return {"gap_after_s": None if gap_after is None else round(gap_after, 2),
            "longest_publish_s": round(longest, 2),
            "longest_delivery_s": round(longest_delivery, 2),
            "lost": lost, "published": len(published)}  # fmt: skip
