"""Cross-process check for layer authors: a message published in one OS process reaches another.

`exchange_with_peer` runs this module as a separate process (the echo
peer), which enters ``Channel.from_url(url, namespace=namespace)``,
subscribes to "ping" (and to `pattern`, if given), prints "ready", then
answers every message on "ping" with ``{"echo": message, "pid": ...,
"pattern": ...}`` on "pong" until it receives "stop". In a layer's tests::

    from channels_core.testing.peer import exchange_with_peer

    async def test_two_processes_exchange_messages(my_url, namespace):
        await exchange_with_peer(my_url, namespace, [*range(30), "L" * 30_000])

Run by hand: ``python -m channels_core.testing.peer URL NAMESPACE [PATTERN]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import anyio
from anyio.streams.text import TextReceiveStream

from ..channel import Channel

__all__ = ["exchange_with_peer"]


async def exchange_with_peer(
    url: str,
    namespace: str,
    messages: Sequence[Any],
    *,
    pattern: str | None = None,
    timeout: float = 20,
) -> None:
    """Have an echo peer process answer each of `messages`; assert that all came back intact.

    `pattern` (a glob matching "ping", for a layer with pattern support):
    the peer also subscribes to it and reports it with each echo. Each
    step (start, the echoes, the exit) has `timeout` seconds.
    """
    command = [sys.executable, "-m", __name__, url, namespace, *([pattern] if pattern else [])]
    async with Channel.from_url(url, namespace=namespace) as channel:
        async with channel.subscribe("pong") as pongs:
            process = await anyio.open_process(command)
            async with process:
                assert process.stdout is not None
                with anyio.fail_after(timeout):
                    async for line in TextReceiveStream(process.stdout):
                        if "ready" in line:
                            break
                for message in messages:
                    await channel.publish("ping", message)
                with anyio.fail_after(timeout):
                    echoes = [(await pongs.receive()).message for _ in messages]
                await channel.publish("ping", "stop")
                with anyio.fail_after(timeout):
                    assert await process.wait() == 0
    assert [echo["echo"] for echo in echoes] == list(messages)
    assert {echo["pattern"] for echo in echoes} == {pattern}
    assert {echo["pid"] for echo in echoes} == {process.pid} != {os.getpid()}


async def _echo(url: str, namespace: str, pattern: str | None) -> None:
    """The peer: echo every "ping" message to "pong" until "stop"."""
    async with (
        Channel.from_url(url, namespace=namespace) as channel,
        channel.subscribe("ping") as by_name,
        channel.subscribe_pattern(pattern) if pattern else nullcontext(by_name) as by_pattern,
    ):
        print("ready", flush=True)
        async for event in by_name:
            if event.message == "stop":
                return
            matched = (await by_pattern.receive()).pattern if pattern else None
            await channel.publish(
                "pong", {"echo": event.message, "pid": os.getpid(), "pattern": matched}
            )


if __name__ == "__main__":
    url, namespace, *pattern = sys.argv[1:]
    anyio.run(_echo, url, namespace, pattern[0] if pattern else None)
