"""What a Redis Cluster failover costs a running channel: ``python -m benchmarks.cluster_failover``.

Starts a throwaway `ClusterSetup` (3 masters, 3 replicas,
``cluster-node-timeout`` 1 s), runs one publisher every 5 ms on
``redis+cluster://`` and a subscriber of the same group, then fails the
master owning the group's slot and reports, per run: seconds from the
fault to the subscriber's MessagesLost, the longest single publish, and how
many messages published before the gap never arrived. Faults:
``failover`` (``CLUSTER FAILOVER`` on its replica: planned, the master
survives) and ``kill`` (SIGKILL; the replica takes over once the other
masters agree the master failed). Needs ``redis-server`` and ``redis-cli``.

    python -m benchmarks.cluster_failover [failover|kill ...] [--runs N] [--history SIZE]
"""

from __future__ import annotations

import argparse

import anyio
import anyio.to_thread
from redis.crc import key_slot

from channels_core import Channel
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisClusterChannelLayer
from channels_layer_redis.testing import ClusterSetup

from .failover import publish_through_fault


async def measure(fault: str, history_size: int = 0) -> dict[str, float | None]:
    with ClusterSetup() as cluster:
        layer = RedisClusterChannelLayer.from_url(
            cluster.url,
            publish_timeout=15,
            history_size=history_size,
            reconnect_backoff=Backoff(initial=0.02, maximum=0.2),
        )
        master = cluster.master_of(key_slot(layer._wire.channel("room")))
        replica = cluster.replica_of(master)

        async def fail() -> None:
            if fault == "kill":
                master.stop()
                return
            client = cluster.client(replica)
            try:
                await anyio.to_thread.run_sync(client.execute_command, "CLUSTER", "FAILOVER")
            finally:
                client.close()

        async with Channel(layer) as channel, channel.subscribe("room") as subscriber:
            return await publish_through_fault(channel, subscriber, "room", fail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faults", nargs="*", default=["failover", "kill"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--history", type=int, default=0, help="history_size (0: off)")
    arguments = parser.parse_args()
    for fault in arguments.faults:
        for _ in range(arguments.runs):
            print(fault, anyio.run(measure, fault, arguments.history), flush=True)


if __name__ == "__main__":
    main()
