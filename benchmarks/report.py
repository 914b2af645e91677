"""Turns the cells of a run into ratios, target verdicts and a markdown report.

Ratios are medians of per-repetition ratios (repetition i of ours over
repetition i of the baseline, measured back to back). Every figure is shown
as ``median (min-max)`` over the repetitions, so that a table carries its
spread; target verdicts use the median and say when not every repetition
met the target.

``python -m benchmarks.report RUN.json [--markdown FILE.md]`` renders the
report of a saved run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .scenarios import HISTORY_SCENARIOS, HISTORY_SUFFIX, SCENARIOS, SIZES, size_label

__all__ = ["Results", "render_markdown", "targets"]

COLUMNS = (
    "raw redis-py",
    "broadcaster redis",
    "django channels_redis",
    "channels redis",
    "raw asyncpg",
    "broadcaster postgres",
    "channels postgres",
    "raw nats-py",
    "channels nats",
    "broadcaster memory",
    "channels memory",
)

#: (label, ours, baseline) pairs shown as ratio columns.
PAIRS = (
    ("redis: ours / raw", "channels redis", "raw redis-py"),
    ("redis: ours / broadcaster", "channels redis", "broadcaster redis"),
    ("redis: ours / django", "channels redis", "django channels_redis"),
    ("postgres: ours / raw", "channels postgres", "raw asyncpg"),
    ("postgres: ours / broadcaster", "channels postgres", "broadcaster postgres"),
    ("nats: ours / raw", "channels nats", "raw nats-py"),
    ("memory: ours / broadcaster", "channels memory", "broadcaster memory"),
)


def setups_of(cells: Iterable[dict[str, Any]]) -> list[str | None]:
    """The client setups of a run's cells, in run order (None: a run from before setups)."""
    return list(dict.fromkeys(c.get("setup") for c in cells))


class Results:
    """Lookup over the JSON cells of one client setup of a run (the first if not named)."""

    def __init__(self, cells: Iterable[dict[str, Any]], setup: str | None = None) -> None:
        cells = list(cells)
        if setup is None and cells:
            setup = cells[0].get("setup")
        self.setup = setup
        self.cells = {
            (c["scenario"], c["size"], c["contender"]): c for c in cells if c.get("setup") == setup
        }

    def cell(self, scenario: str, size: int, contender: str) -> dict[str, Any] | None:
        return self.cells.get((scenario, size, contender))

    def values(self, scenario: str, size: int, contender: str, key: str) -> list[float]:
        cell = self.cell(scenario, size, contender)
        if cell is None:
            return []
        return [float(rep[key]) for rep in cell["reps"] if rep.get(key) is not None]

    def median(self, scenario: str, size: int, contender: str, key: str) -> float | None:
        values = self.values(scenario, size, contender, key)
        return statistics.median(values) if values else None

    def ratios(self, scenario: str, size: int, ours: str, base: str, key: str) -> list[float]:
        """ours[i] / base[i] for every repetition i (run back to back)."""
        a = self.values(scenario, size, ours, key)
        b = self.values(scenario, size, base, key)
        return [x / y for x, y in zip(a, b, strict=False) if y]

    def ratio(self, scenario: str, size: int, ours: str, base: str, key: str) -> float | None:
        """Median over repetitions of ours[i] / base[i]."""
        pairs = self.ratios(scenario, size, ours, base, key)
        return statistics.median(pairs) if pairs else None

    def why_missing(self, scenario: str, size: int, contender: str) -> str:
        cell = self.cell(scenario, size, contender)
        if cell is None:
            return "not run"
        if cell["skipped"]:
            return "n/a"
        if cell["error"]:
            return "error"
        return "-"


