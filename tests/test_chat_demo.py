"""The chat demo (examples/chat): in process, across processes, on Ctrl-C, and in a browser.

In-process tests serve the app with uvicorn on a loopback port and talk to it
with websocket clients. End-to-end tests start `python -m examples.chat`
processes sharing Redis or PostgreSQL (the `redis_url` and `postgres_url`
fixtures of tests/conftest.py); outside CI a missing browser skips the
browser test, in CI it fails it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.lowlevel
import pytest
import uvicorn
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection as SyncClientConnection
from websockets.sync.client import connect as connect_sync

from channels_core import Channel
from channels_core.testing import eventually

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
from channels_layer_redis.testing import RedisServer, ToolMissing

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the demo lives in the repository, not in a distribution
    sys.path.insert(0, str(ROOT))

from examples.chat.app import (  # noqa: E402
    HISTORY_SIZE,
    NO_HISTORY,
    ChatSession,
    create_app,
    layer_options,
    server_config,
)

IN_CI = bool(os.environ.get("CI"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 5.0


def unique_room() -> str:
    """Rooms are groups on a shared broker: keep concurrent test runs apart."""
    return f"test-{uuid.uuid4().hex[:12]}"


def missing(reason: str) -> None:
    """Skip outside CI; in CI, a missing server or browser is a failure."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


# -- in process: uvicorn in the test's event loop --------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


class _InProcessServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # leave Ctrl-C to pytest


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port for the block; yields its websocket URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _InProcessServer(server_config(app, port=port))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        try:
            await eventually(lambda: server.started, TIMEOUT)
            yield f"ws://127.0.0.1:{port}/ws"
        finally:
            server.should_exit = True


