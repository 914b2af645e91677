"""What a Sentinel failover costs a running channel: ``python -m benchmarks.sentinel_failover``.

Starts a throwaway `SentinelSetup` (master, replica, three Sentinels; down
after 1 s), runs one publisher every 5 ms on ``redis+sentinel://`` and a
subscriber, then fails the master (``SENTINEL FAILOVER``, or SIGKILL) and
reports, per run: seconds from the fault to the subscribers' MessagesLost,
the longest single publish, and how many messages published before the gap
never arrived. Needs ``redis-server``.
"""

from __future__ import annotations

import sys
import time

import anyio
import anyio.to_thread

from channels_core import Channel, MessagesLost
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import SentinelSetup


async def measure(fault: str) -> dict[str, float]:
    with SentinelSetup() as setup:
        layer = RedisPubSubChannelLayer.from_url(
            setup.url, publish_timeout=15, reconnect_backoff=Backoff(initial=0.02, maximum=0.2)
        )
        async with Channel(layer) as channel, channel.subscribe("room") as subscriber:
            published: list[int] = []
            received: set[int] = set()
            longest = 0.0
            stop = anyio.Event()

            async def publish() -> None:
                nonlocal longest
                number = 0
                while not stop.is_set():
                    began = time.monotonic()
                    await channel.publish("room", number)
                    longest = max(longest, time.monotonic() - began)
                    published.append(number)
                    number += 1
                    await anyio.sleep(0.005)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish)
                await anyio.sleep(0.5)
                fault_at = time.monotonic()
                if fault == "failover":

                    async def fail_over() -> None:
                        await anyio.to_thread.run_sync(setup.failover)

                    tasks.start_soon(fail_over)
                else:
                    setup.master().stop()
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


def main() -> None:
    for fault in sys.argv[1:] or ["failover", "kill"]:
        print(fault, anyio.run(measure, fault))


if __name__ == "__main__":
    main()
