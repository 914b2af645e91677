"""The web-app pattern: a module-level channel, opened in the lifespan, shared by everyone.

examples/starlette_app.py is served by uvicorn on a free loopback port;
concurrent websockets and requests use its one channel, a sync view
publishes into it through a BlockingChannel, and the app can be started
again with the same channel object.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from channels_core import BlockingChannel
from channels_core.testing import eventually

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples live in the repository, not in a distribution
    sys.path.insert(0, str(ROOT))

from examples import flask_publish, starlette_app  # noqa: E402

TIMEOUT = 10.0
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # leave Ctrl-C to pytest


@asynccontextmanager
async def serving() -> AsyncIterator[str]:
    """Serve the example app on a free loopback port; yields ``127.0.0.1:PORT``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    server = _Server(uvicorn.Config(starlette_app.app, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        try:
            await eventually(lambda: server.started, TIMEOUT)  # uvicorn offers no event
            yield address
        finally:
            server.should_exit = True


async def receive(client: ClientConnection) -> Any:
    with anyio.fail_after(TIMEOUT):
        return json.loads(await client.recv())


def post(address: str, room: str, message: Any) -> int:
    request = urllib.request.Request(
        f"http://{address}/rooms/{room}", data=json.dumps(message).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return int(response.status)


async def test_one_channel_serves_concurrent_websockets_requests_and_threads() -> None:
    for start in range(2):  # the second start re-enters the same module-level channel
        async with serving() as address:
            await chat_in_rooms(address, start)
        assert "closed" in repr(starlette_app.channel)  # the lifespan closed it
        assert starlette_app.channel.stats().subscribers == 0


async def chat_in_rooms(address: str, start: int) -> None:
    """8 websockets in 2 rooms say 5 lines each; a POST and a sync view publish too."""
    rooms, per_room, said = ["a", "b"], 4, 5
    heard: list[list[Any]] = []
    ready = anyio.Event()
    connected = 0

    async def client(room: str, number: int) -> None:
        nonlocal connected
        async with connect(f"ws://{address}/ws/{room}") as websocket:
            assert await receive(websocket) == {"subscribed": f"room.{room}"}
            connected += 1
            if connected == len(rooms) * per_room:
                ready.set()
            await ready.wait()
            for line in range(said):
                await websocket.send(json.dumps([start, number, line]))
            expected = per_room * said + 2  # everyone's lines, a POST, a sync view
            mine: list[Any] = []
            while len(mine) < expected:
                mine.append(await receive(websocket))
            heard.append(mine)

    async def from_outside() -> None:
        await ready.wait()
        for room in rooms:
            assert await anyio.to_thread.run_sync(post, address, room, "posted") == 204
            await anyio.to_thread.run_sync(publish_from_a_sync_view, room)

    async with anyio.create_task_group() as tasks:
        for room in rooms:
            for number in range(per_room):
                tasks.start_soon(client, room, number)
        tasks.start_soon(from_outside)

    assert len(heard) == len(rooms) * per_room
    for messages in heard:
        lines = [message for message in messages if isinstance(message, list)]
        assert len(lines) == per_room * said
        assert {line[0] for line in lines} == {start}
        for sender in {line[1] for line in lines}:  # each sender's order is kept
            assert [line[2] for line in lines if line[1] == sender] == list(range(said))
        assert "posted" in messages
        assert {"from": "a sync view"} in messages


def publish_from_a_sync_view(room: str) -> None:
    """What a Django/Flask view or a Celery task does: its own thread, no event loop."""
    assert threading.current_thread() is not threading.main_thread()
    with BlockingChannel.from_url("memory://starlette-app") as channel:  # the app's hub
        channel.publish(f"room.{room}", {"from": "a sync view"})


async def test_the_flask_view_publishes_to_the_chat_rooms() -> None:
    """examples/flask_publish.py: a sync view publishing chat messages with BlockingChannel."""
    from channels_core import Channel

    async with (
        Channel.from_url(flask_publish.CHANNELS_URL) as channel,
        channel.subscribe("chat.lobby") as subscriber,
    ):
        client = flask_publish.app.test_client()
        closing = anyio.to_thread.run_sync
        response = await anyio.to_thread.run_sync(
            lambda: client.post("/rooms/lobby/messages", json={"nick": "bot", "text": "hi"})
        )
        assert response.status_code == 202
        with anyio.fail_after(TIMEOUT):
            event = await subscriber.receive()
        assert event.message["text"] == "hi"
        assert set(event.message) == {"room", "nick", "text", "time"}
        refused = await anyio.to_thread.run_sync(
            lambda: client.post("/rooms/lobby/messages", json={"nick": "bot"})
        )
        assert refused.status_code == 400
        await closing(flask_publish.shared_channel().close)
        assert flask_publish.shared_channel().closed is False  # reopened on demand
        await closing(flask_publish.shared_channel().close)