async def receive(client: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(TIMEOUT):
        frame: dict[str, Any] = json.loads(await client.recv())
    return frame


async def join(
    client: ClientConnection, room: str, nick: str, *, history: bool = True
) -> list[dict[str, Any]]:
    """Join `room` afresh; the room's last messages (the demo keeps history on memory://)."""
    await client.send(json.dumps({"type": "join", "room": room, "nick": nick}))
    assert await receive(client) == {"type": "joined", "room": room, "nick": nick, "resumed": False}
    if not history:
        return []
    frame = await receive(client)
    assert (frame["type"], frame["room"]) == ("history", room)
    messages: list[dict[str, Any]] = frame["messages"]
    return messages


async def say(client: ClientConnection, text: str) -> None:
    await client.send(json.dumps({"type": "message", "text": text}))


@asynccontextmanager
async def chatter(
    url: str, room: str, nick: str, *, history: bool = True
) -> AsyncIterator[ClientConnection]:
    async with connect_async(url) as client:
        assert await receive(client) == {"type": "welcome", "layer": "memory", "history": history}
        await join(client, room, nick, history=history)
        yield client


def assert_message(frame: dict[str, Any], room: str, nick: str, text: str) -> None:
    assert frame["type"] == "message"
    assert (frame["room"], frame["nick"], frame["text"]) == (room, nick, text)
    datetime.fromisoformat(frame["time"])


@pytest.mark.anyio
async def test_a_room_hears_its_messages_and_only_its_own() -> None:
    async with serving(create_app("memory://")) as url:
        async with (
            chatter(url, "lobby", "ann") as ann,
            chatter(url, "lobby", "bob") as bob,
            chatter(url, "kitchen", "cy") as cy,
        ):
            await say(ann, "hi bob")
            assert_message(await receive(bob), "lobby", "ann", "hi bob")
            assert_message(await receive(ann), "lobby", "ann", "hi bob")
            await say(bob, "hi ann")
            assert_message(await receive(ann), "lobby", "bob", "hi ann")
            # cy's next frame is its own message: nothing from the lobby came first
            await say(cy, "anyone?")
            assert_message(await receive(cy), "kitchen", "cy", "anyone?")


@pytest.mark.anyio
async def test_switching_rooms_leaves_the_old_one() -> None:
    async with serving(create_app("memory://")) as url:
        async with chatter(url, "lobby", "ann") as ann, chatter(url, "lobby", "bob") as bob:
            await join(ann, "kitchen", "ann")
            await say(bob, "still here?")
            assert_message(await receive(bob), "lobby", "bob", "still here?")
            await say(ann, "in the kitchen")
            assert_message(await receive(ann), "kitchen", "ann", "in the kitchen")
            await join(ann, "lobby", "ann")
            await say(bob, "welcome back")
            assert_message(await receive(ann), "lobby", "bob", "welcome back")


@pytest.mark.anyio
async def test_joined_then_the_history_then_live_messages_without_gap_or_duplicate() -> None:
    """The page shows a room's messages once it is told it joined: none may come first.

    Then come the room's last messages, then live ones: joining while a bot
    publishes numbered messages, the numbers run on without a gap or a
    duplicate from the history into the live messages.
    """
    app = create_app("memory://")
    async with serving(app) as url:
        channel: Channel = app.state.channel
        sent = 0

        async def chatter_away() -> None:
            nonlocal sent
            while True:
                text, sent = str(sent), sent + 1  # counted before: cancelled only once sent
                message = {"room": "busy", "nick": "bot", "text": text, "time": "2026-01-01T00:00Z"}
                await channel.publish("chat.busy", message)
                await anyio.lowlevel.checkpoint()

        for _ in range(10):
            # max_queue=None: the client keeps reading what the bot sent, so closing is quick
            async with connect_async(url, max_queue=None) as client:
                assert (await receive(client))["type"] == "welcome"
                async with anyio.create_task_group() as bot:
                    bot.start_soon(chatter_away)
                    await anyio.sleep(0.001)  # the room has some history
                    # the very next frame says "joined", then "history"
                    recent = await join(client, "busy", "ann")
                    bot.cancel_scope.cancel()
                numbers = [int(frame["text"]) for frame in recent]
                assert 0 < len(numbers) <= 50
                for _ in range(min(20, sent - numbers[-1] - 1)):
                    numbers.append(int((await receive(client))["text"]))
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET `url` (in a worker thread: the server runs in the test's event loop)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def healthz_url(websocket_url: str) -> str:
    return websocket_url.replace("ws://", "http://").replace("/ws", "/healthz")


@pytest.mark.anyio
async def test_healthz_is_200_with_the_report_while_healthy() -> None:
    async with serving(create_app("memory://")) as url:
        status, report = await anyio.to_thread.run_sync(get_json, healthz_url(url))
    assert status == 200
    assert report["healthy"] is True
    assert report["reason"] is None
    assert report["subscriptions_live"] is True


@pytest.mark.anyio
async def test_metrics_are_served_in_prometheus_text_format() -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    room = unique_room()
    async with serving(create_app("memory://")) as url:
        async with chatter(url, room, "ann") as ann:
            await say(ann, "hi")
            await say(ann, "again")
            assert_message(await receive(ann), room, "ann", "hi")
            assert_message(await receive(ann), room, "ann", "again")
            metrics_url = url.replace("ws://", "http://").replace("/ws", "/metrics")

            def scrape() -> str:
                with urllib.request.urlopen(metrics_url, timeout=TIMEOUT) as response:
                    return str(response.read().decode())

            text = await anyio.to_thread.run_sync(scrape)
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("chan"))

    def values(metric: str) -> list[str]:
        return [value for name, value in samples.items() if name.startswith(metric + "{")]

    assert values("channels_messages_published_total") == ["2.0"]
    assert values("channels_subscribers") == ["1.0"]


@pytest.mark.anyio
async def test_metrics_without_the_exporter_installed_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)  # not installed
    async with serving(create_app("memory://")) as url:
        metrics_url = url.replace("ws://", "http://").replace("/ws", "/metrics")

        def scrape() -> tuple[int, str]:
            try:
                urllib.request.urlopen(metrics_url, timeout=TIMEOUT).close()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()
            return 200, ""

        status, text = await anyio.to_thread.run_sync(scrape)
        assert (await anyio.to_thread.run_sync(get_json, healthz_url(url)))[0] == 200
    assert status == 404
    assert "opentelemetry-exporter-prometheus" in text


