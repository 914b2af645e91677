"""What a Sentinel failover costs a running channel: ``python -m benchmarks.sentinel_failover``.

Starts a throwaway `SentinelSetup` (master, replica, three Sentinels; down
after 1 s), runs one publisher every 5 ms on ``redis+sentinel://`` and a
subscriber, then fails the master (``failover``: ``SENTINEL FAILOVER``;
``kill``: SIGKILL) at a random point of the Sentinels' 1 s ping cycle and
reports, per run: seconds from the fault to the subscribers' MessagesLost,
the longest single publish, and how many messages published before the gap
never arrived; then per fault the median and range over the runs (see
`benchmarks.failover`). Needs ``redis-server``.

    python -m benchmarks.sentinel_failover [failover|kill ...] [--runs N] [--history SIZE]
                                           [--seed N]
"""

from __future__ import annotations

import anyio
import anyio.to_thread

from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import SentinelSetup

from . import failover


async def measure(fault: str, history_size: int, phase_s: float) -> failover.Result:
    with SentinelSetup() as setup:
        layer = RedisPubSubChannelLayer.from_url(setup.url, **failover.layer_options(history_size))

        async def fail() -> None:
            if fault == "kill":
                setup.master().stop()
            else:
                await anyio.to_thread.run_sync(setup.failover)

        return await failover.through_fault(layer, fail, phase_s)


def main() -> None:
    failover.main(__doc__.splitlines()[0], measure, "python -m benchmarks.sentinel_failover")


if __name__ == "__main__":
    main()