def _k(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f}M"
    return f"{value / 1000:.1f}k"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _spread(values: Sequence[float], show: Callable[[float], str]) -> str:
    """``median (min-max)`` of the repetitions; one value alone when there is one."""
    if not values:
        return "-"
    middle = show(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} ({show(min(values))}-{show(max(values))})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def delivery_tables(results: Results) -> list[str]:
    rows, ratio_rows = [], []
    for scenario in SCENARIOS:
        if scenario.kind != "delivery":
            continue
        for size in SIZES:
            if not any(results.cell(scenario.id, size, c) for c in COLUMNS):
                continue
            row = [scenario.id, size_label(size)]
            for contender in COLUMNS:
                values = results.values(scenario.id, size, contender, "events_per_second")
                row.append(
                    _spread(values, _k)
                    if any(values)
                    else results.why_missing(scenario.id, size, contender)
                )
            rows.append(row)
            ratio_rows.append(
                [scenario.id, size_label(size)]
                + [
                    _spread(results.ratios(scenario.id, size, ours, base, "events_per_second"), _x)
                    for _, ours, base in PAIRS
                ]
            )
    if not rows:
        return []
    return [
        "### Delivered events/s: median (min-max) of the repetitions",
        "",
        *_table(["scenario", "size", *COLUMNS], rows),
        "",
        "### Ratios: median (min-max) of per-repetition ratios; > 1 means ours is faster",
        "",
        *_table(["scenario", "size", *(label for label, _, _ in PAIRS)], ratio_rows),
        "",
    ]


def cpu_table(results: Results) -> list[str]:
    """CPU time of this process per published message: the cost each contender adds."""
    rows = []
    for scenario in ("1to1", "fanout100"):
        for size in SIZES:
            row = [scenario, size_label(size)]
            for contender in COLUMNS:
                values = results.values(scenario, size, contender, "cpu_us_per_message")
                share = results.median(scenario, size, contender, "cpu_share")
                row.append(
                    f"{_spread(values, '{:,.0f}'.format)}, {100 * share:.0f}%"
                    if values and share is not None
                    else results.why_missing(scenario, size, contender)
                )
            if any(cell not in ("-", "not run", "n/a", "error") for cell in row[2:]):
                rows.append(row)
    if not rows:
        return []
    return [
        "### CPU per message in the benchmark process, in us: median (min-max); "
        "then the median CPU busy share of wall time",
        "",
        *_table(["scenario", "size", *COLUMNS], rows),
        "",
    ]


def history_table(results: Results) -> list[str]:
    """Each of our layers with history on beside itself with history off (same repetitions)."""
    logged = sorted({name for _, _, name in results.cells if name.endswith(HISTORY_SUFFIX)})
    rows = []
    for name in logged:
        base = name.removesuffix(HISTORY_SUFFIX)
        for scenario in SCENARIOS:
            if scenario.id not in HISTORY_SCENARIOS:
                continue
            for size in SIZES:
                on = results.values(scenario.id, size, name, "events_per_second")
                if not on:
                    continue
                off = results.values(scenario.id, size, base, "events_per_second")
                cpu = [
                    _spread(results.values(scenario.id, size, who, "cpu_us_per_message"), _us)
                    for who in (base, name)
                ]
                ratios = results.ratios(scenario.id, size, name, base, "events_per_second")
                rows.append(
                    [
                        base,
                        scenario.id,
                        size_label(size),
                        _spread(off, _k),
                        _spread(on, _k),
                        _spread(ratios, _x),
                        *cpu,
                    ]
                )
    if not rows:
        return []
    header = ["layer", "scenario", "size", "events/s off", "events/s on", "on / off"]
    return [
        "### History on (`" + HISTORY_SUFFIX.strip() + "` rows) beside history off: "
        "median (min-max) of the repetitions",
        "",
        *_table([*header, "CPU us/msg off", "CPU us/msg on"], rows),
        "",
    ]


def _us(value: float) -> str:
    return f"{value:,.0f}"


def latency_table(results: Results) -> list[str]:
    rows = []
    for size in SIZES:
        if not any(results.cell("latency", size, c) for c in COLUMNS):
            continue
        row = [size_label(size)]
        for contender in COLUMNS:
            p50 = results.values("latency", size, contender, "p50_ms")
            p99 = results.values("latency", size, contender, "p99_ms")
            row.append(
                f"{_spread(p50, '{:.2f}'.format)} / {_spread(p99, '{:.2f}'.format)}"
                if p50 and p99
                else results.why_missing("latency", size, contender)
            )
        rows.append(row)
    if not rows:
        return []
    return [
        "### Latency p50 / p99 in ms (paced at 1,000 msg/s): median (min-max) of the repetitions",
        "",
        *_table(["size", *COLUMNS], rows),
        "",
    ]


