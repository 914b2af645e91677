"""A separate process for the cross-process tests (run as a script, not collected).

python peer.py subscribe URL PREFIX GROUP COUNT   # prints "ready", then COUNT messages as JSON
python peer.py publish URL PREFIX GROUP COUNT     # publishes 0..COUNT-1
"""

from __future__ import annotations

import json
import sys

import anyio

from channels_core import Channel


async def subscribe(url: str, prefix: str, group: str, count: int) -> None:
    async with (
        Channel.from_url(url, prefix=prefix) as channel,
        channel.subscribe(group) as subscriber,
    ):
        print("ready", flush=True)
        for _ in range(count):
            event = await subscriber.receive()
            print(json.dumps([event.group, event.message]), flush=True)


async def publish(url: str, prefix: str, group: str, count: int) -> None:
    async with Channel.from_url(url, prefix=prefix) as channel:
        for number in range(count):
            await channel.publish(group, {"n": number, "from": "publisher"})


if __name__ == "__main__":
    role, url, prefix, group, count = sys.argv[1:]
    anyio.run({"subscribe": subscribe, "publish": publish}[role], url, prefix, group, int(count))
