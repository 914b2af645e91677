"""What a broker fault costs a running channel: what both failover measurements share.

Used by `sentinel_failover` and `cluster_failover`, which each start their
throwaway setup, build its layer (`layer_options`) and say how to fail it;
`main` parses the same arguments for both and runs and reports the same way.

`publish_through_fault` publishes to one group every 5 ms from one task,
lets `fault` happen after 0.5 s plus `phase_s`, and reads the subscriber
from the first publish (so the warm-up does not count as delivery time)
until the fault is over and 200 publishes after it (and after the gap,
`MessagesLost`, if one shows: with history on there may be none, the log
filling the gap). It returns seconds from the fault to the gap (None
without one), the longest single publish, the longest delivery (from a
publish's start to its arrival: what a failover costs when history
recovers the gap), and how many messages published before the gap (all,
without one) never arrived.

A killed master is noticed on the broker's own timer (a Sentinel pings
every second; a cluster node pings a peer it has not heard from for half
the node timeout), so the gap depends on where that timer stands at the
kill. `phase_s` is uniform in [0, 1 s) per run, drawn from a printed seed
(``--seed`` repeats a run's phases), and each fault's runs are summed up as
median and range.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio

from channels_core import Channel, ChannelLayer, MessagesLost, Subscriber
from channels_core.reconnect import Backoff

#: One run's figures, by name (None: no gap).
Result = dict[str, float | None]
#: Fails the broker; returns once the fault is over.
Fault = Callable[[], Coroutine[Any, Any, None]]
#: One run: (fault name, history_size, phase_s) -> its figures.
Measure = Callable[[str, int, float], Awaitable[Result]]

#: The faults each measurement knows: a planned failover, and the master killed (SIGKILL).
FAULTS = ("failover", "kill")
#: The group published to.
GROUP = "room"
#: The timers a kill's gap depends on repeat within this many seconds.
PHASE_RANGE_S = 1.0


def layer_options(history_size: int) -> dict[str, Any]:
    """The layer's options: publishes wait out the failover, reconnects are quick."""
    return {
        "publish_timeout": 15,
        "history_size": history_size,
        "reconnect_backoff": Backoff(initial=0.02, maximum=0.2),
    }


async def through_fault(layer: ChannelLayer, fault: Fault, phase_s: float) -> Result:
    """`publish_through_fault` on a channel of `layer` and a subscriber of `GROUP`."""
    async with Channel(layer) as channel, channel.subscribe(GROUP) as subscriber:
        return await publish_through_fault(channel, subscriber, GROUP, fault, phase_s)


async def publish_through_fault(
    channel: Channel,
    subscriber: Subscriber,
    group: str,
    fault: Fault,
    phase_s: float = 0.0,
) -> Result:
    published: list[int] = []
    began: dict[int, float] = {}
    received: set[int] = set()
    longest = longest_delivery = 0.0
    stop = anyio.Event()
    fault_over = anyio.Event()
    published_at_end = 0  # published when the fault's task returned
    fault_at = 0.0

    async def publish() -> None:
        nonlocal longest
        number = 0
        while not stop.is_set():
            began[number] = time.monotonic()
            await channel.publish(group, number)
            longest = max(longest, time.monotonic() - began[number])
            published.append(number)
            number += 1
            await anyio.sleep(0.005)

    async def fail() -> None:
        nonlocal fault_at, published_at_end
        await anyio.sleep(0.5 + phase_s)
        fault_at = time.monotonic()
        await fault()
        published_at_end = len(published)
        fault_over.set()

    def receive(number: int) -> None:
        nonlocal longest_delivery
        received.add(number)
        longest_delivery = max(longest_delivery, time.monotonic() - began[number])

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publish)
        tasks.start_soon(fail)
        gap_after: float | None = None
        published_at_gap = 0
        while (
            not fault_over.is_set()
            or len(published) < max(published_at_end, published_at_gap) + 200
        ):
            try:
                receive((await subscriber.receive()).message)
            except MessagesLost:
                gap_after = time.monotonic() - fault_at
                published_at_gap = len(published)
        stop.set()
    with anyio.move_on_after(2):  # the last ones still on their way
        while not set(published) <= received:
            receive((await subscriber.receive()).message)
    before_gap = published[:published_at_gap] if gap_after is not None else published
    lost = len(set(before_gap) - received)
    return {"gap_after_s": None if gap_after is None else round(gap_after, 2),
            "longest_publish_s": round(longest, 2),
            "longest_delivery_s": round(longest_delivery, 2),
            "lost": lost, "published": len(published),
            "phase_s": round(phase_s, 3)}  # fmt: skip


def summary(fault: str, results: list[Result]) -> str:
    """One line for `fault`'s runs: each timing's median (min-max), and the losses."""
    parts = []
    for name in ("gap_after_s", "longest_publish_s", "longest_delivery_s"):
        values = [value for result in results if (value := result[name]) is not None]
        if len(values) < len(results):
            parts.append(f"{name} none in {len(results) - len(values)} run(s)")
        if values:
            median = statistics.median(values)
            parts.append(f"{name} median {median:.2f} ({min(values):.2f}-{max(values):.2f})")
    lost = ", ".join(str(result["lost"]) for result in results)
    return f"{fault}, {len(results)} run(s): {'; '.join(parts)}; lost {lost}"


def main(description: str, measure: Measure, prog: str) -> None:
    """Parse the arguments, run `measure` `--runs` times per fault, print each run and a summary."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("faults", nargs="*", default=FAULTS, help="failover, kill (default: both)")
    parser.add_argument("--runs", type=int, default=3, help="runs per fault (default: 3)")
    parser.add_argument("--history", type=int, default=0, help="history_size (0: off)")
    parser.add_argument(
        "--seed", type=int, help="seed of the runs' phases (default: a new one, printed)"
    )
    arguments = parser.parse_args()
    if unknown := sorted(set(arguments.faults) - set(FAULTS)):
        parser.error(f"unknown fault(s) {', '.join(unknown)}: choose from {', '.join(FAULTS)}")
    seed = random.randrange(2**32) if arguments.seed is None else arguments.seed
    phases = random.Random(seed)
    print(f"seed {seed}", flush=True)
    for fault in arguments.faults:
        results = []
        for _ in range(arguments.runs):
            phase_s = phases.uniform(0, PHASE_RANGE_S)
            results.append(anyio.run(measure, fault, arguments.history, phase_s))
            print(fault, results[-1], flush=True)
        print(summary(fault, results), flush=True)