@pytest.mark.anyio
async def test_healthz_is_503_with_the_reason_while_the_broker_is_down() -> None:
    try:
        server = RedisServer()
    except ToolMissing as tool_missing:
        missing(str(tool_missing))
    with server:
        async with serving(create_app(server.url)) as url:
            status, _ = await anyio.to_thread.run_sync(get_json, healthz_url(url))
            assert status == 200
            server.stop()
            status, report = await anyio.to_thread.run_sync(get_json, healthz_url(url))
            assert status == 503
            assert report["healthy"] is False
            assert report["reason"]
            await anyio.to_thread.run_sync(server.start)
            with anyio.fail_after(10):
                while (await anyio.to_thread.run_sync(get_json, healthz_url(url)))[0] != 200:  # noqa: ASYNC110
                    await anyio.sleep(0.05)


BAD_FRAMES = {
    "not json": "frames must be JSON objects",
    "[1, 2]": "frames must be JSON objects",
    '{"type": "shout"}': '"type" must be "join" or "message"',
    '{"type": "message", "text": "hi"}': "join a room first",
    '{"type": "join", "room": 5, "nick": "ann"}': '"room" must be a string',
    '{"type": "join", "room": "  ", "nick": "ann"}': '"room" must not be empty',
    '{"type": "join", "room": "lobby"}': '"nick" must be a string',
    json.dumps({"type": "join", "room": "x" * 41, "nick": "ann"}): '"room" is too long',
    json.dumps({"type": "join", "room": "a\nb", "nick": "ann"}): "control characters",
    json.dumps({"type": "message", "text": "x" * 9000}): "frame too long",
    '{"type": "message", "text": "hi", "nick": 7}': '"nick" must be a string',
    '{"type": "join", "room": "lobby", "nick": "ann", "since": 5}': '"since" must be a string',
    '{"type": "join", "room": "lobby", "nick": "ann", "since": "nope"}': "position",
    json.dumps({"type": "join", "room": "lobby", "nick": "ann", "since": "1" * 201}): "too long",
}


@pytest.mark.anyio
async def test_bad_input_gets_an_error_frame_and_the_socket_stays_usable() -> None:
    async with serving(create_app("memory://")) as url, connect_async(url) as client:
        assert await receive(client) == {"type": "welcome", "layer": "memory", "history": True}
        for frame, error in BAD_FRAMES.items():
            await client.send(frame)
            reply = await receive(client)
            assert reply["type"] == "error", frame
            assert error in reply["error"], frame
        await client.send(b"\x00binary")
        assert (await receive(client))["type"] == "error"
        await join(client, "lobby", "ann")
        await say(client, "x" * 1001)
        assert "at most 1000" in (await receive(client))["error"]
        await say(client, "  still works  ")
        assert_message(await receive(client), "lobby", "ann", "still works")


async def say_and_hear(client: ClientConnection, room: str, nick: str, text: str) -> str:
    """Say `text` and wait for it to come back; its position."""
    await say(client, text)
    frame = await receive(client)
    assert_message(frame, room, nick, text)
    position: str = frame["position"]
    return position


@pytest.mark.anyio
async def test_a_room_shows_its_last_50_messages_on_join() -> None:
    room = unique_room()
    async with serving(create_app("memory://")) as url:
        async with chatter(url, room, "ann") as ann:
            for number in range(60):
                await say(ann, f"m{number}")
            positions = []
            for number in range(60):
                frame = await receive(ann)
                assert_message(frame, room, "ann", f"m{number}")
                positions.append(frame["position"])
            assert len(set(positions)) == 60
            async with connect_async(url) as bob:
                assert (await receive(bob))["type"] == "welcome"
                recent = await join(bob, room, "bob")
                assert [frame["text"] for frame in recent] == [f"m{n}" for n in range(10, 60)]
                assert [frame["position"] for frame in recent] == positions[10:]
                for frame in recent:
                    assert_message(frame, room, "ann", frame["text"])
                await say(ann, "live")
                assert_message(await receive(bob), room, "ann", "live")


