"""CPU per message of `channels bench`'s burst phase, with history off and on (issue #13).

    hatch run python -m benchmarks.history_cpu [--url memory://] [--repeat 5]

Runs `channels bench` (its `run_bench`, burst phase: 50,000 messages to 1
subscriber, 5,000 to 100) in this process and divides the process CPU time
by the messages published. The URL without and with ``history_size=1000``
alternate `repeat` times, so that a busy machine slows both alike; the best
run of each is printed (the least disturbed one).
"""

from __future__ import annotations

import argparse
import time

import anyio

from channels_core.cli._bench import BenchSettings, run_bench

#: (subscribers, messages) of each row.
ROWS = ((1, 50_000), (100, 5_000))


async def cpu_per_message(url: str, subscribers: int, messages: int) -> float:
    """Microseconds of process CPU per published message, for one bench run."""
    settings = BenchSettings(
        url=url, subscribers=subscribers, messages=messages, latency_messages=1, rate=100_000.0
    )
    start = time.process_time()
    await run_bench(settings)
    return (time.process_time() - start) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    separator = "&" if "?" in arguments.url else "?"
    modes = {"off": arguments.url, "on": f"{arguments.url}{separator}history_size=1000"}
    for subscribers, messages in ROWS:
        runs: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(arguments.repeat):
            for mode, url in modes.items():
                runs[mode].append(anyio.run(cpu_per_message, url, subscribers, messages))
        for mode, values in runs.items():
            print(
                f"{subscribers:>3} subscriber(s), history {mode:>3}: best {min(values):.2f} us "
                f"CPU per message ({', '.join(f'{value:.2f}' for value in values)})"
            )


if __name__ == "__main__":
    main()
