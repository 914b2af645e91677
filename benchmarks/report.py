"""Turns the cells of a run into ratios, target verdicts and a markdown report.

Ratios are medians of per-repetition ratios (repetition i of ours over
repetition i of the baseline, measured back to back), as the issue asks.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from .scenarios import SCENARIOS, SIZES, size_label

__all__ = ["Results", "render_markdown"]

COLUMNS = (
    "raw redis-py",
    "broadcaster redis",
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
    ("postgres: ours / raw", "channels postgres", "raw asyncpg"),
    ("postgres: ours / broadcaster", "channels postgres", "broadcaster postgres"),
    ("nats: ours / raw", "channels nats", "raw nats-py"),
    ("memory: ours / broadcaster", "channels memory", "broadcaster memory"),
)


class Results:
    """Lookup over the JSON cells of one run."""

    def __init__(self, cells: Iterable[dict[str, Any]]) -> None:
        self.cells = {(c["scenario"], c["size"], c["contender"]): c for c in cells}

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

    def ratio(self, scenario: str, size: int, ours: str, base: str, key: str) -> float | None:
        """Median over repetitions of ours[i] / base[i]."""
        a = self.values(scenario, size, ours, key)
        b = self.values(scenario, size, base, key)
        pairs = [x / y for x, y in zip(a, b, strict=False) if y]
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
                value = results.median(scenario.id, size, contender, "events_per_second")
                row.append(
                    _k(value) if value else results.why_missing(scenario.id, size, contender)
                )
            rows.append(row)
            ratio_rows.append(
                [scenario.id, size_label(size)]
                + [
                    _x(results.ratio(scenario.id, size, ours, base, "events_per_second"))
                    for _, ours, base in PAIRS
                ]
            )
    if not rows:
        return []
    return [
        "### Delivered events/s (median of the repetitions)",
        "",
        *_table(["scenario", "size", *COLUMNS], rows),
        "",
        "### Ratios (median of per-repetition ratios; > 1 means ours is faster)",
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
                value = results.median(scenario, size, contender, "cpu_us_per_message")
                share = results.median(scenario, size, contender, "cpu_share")
                row.append(
                    f"{value:,.0f} ({100 * share:.0f}%)"
                    if value is not None and share is not None
                    else results.why_missing(scenario, size, contender)
                )
            if any(cell not in ("-", "not run", "n/a", "error") for cell in row[2:]):
                rows.append(row)
    if not rows:
        return []
    return [
        "### CPU per message in the benchmark process, in us (and CPU busy share of wall time)",
        "",
        *_table(["scenario", "size", *COLUMNS], rows),
        "",
    ]


def latency_table(results: Results) -> list[str]:
    rows = []
    for size in SIZES:
        if not any(results.cell("latency", size, c) for c in COLUMNS):
            continue
        row = [size_label(size)]
        for contender in COLUMNS:
            p50 = results.median("latency", size, contender, "p50_ms")
            p99 = results.median("latency", size, contender, "p99_ms")
            row.append(
                f"{p50:.2f} / {p99:.2f}"
                if p50 is not None and p99 is not None
                else results.why_missing("latency", size, contender)
            )
        rows.append(row)
    if not rows:
        return []
    return [
        "### Latency p50 / p99 in ms (paced at 1,000 msg/s; median over repetitions)",
        "",
        *_table(["size", *COLUMNS], rows),
        "",
    ]


def memory_table(results: Results) -> list[str]:
    rows = []
    for contender in COLUMNS:
        cell = results.cell("idle-memory", 100, contender)
        if cell is None:
            continue
        value = results.median("idle-memory", 100, contender, "bytes_per_subscriber")
        count = cell["reps"][0]["subscribers"] if cell["reps"] else 0
        rows.append(
            [contender, "-" if value is None else f"{value:,.0f}", str(count), cell["error"] or ""]
        )
    if not rows:
        return []
    return [
        "### Memory per idle subscriber (Python heap, tracemalloc)",
        "",
        *_table(["contender", "bytes / subscriber", "subscribers", "error"], rows),
        "",
    ]


def server_table(results: Results) -> list[str]:
    rows = []
    for (scenario, size, contender), cell in sorted(results.cells.items()):
        servers = [rep["server"] for rep in cell["reps"] if rep.get("server")]
        if not servers:
            continue
        per_message = statistics.median(s["deliveries_per_message"] for s in servers)
        rows.append(
            [
                scenario,
                size_label(size),
                contender,
                str(servers[0]["pubsub_numsub"]),
                f"{per_message:.2f}",
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


def targets(results: Results) -> list[dict[str, Any]]:
    """Each target of issue 5 with what this run measured and whether it is met."""
    verdicts: list[dict[str, Any]] = []

    def add(name: str, measured: dict[str, float | None], check: Any) -> None:
        known = {k: v for k, v in measured.items() if v is not None}
        status = (
            "not measured"
            if not known
            else ("met" if all(map(check, known.values())) else "missed")
        )
        verdicts.append({"target": name, "measured": measured, "status": status})

    sizes = {size_label(s): s for s in SIZES}
    eps = "events_per_second"
    add(
        "Redis 1->1 >= 0.9x raw redis-py",
        {
            lbl: results.ratio("1to1", s, "channels redis", "raw redis-py", eps)
            for lbl, s in sizes.items()
        },
        lambda v: v >= 0.9,
    )
    add(
        "Redis 1->1 >= 3x broadcaster redis",
        {
            lbl: results.ratio("1to1", s, "channels redis", "broadcaster redis", eps)
            for lbl, s in sizes.items()
        },
        lambda v: v >= 3.0,
    )
    add(
        "PostgreSQL 1->1 >= 0.9x raw asyncpg",
        {
            lbl: results.ratio("1to1", s, "channels postgres", "raw asyncpg", eps)
            for lbl, s in sizes.items()
        },
        lambda v: v >= 0.9,
    )
    add(
        "NATS 1->1 >= 0.9x raw nats-py",
        {
            lbl: results.ratio("1to1", s, "channels nats", "raw nats-py", eps)
            for lbl, s in sizes.items()
        },
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
        {
            lbl: results.ratio("fanout100", s, "channels redis", "broadcaster redis", eps)
            for lbl, s in sizes.items()
        },
        lambda v: v >= 10.0,
    )
    add(
        "memory 1->100 >= 1,000,000 events/s",
        {lbl: results.median("fanout100", s, "channels memory", eps) for lbl, s in sizes.items()},
        lambda v: v >= 1_000_000,
    )
    add(
        "memory 1->100 ahead of broadcaster memory",
        {
            lbl: results.ratio("fanout100", s, "channels memory", "broadcaster memory", eps)
            for lbl, s in sizes.items()
        },
        lambda v: v > 1.0,
    )
    add(
        "Redis p99 latency <= 2x raw redis-py",
        {
            lbl: results.ratio("latency", s, "channels redis", "raw redis-py", "p99_ms")
            for lbl, s in sizes.items()
        },
        lambda v: v <= 2.0,
    )
    return verdicts


def _deliveries(results: Results, scenario: str, size: int, contender: str) -> float | None:
    cell = results.cell(scenario, size, contender)
    if cell is None:
        return None
    servers = [rep["server"] for rep in cell["reps"] if rep.get("server")]
    if not servers:
        return None
    if any(s["pubsub_numsub"] != 1 for s in servers):
        return float(max(s["pubsub_numsub"] for s in servers))
    return float(statistics.median(s["deliveries_per_message"] for s in servers))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value > 1000 else f"{value:.2f}"


def targets_table(verdicts: list[dict[str, Any]]) -> list[str]:
    rows = []
    for verdict in verdicts:
        measured = ", ".join(
            f"{label}: {_number(value)}" for label, value in verdict["measured"].items()
        )
        rows.append([verdict["target"], measured, verdict["status"]])
    return ["### Targets", "", *_table(["target", "measured (per size)", "status"], rows), ""]


def render_markdown(meta: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    """The whole report: machine, tables, server stats, targets."""
    results = Results(cells)
    versions = meta["versions"]
    head = [
        f"## Results {meta['date']}",
        "",
        f"Machine: {meta['nproc']} CPUs, {meta['cpu']}, Python {meta['python']}, "
        f"Redis {meta['redis_server']}, PostgreSQL {meta['postgres_server']}; "
        f"redis-py {versions.get('redis')}, asyncpg {versions.get('asyncpg')}, "
        f"broadcaster {versions.get('broadcaster')}, anyio {versions.get('anyio')}.",
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
    body = (
        delivery_tables(results)
        + cpu_table(results)
        + latency_table(results)
        + memory_table(results)
        + server_table(results)
        + targets_table(targets(results))
    )
    return "\n".join(head + body + (["Notes:", "", *notes, ""] if notes else []))