@pytest.mark.anyio
async def test_a_reconnecting_tab_resumes_after_its_last_message() -> None:
    """What was said while a tab's socket was down comes once, in order, then live messages."""
    room = unique_room()
    async with serving(create_app("memory://")) as url, chatter(url, room, "ann") as ann:
        async with chatter(url, room, "bob") as bob:
            last = await say_and_hear(bob, room, "bob", "before the drop")
            assert_message(await receive(ann), room, "bob", "before the drop")
        for number in range(3):  # bob's socket is closed
            await say_and_hear(ann, room, "ann", f"missed {number}")
        async with connect_async(url) as bob:
            assert (await receive(bob))["type"] == "welcome"
            await bob.send(json.dumps({"type": "join", "room": room, "nick": "bob", "since": last}))
            assert await receive(bob) == {
                "type": "joined",
                "room": room,
                "nick": "bob",
                "resumed": True,
            }
            for number in range(3):
                assert_message(await receive(bob), room, "ann", f"missed {number}")
            await say(ann, "live again")
            assert_message(await receive(bob), room, "ann", "live again")
            await say(bob, "nothing twice")
            assert_message(await receive(bob), room, "bob", "nothing twice")


@pytest.mark.anyio
async def test_a_resume_past_the_kept_history_says_messages_are_missing() -> None:
    room = unique_room()
    async with (
        serving(create_app("memory://?history_size=3")) as url,
        chatter(url, room, "ann") as ann,
    ):
        first = await say_and_hear(ann, room, "ann", "first")
        for number in range(5):
            await say_and_hear(ann, room, "ann", f"m{number}")
        async with connect_async(url) as bob:
            assert (await receive(bob))["type"] == "welcome"
            await bob.send(
                json.dumps({"type": "join", "room": room, "nick": "bob", "since": first})
            )
            assert (await receive(bob))["resumed"] is True
            notice = await receive(bob)
            assert notice["type"] == "notice"
            assert "no longer kept" in notice["text"]
            for number in (2, 3, 4):  # what the room still keeps
                assert_message(await receive(bob), room, "ann", f"m{number}")


@pytest.mark.anyio
async def test_a_nick_sent_with_a_message_renames_the_sender() -> None:
    """The page sends the nick field with each message: no need to join again."""
    room = unique_room()
    async with serving(create_app("memory://")) as url, chatter(url, room, "ann") as ann:
        await client_says(ann, {"type": "message", "text": "as annie", "nick": " annie "})
        assert_message(await receive(ann), room, "annie", "as annie")
        await say(ann, "still annie")  # without a nick: the last one
        assert_message(await receive(ann), room, "annie", "still annie")
        await join(ann, room, "ann")
        await say(ann, "ann again")
        assert_message(await receive(ann), room, "ann", "ann again")


async def client_says(client: ClientConnection, frame: dict[str, Any]) -> None:
    await client.send(json.dumps(frame))


NO_HISTORY_LAYER = """
from channels_core.layers.local_memory import InMemoryChannelLayer

class NoHistoryLayer(InMemoryChannelLayer):
    url_schemes = ("nohistory",)
    supports_history = False
"""


@pytest.fixture
def no_history_scheme(fake_distribution: Callable[..., None]) -> str:
    """A scheme served by a memory layer without the "history" capability.

    A module of its own per test: the plugin manager remembers module names.
    """
    module = f"fake_nohistory_{uuid.uuid4().hex[:8]}"
    fake_distribution(
        module.replace("_", "-"),
        f"nohistory = {module}:NoHistoryLayer",
        **{module: NO_HISTORY_LAYER},
    )
    return "nohistory"


