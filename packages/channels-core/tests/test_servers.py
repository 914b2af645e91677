"""`ThrowawayServer`: the shape every layer's test server takes, with a real server process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from channels_core.testing import (
    LOOPBACK,
    ThrowawayServer,
    ToolMissing,
    free_port,
    require_tool,
    wait_for_port,
)


class HttpServer(ThrowawayServer):
    """Python's own http.server, standing in for a broker process."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.cleaned = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", self.host, str(self.port)],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def cleanup(self) -> None:
        self.cleaned = True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def test_the_context_starts_restarts_and_stops_the_server(tmp_path: Path) -> None:
    with HttpServer(tmp_path) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        assert _accepts(server.port)
        server.stop()
        assert not _accepts(server.port)
        server.restart()  # from stopped: starts again, same port
        assert _accepts(server.port)
        first_pid = server.process.pid if server.process else None
        server.restart()
        assert _accepts(server.port)
        assert server.process is not None
        assert server.process.pid != first_pid
    assert not _accepts(server.port)
    assert server.cleaned


def test_free_port_is_free_and_wait_for_port_gives_up() -> None:
    port = free_port()
    assert not _accepts(port)
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port(port, timeout=0.2)


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Taken before anything binds them (a cluster's nodes): all different."""
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)


def test_require_tool_names_the_missing_program() -> None:
    assert require_tool("sh", "it is everywhere")
    with pytest.raises(ToolMissing, match="apt-get install nothing"):
        require_tool("no-such-program-for-channels", "apt-get install nothing")
