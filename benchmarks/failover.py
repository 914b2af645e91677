"""What a broker fault costs a running channel: the loop both failover measurements share.

Used by `sentinel_failover` and `cluster_failover`.

`publish_through_fault` publishes to one group every 5 ms from one task,
lets `fault` happen after 0.5 s, and reads the subscriber until the gap
(`MessagesLost`) and 200 publishes after it. It returns seconds from the
fault to the gap, the longest single publish, and how many messages
published before the gap never arrived.
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
) -> dict[str, float]:
    published: list[int] = []
    received: set[int] = set()
    longest = 0.0
    stop = anyio.Event()

    async def publish() -> None:
        nonlocal longest
        number = 0
        while not stop.is_set():
            began = time.monotonic()
            await channel.publish(group, number)
            longest = max(longest, time.monotonic() - began)
            published.append(number)
            number += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publish)
        await anyio.sleep(0.5)
        fault_at = time.monotonic()
        tasks.start_soon(fault)
        gap_after: float | None = None
        published_at_gap = 0
        while gap_after is None or len(published) < published_at_gap + 200:
            try:
                received.add((await subscriber.receive()).message)
            except MessagesLost:
                gap_after = time.monotonic() - fault_at
                published_at_gap = len(published)
        stop.set()
    lost = len(set(published[:published_at_gap]) - received)
    assert gap_after is not None
    return {"gap_after_s": round(gap_after, 2), "longest_publish_s": round(longest, 2),
            "lost": lost, "published": len(published)}  # fmt: skip