def test_the_demo_turns_history_on_where_the_layer_has_it(no_history_scheme: str) -> None:
    assert layer_options("memory://") == {"history_size": HISTORY_SIZE}
    assert layer_options("memory://room-hub?history_ttl=60") == {"history_size": HISTORY_SIZE}
    assert layer_options("memory://?history_size=0") == {}  # off, as the URL says
    assert layer_options("memory://?history_size=5") == {}  # the URL's own size
    assert layer_options(f"{no_history_scheme}://") == {}


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["history off", "no history capability"])
async def test_without_history_the_demo_works_as_before(
    where: str, request: pytest.FixtureRequest
) -> None:
    if where == "history off":
        app_url = "memory://?history_size=0"
    else:
        app_url = f"{request.getfixturevalue('no_history_scheme')}://"
    room = unique_room()
    async with serving(create_app(app_url)) as url:
        async with connect_async(url) as ann, connect_async(url) as bob:
            for client, nick in ((ann, "ann"), (bob, "bob")):
                welcome = await receive(client)
                assert (welcome["type"], welcome["history"]) == ("welcome", False)
                await join(client, room, nick, history=False)
            await say(ann, "hello")
            for client in (ann, bob):
                frame = await receive(client)
                assert_message(frame, room, "ann", "hello")
                assert "position" not in frame
            # a tab resuming on a server without history is told, and joins afresh
            await bob.send(
                json.dumps({"type": "join", "room": room, "nick": "bob", "since": "x-1"})
            )
            assert (await receive(bob))["resumed"] is False
            notice = await receive(bob)
            assert (notice["type"], notice["text"]) == ("notice", NO_HISTORY)
            await say(ann, "after")
            assert_message(await receive(bob), room, "ann", "after")


@pytest.mark.anyio
async def test_no_subscription_outlives_its_socket() -> None:
    app = create_app("memory://")
    async with serving(app) as url:
        channel: Channel = app.state.channel
        async with chatter(url, "lobby", "ann") as ann, chatter(url, "lobby", "bob"):
            await join(ann, "kitchen", "ann")
            await join(ann, "lobby", "ann")
            assert channel.stats().subscribers == 2
        async with chatter(url, "attic", "cy") as cy:
            await say(cy, "bye")
            await cy.close()  # closed mid-session, while a message is in flight
        await eventually(
            lambda: channel.stats().subscribers == channel.stats().groups == 0, TIMEOUT
        )


class _SlowSocket:
    """Just enough of a Starlette WebSocket for `ChatSession`, whose sends wait for the test."""

    def __init__(self) -> None:
        self.incoming, self._receive = anyio.create_memory_object_stream[dict[str, Any]](10)
        self._send, self.sent = anyio.create_memory_object_stream[str]()

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict[str, Any]:
        return await self._receive.receive()

    async def send_text(self, text: str) -> None:
        await self._send.send(text)

    def close(self) -> None:
        for stream in (self.incoming, self._receive, self._send, self.sent):
            stream.close()


@pytest.mark.anyio
async def test_lost_messages_are_noticed_and_the_room_goes_on(
    request: pytest.FixtureRequest,
) -> None:
    socket_ = _SlowSocket()
    request.addfinalizer(socket_.close)

    async def client_says(frame: dict[str, Any]) -> None:
        await socket_.incoming.send({"type": "websocket.receive", "text": json.dumps(frame)})

    async def next_frame() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT):
            frame: dict[str, Any] = json.loads(await socket_.sent.receive())
        return frame

    async with Channel.from_url("memory://", buffer_size=1) as channel:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ChatSession(cast(WebSocket, socket_), channel).run, "memory")
            assert (await next_frame())["type"] == "welcome"
            await client_says({"type": "join", "room": "lobby", "nick": "ann"})
            assert (await next_frame())["type"] == "joined"
            for n in range(4):  # the relay blocks sending the first; the buffer holds one
                await client_says({"type": "message", "text": f"m{n}"})
            await anyio.wait_all_tasks_blocked()
            assert (await next_frame())["text"] == "m0"
            notice = await next_frame()
            assert notice["type"] == "notice"
            assert "2 message(s) skipped" in notice["text"]
            assert (await next_frame())["text"] == "m3"
            await client_says({"type": "message", "text": "after"})
            assert (await next_frame())["text"] == "after"
            await socket_.incoming.send({"type": "websocket.disconnect", "code": 1000})
        assert channel.stats().subscribers == 0  # the session ended with its socket


