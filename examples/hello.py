"""A first look at channels: two subscribers and a publisher on one channel.

hatch run hello                                  # the in-memory layer (no server needed)
hatch run hello redis://127.0.0.1:6379/0
python examples/hello.py postgresql://postgres@127.0.0.1:5432/test   # outside hatch
"""

from __future__ import annotations

import sys

import anyio

from channels_core import Channel, Subscriber


async def listen(name: str, subscriber: Subscriber, expected: int) -> None:
    for _ in range(expected):
        event = await subscriber.receive()
        where = f"{event.group} via {event.pattern}" if event.pattern else event.group
        print(f"  {name:<8} got {event.message!r:<32} on {where}")


async def main(url: str) -> None:
    print(f"channel layer: {url}")
    async with Channel.from_url(url) as channel:
        async with (
            channel.subscribe("chatroom") as chat,
            channel.subscribe("chatroom", "news") as both,
            channel.subscribe_pattern("news.*") as by_pattern,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(listen, "chat", chat, 2)
            tasks.start_soon(listen, "both", both, 3)
            tasks.start_soon(listen, "pattern", by_pattern, 1)
            await channel.publish("chatroom", {"from": "guest", "text": "hi"})
            await channel.publish("news", "channels 0.1 is out")
            await channel.publish("news.release", {"version": "0.1.0"})
            await channel.publish("chatroom", {"from": "host", "text": "welcome"})
    print("done: every subscription ended with the channel")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
