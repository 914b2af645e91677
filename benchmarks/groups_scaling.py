"""How cost grows with the number of groups: subscribe, publish + deliver, memory per group.

    hatch run bench:python -m benchmarks.groups_scaling [--groups N ...] [--messages M]
        [--crowd G] [--no-crowd] [URL ...]

For each URL (default memory://, the local Redis and PostgreSQL) and each
N (default 100, 1,000, 10,000 and 50,000), one process opens a channel and
subscribes N groups one by one, one subscriber each (a fresh namespace of
group names per run). Reported:

* **subscribe**: wall time per group of ``channel.subscribe(group)``
  (entering the block: the broker has confirmed it), over all N, with the
  process CPU and the listening backend's CPU (below) per group;
* **publish + deliver**: M messages (default 2,000) to groups drawn at
  random (fixed seed), each awaited by its subscriber before the next is
  published: wall time and process CPU per message, and the server CPU: for
  PostgreSQL on this machine, the CPU of the listening connection's backend
  (``/proc/<listener_pid>/stat``, in 10 ms ticks; "-" elsewhere);
* **memory per group**: growth of the Python heap (tracemalloc) while the
  N subscriptions were entered, divided by N, measured in a second pass
  (tracing slows everything, so it is never in the timed pass).

Then, per URL, the cost of **other groups' traffic** (unless
``--no-crowd``): one process subscribed to one group while another process
publishes M messages round-robin to G other groups (default 1,000) of the
same namespace. Reported: the rate published, the notifications the
listener received (PostgreSQL's ``stats().received``; groups hashed onto the
listener's channel arrive and are dropped locally), and the listener
process's CPU per published message. For layers with ``channel_name`` a
second row has all G groups sharing the listener's channel: the worst case.

Kernel and broker memory (PostgreSQL's per-backend LISTEN list, Redis's
channel dict) are not included.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import time
import tracemalloc
import uuid
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.to_process

from channels_core import Channel

URLS = ("memory://", "redis://127.0.0.1:6379/0", "postgresql://postgres@127.0.0.1:5432/test")
GROUPS = (100, 1_000, 10_000, 50_000)
MESSAGE = {"text": "x" * 80}
_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(channel: Channel) -> float | None:
    """CPU seconds of the PostgreSQL backend listening for `channel`, if it runs here."""
    stats = getattr(channel.layer, "stats", None)
    pid = getattr(stats(), "listener_pid", None) if stats is not None else None
    try:
        with open(f"/proc/{pid}/stat") as status:
            fields = status.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def per_message(before: float | None, after: float | None, count: int) -> float | None:
    """Backend CPU microseconds per operation between two readings, if both were taken."""
    return None if before is None or after is None else (after - before) / count * 1e6


async def subscribed(channel: Channel, stack: AsyncExitStack, names: list[str]) -> list[Any]:
    return [await stack.enter_async_context(channel.subscribe(name)) for name in names]


async def measure(url: str, groups: int, messages: int) -> dict[str, float | None]:
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.{number}" for number in range(groups)]
    result: dict[str, float | None] = {}
    async with Channel.from_url(url) as channel, AsyncExitStack() as stack:
        started, cpu, server = time.perf_counter(), time.process_time(), backend_cpu(channel)
        subscribers = await subscribed(channel, stack, names)
        result["subscribe_us"] = (time.perf_counter() - started) / groups * 1e6
        result["subscribe_cpu_us"] = (time.process_time() - cpu) / groups * 1e6
        result["subscribe_server_us"] = per_message(server, backend_cpu(channel), groups)
        chosen = random.Random(groups).choices(range(groups), k=messages)
        server = backend_cpu(channel)
        started, cpu = time.perf_counter(), time.process_time()
        for index in chosen:
            await channel.publish(names[index], MESSAGE)
            await subscribers[index].receive()
        result["deliver_us"] = (time.perf_counter() - started) / messages * 1e6
        result["deliver_cpu_us"] = (time.process_time() - cpu) / messages * 1e6
        result["server_cpu_us"] = per_message(server, backend_cpu(channel), messages)
    names = [f"{prefix}-mem.{number}" for number in range(groups)]
    async with Channel.from_url(url) as channel, AsyncExitStack() as stack:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await subscribed(channel, stack, names)
        result["bytes_per_group"] = (tracemalloc.get_traced_memory()[0] - before) / groups
        tracemalloc.stop()
    return result


def publish_crowd(url: str, crowd: list[str], messages: int, last: str) -> float:
    """In another process: `messages` to the `crowd` round-robin, then one to `last`; the rate."""

    async def run() -> float:
        async with Channel.from_url(url) as channel:
            started = time.perf_counter()
            for number in range(messages):
                await channel.publish(crowd[number % len(crowd)], MESSAGE)
            rate = messages / (time.perf_counter() - started)
            await channel.publish(last, MESSAGE)
            return rate

    return anyio.run(run)


def received_so_far(layer: Any) -> Any:
    """Notifications the layer received (PostgreSQL's counter), or None for other layers."""
    return getattr(layer.stats(), "received", None) if hasattr(layer, "stats") else None


async def crowd_cost(url: str, crowd_size: int, messages: int) -> list[dict[str, Any]]:
    """A listener of one group while others' groups get traffic: what it pays for them."""
    prefix = f"crowd-{uuid.uuid4().hex[:8]}"
    mine = f"{prefix}.mine"
    rows = []
    async with Channel.from_url(url) as channel, channel.subscribe(mine) as subscriber:
        layer: Any = channel.layer
        cases = {"random": (f"{prefix}.{number}" for number in itertools.count())}
        if hasattr(layer, "channel_name"):
            bucket = layer.channel_name(mine)
            # A bounded search: with one channel per group (older versions) none exists.
            candidates = (f"{prefix}.same.{number}" for number in range(crowd_size * 10_000))
            cases["same channel"] = (n for n in candidates if layer.channel_name(n) == bucket)
        for case, names in cases.items():
            crowd = list(itertools.islice(names, crowd_size))
            if len(crowd) < crowd_size:
                continue
            received = received_so_far(layer)
            cpu, started = time.process_time(), time.perf_counter()
            rate = await anyio.to_process.run_sync(publish_crowd, url, crowd, messages, mine)
            await subscriber.receive()
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            rows.append(
                {
                    "case": case,
                    "rate": rate,
                    "received": None if received is None else received_so_far(layer) - received - 1,
                    "cpu_us": cpu / messages * 1e6,
                    "cpu_share": cpu / wall,
                }
            )
    return rows


def server_cpu(microseconds: float | None) -> str:
    return "-" if microseconds is None else f"{microseconds:,.0f}"


async def main(urls: list[str], sizes: list[int], messages: int, crowd: int) -> None:
    print(
        "| layer | groups | subscribe, us per group (CPU; server CPU) | publish + deliver, "
        "us per message (CPU; server CPU) | Python heap per group |"
    )
    print("|---|---|---|---|---|")
    for url in urls:
        for groups in sizes:
            r = await measure(url, groups, messages)
            print(
                f"| {url.split(':')[0]} | {groups:,} | {r['subscribe_us']:,.0f} "
                f"({r['subscribe_cpu_us']:,.0f}; {server_cpu(r['subscribe_server_us'])}) | "
                f"{r['deliver_us']:,.0f} ({r['deliver_cpu_us']:,.0f}; "
                f"{server_cpu(r['server_cpu_us'])}) | {r['bytes_per_group']:,.0f} B |",
                flush=True,
            )
    if not crowd:
        return
    print(
        f"\n| layer | {crowd:,} other groups | published/s | notifications received "
        f"(of {messages:,}) | listener CPU, us per published message (share of a core) |"
    )
    print("|---|---|---|---|---|")
    for url in urls:
        for row in await crowd_cost(url, crowd, messages):
            received = "-" if row["received"] is None else f"{row['received']:,}"
            print(
                f"| {url.split(':')[0]} | {row['case']} | {row['rate']:,.0f} | {received} | "
                f"{row['cpu_us']:,.1f} ({row['cpu_share']:.1%}) |",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=list(URLS))
    parser.add_argument("--groups", type=int, action="append", metavar="N")
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--crowd", type=int, default=1_000, metavar="G")
    parser.add_argument("--no-crowd", dest="crowd", action="store_const", const=0)
    args = parser.parse_args()
    anyio.run(main, args.urls, args.groups or list(GROUPS), args.messages, args.crowd)
