"""Throwaway Redis servers for tests: this package's, and a layer user's.

`RedisServer` runs a private ``redis-server`` (optionally with a password and a
TLS port whose certificate a throwaway CA signed) on free loopback ports;
`RedisServers` starts any number of them and stops them all at the end.
Needs the ``redis-server`` program (and ``openssl`` for TLS).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

__all__ = [
    "RedisServer",
    "ToolMissing",
    "free_port",
    "reachable",
    "redis_servers",
    "require_tool",
]


class ToolMissing(RuntimeError):
    """A program the throwaway servers need is not installed."""


def reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` process on a loopback port (and a unix socket) that we own."""

    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        self._binary = require_tool("redis-server", "apt-get install redis-server")
        self._directory = directory
        self.port = free_port()
        self.unix_socket = directory / "redis.sock"
        self.password = password
        self.tls_port = free_port() if tls else None
        self.ca_file = directory / "ca.crt"
        if tls:
            make_certificates(directory)
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
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
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


def require_tool(name: str, install: str) -> str:
    """The path of a program the servers need; `ToolMissing` without it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed ({install})")
    return path


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
def redis_servers(make_directory: Callable[[], Path]) -> Iterator[Callable[..., RedisServer]]:
    """A ``start(password=None, tls=False)`` function; every server it started stops at exit."""
    servers: list[RedisServer] = []

    def start(password: str | None = None, tls: bool = False) -> RedisServer:
        server = RedisServer(make_directory(), password, tls)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
