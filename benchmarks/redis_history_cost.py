"""What Redis history costs per publish, seen from the server.

    hatch run python -m benchmarks.redis_history_cost [--messages 5000]

On a throwaway ``redis-server`` (so that its counters count only us), one
channel publishes `--messages` messages to a group that one subscriber of
another channel receives, with history off and on (``history_size=1000``,
and with ``history_ttl=60`` too), at 100 B and 1 KiB. Per publish, from
``INFO stats`` / ``INFO commandstats`` deltas: bytes the server read (the
command) and wrote (replies and the delivery), the client's commands (one
round trip each: PUBLISH, or EVALSHA with history), the commands the
server ran (a script's included) and its microseconds per client command
(a script's time includes its commands); then the server memory of the
log (``MEMORY USAGE`` of the stream and its meta hash) per retained event.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
import redis.asyncio

from channels_core import Channel
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis._wire import WireNames
from channels_layer_redis.testing import RedisServer

MODES = {
    "off": {},
    "history_size=1000": {"history_size": 1000},
    "history_size=1000&history_ttl=60": {"history_size": 1000, "history_ttl": 60},
}


def make_message(index: int, size: int) -> dict[str, Any]:
    """A message of about `size` bytes of compact JSON (`benchmarks.measure`'s shape).

    Not imported from there: that module needs the bench environment's
    contenders, this one only the workspace (it runs with ``hatch run``).
    """
    return {"i": index, "t": 0.0, "pad": "x" * max(0, size - 27)}


async def _counters(admin: redis.asyncio.Redis) -> tuple[int, int, int, int, float]:
    """Bytes in and out, commands run (a script's own included), the client's
    commands (EVALSHA and PUBLISH that are not a script's) and their usec, so far."""
    stats = await admin.info("stats")
    commands = await admin.info("commandstats")
    evalsha = commands.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    publish = commands.get("cmdstat_publish", {"calls": 0, "usec": 0})
    # Every PUBLISH runs inside a script once there is one (history on).
    top = evalsha if evalsha["calls"] else publish
    return (
        stats["total_net_input_bytes"],
        stats["total_net_output_bytes"],
        stats["total_commands_processed"],
        int(top["calls"]),
        float(top["usec"]),
    )


async def measure(url: str, options: dict[str, Any], size: int, messages: int) -> dict[str, Any]:
    group = f"cost-{size}-{len(options)}"
    admin = redis.asyncio.Redis.from_url(url)
    try:
        async with (
            Channel(RedisPubSubChannelLayer.from_url(url, **options)) as channel,
            Channel(RedisPubSubChannelLayer.from_url(url, **options)) as listener,
            listener.subscribe(group, buffer_size=messages) as subscriber,
        ):
            for number in range(10):  # warm: the script loaded, the pool open
                await channel.publish(group, make_message(number, size))
                await subscriber.receive()
            await admin.config_resetstat()
            before = await _counters(admin)
            for number in range(messages):
                await channel.publish(group, make_message(number, size))
            for _ in range(messages):
                await subscriber.receive()
            after = await _counters(admin)
        # The counters' own INFO calls (two of them, their replies) are left in: a few
        # hundred bytes over all the messages.
        bytes_in, bytes_out, commands, calls, usec = (
            b - a for a, b in zip(before, after, strict=True)
        )
        result: dict[str, Any] = {
            "bytes_in_per_publish": round(bytes_in / messages, 1),
            "bytes_out_per_publish": round(bytes_out / messages, 1),
            "round_trips_per_publish": round(calls / messages, 3),
            "server_commands_per_publish": round(commands / messages, 3),
            "server_us_per_publish": round(usec / calls, 2),
        }
        if options:
            log, meta = WireNames("").history_keys(group)
            events = await admin.xlen(log)
            memory = (await admin.memory_usage(log, samples=0) or 0) + (
                await admin.memory_usage(meta, samples=0) or 0
            )
            result["retained"] = events
            result["memory_bytes_per_event"] = round(memory / events, 1)
        return result
    finally:
        await admin.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.redis_history_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args(argv)
    with RedisServer() as server:
        for size in (100, 1024):
            for mode, options in MODES.items():
                result = anyio.run(measure, server.url, options, size, args.messages)
                print(f"{size} B, history {mode}: {result}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
