"""Two OS processes exchanging messages through NATS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from channels_core import Channel

pytestmark = pytest.mark.anyio

PEER = Path(__file__).with_name("peer.py")


async def test_two_processes_exchange_messages(nats_url: str, namespace: str) -> None:
    messages: list[object] = [*range(30), {"nested": ["ünï", None]}, "L" * 300_000]
    async with Channel.from_url(nats_url, namespace=namespace) as channel:
        async with channel.subscribe("pong") as pongs:
            process = await anyio.open_process([sys.executable, str(PEER), nats_url, namespace])
            async with process:
                assert process.stdout is not None
                with anyio.fail_after(20):
                    async for line in TextReceiveStream(process.stdout):
                        if "ready" in line:
                            break
                for message in messages:
                    await channel.publish("ping", message)
                with anyio.fail_after(10):
                    echoes = [(await pongs.receive()).message for _ in messages]
                await channel.publish("ping", "stop")
                with anyio.fail_after(10):
                    assert await process.wait() == 0
    assert [echo["echo"] for echo in echoes] == messages
    assert {echo["pattern"] for echo in echoes} == {"pi*"}
    assert {echo["pid"] for echo in echoes} == {process.pid}
    assert process.pid != os.getpid()
