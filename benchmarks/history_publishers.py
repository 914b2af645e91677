"""The publishers10 shape with history on: concurrent publishes on one channel, logged.

    hatch run python -m benchmarks.history_publishers [redis|postgres ...] [--rounds 5]

Ten tasks publish 4,000 messages of 100 B in all to one group through one
channel (so the channel coalesces them into batches), and a subscriber on
another channel receives every one; ``history_size=1000`` on the shared
servers (``REDIS_URL``, ``POSTGRES_URL`` of `benchmarks.run`), under a
namespace of the run's own, removed at the end. Prints the median rate of
`--rounds` rounds after a warm-up one. (``hatch run bench:bench --only
publishers10`` cannot take history options in its URLs: it also hands them
to redis-py.) To measure another version, put its packages' ``src``
directories first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import anyio
import redis.asyncio

from channels_core import Channel
from channels_layer_postgres import ChannelNames
from channels_layer_postgres.testing import drop_tables

from .run import POSTGRES_URL, REDIS_URL

MESSAGES = 4000
PUBLISHERS = 10


async def one_round(url: str) -> float:
    """Messages per second from the first publish to the last delivery."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    payload = "x" * 100
    async with (
        Channel.from_url(url, buffer_size=MESSAGES) as listener,
        listener.subscribe(group) as subscriber,
        Channel.from_url(url) as sender,
    ):
        started = time.perf_counter()

        async def publish() -> None:
            for _ in range(MESSAGES // PUBLISHERS):
                await sender.publish(group, payload)

        async with anyio.create_task_group() as tasks:
            for _ in range(PUBLISHERS):
                tasks.start_soon(publish)
            for _ in range(MESSAGES):
                await subscriber.receive()
        return MESSAGES / (time.perf_counter() - started)


async def measure(broker: str, rounds: int) -> None:
    namespace = f"benchhist{uuid.uuid4().hex[:8]}"
    base = {"redis": REDIS_URL, "postgres": POSTGRES_URL}[broker]
    url = f"{base}{'&' if '?' in base else '?'}history_size=1000&namespace={namespace}"
    try:
        await one_round(url)  # warm-up: tables, scripts, connections
        rates = [await one_round(url) for _ in range(rounds)]
    finally:
        if broker == "postgres":
            await drop_tables(base, ChannelNames(namespace))
        else:
            client = redis.asyncio.Redis.from_url(base)
            async for key in client.scan_iter(match=f"*{namespace}*"):
                await client.delete(key)
            await client.aclose()
    print(
        f"{broker}: median {statistics.median(rates):,.0f} msg/s "
        f"({', '.join(f'{rate:,.0f}' for rate in rates)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history_publishers")
    parser.add_argument("brokers", nargs="*", help="redis, postgres (default: both)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    unknown = set(args.brokers) - {"redis", "postgres"}
    if unknown:
        parser.error(f"unknown broker(s): {', '.join(sorted(unknown))}")
    for broker in args.brokers or ["redis", "postgres"]:
        anyio.run(measure, broker, args.rounds, backend="asyncio")


if __name__ == "__main__":
    main()
