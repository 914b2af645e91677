"""A separate process for the cross-process test (run as a script, not collected).

python peer.py URL NAMESPACE
    subscribes to "ping" and to the pattern "pi*", prints "ready", then
    answers every message on "ping" with {"echo": message, "pid": ..., "pattern": ...}
    on "pong" until it receives "stop".
"""

from __future__ import annotations

import os
import sys

import anyio

from channels_core import Channel


async def main(url: str, namespace: str) -> None:
    async with (
        Channel.from_url(url, namespace=namespace) as channel,
        channel.subscribe("ping") as by_name,
        channel.subscribe_pattern("pi*") as by_pattern,
    ):
        print("ready", flush=True)
        async for event in by_name:
            if event.message == "stop":
                return
            matched = await by_pattern.receive()
            await channel.publish(
                "pong", {"echo": event.message, "pid": os.getpid(), "pattern": matched.pattern}
            )


if __name__ == "__main__":
    url, namespace = sys.argv[1:3]
    anyio.run(main, url, namespace)