# -- across processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Instance:
    """A `python -m examples.chat` process on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        return f"stdout:\n{self.stdout.read_text()}\nstderr:\n{self.stderr.read_text()}"

    def stop(self) -> int:
        """Ctrl-C, then wait; a process that does not stop is killed (and the test fails)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the demo ignored Ctrl-C\n{self.output()}") from None


@contextmanager
def chat_process(url: str, workdir: Path) -> Iterator[Instance]:
    """Start the demo on `url`, wait until it serves its page, stop it afterwards."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = workdir / f"{port}.out", workdir / f"{port}.err"
    env = {key: value for key, value in os.environ.items() if key != "CHANNELS_URL"}
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.chat", "--port", str(port), "--url", url],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    instance = Instance(process, port, stdout, stderr)
    try:
        wait_until_serving(instance)
        yield instance
    finally:
        status = instance.stop()
    assert status == 0, f"exit status {status}\n{instance.output()}"
    assert "Traceback" not in instance.stderr.read_text(), instance.output()


def wait_until_serving(instance: Instance) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise AssertionError(f"the demo exited early\n{instance.output()}")
        try:
            with urllib.request.urlopen(instance.http, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"the demo did not serve its page within 20 s\n{instance.output()}")


@pytest.fixture(scope="module")
def redis_pair(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Instance, Instance]]:
    workdir = tmp_path_factory.mktemp("chat-redis")
    with chat_process(redis_url, workdir) as a, chat_process(redis_url, workdir) as b:
        yield a, b


def sync_receive(client: SyncClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(client.recv(timeout=TIMEOUT))
    return frame


@contextmanager
def sync_chatter(url: str, room: str, nick: str) -> Iterator[SyncClientConnection]:
    with connect_sync(url) as client:
        welcome = sync_receive(client)
        assert welcome["type"] == "welcome"
        client.send(json.dumps({"type": "join", "room": room, "nick": nick}))
        joined = {"type": "joined", "room": room, "nick": nick, "resumed": False}
        assert sync_receive(client) == joined
        if welcome["history"]:  # the layer keeps history: the room's (empty) history
            assert sync_receive(client) == {"type": "history", "room": room, "messages": []}
        yield client


def assert_shared_rooms(a: Instance, b: Instance) -> None:
    room = unique_room()
    with sync_chatter(a.ws, room, "ann") as ann, sync_chatter(b.ws, room, "bob") as bob:
        ann.send(json.dumps({"type": "message", "text": "hello from A"}))
        assert_message(sync_receive(bob), room, "ann", "hello from A")
        bob.send(json.dumps({"type": "message", "text": "hello from B"}))
        assert_message(sync_receive(ann), room, "ann", "hello from A")  # her own, first
        assert_message(sync_receive(ann), room, "bob", "hello from B")


def test_two_instances_share_rooms_over_redis(redis_pair: tuple[Instance, Instance]) -> None:
    assert_shared_rooms(*redis_pair)


def test_two_instances_share_rooms_over_postgresql(postgres_url: str, tmp_path: Path) -> None:
    with chat_process(postgres_url, tmp_path) as a, chat_process(postgres_url, tmp_path) as b:
        assert_shared_rooms(a, b)


def test_two_instances_share_rooms_over_nats(nats_url: str, tmp_path: Path) -> None:
    with chat_process(nats_url, tmp_path) as a, chat_process(nats_url, tmp_path) as b:
        assert_shared_rooms(a, b)


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    with chat_process("memory://", tmp_path) as demo:
        assert (
            f"chat on memory:// (history_size=1000): open {demo.http}/" in demo.stdout.read_text()
        )
        with sync_chatter(demo.ws, "lobby", "ann") as ann:
            assert demo.stop() == 0
            with pytest.raises(ConnectionClosed):
                ann.recv(timeout=TIMEOUT)
    assert demo.stdout.read_text().rstrip().endswith("chat stopped")
    stderr = demo.stderr.read_text()
    assert "Traceback" not in stderr, stderr
    assert "ERROR" not in stderr, stderr


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("nosuchlayer://x", "pip install 'channels-core[redis]'"),  # lists the installed layers
        # Nothing listens on port 1 (refused, retried until connect_timeout: kept short).
        ("redis://127.0.0.1:1/0?connect_timeout=0.5", "127.0.0.1:1"),
    ],
)
def test_an_unusable_layer_url_is_a_plain_error(url: str, error: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.chat", "--url", url, "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"chat: cannot use {url}: " in result.stderr
    assert error in result.stderr
    assert "Traceback" not in result.stderr


# -- in a browser ------------------------------------------------------------------------


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium for the block; a missing one skips (outside CI) or fails."""
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def chat_page(browser: Browser, instance: Instance, room: str, nick: str) -> Page:
    """A tab of `instance` (a browser context of its own) that has joined `room` as `nick`."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(f"{instance.http}/#{room}")
    # The page joins on its own once connected (as a guest): a user types a nick after that.
    expect(page.locator("#log")).to_contain_text(f" in {room}")
    page.fill("#nick", nick)
    page.click("#join")
    expect(page.locator("#log")).to_contain_text(f"you are {nick} in {room}")
    return page


def type_message(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_a_message_typed_in_one_browser_appears_in_the_other(
    redis_pair: tuple[Instance, Instance],
) -> None:
    from playwright.sync_api import expect

    room = unique_room()
    with chromium() as browser:
        first, second = redis_pair
        ann, bob = chat_page(browser, first, room, "ann"), chat_page(browser, second, room, "bob")
        type_message(ann, "hello from the first browser")
        expect(bob.locator("#log")).to_contain_text("hello from the first browser")
        expect(bob.locator("#log .nick")).to_have_text(["ann"])
        bob.fill("#text", "and back")
        bob.click("#send")
        expect(ann.locator("#log")).to_contain_text("and back")


@pytest.fixture(scope="module")
def memory_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """The demo on its default layer, memory:// with history on."""
    with chat_process("memory://", tmp_path_factory.mktemp("chat-memory")) as demo:
        yield demo


