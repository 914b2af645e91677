"""CPU per delivered event (or events/s) of our channel: this checkout against another.

    hatch run bench:python -m benchmarks.ab --base DIR [--url URL] [--groups G]
        [--subscribers S] [--messages N] [--publishers P] [--size BYTES] [--repeat R]
        [--rate]

For a change that should cost less CPU (issue #15's wake-ups, say), where a
loaded machine makes events/s useless: `DIR` holds another version's
``packages/`` (e.g. ``git archive <commit> packages | tar -x -C DIR``).
Each repetition runs one process on each tree, alternately (the base first
on odd repetitions, this checkout first on even ones), importing the
packages from that tree's ``src`` directories. A process opens one
channel on `url`, subscribes `subscribers` subscribers (subscriber k to
group k mod `groups`), then `publishers` tasks publish `messages` JSON
messages of `size` bytes (100 by default) round-robin over the groups; the second of two such rounds
is measured: process CPU time per delivered event, or with `--rate`
delivered events per second of wall time (for a change that should let
the process overlap the broker, where CPU per event may even grow).
Prints the median of each tree and the per-repetition ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PACKAGES = ("channels-core", "channels-redis", "channels-postgres", "channels-nats")

#: The measuring process (run on either tree); prints CPU us per delivered event.
PROBE = """
import sys, time
from contextlib import AsyncExitStack
import anyio
from channels_core import Channel

url, messages, groups, subscribers, publishers, size = sys.argv[1], *map(int, sys.argv[2:7])

async def main() -> None:
    # compact JSON of `size` bytes: 24 of them are the message without its padding
    message = {"i": 0, "t": 0.0, "pad": "x" * max(0, size - 24)}
    async with Channel.from_url(url, buffer_size=10**6) as channel, AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(channel.subscribe(f"ab.{k % groups}"))
                for k in range(subscribers)]
        per_subscriber = messages // groups

        async def publish(first: int) -> None:
            for number in range(first, messages, publishers):
                await channel.publish(f"ab.{number % groups}", message)

        async def receive(subscriber) -> None:
            for _ in range(per_subscriber):
                await subscriber.receive()

        for _ in range(2):  # the first round warms up
            started, wall = time.process_time(), time.perf_counter()
            async with anyio.create_task_group() as tasks:
                for subscriber in subs:
                    tasks.start_soon(receive, subscriber)
                for first in range(publishers):
                    tasks.start_soon(publish, first)
            cpu, wall = time.process_time() - started, time.perf_counter() - wall
    events = per_subscriber * subscribers
    print(cpu / events * 1e6, events / wall)

anyio.run(main)
"""


def run(tree: Path, args: argparse.Namespace) -> float:
    """CPU us per delivered event, or with ``--rate`` delivered events/s."""
    numbers = [
        str(n) for n in (args.messages, args.groups, args.subscribers, args.publishers, args.size)
    ]
    return run_probe(tree, PROBE, [args.url, *numbers], field=1 if args.rate else 0)


def run_probe(tree: Path, probe: str, argv: list[str], field: int = 0) -> float:
    """Field `field` of the last line `probe` prints, run with `argv` on the packages of `tree`."""
    path = os.pathsep.join(str(tree / "packages" / name / "src") for name in PACKAGES)
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1].split()[field])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a tree holding packages/")
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100, help="bytes of each message's JSON")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--rate", action="store_true", help="compare delivered events/s instead of CPU per event"
    )
    args = parser.parse_args()
    base: list[float] = []
    this: list[float] = []
    for repetition in range(args.repeat):
        order = [(args.base, base), (HERE, this)]
        for tree, samples in order if repetition % 2 == 0 else order[::-1]:
            samples.append(run(tree, args))
    # > 1 means this checkout is better: less CPU per event, or more events/s.
    ratios = [t / b if args.rate else b / t for b, t in zip(base, this, strict=True)]
    print(
        f"{args.url} messages={args.messages} groups={args.groups} "
        f"subscribers={args.subscribers} publishers={args.publishers} size={args.size}, "
        f"{args.repeat} repetitions"
    )
    what = "delivered events/s" if args.rate else "CPU us per delivered event"
    print(f"{what}: base {statistics.median(base):.2f}, ", end="")
    print(f"this checkout {statistics.median(this):.2f}")
    name = "this / base" if args.rate else "base / this"
    print(f"{name}: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
