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


async def measure(fault: str, history_size: int = 0) -> dict[str, float | None]:
    with SentinelSetup() as setup:
        layer = RedisPubSubChannelLayer.from_url(
            setup.url,
            publish_timeout=15,
            history_size=history_size,
            reconnect_backoff=Backoff(initial=0.02, maximum=0.2),
        )

        async def fail() -> None:
            if fault == "failover":
                await anyio.to_thread.run_sync(setup.failover)
            else:
                setup.master().stop()

        async with Channel(layer) as channel, channel.subscribe("room") as subscriber:
            return await publish_through_fault(channel, subscriber, "room", fail)


def main() -> None:
    """Arguments: the faults (default ``failover kill``), ``--history=SIZE`` for history on."""
    history = [int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--history=")]
    faults = [a for a in sys.argv[1:] if not a.startswith("--")]
    for fault in faults or ["failover", "kill"]:
        print(fault, anyio.run(measure, fault, history[-1] if history else 0), flush=True)


if __name__ == "__main__":
    main()
