"""Throwaway NATS servers for tests, from the ``nats-server`` binary, on loopback ports.

    with NatsServer() as server:          # started on a free loopback port
        layer = NatsChannelLayer.from_url(server.url)
        ...
        server.restart()                  # an outage; same port, same URL

    with NatsCluster(3) as cluster:       # three routed servers
        url = cluster.url                 # nats://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
        cluster.servers[0].stop()         # a dead node

`monitor_port` serves the server's monitoring endpoints (``/subsz``,
``/connz?subs=1``), read with `monitor`.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from channels_core.testing import (
    LOOPBACK,
    ThrowawayServer,
    ToolMissing,
    free_port,
    require_tool,
)

__all__ = ["NatsCluster", "NatsServer", "ToolMissing", "monitor", "reachable"]

_INSTALL_HINT = "apt-get install nats-server, or see https://docs.nats.io"


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether the first server of a ``nats://host:port`` URL sends its INFO line."""
    host_port = url.partition("://")[2].rpartition("@")[2].split(",")[0].split("?")[0]
    host, _, port = host_port.rstrip("/").rpartition(":")
    try:
        with socket.create_connection((host or LOOPBACK, int(port or 4222)), timeout) as probe:
            probe.settimeout(timeout)
            return probe.recv(5) == b"INFO "
    except (OSError, ValueError):
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def monitor(port: int, endpoint: str) -> Any:
    """The JSON the monitoring port answers at `endpoint` (``"subsz"``, ``"connz?subs=1"``)."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/{endpoint}", timeout=5) as answer:
        return json.load(answer)


class NatsServer(ThrowawayServer):
    """A private ``nats-server`` with a monitoring port; `config` is extra config file text."""

    def __init__(
        self,
        port: int | None = None,
        *,
        config: str = "",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(port)
        self.binary = require_tool("nats-server", _INSTALL_HINT)
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.name = name or f"test-{self.port}"
        self._directory = Path(tempfile.mkdtemp(prefix="nats-server-"))
        self._config = self._directory / "server.conf"
        self._config.write_text(config)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> None:
        if self._process is not None:
            return
        command = [
            self.binary,
            "-c",
            str(self._config),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-n",
            self.name,
        ]
        if self.cluster_port is not None:
            command += ["--cluster", f"nats://{self.host}:{self.cluster_port}"]
            command += ["--cluster_name", "channels-test"]
            if self.routes:
                routes = ",".join(f"nats://{self.host}:{port}" for port in self.routes)
                command += ["--routes", routes]
        log = (self._directory / "server.log").open("ab")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own binary
        log.close()
        deadline = time.monotonic() + 10
        while not _listening(self.port) or not _listening(self.monitor_port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self._directory / "server.log").read_text(errors="replace")
                raise RuntimeError(f"nats-server did not start: {log_text[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()  # also ends a frozen server
        process.wait(timeout=10)

    def freeze(self) -> None:
        """Stop the server process (SIGSTOP): connections stay open, nothing answers."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGCONT)

    def monitor(self, endpoint: str) -> Any:
        """This server's monitoring answer at `endpoint`."""
        return monitor(self.monitor_port, endpoint)

    def subscriptions(self) -> int:
        """How many subscriptions the server holds (every client)."""
        return int(self.monitor("subsz")["num_subscriptions"])

    def cleanup(self) -> None:
        for path in sorted(self._directory.glob("*"), reverse=True):
            path.unlink(missing_ok=True)
        self._directory.rmdir()


class NatsCluster:
    """`size` routed servers on loopback ports (a full mesh), as one context manager."""

    def __init__(self, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(cluster_port=port, routes=tuple(p for p in cluster_ports if p != port))
            for port in cluster_ports
        ]

    @property
    def url(self) -> str:
        """A seed list of every server."""
        return "nats://" + ",".join(f"{s.host}:{s.port}" for s in self.servers)

    def wait_for_routes(self, timeout: float = 10.0) -> None:
        """Return once every running server has a route to every other running one."""
        running = [s for s in self.servers if s._process is not None]
        deadline = time.monotonic() + timeout
        while any(s.monitor("routez")["num_routes"] < len(running) - 1 for s in running):
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster's routes did not come up")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        try:
            for server in self.servers:
                server.start()
            self.wait_for_routes()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self.servers:
            try:
                server.stop()
            finally:
                server.cleanup()
