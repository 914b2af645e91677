"""A separate process for the cross-process tests (run as a script, not collected).

python peer.py subscribe URL NAMESPACE GROUP COUNT
    subscribes to GROUP and GROUP-2 in one subscription and to the pattern
    GROUP* in another, prints "ready", then one JSON line per event:
    [group, message, pattern]; exits after 4 * COUNT events
python peer.py publish URL NAMESPACE GROUP COUNT
    publishes COUNT messages to GROUP, then COUNT to GROUP-2
"""

from __future__ import annotations

import json
import sys

import anyio

from channels_core import Channel, Subscriber


async def subscribe(url: str, namespace: str, group: str, count: int) -> None:
    async def show(subscriber: Subscriber) -> None:
        for _ in range(2 * count):
            event = await subscriber.receive()
            print(json.dumps([event.group, event.message, event.pattern]), flush=True)

    async with (
        Channel.from_url(url, namespace=namespace) as channel,
        channel.subscribe(group, f"{group}-2") as by_name,
        channel.subscribe_pattern(f"{group}*") as by_pattern,
        anyio.create_task_group() as tasks,
    ):
        print("ready", flush=True)
        tasks.start_soon(show, by_name)
        tasks.start_soon(show, by_pattern)


async def publish(url: str, namespace: str, group: str, count: int) -> None:
    async with Channel.from_url(url, namespace=namespace) as channel:
        for target in (group, f"{group}-2"):
            for number in range(count):
                await channel.publish(target, {"n": number})


if __name__ == "__main__":
    role, url, namespace, group, count = sys.argv[1:]
    anyio.run({"subscribe": subscribe, "publish": publish}[role], url, namespace, group, int(count))
