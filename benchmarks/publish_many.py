"""One message to each of N groups: N awaited `publish` calls against one `publish_many`.

    hatch run bench:python -m benchmarks.publish_many [--groups N] [--repeat R] [URL ...]

Notifying many rooms at once (issue #15). For each URL (default memory://,
the local Redis and PostgreSQL) one channel subscribes to the N groups,
then, `repeat` times alternately, sends one 100 B message to each group
either with N sequential ``await channel.publish`` or with one ``await
channel.publish_many``, and waits until the subscriber has all N. Prints
the median wall time per batch of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import anyio

from channels_core import Channel

URLS = ("memory://", "redis://127.0.0.1:6379/0", "postgresql://postgres@127.0.0.1:5432/test")
MESSAGE = {"text": "x" * 80}


async def measure(url: str, groups: int, repeat: int) -> dict[str, float]:
    names = [f"many-{uuid.uuid4().hex[:8]}-{number}" for number in range(groups)]
    items = [(name, MESSAGE) for name in names]
    samples: dict[str, list[float]] = {"publish": [], "publish_many": []}
    async with (
        Channel.from_url(url, buffer_size=10 * groups) as channel,
        channel.subscribe(*names) as subscriber,
    ):
        for round_number in range(repeat + 1):  # the first round warms up
            for mode in samples:
                started = time.perf_counter()
                if mode == "publish":
                    for name, message in items:
                        await channel.publish(name, message)
                else:
                    await channel.publish_many(items)
                for _ in range(groups):
                    await subscriber.receive()
                if round_number:
                    samples[mode].append(time.perf_counter() - started)
    return {mode: statistics.median(values) for mode, values in samples.items()}


async def main(urls: list[str], groups: int, repeat: int) -> None:
    print(f"one 100 B message to each of {groups} groups, median of {repeat} alternating rounds")
    print("| layer | N x publish | publish_many | speed-up |")
    print("|---|---|---|---|")
    for url in urls:
        result = await measure(url, groups, repeat)
        one, many = result["publish"], result["publish_many"]
        name = url.split(":")[0]
        print(f"| {name} | {one * 1e3:.2f} ms | {many * 1e3:.2f} ms | {one / many:.1f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=list(URLS))
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    anyio.run(main, args.urls, args.groups, args.repeat)
