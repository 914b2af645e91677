"""A separate process for test_cross_process: echoes every "ping" message to "pong".

Usage: python peer.py URL NAMESPACE. Prints "ready" once subscribed; a
"stop" message ends it.
"""

from __future__ import annotations

import os
import sys

import anyio

from channels_core import Channel


async def main(url: str, namespace: str) -> None:
    async with Channel.from_url(url, namespace=namespace) as channel:
        async with channel.subscribe("ping") as subscriber:
            print("ready", flush=True)
            async for event in subscriber:
                if event.message == "stop":
                    return
                await channel.publish("pong", {"echo": event.message, "pid": os.getpid()})


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend="asyncio")
