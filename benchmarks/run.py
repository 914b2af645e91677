"""The command line: ``python -m benchmarks [--quick] [--only ID] [--output FILE]``.

Measures the brokers' own ceilings (`benchmarks.limits`), then runs the
selected scenarios against every contender in every client setup
(``--hiredis``, ``--uvloop``: `benchmarks.client_setup`), prints the
markdown report to stdout (progress goes to stderr) and writes all
measurements as JSON (default ``benchmarks/results/<timestamp>.json``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from .client_setup import CHOICES, apply, client_setups
from .contenders import all_contenders
from .limits import measure_limits
from .machine import describe
from .report import Results, render_markdown, targets
from .runner import RunSettings, plan_cells, repetitions, run_repetition
from .scenarios import SCENARIOS, SIZES, size_label

__all__ = ["main"]

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="channels against raw redis-py/asyncpg and encode/broadcaster.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: every scenario briefly, 1 repetition"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="run only these scenarios (repeatable): "
        + ", ".join(scenario.id for scenario in SCENARIOS),
    )
    parser.add_argument(
        "--contender",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only contenders whose name contains TEXT (repeatable), e.g. redis",
    )
    parser.add_argument(
        "--size",
        action="append",
        type=int,
        default=[],
        help="run only these message sizes in bytes (repeatable): " + ", ".join(map(str, SIZES)),
    )
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 5, quick 1)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--hiredis",
        choices=CHOICES,
        default="off",
        help="redis-py's reply parser for every Redis contender: hiredis's C parser (on), "
        "redis-py's own (off, the default) or a run of each (both)",
    )
    parser.add_argument(
        "--uvloop",
        choices=CHOICES,
        default="off",
        help="the event loop for every contender: uvloop (on), asyncio's (off, the default) "
        "or a run of each (both)",
    )
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="skip the redis-benchmark/pgbench ceilings",
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--nats-url", default=NATS_URL)
    return parser.parse_args(argv)


def _scenarios(args: argparse.Namespace) -> list[Any]:
    unknown = set(args.only) - {scenario.id for scenario in SCENARIOS}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return [s for s in SCENARIOS if not args.only or s.id in args.only]


def _sizes(scenario: Any, args: argparse.Namespace) -> list[int]:
    sizes = sorted(scenario.messages)
    if args.size:
        sizes = [s for s in sizes if s in args.size] or ([sizes[0]] if len(sizes) == 1 else [])
    return sizes


async def limits(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The brokers' ceilings at the run's sizes (the smallest alone with --quick)."""
    sizes = sorted({size for scenario in _scenarios(args) for size in _sizes(scenario, args)})
    if args.no_limits or not sizes:
        return []
    print("broker ceilings (redis-benchmark, pgbench) ...", file=sys.stderr, flush=True)
    found = await measure_limits(
        sizes[:1] if args.quick else sizes, args.quick, args.redis_url, args.postgres_url
    )
    return [limit.as_json() for limit in found]


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The ceilings, then every selected scenario and size against every contender in
    every client setup.

    Setups are interleaved per repetition (warm-up and repetition i of every
    contender in every setup before repetition i + 1), each repetition of a setup
    on a fresh event loop of its kind, so that setups compare like contenders do.
    """
    scenarios = _scenarios(args)
    setups = client_setups(args.hiredis, args.uvloop)
    contenders = [
        c
        for c in all_contenders(args.redis_url, args.postgres_url, args.nats_url)
        if not args.contender or any(text in c.name for text in args.contender)
    ]
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 5)
    settings = RunSettings(args.quick, repeat, args.redis_url)
    meta = anyio.run(describe, args.redis_url, args.postgres_url)
    started = time.perf_counter()
    ceilings = anyio.run(limits, args)
    parsers = {setup.label: apply(setup) for setup in setups}
    cells: list[dict[str, Any]] = []
    for scenario in scenarios:
        for size in _sizes(scenario, args):
            print(f"{scenario.id} {size_label(size)} ...", file=sys.stderr, flush=True)
            plans = {setup: plan_cells(scenario, size, contenders) for setup in setups}
            for rep in repetitions(scenario, settings):
                for setup, planned in plans.items():
                    apply(setup)
                    anyio.run(
                        run_repetition,
                        scenario,
                        size,
                        planned,
                        settings,
                        rep,
                        backend_options=setup.backend_options,
                    )
            for setup, planned in plans.items():
                cells += [{**cell.as_json(), "setup": setup.label} for cell, _ in planned]
    meta.update(
        command=" ".join(["python -m benchmarks", *map(shlex.quote, sys.argv[1:])]),
        quick=args.quick,
        repeat=repeat,
        wall_seconds=time.perf_counter() - started,
        contenders={c.name: c.notes for c in contenders},
        setups=[setup.label for setup in setups],
        redis_parsers=parsers,
    )
    verdicts = [
        {"setup": setup.label, **verdict}
        for setup in setups
        for verdict in targets(Results(cells, setup.label), ceilings)
    ]
    return {"meta": meta, "limits": ceilings, "cells": cells, "targets": verdicts}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = run_all(args)
    markdown = render_markdown(data["meta"], data["cells"], data["limits"])
    print(markdown)
    output = args.output
    if output is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        output = RESULTS / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.write_text(markdown + "\n", encoding="utf-8")
    print(f"results: {output}", file=sys.stderr)
    failed = [c for c in data["cells"] if c["error"]]
    return 1 if failed else 0
