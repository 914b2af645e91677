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

import anyio
import anyio.to_thread

from channels_core import Channel
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import SentinelSetup

from .failover import publish_through_fault


async def measure(fault: str) -> dict[str, float]:
    with SentinelSetup() as setup:
        layer = RedisPubSubChannelLayer.from_url(
            setup.url, publish_timeout=15, reconnect_backoff=Backoff(initial=0.02, maximum=0.2)
        )

        async def fail() -> None:
            if fault == "failover":
                await anyio.to_thread.run_sync(setup.failover)
            else:
                setup.master().stop()

        async with Channel(layer) as channel, channel.subscribe("room") as subscriber:
            return await publish_through_fault(channel, subscriber, "room", fail)


def main() -> None:
    for fault in sys.argv[1:] or ["failover", "kill"]:
        print(fault, anyio.run(measure, fault))


if __name__ == "__main__":
    main()