def chat_table(results: Results) -> list[str]:
    """The chat scenario: offered vs achieved, deliveries, latency from due time, CPU."""
    rows = []
    for contender in COLUMNS:
        cell = results.cell("chat", 100, contender)
        if cell is None:
            continue
        if not cell["reps"]:
            rows.append([contender, results.why_missing("chat", 100, contender), *["-"] * 5])
            continue

        def spread(key: str, show: Callable[[float], str], name: str = contender) -> str:
            return _spread(results.values("chat", 100, name, key), show)

        rows.append(
            [
                contender,
                f"{cell['reps'][0]['offered_rate']:,.0f} / "
                + spread("published_rate", "{:,.0f}".format),
                spread("events_per_second", _k),
                spread("p50_ms", "{:.2f}".format),
                spread("p99_ms", "{:.2f}".format),
                spread("cpu_us_per_event", "{:,.1f}".format),
                spread("cpu_share", lambda v: f"{100 * v:.0f}%"),
            ]
        )
    if not rows:
        return []
    shape = next(
        (c["reps"][0] for c in results.cells.values() if c["scenario"] == "chat" and c["reps"]),
        None,
    )
    title = (
        f"{shape['groups']:,} groups, {shape['subscribers']:,} subscribers, "
        f"{shape['messages']:,} messages"
        if shape
        else "not run"
    )
    header = [
        "contender",
        "msg/s offered / published",
        "delivered events/s",
        "p50 ms",
        "p99 ms",
        "CPU us / delivered event",
        "CPU busy",
    ]
    return [
        f"### Chat ({title}; latency from each message's due time): median (min-max)",
        "",
        *_table(header, rows),
        "",
    ]


#: (contender's scenario, limit's setup) pairs: whose rate is compared with which ceiling.
SHARES = {
    "redis": (("1to1", "-c 1"), ("publishers10", "-c 10"), ("publishers10", "-c 1 -P 32")),
    "postgres": (("1to1", "-c 1 -j 1"), ("publishers10", "-c 10 -j 2")),
}


def limits_table(limits: Sequence[dict[str, Any]]) -> list[str]:
    """The brokers' ceilings measured by their own tools at the start of the run."""
    if not limits:
        return []
    rows = [
        [
            limit["tool"],
            f"`{limit['setup']}`",
            size_label(limit["size"]),
            f"{limit['rate']:,.0f}" if limit["rate"] is not None else f"n/a: {limit['error']}",
        ]
        for limit in limits
    ]
    return [
        "### Broker ceilings: PUBLISH / NOTIFY per second from the servers' own tools",
        "",
        "`redis-benchmark ... PUBLISH bench_limit <payload>` and `pgbench -n -f notify.sql` "
        "(`SELECT pg_notify('bench_limit', '<payload>')`), over loopback, nobody subscribed.",
        "",
        *_table(["tool", "options", "size", "messages/s"], rows),
        "",
    ]


def shares_table(results: Results, limits: Sequence[dict[str, Any]]) -> list[str]:
    """Every Redis/PostgreSQL contender's publish rate as a share of its broker's ceiling."""
    rate = {(c["broker"], c["setup"], c["size"]): c["rate"] for c in limits if c["rate"]}
    rows = []
    for contender in COLUMNS:
        broker = next(
            (c["broker"] for c in results.cells.values() if c["contender"] == contender), None
        )
        if broker not in SHARES:
            continue
        for size in SIZES:
            row = [contender, size_label(size)]
            for scenario, setup in SHARES[broker]:
                ceiling = rate.get((broker, setup, size))
                mine = results.values(scenario, size, contender, "messages_per_second")
                row.append(
                    _spread([v / ceiling for v in mine], lambda v: f"{100 * v:.0f}%")
                    if ceiling and mine
                    else "-"
                )
            if any(value != "-" for value in row[2:]):
                rows.append(row + [""] * (3 - len(SHARES[broker])))
    if not rows:
        return []
    return [
        "### Share of the broker's ceiling: published messages/s over the tool's rate",
        "",
        "Columns: 1->1 over `-c 1`; publishers10 over `-c 10` (pgbench: `-c 10 -j 2`); "
        "publishers10 over `redis-benchmark -c 1 -P 32` (one pipelined connection).",
        "",
        *_table(
            ["contender", "size", "1to1 / -c 1", "publishers10 / -c 10", "publishers10 / -P 32"],
            rows,
        ),
        "",
    ]


