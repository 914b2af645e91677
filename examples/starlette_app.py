"""One channel per application: defined once, opened in the lifespan, shared by everyone.

Like a cache, the channel is a module-level object; the app's lifespan opens
it at startup and closes it at shutdown (a channel can be opened again, so
restarting the app, or running it in tests several times, just works). Every
request and websocket then uses that one open channel: its connection, and
its subscriptions to a group, are shared.

    CHANNELS_URL=redis://127.0.0.1:6379/0 uvicorn examples.starlette_app:app

    websocket  /ws/{room}     every message of the room; what you send is published to it
    POST       /rooms/{room}  publish the JSON body to the room (204)

With FastAPI it is the same: ``FastAPI(lifespan=lifespan)`` and the same
handlers. Synchronous code (a Django or Flask view, a Celery task) publishes
through `channels_core.BlockingChannel` instead: see examples/flask_publish.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from channels_core import Channel, MessagesLost

__all__ = ["app", "channel", "lifespan"]

#: The application's channel (not open yet: the lifespan opens it).
channel = Channel.from_url(os.environ.get("CHANNELS_URL", "memory://starlette-app"))


def group_for(room: str) -> str:
    return f"room.{room}"


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with channel:  # one connection for the whole application
        yield


async def publish(request: Request) -> Response:
    """POST /rooms/{room}: publish the JSON body to the room."""
    try:
        message = await request.json()
    except ValueError:
        return Response("send a JSON body", status_code=400)
    await channel.publish(group_for(request.path_params["room"]), message)
    return Response(status_code=204)


async def room_socket(websocket: WebSocket) -> None:
    """Relay the room to the socket; publish what the socket sends to the room."""
    group = group_for(websocket.path_params["room"])
    await websocket.accept()
    async with channel.subscribe(group) as subscriber, anyio.create_task_group() as tasks:

        async def relay() -> None:
            while True:
                try:
                    async for event in subscriber:
                        await websocket.send_text(json.dumps(event.message))
                    return  # the channel is closing (the app is shutting down)
                except MessagesLost as gap:
                    await websocket.send_text(json.dumps({"lost": gap.count}))

        tasks.start_soon(relay)
        await websocket.send_text(json.dumps({"subscribed": group}))
        try:
            while True:
                await channel.publish(group, json.loads(await websocket.receive_text()))
        except (WebSocketDisconnect, ValueError):
            pass  # gone, or not JSON: end this socket
        tasks.cancel_scope.cancel()


app = Starlette(
    routes=[
        Route("/rooms/{room}", publish, methods=["POST"]),
        WebSocketRoute("/ws/{room}", room_socket),
    ],
    lifespan=lifespan,
)
