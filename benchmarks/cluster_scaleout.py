"""Redis Cluster scale-out: ``python -m benchmarks.cluster_scaleout [--messages N] [--repeat N]``.

Starts a throwaway single Redis (``redis://``) and throwaway clusters of 1,
2 and 3 masters (no replicas, ``redis+cluster://``), all from the
machine's ``redis-server``. On each, one process subscribes to 1,000 groups
(one subscription) and publishes `--messages` 100-byte messages round-robin
over them from 8 concurrent tasks; the clock stops when the last one
arrived. The setups take turns, repetition by repetition, so that a busy
machine slows all alike; the median repetition of each is reported:

* delivered events/s, and the client's CPU per message (this process);
* broker CPU per message (every redis-server's user+system time over the
  timed region, from /proc), in total and per shard;
* each shard's share of the messages (its ``SPUBLISH`` calls, from ``INFO
  commandstats``), and the events/s it carried.

Needs ``redis-server`` and ``redis-cli``; Linux (/proc) for the broker CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import redis

from channels_core import Channel
from channels_layer_redis.testing import ClusterSetup, RedisServer

GROUPS = 1_000
PUBLISHERS = 8
MESSAGE = {"pad": "x" * 88}  # 100 bytes of compact JSON with the channel's envelope off


@dataclass
class Setup:
    """One broker setup: its URL and its redis-server nodes (the masters)."""

    name: str
    url: str
    nodes: list[RedisServer]
    password: str | None = None


@dataclass
class Run:
    seconds: float
    client_cpu: float
    broker_cpu: dict[int, float]  # port -> CPU seconds
    calls: dict[int, int]  # port -> PUBLISH/SPUBLISH calls


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _node(server: RedisServer, password: str | None) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, password=password)


def _publish_calls(setup: Setup) -> dict[int, int]:
    calls: dict[int, int] = {}
    for server in setup.nodes:
        client = _node(server, setup.password)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        calls[server.port] = sum(
            int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
            for command in ("publish", "spublish")
        )
    return calls


def _reset_stats(setup: Setup) -> None:
    for server in setup.nodes:
        client = _node(server, setup.password)
        try:
            client.config_resetstat()
        finally:
            client.close()


async def measure(setup: Setup, messages: int) -> Run:
    groups = [f"group-{n}" for n in range(GROUPS)]
    namespace = f"scaleout-{uuid.uuid4().hex[:8]}:"
    async with (
        Channel.from_url(setup.url, namespace=namespace) as channel,
        channel.subscribe(*groups, buffer_size=messages + 1) as subscriber,
    ):
        _reset_stats(setup)
        pids = {server.port: server.pid for server in setup.nodes}
        broker_before = {port: _cpu_seconds(pid) for port, pid in pids.items()}
        client_before = time.process_time()
        started = time.perf_counter()

        async def publish(first: int) -> None:
            for number in range(first, messages, PUBLISHERS):
                await channel.publish(groups[number % GROUPS], MESSAGE)

        async with anyio.create_task_group() as tasks:
            for first in range(PUBLISHERS):
                tasks.start_soon(publish, first)
            for _ in range(messages):
                await subscriber.receive()
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        broker = {port: _cpu_seconds(pid) - broker_before[port] for port, pid in pids.items()}
        return Run(seconds, client_cpu, broker, _publish_calls(setup))


def _median_range(values: list[float], scale: float = 1.0, spec: str = ",.0f") -> str:
    scaled = [value * scale for value in values]
    middle = format(statistics.median(scaled), spec)
    return f"{middle} ({format(min(scaled), spec)}-{format(max(scaled), spec)})"


def report(name: str, runs: list[Run], baseline: list[Run], messages: int) -> None:
    """Medians (min-max) over the repetitions; shares from all repetitions together."""
    client = [run.client_cpu / messages for run in runs]
    ratio = [(run.client_cpu / base.client_cpu) for run, base in zip(runs, baseline, strict=True)]
    print(
        f"{name}: {_median_range([messages / run.seconds for run in runs])} delivered events/s; "
        f"client CPU {_median_range(client, 1e6, '.0f')} us/message "
        f"({statistics.median(ratio):.2f}x one server's); broker CPU "
        f"{_median_range([sum(r.broker_cpu.values()) / messages for r in runs], 1e6, '.0f')} "
        "us/message in total"
    )
    ports = runs[0].calls.keys()
    total = sum(sum(run.calls.values()) for run in runs) or 1
    for port in sorted(ports, key=lambda p: -sum(run.calls[p] for run in runs)):
        share = sum(run.calls[port] for run in runs) / total
        rate = [run.calls[port] / run.seconds for run in runs]
        cpu = [run.broker_cpu[port] / run.seconds for run in runs]
        print(
            f"    node :{port}: {share:6.1%} of the messages, {_median_range(rate)} events/s, "
            f"CPU {_median_range(cpu, 100, '.1f')} % of a core"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    with ExitStack() as stack:
        single = stack.enter_context(RedisServer())
        setups = [Setup("redis:// (one server)", single.url, [single])]
        for masters in (1, 2, 3):
            cluster = stack.enter_context(ClusterSetup(masters, 0))
            setups.append(
                Setup(f"redis+cluster:// {masters} shard(s)", cluster.url, cluster.servers)
            )
        runs: dict[str, list[Run]] = {setup.name: [] for setup in setups}
        for setup in setups:  # warm-up, discarded
            anyio.run(measure, setup, min(arguments.messages, 2_000))
        for _ in range(arguments.repeat):
            for setup in setups:
                runs[setup.name].append(anyio.run(measure, setup, arguments.messages))
        print(
            f"{arguments.messages:,} messages of 100 B over {GROUPS:,} groups, "
            f"{PUBLISHERS} publishing tasks, 1 subscriber; median of {arguments.repeat}"
        )
        for setup in setups:
            report(setup.name, runs[setup.name], runs[setups[0].name], arguments.messages)


if __name__ == "__main__":
    main()
