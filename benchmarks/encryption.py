"""CPU per message with encrypted payloads on and off (issue #18).

    hatch run python -m benchmarks.encryption [--url URL] [--messages N] [--repeat R] [--size BYTES]

One process publishes `messages` JSON messages of about `size` bytes to one
subscriber of its own on `url` (default ``memory://``), with ``serializer="json"`` and with
``encrypted("json", keys=[key])``: each message is encoded, (encrypted,
decrypted,) decoded once. The two modes alternate `repeat` times, so that
a busy machine slows both alike; the medians of the process CPU time per
message are printed. Needs ``channels-core[crypto]`` (hatch's default
environment has it).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from cryptography.fernet import Fernet

from channels_core import Channel, encrypted
from channels_core.serializers import Serializer

MODES = ("off", "on")


async def cpu_per_message(
    url: str,
    serializer: str | Serializer,
    messages: int,
    size: int,
    prepare: Callable[[Channel], object] | None = None,
) -> float:
    """Seconds of this process's CPU per message, publish to delivery.

    `prepare` is called with the open channel before the clock starts.
    """
    message = {"i": 0, "pad": "x" * max(0, size - len('{"i":0,"pad":""}'))}
    group = f"bench-{secrets.token_hex(4)}"
    async with (
        Channel.from_url(url, serializer=serializer, buffer_size=messages) as channel,
        channel.subscribe(group) as subscriber,
    ):
        if prepare is not None:
            prepare(channel)

        async def consume(received: anyio.Event) -> None:
            for _ in range(messages):
                await subscriber.receive()
            received.set()

        received = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume, received)
            started = time.process_time()
            for _ in range(messages):
                await channel.publish(group, message)
            await received.wait()
            elapsed = time.process_time() - started
    return elapsed / messages


async def main(url: str, messages: int, repeat: int, size: int) -> dict[str, float]:
    serializers: dict[str, Any] = {
        "off": "json",
        "on": encrypted("json", keys=[Fernet.generate_key()]),
    }
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    await cpu_per_message(url, "json", messages // 10, size)  # warm up
    for _ in range(repeat):
        for mode in MODES:
            samples[mode].append(await cpu_per_message(url, serializers[mode], messages, size))
    return {mode: statistics.median(values) for mode, values in samples.items()}


def parse_args(doc: str, modes: Sequence[str] = ()) -> argparse.Namespace:
    """``--url``, ``--messages``, ``--repeat``, ``--size``, described by `doc`'s first line.

    With `modes` (the first one the baseline), also ``--mode``, repeatable:
    ``args.modes`` is the baseline and the modes given, or all of them.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024)
    if modes:
        parser.add_argument("--mode", action="append", choices=modes[1:], dest="modes")
    args = parser.parse_args()
    if modes:
        chosen = args.modes or modes
        args.modes = tuple(mode for mode in modes if mode == modes[0] or mode in chosen)
    return args


if __name__ == "__main__":
    args = parse_args(__doc__)
    medians = anyio.run(main, args.url, args.messages, args.repeat, args.size)
    off, on = medians["off"] * 1e6, medians["on"] * 1e6
    print(f"{args.size} B JSON messages, {args.url}, median of {args.repeat} alternating runs")
    print(f"encryption off: {off:6.1f} us CPU per message")
    print(f"encryption on:  {on:6.1f} us CPU per message (+{on - off:.1f} us, x{on / off:.2f})")