def test_a_browser_shows_history_resumes_after_a_reconnect_and_takes_the_typed_nick(
    memory_demo: Instance,
) -> None:
    """The room's last messages on join; a reconnected socket misses nothing, repeats nothing.

    Bob's socket is closed from his page while his browser is offline (so it
    cannot reconnect at once); Ann speaks meanwhile; once Bob's page is back
    online it reconnects and shows her message once. A nick typed in the
    nick field applies to the next message, without pressing join.
    """
    from playwright.sync_api import expect

    room = unique_room()
    with chromium() as browser:
        ann = chat_page(browser, memory_demo, room, "ann")
        texts = ["one", "two"]
        for text in texts:
            type_message(ann, text)
        expect(ann.locator("#log .text")).to_have_text(texts)
        ann.fill("#nick", "annie")  # typed, join not pressed
        type_message(ann, "renamed")
        texts.append("renamed")
        expect(ann.locator("#log .nick")).to_have_text(["ann", "ann", "annie"])

        bob = chat_page(browser, memory_demo, room, "bob")
        expect(bob.locator("#log .text")).to_have_text(texts)  # the room's history
        expect(bob.locator("#log .nick")).to_have_text(["ann", "ann", "annie"])

        bob.context.set_offline(True)
        bob.evaluate("socket.close()")
        expect(bob.locator("#status")).to_have_text("disconnected, retrying…")
        type_message(ann, "while bob was away")
        texts.append("while bob was away")
        expect(ann.locator("#log .text")).to_have_text(texts)
        expect(bob.locator("#status")).to_have_text("disconnected, retrying…")
        expect(bob.locator("#log .text")).to_have_text(texts[:-1])
        bob.context.set_offline(False)
        expect(bob.locator("#log")).to_contain_text(f"reconnected to {room}")
        expect(bob.locator("#log .text")).to_have_text(texts)  # once, in order
        type_message(bob, "back")
        texts.append("back")
        for page in (ann, bob):
            expect(page.locator("#log .text")).to_have_text(texts)
        expect(bob.locator("#log .notice")).to_have_count(0)
