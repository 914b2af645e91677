"""Instructions per delivered event (callgrind), for any contender and scenario.

    hatch run bench:python -m benchmarks.instructions CONTENDER
        [--scenario 1to1|groups100|publishers10]
        [--size BYTES] [--messages N]

Unlike CPU time, an instruction count barely moves with the load of a shared
machine. Runs the contender (e.g. ``"channels memory"``, ``"broadcaster
memory"``) under ``valgrind --tool=callgrind`` twice, delivering `N` and then
`2N` messages after the same warm-up, and prints the difference divided by
`N`: start-up, imports and the warm-up cancel out. The messages are built as
the suite builds them (`measure.make_message`), their padding encoded once
rather than per message, so that building them stays out of the count.
Needs valgrind; slow (a minute or two per run).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from typing import Any

import anyio

from .contenders import all_contenders
from .measure import make_message, measure_delivery
from .run import POSTGRES_URL, REDIS_URL

__all__ = ["main"]

#: scenario -> (publishers, subscribers, groups); every message goes to one subscriber.
SCENARIOS = {"1to1": (1, 1, 1), "groups100": (1, 100, 100), "publishers10": (10, 1, 1)}

WARM_UP = 200


def _deliver(name: str, scenario: str, size: int, messages: int) -> None:
    """The measured process: a warm-up, then `messages` through the contender."""
    import benchmarks.measure as measure

    pad = make_message(0, size)["pad"]

    def message(index: int, size: int, t: float = measure._TIME_SAMPLE) -> dict[str, Any]:
        return {"i": index, "t": t, "pad": pad}

    measure.make_message = message
    publishers, subscribers, groups = SCENARIOS[scenario]
    contender = next(c for c in all_contenders(REDIS_URL, POSTGRES_URL) if c.name == name)

    async def run() -> None:
        async with contender.open() as session:
            for count in (WARM_UP, messages):
                if count:
                    await measure_delivery(
                        session,
                        "instructions",
                        publishers=publishers,
                        subscribers=subscribers,
                        messages=count,
                        size=size,
                        timeout=600,
                        groups=groups,
                    )

    anyio.run(run)


def _count(args: argparse.Namespace, messages: int) -> int:
    """Instructions callgrind collected over one whole run delivering `messages`."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        args.contender,
        "--scenario",
        args.scenario,
        "--size",
        str(args.size),
        "--messages",
        str(messages),
        "--inner",
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("contender", help='a contender\'s full name, e.g. "channels memory"')
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="1to1")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _deliver(args.contender, args.scenario, args.size, args.messages)
        return 0
    once, twice = _count(args, args.messages), _count(args, 2 * args.messages)
    per_event = (twice - once) / args.messages  # every scenario: one delivery per message
    print(
        f"{args.contender} {args.scenario} {args.size} B: {per_event:,.0f} instructions "
        f"per delivered event ({args.messages:,} messages: {once:,}; {2 * args.messages:,}: "
        f"{twice:,})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
