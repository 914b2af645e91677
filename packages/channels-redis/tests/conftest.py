"""Redis servers for the tests.

`redis_url` is the shared server: ``CHANNELS_TEST_REDIS_URL``, else
redis://127.0.0.1:6379; if that is unreachable outside CI, a throwaway
``redis-server`` is started for the session (in CI, unreachable is a
failure). `throwaway_redis` is a private server per test, on another free
loopback port, that the test may stop and restart. Pub/sub ignores db
numbers, so tests keep apart through a unique channel `prefix`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis
import redis.asyncio

from channels_layer_redis import RedisPubSubChannelLayer

DEFAULT_URL = "redis://127.0.0.1:6379"

LayerMaker = Callable[..., RedisPubSubChannelLayer]


def _reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` process on a loopback port (and a unix socket) that we own."""

    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        self._binary = _require_tool("redis-server", "apt-get install redis-server")
        self._directory = directory
        self.port = _free_port()
        self.unix_socket = directory / "redis.sock"
        self.password = password
        self.tls_port = _free_port() if tls else None
        self.ca_file = directory / "ca.crt"
        if tls:
            _make_certificates(directory)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis://{auth}127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        assert self._process is None
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--unixsocket", str(self.unix_socket),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._directory),
                *(["--requirepass", self.password] if self.password else []),
                *self._tls_arguments(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _reachable(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def _tls_arguments(self) -> list[str]:
        if self.tls_port is None:
            return []
        return [
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(self._directory / "server.crt"),
            "--tls-key-file", str(self._directory / "server.key"),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)


def _require_tool(name: str, install: str) -> str:
    """The path of a program the tests need: a skip without it, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _make_certificates(directory: Path) -> None:
    """A throwaway CA (ca.crt) and a server certificate for 127.0.0.1 signed by it."""
    openssl = _require_tool("openssl", "apt-get install openssl")

    def run(*arguments: str) -> None:
        subprocess.run([openssl, *arguments], cwd=directory, check=True, capture_output=True)

    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt")  # fmt: skip


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("CHANNELS_TEST_REDIS_URL", DEFAULT_URL)
    if _reachable(url):
        yield url
        return
    if os.environ.get("CI"):
        pytest.fail(f"the test Redis server {url} is unreachable (CI is set, so no fallback)")
    server = RedisServer(tmp_path_factory.mktemp("redis-shared"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def start_redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """Starts private servers (``password=``: requirepass, ``tls=True``: a TLS port too)."""
    servers: list[RedisServer] = []

    def start(password: str | None = None, tls: bool = False) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), password, tls)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def throwaway_redis(start_redis_server: Callable[..., RedisServer]) -> RedisServer:
    return start_redis_server()


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll `predicate` (sync or async) until it holds; fail the test after `timeout` s."""
    with anyio.fail_after(timeout):
        while True:  # what is polled here (counters, the server) has no event to wait on
            holds = predicate()
            if not isinstance(holds, bool):
                holds = await holds
            if holds:
                return
            await anyio.sleep(0.01)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    return wait_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    """A channel prefix of this test's own: no cross-talk on a shared server."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_redis_layer(redis_url: str, prefix: str) -> LayerMaker:
    """Builds layers on the shared server under this test's prefix (options pass through)."""

    def make(**options: object) -> RedisPubSubChannelLayer:
        return RedisPubSubChannelLayer.from_url(redis_url, **{"prefix": prefix, **options})

    return make


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client on the shared server, to look at it from outside."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