def setup_effect_table(cells: Sequence[dict[str, Any]]) -> list[str]:
    """Each contender's CPU cost in every client setup against itself in the first setup.

    CPU per message (delivery scenarios) or per delivered event (the chat, whose
    rate is fixed) is what a parser or an event loop changes, and unlike wall
    time it barely moves when other processes load the machine. Ratios are per
    repetition (the setups ran interleaved), then median (min-max); < 1: cheaper.
    """
    setups = setups_of(cells)
    if len(setups) < 2:
        return []
    base, others = Results(cells, setups[0]), [Results(cells, s) for s in setups[1:]]
    rows = []
    for scenario in SCENARIOS:
        key = {"delivery": "cpu_us_per_message", "chat": "cpu_us_per_event"}.get(scenario.kind)
        if key is None:
            continue
        for size in SIZES:
            for contender in COLUMNS:
                first = base.values(scenario.id, size, contender, key)
                if not first:
                    continue
                unit = "message" if key == "cpu_us_per_message" else "delivered event"
                shown = f"{statistics.median(first):,.1f} us per {unit}"
                ratios = [
                    [
                        x / y
                        for x, y in zip(
                            other.values(scenario.id, size, contender, key), first, strict=False
                        )
                        if y
                    ]
                    for other in others
                ]
                rows.append(
                    [scenario.id, size_label(size), contender, shown]
                    + [_spread(values, _x) for values in ratios]
                )
    return [
        f"### Client setup effect: CPU of each contender against itself with `{setups[0]}`",
        "",
        "Process CPU per published message (chat: per delivered event) over the first "
        "setup's; < 1 is cheaper. Per-repetition ratios (the setups ran interleaved, "
        "repetition by repetition), median (min-max). The memory contenders do not use "
        "redis-py: their hiredis column is the noise floor. Delivered events/s per setup "
        "are in each setup's tables above.",
        "",
        *_table(["scenario", "size", "contender", *map(str, setups)], rows),
        "",
    ]


def memory_table(results: Results) -> list[str]:
    rows = []
    for contender in COLUMNS:
        cell = results.cell("idle-memory", 100, contender)
        if cell is None:
            continue
        values = results.values("idle-memory", 100, contender, "bytes_per_subscriber")
        count = cell["reps"][0]["subscribers"] if cell["reps"] else 0
        rows.append(
            [
                contender,
                _spread(values, "{:,.0f}".format),
                str(count),
                str(len(values)),
                cell["error"] or "",
            ]
        )
    if not rows:
        return []
    header = ["contender", "bytes / subscriber", "subscribers", "repetitions", "error"]
    return [
        "### Memory per idle subscriber (Python heap, tracemalloc): median (min-max)",
        "",
        *_table(header, rows),
        "",
    ]


def server_table(results: Results) -> list[str]:
    rows = []
    for (scenario, size, contender), cell in sorted(results.cells.items()):
        servers = [rep["server"] for rep in cell["reps"] if rep.get("server")]
        if not servers:
            continue
        per_message = [float(s["deliveries_per_message"]) for s in servers]
        rows.append(
            [
                scenario,
                size_label(size),
                contender,
                str(servers[0]["pubsub_numsub"]),
                _spread(per_message, "{:.2f}".format),
            ]
        )
    if not rows:
        return []
    return [
        "### Redis's own stats during fan-out",
        "",
        "`PUBSUB NUMSUB` = subscribed connections for the group; deliveries/message = "
        "change of `INFO stats total_net_output_bytes` / (messages x encoded size).",
        "",
        *_table(["scenario", "size", "contender", "PUBSUB NUMSUB", "deliveries / message"], rows),
        "",
    ]


