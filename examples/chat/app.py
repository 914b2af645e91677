"""A live chat on `channels`: Starlette + uvicorn, one websocket per browser tab.

Each room is a group (``chat.<room>``); the channel layer comes from
``--url`` or ``CHANNELS_URL`` (default ``memory://``, a single process).
On a layer with the "history" capability the demo turns history on
(``history_size=HISTORY_SIZE`` unless the URL sets ``history_size``; ``0``
turns it off): a tab joining a room is shown its last `RECENT` messages, and
a tab whose websocket reconnects resumes after the last message it showed,
so nothing said meanwhile is missed. Without history the demo works as
before: no room history, and a reconnect misses what was said meanwhile.

    python examples/chat/app.py                  # then open http://127.0.0.1:8000
    python -m examples.chat --port 8001          # the same, from the repository root

Scale out by pointing two instances at one broker: a message typed in a
browser on one port appears in every browser on the other.

    CHANNELS_URL=redis://127.0.0.1:6379/0 python examples/chat/app.py --port 8000
    CHANNELS_URL=redis://127.0.0.1:6379/0 python examples/chat/app.py --port 8001
    # or --url postgresql://postgres@127.0.0.1:5432/test

The websocket speaks JSON objects. Browser to server:
``{"type": "join", "room": ..., "nick": ..., "since": ...}`` (subscribe to a
room, leaving the previous one; the optional ``since``, a message's
``position``, resumes after that message) and ``{"type": "message", "text":
..., "nick": ...}`` (``nick`` optional: it renames the sender from this
message on). Server to browser: ``welcome`` ({layer, history}), ``joined``
({room, nick, resumed}), ``history`` ({room, messages}: the last messages,
after ``joined`` when not resuming), ``message`` ({room, nick, text, time,
position}; ``position`` with history on), ``notice`` (messages were lost or
cannot be shown) and ``error`` (bad input; the socket stays open).

``GET /healthz`` answers the channel's health report (`Channel.health`) as
JSON: 200 when healthy, 503 when not (the broker does not answer within
`HEALTH_TIMEOUT` seconds, the layer is reconnecting): point a load
balancer's or Kubernetes' probe at it. ``GET /metrics`` serves the
channel's metrics (`channels_core.telemetry`) in Prometheus' text format
when ``opentelemetry-sdk`` and ``opentelemetry-exporter-prometheus`` are
installed (404 otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from channels_core import (
    Channel,
    ChannelsError,
    MessagesLost,
    Subscriber,
    layer_capabilities,
)
from channels_core.discovery import layer_for_url
from channels_core.telemetry import instrument

__all__ = [
    "BadFrame",
    "ChatSession",
    "Join",
    "Say",
    "create_app",
    "layer_options",
    "main",
    "parse_frame",
    "server_config",
]

logger = logging.getLogger("chat")

STATIC = Path(__file__).resolve().parent / "static"
MAX_FRAME = 8 * 1024  # characters in one frame from the browser
MAX_ROOM = 40
MAX_NICK = 24
MAX_TEXT = 1000
MAX_POSITION = 200  # characters in the position a tab sends back to resume

#: Events each room keeps when the demo turns history on (`layer_options`):
#: what a tab that was away can catch up on when it reconnects.
HISTORY_SIZE = 1000
#: Messages a tab is shown when it joins a room.
RECENT = 50


def group_for(room: str) -> str:
    return f"chat.{room}"


# -- frames from the browser ------------------------------------------------------


class BadFrame(ValueError):
    """A frame from the browser that the server refuses; its text goes back as an error."""


@dataclass(frozen=True)
class Join:
    room: str
    nick: str
    since: str | None = None  # resume after this message position (history on)


@dataclass(frozen=True)
class Say:
    text: str
    nick: str | None = None  # the sender's new nick, from this message on


def parse_frame(text: str) -> Join | Say:
    """Validate one text frame from the browser; raise `BadFrame` saying what is wrong."""
    if len(text) > MAX_FRAME:
        raise BadFrame(f"frame too long ({len(text)} characters, at most {MAX_FRAME})")
    try:
        data = json.loads(text)
    except ValueError:
        raise BadFrame("frames must be JSON objects") from None
    if not isinstance(data, dict):
        raise BadFrame("frames must be JSON objects")
    kind = data.get("type")
    if kind == "join":
        return Join(
            _field(data, "room", MAX_ROOM),
            _field(data, "nick", MAX_NICK),
            _optional(data, "since", MAX_POSITION),
        )
    if kind == "message":
        return Say(_field(data, "text", MAX_TEXT), _optional(data, "nick", MAX_NICK))
    raise BadFrame('"type" must be "join" or "message"')


def _field(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadFrame(f'"{name}" must be a string')
    value = value.strip()
    if not value:
        raise BadFrame(f'"{name}" must not be empty')
    if len(value) > limit:
        raise BadFrame(f'"{name}" is too long ({len(value)} characters, at most {limit})')
    if not value.isprintable():
        raise BadFrame(f'"{name}" must not contain control characters')
    return value


def _optional(data: dict[str, Any], name: str, limit: int) -> str | None:
    """Like `_field`, for a field that may be absent (or null)."""
    return None if data.get(name) is None else _field(data, name, limit)


def chat_message(message: object, position: str | None = None) -> dict[str, str] | None:
    """The message frame for a broker message, or None if it is not a chat message.

    Anything can be published on a shared broker: pass on only the expected
    shape. With history on the frame carries the event's `position`, which
    the tab sends back to resume after it.
    """
    if not isinstance(message, dict):
        return None
    frame = {"type": "message"}
    for key in ("room", "nick", "text", "time"):
        value = message.get(key)
        if not isinstance(value, str):
            return None
        frame[key] = value
    if position is not None:
        frame["position"] = position
    return frame


# -- one browser tab ----------------------------------------------------------------


class ChatSession:
    """One websocket: a reader task (the caller's) and a relay task for the current room.

    The reader validates frames and publishes; the relay iterates the room's
    subscriber and sends. Joining another room cancels the old relay (its
    subscription ends with it) and starts a new one. When the socket closes
    the task group is cancelled, so nothing outlives the connection.
    """

    def __init__(self, websocket: WebSocket, channel: Channel) -> None:
        self.websocket = websocket
        self.channel = channel
        #: Rooms keep history: shown on join, and a reconnecting tab resumes.
        self.history = channel.layer.keeps_history
        self.joined: Join | None = None
        self._relay_scope: anyio.CancelScope | None = None
        self._send_lock = anyio.Lock()
        self._gone = False  # a send failed: the browser is gone

    async def run(self, layer: str) -> None:
        await self.websocket.accept()
        async with anyio.create_task_group() as tasks:
            await self.send({"type": "welcome", "layer": layer, "history": self.history})
            await self._read(tasks)
            tasks.cancel_scope.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame; frames from both tasks go out whole, one at a time."""
        async with self._send_lock:
            await self._write(frame)

    async def _write(self, frame: dict[str, Any]) -> None:
        """Send holding the lock; a socket that went away just ends the session."""
        if self._gone:
            return
        try:
            await self.websocket.send_text(json.dumps(frame))
        except (WebSocketDisconnect, OSError):
            self._gone = True  # the reader sees the disconnect and ends the session

    async def _read(self, tasks: TaskGroup) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                if not isinstance(text, str):
                    raise BadFrame("send text frames holding JSON objects")
                frame = parse_frame(text)
                if isinstance(frame, Join):
                    await self._join(frame, tasks)
                else:
                    await self._say(frame)
            except BadFrame as error:
                await self.send({"type": "error", "error": str(error)})

    async def _join(self, join: Join, tasks: TaskGroup) -> None:
        if self._relay_scope is not None:
            self._relay_scope.cancel()
            self._relay_scope, self.joined = None, None
        since = join.since if self.history else None
        try:  # checks `since` at once, before subscribing
            subscription = self.channel.subscribe(group_for(join.room), since=since)
        except ValueError as error:  # a "since" that is no position
            raise BadFrame(f"could not join {join.room!r}: {error}") from None
        async with self._send_lock:  # the new room's messages go out after "joined"
            try:
                self._relay_scope, recent = await tasks.start(
                    self._relay, subscription, self.history and since is None
                )
            except ChannelsError as error:  # e.g. the broker is down beyond the retry bound
                logger.warning("could not subscribe to %s: %s", join.room, error)
                raise BadFrame(f"could not join {join.room!r}: {error}") from None
            self.joined = join
            resumed = since is not None
            await self._write(
                {"type": "joined", "room": join.room, "nick": join.nick, "resumed": resumed}
            )
            if recent is not None:
                await self._write({"type": "history", "room": join.room, "messages": recent})
            if join.since is not None and not self.history:
                await self._write({"type": "notice", "text": NO_HISTORY})

    async def _say(self, say: Say) -> None:
        if self.joined is None:
            raise BadFrame("join a room first")
        if say.nick is not None:
            self.joined = dataclasses.replace(self.joined, nick=say.nick)
        room, nick = self.joined.room, self.joined.nick
        time = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        message = {"room": room, "nick": nick, "text": say.text, "time": time}
        try:
            await self.channel.publish(group_for(room), message)
        except ChannelsError as error:  # e.g. the broker is down beyond the retry bound
            logger.warning("could not publish to %s: %s", room, error)
            raise BadFrame(f"your message was not sent: {error}") from None

    async def _relay(
        self,
        subscription: AbstractAsyncContextManager[Subscriber],
        recent: bool,
        *,
        task_status: TaskStatus[tuple[anyio.CancelScope, list[dict[str, str]] | None]] = (
            anyio.TASK_STATUS_IGNORED
        ),
    ) -> None:
        """Relay the room's events; with `recent`, read the room's last messages first.

        They are read once the subscription is live, so none is missed in
        between; live events that the read also returned are skipped.
        """
        with anyio.CancelScope() as scope:
            async with subscription as subscriber:
                shown: set[str] = set()
                frames = None
                if recent:
                    events = await self.channel.history(subscriber.groups[0], limit=RECENT)
                    shown = {event.position for event in events if event.position is not None}
                    frames = [
                        frame
                        for event in events
                        if (frame := chat_message(event.message, event.position)) is not None
                    ]
                task_status.started((scope, frames))  # live on the broker: "joined" can go out
                while True:
                    try:
                        async for event in subscriber:
                            if event.position in shown:
                                continue  # already in the history frame
                            frame = chat_message(event.message, event.position)
                            if frame is not None:
                                await self.send(frame)
                        return  # the channel is closing
                    except MessagesLost as gap:
                        await self.send({"type": "notice", "text": _describe(gap)})


#: The notice for a tab that asks to resume on a server without history.
NO_HISTORY = "this server keeps no history: what was said while you were disconnected is not shown"


def _describe(gap: MessagesLost) -> str:
    if gap.reason == "reconnect":
        return "the server lost its broker connection for a moment: messages may be missing"
    if gap.reason == "expired":
        return "some messages from while you were away are no longer kept: they are missing"
    return f"you were too slow: {gap.count or 'some'} message(s) skipped"


# -- the app ------------------------------------------------------------------------


#: Seconds /healthz waits for the broker before answering 503.
HEALTH_TIMEOUT = 2.0


@dataclass(frozen=True)
class PrometheusExporter:
    """The app's OpenTelemetry meter provider, read by Prometheus' scrape of /metrics."""

    meter_provider: Any
    scrape: Any  # () -> bytes: the text format
    content_type: str


def prometheus_exporter() -> PrometheusExporter | None:
    """A meter provider exporting to Prometheus, if its packages are installed."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    except ImportError:
        return None
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    return PrometheusExporter(provider, generate_latest, CONTENT_TYPE_LATEST)


def create_app(url: str) -> Starlette:
    """The chat app on the layer for `url`; ``app.state.channel`` while it runs."""
    layer = urlsplit(url).scheme

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Channel.from_url(url, **layer_options(url)) as channel:
            app.state.channel = channel
            app.state.metrics = exporter = prometheus_exporter()
            if exporter is None:
                yield
                return
            instrument(channel, meter_provider=exporter.meter_provider)
            try:
                yield
            finally:
                exporter.meter_provider.shutdown()  # unregisters it from prometheus_client

    async def index(request: Any) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def healthz(request: Request) -> JSONResponse:
        report = await request.app.state.channel.health(timeout=HEALTH_TIMEOUT)
        return JSONResponse(report.as_dict(), status_code=200 if report.healthy else 503)

    async def chat_socket(websocket: WebSocket) -> None:
        await ChatSession(websocket, websocket.app.state.channel).run(layer)

    async def metrics(request: Request) -> Response:
        exporter: PrometheusExporter | None = request.app.state.metrics
        if exporter is None:
            return Response(
                "install opentelemetry-sdk and opentelemetry-exporter-prometheus for /metrics\n",
                status_code=404,
            )
        return Response(exporter.scrape(), media_type=exporter.content_type)

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        WebSocketRoute("/ws", chat_socket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


# -- command line -------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chat", description="The channels chat demo: open the printed address."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="port to listen on (default: $PORT, else 8000)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CHANNELS_URL") or "memory://",
        help="channel layer URL (default: $CHANNELS_URL, else memory://)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return parser.parse_args(argv)


def layer_options(url: str) -> dict[str, Any]:
    """The layer options the demo adds to `url`'s: history, where the layer has it.

    ``history_size=HISTORY_SIZE`` if the layer declares the "history"
    capability and the URL sets no ``history_size`` (``?history_size=0``
    keeps it off); else none: the demo then runs without history.
    """
    query = {name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    if "history_size" in query or "history" not in layer_capabilities(layer_for_url(url)):
        return {}
    return {"history_size": HISTORY_SIZE}


async def check_layer(url: str) -> str | None:
    """Connect once, so a bad URL or a broker that is down fails early and plainly.

    Returns what went wrong, or None.
    """
    try:
        with anyio.fail_after(20):
            async with Channel.from_url(url, **layer_options(url)):
                return None
    except TimeoutError:
        return "no answer within 20 s"
    except Exception as error:
        while isinstance(error, ExceptionGroup):  # raised from a layer's task group
            error = error.exceptions[0]
        return str(error) if isinstance(error, ChannelsError) else repr(error)


def server_config(
    app: Starlette, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"
) -> uvicorn.Config:
    """How the demo runs under uvicorn (the tests serve it the same way)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        ws_max_size=64 * 1024,  # bytes in one websocket frame; larger closes the socket
        timeout_graceful_shutdown=3,  # seconds open sockets get to close on Ctrl-C
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C; the exit status (0, or 1 if the layer is unusable)."""
    try:
        return serve(parse_args(argv))
    except KeyboardInterrupt:  # Ctrl-C before uvicorn took over
        print("chat stopped", flush=True)
        return 0


def serve(args: argparse.Namespace) -> int:
    problem = anyio.run(check_layer, args.url)
    if problem is not None:
        print(f"chat: cannot use {args.url}: {problem}", file=sys.stderr)
        return 1
    config = server_config(create_app(args.url), args.host, args.port, args.log_level)
    sock = config.bind_socket()  # a port in use exits here, with uvicorn's message
    host = f"[{args.host}]" if ":" in args.host else args.host
    added = "".join(f" ({name}={value})" for name, value in layer_options(args.url).items())
    print(
        f"chat on {args.url}{added}: open http://{host}:{args.port}/  (Ctrl-C to stop)",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutting down
        uvicorn.Server(config).run(sockets=[sock])
    print("chat stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
