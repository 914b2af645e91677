"""``python -m benchmarks.profile``: where our layers spend their time (pyinstrument).

Profiles our contenders in the 1 -> 1, 1 -> 100 and 100-groups scenarios (1 KiB
messages, more of them than the suite sends, so that the samples add up)
and writes, per case, pyinstrument's text tree and a flat list of the
functions with the most *own* time to ``benchmarks/results/profiles/``.
Also prints CPU microseconds per message for ours and the baselines, which
is what the profile's percentages are percentages of.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from pyinstrument import Profiler

from .client_setup import ClientSetup, apply
from .contenders import Contender, all_contenders
from .measure import measure_delivery
from .run import POSTGRES_URL, REDIS_URL, RESULTS

__all__ = ["main"]

#: (scenario, publishers, subscribers, groups, messages) profiled.
CASES = (
    ("1to1", 1, 1, 1, 20_000),
    ("fanout100", 1, 100, 1, 2_000),
    ("groups100", 1, 100, 100, 20_000),
    ("publishers10", 10, 1, 1, 20_000),
)


def _own_time(session: Any, top: int) -> list[tuple[float, str]]:
    """Functions with the most self time (not counting callees), as (seconds, name)."""
    totals: Counter[str] = Counter()
    stack = [session.root_frame()]
    while stack:
        frame = stack.pop()
        if frame is None:
            continue
        # A frame's own time sits in its "[self]" child; a leaf is all own time.
        is_self = frame.identifier.startswith("[self]")
        owner = frame.parent if is_self else frame
        if owner is not None and (is_self or not frame.children):
            where = f"{Path(owner.file_path_short or '?').name}:{owner.line_no}"
            totals[f"{owner.function} ({where})"] += frame.total_self_time
        stack.extend(frame.children)
    return [(seconds, name) for name, seconds in totals.most_common(top)]


async def _profile(
    contender: Contender,
    publishers: int,
    subscribers: int,
    groups: int,
    messages: int,
    size: int,
    out: Path,
    tag: str,
) -> str:
    async with contender.open() as session:
        # warm-up, unprofiled
        await measure_delivery(
            session,
            f"profile.{tag}.warmup",
            publishers=publishers,
            subscribers=subscribers,
            messages=max(groups, messages // 10),
            size=size,
            timeout=120,
            groups=groups,
        )
        # unprofiled: the real rate and CPU per message
        clean = await measure_delivery(
            session,
            f"profile.{tag}.clean",
            publishers=publishers,
            subscribers=subscribers,
            messages=messages,
            size=size,
            timeout=120,
            groups=groups,
        )
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        await measure_delivery(
            session,
            f"profile.{tag}",
            publishers=publishers,
            subscribers=subscribers,
            messages=messages,
            size=size,
            timeout=120,
            groups=groups,
        )
        profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (out / f"{tag}.txt").write_text(text, encoding="utf-8")
    total = profiler.last_session.duration if profiler.last_session else 0.0
    cpu = clean.cpu_seconds
    lines = [
        f"== {tag}: {clean.events_per_second:,.0f} events/s unprofiled, "
        f"CPU busy {100 * cpu / clean.seconds:.0f}% of the wall time, "
        f"{cpu / messages * 1e6:.1f} us CPU per message, "
        f"{cpu / clean.delivered * 1e6:.2f} us per delivered event",
        "   top own time (share of profiled wall time, epoll.poll = waiting for the network):",
    ]
    session_data = profiler.last_session
    if session_data is not None:
        for seconds, name in _own_time(session_data, 15):
            share = 100 * seconds / total if total else 0.0
            lines.append(f"   {share:5.1f}%  {name}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    out = RESULTS / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    contenders = [
        c
        for c in all_contenders(REDIS_URL, POSTGRES_URL)
        if (
            any(text in c.name for text in args.contender)
            if args.contender
            else c.kind == "channels"
        )
    ]
    for scenario, publishers, subscribers, groups, messages in CASES:
        if args.only and scenario not in args.only:
            continue
        for contender in contenders:
            if contender.broker == "postgres" and subscribers > 1 and not args.all:
                continue
            tag = f"{scenario}-{contender.name.replace(' ', '-')}"
            count = messages if contender.broker != "postgres" else messages // 4
            profile = await _profile(
                contender, publishers, subscribers, groups, count, args.size, out, tag
            )
            print(profile, flush=True)
    print(f"profiles: {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument(
        "--contender",
        action="append",
        default=[],
        metavar="TEXT",
        help="profile contenders whose name contains TEXT (default: our layers)",
    )
    parser.add_argument("--only", action="append", default=[], metavar="SCENARIO")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--all", action="store_true", help="also postgres fan-out")
    args = parser.parse_args(argv)
    # The suite's default client setup (redis-py's own parser, asyncio's loop): the bench
    # env has hiredis installed, which redis-py would otherwise pick by itself.
    apply(ClientSetup(hiredis=False, uvloop=False))
    anyio.run(run, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
