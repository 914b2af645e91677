"""CPU per channel opened from a URL and closed: this checkout against another, interleaved.

    hatch run bench:python -m benchmarks.open_close --base DIR [--url memory://]
        [--mode channel|pool] [--cycles 1000] [--repeat 5]

What an application opening a channel per request or per task pays apart
from the broker: finding the layer for the URL (``channels.layers`` entry
points), building it, connecting and closing. ``channel`` runs `cycles`
``async with Channel.from_url(url)`` one after another on one event loop;
``pool`` is the thread-pool test's workload (tests/test_blocking.py):
`cycles` tasks on 4 threads, each opening a ``BlockingChannel.from_url(url)``,
publishing once and closing it. `DIR` and the alternation are as in
`benchmarks.ab`; each process warms up with 20 cycles, then prints its
process CPU time per cycle.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.ab import HERE, run_probe

#: The measuring process (run on either tree); prints CPU us per cycle.
PROBE = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
import anyio
from channels_core import BlockingChannel, Channel

url, cycles, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

async def open_close(count: int) -> None:
    for _ in range(count):
        async with Channel.from_url(url):
            pass

def task(number: int) -> None:
    with BlockingChannel.from_url(url) as channel:
        channel.publish("open-close", number)

def pool(count: int) -> None:
    with ThreadPoolExecutor(4) as executor:
        list(executor.map(task, range(count)))

def channel(count: int) -> None:
    anyio.run(open_close, count)

run = pool if mode == "pool" else channel
run(20)
started = time.process_time()
run(cycles)
print((time.process_time() - started) / cycles * 1e6)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a tree holding packages/")
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--mode", choices=("channel", "pool"), default="channel")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base: list[float] = []
    this: list[float] = []
    argv = [args.url, str(args.cycles), args.mode]
    for repetition in range(args.repeat):
        order = [(args.base, base), (HERE, this)]
        for tree, samples in order if repetition % 2 == 0 else order[::-1]:
            samples.append(run_probe(tree, PROBE, argv))
    ratios = [b / t for b, t in zip(base, this, strict=True)]
    print(f"{args.url} mode={args.mode} cycles={args.cycles}, {args.repeat} repetitions")
    print(f"CPU us per cycle: base {statistics.median(base):.0f}, ", end="")
    print(f"this checkout {statistics.median(this):.0f}")
    print(f"base / this: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
