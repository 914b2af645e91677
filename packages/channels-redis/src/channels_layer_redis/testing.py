"""Throwaway Redis servers for tests: this package's, and a layer user's.

    with RedisServer() as server:          # started on free loopback ports
        layer = RedisPubSubChannelLayer.from_url(server.url)
        ...
        server.restart()                   # an outage; same port, same URL

`RedisServer` runs a private ``redis-server`` (optionally with a password,
and a TLS port whose certificate a throwaway CA signed) in the shape of
`channels_core.testing.ThrowawayServer`; `redis_servers` starts any number
of them and stops them all when its block ends. Needs the ``redis-server``
program (and ``openssl`` for TLS); without it they raise `ToolMissing`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from channels_core.testing import ThrowawayServer, ToolMissing, free_port, require_tool

__all__ = [
    "RedisServer",
    "ToolMissing",
    "free_port",
    "make_certificates",
    "reachable",
    "redis_servers",
    "require_tool",
]

_INSTALL_HINT = "apt-get install redis-server"


def reachable(url: str) -> bool:
    """Whether a Redis server answers PING at `url`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer(ThrowawayServer):
    """A ``redis-server`` process on a loopback port (and a unix socket) that we own.

    Its files go to `directory` (a temporary directory of its own if None,
    removed at the end).
    """

    def __init__(
        self,
        directory: Path | None = None,
        password: str | None = None,
        tls: bool = False,
        *,
        port: int | None = None,
    ) -> None:
        super().__init__(port)
        self._binary = require_tool("redis-server", _INSTALL_HINT)
        self._own_directory = directory is None
        self._directory = (
            Path(tempfile.mkdtemp(prefix="redis-server-")) if directory is None else directory
        )
        self.unix_socket = self._directory / "redis.sock"
        self.password = password
        self.tls_port = free_port() if tls else None
        self.ca_file = self._directory / "ca.crt"
        if tls:
            make_certificates(self._directory)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis://{auth}{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (to freeze it with SIGSTOP)."""
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        if self._process is not None:
            return
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [
                self._binary,
                "--port", str(self.port),
                "--bind", self.host,
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
        while not reachable(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
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

    def cleanup(self) -> None:
        if self._own_directory:
            shutil.rmtree(self._directory, ignore_errors=True)


def make_certificates(directory: Path) -> None:
    """A throwaway CA (ca.crt) and a server certificate for 127.0.0.1 signed by it."""
    openssl = require_tool("openssl", "apt-get install openssl")

    def run(*arguments: str) -> None:
        subprocess.run(  # noqa: S603 - openssl from PATH, our own arguments
            [openssl, *arguments], cwd=directory, check=True, capture_output=True
        )

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


@contextmanager
def redis_servers(
    make_directory: Callable[[], Path | None] = lambda: None,
) -> Iterator[Callable[..., RedisServer]]:
    """A ``start(password=None, tls=False)`` function; every server it started stops at exit."""
    with ExitStack() as servers:

        def start(password: str | None = None, tls: bool = False) -> RedisServer:
            return servers.enter_context(RedisServer(make_directory(), password, tls))

        yield start