def targets(results: Results, limits: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Each target with what this run measured and whether it is met.

    The verdict uses the median of the repetitions; ``"met by the median
    only"`` says that at least one repetition missed it. `limits` (the
    brokers' ceilings of the same run) feed the share-of-ceiling targets.
    """
    verdicts: list[dict[str, Any]] = []

    def add(name: str, measured: dict[str, list[float]], check: Callable[[float], bool]) -> None:
        known = {label: values for label, values in measured.items() if values}
        medians = {label: statistics.median(values) for label, values in known.items()}
        if not known:
            status = "not measured"
        elif not all(map(check, medians.values())):
            status = "missed"
        elif all(check(value) for values in known.values() for value in values):
            status = "met"
        else:
            status = "met by the median only"
        verdicts.append(
            {
                "target": name,
                "measured": {label: medians.get(label) for label in measured},
                "spread": {
                    label: [min(values), medians[label], max(values)]
                    for label, values in known.items()
                },
                "status": status,
            }
        )

    sizes = {size_label(s): s for s in SIZES}
    eps = "events_per_second"

    def ratios(scenario: str, ours: str, base: str, key: str = eps) -> dict[str, list[float]]:
        return {lbl: results.ratios(scenario, s, ours, base, key) for lbl, s in sizes.items()}

    add(
        "Redis 1->1 >= 0.9x raw redis-py",
        ratios("1to1", "channels redis", "raw redis-py"),
        lambda v: v >= 0.9,
    )
    add(
        "Redis 1->1 >= 3x broadcaster redis",
        ratios("1to1", "channels redis", "broadcaster redis"),
        lambda v: v >= 3.0,
    )
    add(
        "PostgreSQL 1->1 >= 0.9x raw asyncpg",
        ratios("1to1", "channels postgres", "raw asyncpg"),
        lambda v: v >= 0.9,
    )
    add(
        "NATS 1->1 >= 0.9x raw nats-py",
        ratios("1to1", "channels nats", "raw nats-py"),
        lambda v: v >= 0.9,
    )
    add(
        "Redis 1->100: one broker delivery per message (NUMSUB, bytes out)",
        {
            lbl: _deliveries(results, "fanout100", s, "channels redis")
            for lbl, s in sizes.items()
            if s >= 1024
        },
        lambda v: v <= 1.2,
    )
    add(
        "Redis 1->100 >= 10x broadcaster redis",
        ratios("fanout100", "channels redis", "broadcaster redis"),
        lambda v: v >= 10.0,
    )
    add(
        "memory 1->100 >= 1,000,000 events/s",
        {lbl: results.values("fanout100", s, "channels memory", eps) for lbl, s in sizes.items()},
        lambda v: v >= 1_000_000,
    )
    add(
        "memory 1->100 ahead of broadcaster memory",
        ratios("fanout100", "channels memory", "broadcaster memory"),
        lambda v: v > 1.0,
    )
    add(
        "Redis p99 latency <= 2x raw redis-py",
        ratios("latency", "channels redis", "raw redis-py", "p99_ms"),
        lambda v: v <= 2.0,
    )
    _performance_targets(results, limits, add)
    return verdicts


#: (layer label, ours, raw client, broadcaster) for issue #15's per-call targets.
_PER_CALL = (
    ("Redis", "channels redis", "raw redis-py", "broadcaster redis"),
    ("PostgreSQL", "channels postgres", "raw asyncpg", "broadcaster postgres"),
    ("NATS", "channels nats", "raw nats-py", None),
    ("memory", "channels memory", None, "broadcaster memory"),
)


def _performance_targets(
    results: Results,
    limits: Sequence[dict[str, Any]],
    add: Callable[[str, dict[str, list[float]], Callable[[float], bool]], None],
) -> None:
    """The targets of issue #15 (coalescing, cost per call, fan-out), at 100 B and 1 KiB,
    each handed to `add` like the others."""
    sizes = {size_label(s): s for s in SIZES if s <= 1024}
    eps = "events_per_second"

    def ratios(scenario: str, ours: str, base: str) -> dict[str, list[float]]:
        return {lbl: results.ratios(scenario, s, ours, base, eps) for lbl, s in sizes.items()}

    for scenario in ("1to1", "groups100"):
        for layer, ours, raw, broadcaster in _PER_CALL:
            if raw is not None:
                add(
                    f"{layer} {scenario} >= 1.0x {raw}",
                    ratios(scenario, ours, raw),
                    _at_least(1.0),
                )
            if broadcaster is not None:
                floor = 1.2 if layer == "memory" else 1.1
                add(
                    f"{layer} {scenario} >= {floor}x {broadcaster}",
                    ratios(scenario, ours, broadcaster),
                    _at_least(floor),
                )
    add(
        "Redis publishers10 >= 3x raw redis-py",
        ratios("publishers10", "channels redis", "raw redis-py"),
        _at_least(3.0),
    )
    add(
        "PostgreSQL publishers10 >= 3x raw asyncpg",
        ratios("publishers10", "channels postgres", "raw asyncpg"),
        _at_least(3.0),
    )
    ceiling = {
        c["size"]: c["rate"]
        for c in limits
        if c["broker"] == "redis" and c["setup"] == "-c 10" and c["rate"]
    }
    add(
        "Redis publishers10 >= 40% of redis-benchmark -c 10",
        {
            lbl: [
                v / ceiling[s]
                for v in results.values("publishers10", s, "channels redis", "messages_per_second")
            ]
            for lbl, s in sizes.items()
            if s in ceiling
        },
        _at_least(0.4),
    )
    add(
        "Redis fanout100 >= 2x broadcaster redis",
        ratios("fanout100", "channels redis", "broadcaster redis"),
        _at_least(2.0),
    )


def _at_least(floor: float) -> Callable[[float], bool]:
    return lambda value: value >= floor


def _deliveries(results: Results, scenario: str, size: int, contender: str) -> list[float]:
    """Deliveries per message of each repetition (the NUMSUB count if that is not 1)."""
    cell = results.cell(scenario, size, contender)
    if cell is None:
        return []
    servers = [rep["server"] for rep in cell["reps"] if rep.get("server")]
    return [
        float(s["deliveries_per_message"] if s["pubsub_numsub"] == 1 else s["pubsub_numsub"])
        for s in servers
    ]


def _number(value: float) -> str:
    return f"{value:,.0f}" if value > 1000 else f"{value:.2f}"


def targets_table(verdicts: list[dict[str, Any]]) -> list[str]:
    rows = []
    for verdict in verdicts:
        measured = ", ".join(
            f"{label}: {_number(middle)} ({_number(low)}-{_number(high)})"
            for label, (low, middle, high) in verdict["spread"].items()
        )
        rows.append([verdict["target"], measured or "-", verdict["status"]])
    return [
        "### Targets",
        "",
        "Measured: median (min-max) of the repetitions per size. The verdict uses the "
        "median; *met by the median only* means at least one repetition missed the target.",
        "",
        *_table(["target", "measured (per size)", "status"], rows),
        "",
    ]


def render_markdown(
    meta: dict[str, Any], cells: list[dict[str, Any]], limits: Sequence[dict[str, Any]] = ()
) -> str:
    """The whole report: machine, ceilings, then per client setup the tables, server
    stats, shares of the ceilings and targets; then the setups compared."""
    versions = meta["versions"]
    head = [
        f"## Results {meta['date']}",
        "",
        f"Machine: {meta['nproc']} CPUs, {meta['cpu']}, Python {meta['python']}, "
        f"Redis {meta['redis_server']}, PostgreSQL {meta['postgres_server']}; "
        f"redis-py {versions.get('redis')}, asyncpg {versions.get('asyncpg')}, "
        f"broadcaster {versions.get('broadcaster')}, channels_redis "
        f"{versions.get('channels-redis')}, hiredis {versions.get('hiredis')}, "
        f"uvloop {versions.get('uvloop')}, anyio {versions.get('anyio')}.",
        f"Commit: {meta.get('commit') or 'unknown'}. Command: `{meta['command']}` "
        f"({meta['repeat']} repetitions after a warm-up, "
        f"{meta['wall_seconds']:.0f} s).",
        "",
    ]
    skipped = sorted({c["skipped"] for c in cells if c["skipped"]})
    errors = [
        f"{c['contender']} / {c['scenario']} / {size_label(c['size'])}: {c['error']}"
        for c in cells
        if c["error"]
    ]
    notes = [f"- n/a: {reason}" for reason in skipped] + [f"- error: {e}" for e in errors]
    setups = setups_of(cells)
    body = limits_table(limits)
    for setup in setups:
        results = Results(cells, setup)
        if setup is not None:
            body += [f"### Client setup: {setup}", ""]
        body += (
            delivery_tables(results)
            + cpu_table(results)
            + history_table(results)
            + latency_table(results)
            + chat_table(results)
            + memory_table(results)
            + server_table(results)
            + shares_table(results, limits)
            + targets_table(targets(results, limits))
        )
    body += setup_effect_table(cells)
    return "\n".join(head + body + (["Notes:", "", *notes, ""] if notes else []))


def main(argv: list[str] | None = None) -> int:
    """Render the report of a saved run (its JSON file) again."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("run", type=Path, help="a run's JSON file, e.g. benchmarks/latest.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    data = json.loads(args.run.read_text(encoding="utf-8"))
    markdown = render_markdown(data["meta"], data["cells"], data.get("limits", ()))
    print(markdown)
    if args.markdown is not None:
        args.markdown.write_text(markdown + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
