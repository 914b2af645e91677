"""How cost grows with the number of groups: subscribe, publish + deliver, memory per group.

    hatch run bench:python -m benchmarks.groups_scaling [--groups N ...] [--messages M] [URL ...]

For each URL (default memory://, the local Redis and PostgreSQL) and each
N (default 100, 1,000 and 10,000; the issue also names 50,000), one
process opens a channel and subscribes N groups one by one, one
subscriber each (a fresh namespace of group names per run). Reported:

* **subscribe**: wall time per group of ``channel.subscribe(group)``
  (entering the block: the broker has confirmed it), over all N;
* **publish + deliver**: M messages (default 2,000) to groups drawn at
  random (fixed seed), each awaited by its subscriber before the next is
  published: wall time and process CPU per message;
* **memory per group**: growth of the Python heap (tracemalloc) while the
  N subscriptions were entered, divided by N, measured in a second pass
  (tracing slows everything, so it is never in the timed pass).

Kernel and broker memory (PostgreSQL's per-backend LISTEN list, Redis's
channel dict) are not included.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
import uuid
from contextlib import AsyncExitStack

import anyio

from channels_core import Channel

URLS = ("memory://", "redis://127.0.0.1:6379/0", "postgresql://postgres@127.0.0.1:5432/test")
GROUPS = (100, 1_000, 10_000)
MESSAGE = {"text": "x" * 80}


async def subscribed(channel: Channel, stack: AsyncExitStack, names: list[str]) -> list[object]:
    return [await stack.enter_async_context(channel.subscribe(name)) for name in names]


async def measure(url: str, groups: int, messages: int) -> dict[str, float]:
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.{number}" for number in range(groups)]
    result: dict[str, float] = {}
    async with Channel.from_url(url) as channel, AsyncExitStack() as stack:
        started = time.perf_counter()
        subscribers = await subscribed(channel, stack, names)
        result["subscribe_us"] = (time.perf_counter() - started) / groups * 1e6
        chosen = random.Random(groups).choices(range(groups), k=messages)
        started, cpu = time.perf_counter(), time.process_time()
        for index in chosen:
            await channel.publish(names[index], MESSAGE)
            await subscribers[index].receive()  # type: ignore[attr-defined]
        result["deliver_us"] = (time.perf_counter() - started) / messages * 1e6
        result["deliver_cpu_us"] = (time.process_time() - cpu) / messages * 1e6
    names = [f"{prefix}-mem.{number}" for number in range(groups)]
    async with Channel.from_url(url) as channel, AsyncExitStack() as stack:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await subscribed(channel, stack, names)
        result["bytes_per_group"] = (tracemalloc.get_traced_memory()[0] - before) / groups
        tracemalloc.stop()
    return result


async def main(urls: list[str], sizes: list[int], messages: int) -> None:
    print(
        "| layer | groups | subscribe, us per group | publish + deliver, us per message "
        "(CPU) | Python heap per group |"
    )
    print("|---|---|---|---|---|")
    for url in urls:
        for groups in sizes:
            r = await measure(url, groups, messages)
            print(
                f"| {url.split(':')[0]} | {groups:,} | {r['subscribe_us']:,.0f} | "
                f"{r['deliver_us']:,.0f} ({r['deliver_cpu_us']:,.0f}) | "
                f"{r['bytes_per_group']:,.0f} B |",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=list(URLS))
    parser.add_argument("--groups", type=int, action="append", metavar="N")
    parser.add_argument("--messages", type=int, default=2_000)
    args = parser.parse_args()
    anyio.run(main, args.urls, args.groups or list(GROUPS), args.messages)
