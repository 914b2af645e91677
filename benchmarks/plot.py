"""``python -m benchmarks.plot RESULTS.json [OUT.png]``: delivered events/s vs subscriber count.

Reads a results file of the suite and plots, for each contender, the
median delivered events/s of the 1 -> 1, 1 -> 10 and 1 -> 100 scenarios at
one message size (1 KiB unless ``--size``), on log-log axes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .report import COLUMNS, Results
from .scenarios import size_label

__all__ = ["main"]

POINTS = (("1to1", 1), ("fanout10", 10), ("fanout100", 100))
STYLE = {"raw": ":", "broadcaster": "--", "django": "-.", "channels": "-"}
COLOR = {
    "redis": "tab:red",
    "redis-py": "tab:red",
    "channels_redis": "tab:red",
    "postgres": "tab:blue",
    "asyncpg": "tab:blue",
    "memory": "tab:green",
    "nats": "black",
    "nats-py": "black",
}


def plot(results_file: Path, out: Path, size: int) -> None:
    data = json.loads(results_file.read_text(encoding="utf-8"))
    results = Results(data["cells"])
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for contender in COLUMNS:
        xs, ys = [], []
        for scenario, subscribers in POINTS:
            value = results.median(scenario, size, contender, "events_per_second")
            if value:
                xs.append(subscribers)
                ys.append(value)
        if xs:
            kind, broker = contender.split()
            color = COLOR.get(broker, "tab:gray")
            axes.plot(xs, ys, STYLE.get(kind, "-"), color=color, marker="o", label=contender)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xticks([1, 10, 100], ["1", "10", "100"])
    axes.set_xlabel("subscribers in the process")
    axes.set_ylabel("delivered events/s")
    axes.set_title(f"Fan-out, {size_label(size)} messages ({data['meta']['date']})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot")
    parser.add_argument("results", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=Path("benchmarks/fanout.png"))
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    plot(args.results, args.out, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
