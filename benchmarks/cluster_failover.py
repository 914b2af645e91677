"""What a Redis Cluster failover costs a running channel: ``python -m benchmarks.cluster_failover``.

Starts a throwaway `ClusterSetup` (3 masters, 3 replicas,
``cluster-node-timeout`` 1 s), runs one publisher every 5 ms on
``redis+cluster://`` and a subscriber of the same group, then fails the
master owning the group's slot at a random point of the nodes' ping cycle
and reports, per run: seconds from the fault to the subscriber's
MessagesLost, the longest single publish, and how many messages published
before the gap never arrived; then per fault the median and range over the
runs (see `benchmarks.failover`). Faults: ``failover`` (``CLUSTER
FAILOVER`` on its replica: planned, the master survives) and ``kill``
(SIGKILL; the replica takes over once the other masters agree the master
failed). Needs ``redis-server`` and ``redis-cli``.

    python -m benchmarks.cluster_failover [failover|kill ...] [--runs N] [--history SIZE]
                                          [--seed N]
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from redis.crc import key_slot

from channels_layer_redis import RedisClusterChannelLayer
from channels_layer_redis.testing import ClusterSetup

from . import failover


async def measure(fault: str, history_size: int, phase_s: float) -> failover.Result:
    with ClusterSetup() as cluster:
        layer = RedisClusterChannelLayer.from_url(
            cluster.url, **failover.layer_options(history_size)
        )
        master = cluster.master_of(key_slot(layer._wire.channel(failover.GROUP)))
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

        return await failover.through_fault(layer, fail, phase_s)


def main() -> None:
    failover.main(__doc__.splitlines()[0], measure, "python -m benchmarks.cluster_failover")


if __name__ == "__main__":
    main()
