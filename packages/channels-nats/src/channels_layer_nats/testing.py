"""Throwaway NATS servers for tests, from the ``nats-server`` binary, on loopback ports.

    with NatsServer() as server:          # started on a free loopback port
        layer = NatsChannelLayer.from_url(server.url)
        ...
        server.restart()                  # an outage; same port, same URL

    with NatsCluster(3) as cluster:       # three routed servers
        url = cluster.url                 # nats://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
        cluster.servers[0].stop()         # a dead node

`monitor_port` serves the server's monitoring endpoints (``/subsz``,
``/connz?subs=1``), read with `monitor`, `subscriptions`, `connection`.
``NatsServer(jetstream=True)`` keeps a JetStream store of its own (`wipe_store` between `stop` and
`start`: a server that lost its data). `Relay` forwards a port to a server
and can cut every connection through it (a dropped connection, without
touching the server). `delete_history` removes a namespace's history
stream (tests clean up after themselves on a shared server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
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

__all__ = [
    "NatsCluster",
    "NatsServer",
    "Relay",
    "ToolMissing",
    "delete_history",
    "monitor",
    "reachable",
]

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
        jetstream: bool = False,
    ) -> None:
        super().__init__(port)
        self.binary = require_tool("nats-server", _INSTALL_HINT)
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.name = name or f"test-{self.port}"
        self._directory = Path(tempfile.mkdtemp(prefix="nats-server-"))
        self._config = self._directory / "server.conf"
        #: The JetStream store (with ``jetstream=True``).
        self.store = self._directory / "jetstream"
        if jetstream:
            config += f'\njetstream {{ store_dir: "{self.store}" }}\n'
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

    def connection(self, name: str) -> dict[str, Any]:
        """The one client connection named `name` (``client_name``), as ``/connz?subs=1``
        shows it: ``in_msgs`` (it sent), ``out_msgs`` (it was sent), ``subscriptions_list``."""
        (found,) = [
            entry
            for entry in self.monitor("connz?subs=1")["connections"]
            if entry.get("name") == name
        ]
        return dict(found)

    def wipe_store(self) -> None:
        """Delete the JetStream store (the server must be stopped): it starts with no streams."""
        assert self._process is None, "stop the server first"
        shutil.rmtree(self.store, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)


class Relay:
    """A TCP relay on a free loopback port to `port`; `cut` drops every connection through it.

    Clients that connect to `url` reach the server; `cut` closes both ends
    of each relayed connection at once, as a network failure would, and
    the relay keeps accepting new connections (a client reconnects).
    """

    def __init__(self, port: int, host: str = LOOPBACK) -> None:
        self.target = (host, port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def cut(self) -> int:
        """Close every relayed connection; how many there were."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(sockets) // 2

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self.cut()
        self._thread.join(timeout=5)


def delete_history(url: str, namespace: str) -> bool:
    """Delete `namespace`'s history stream on the server at `url`; False if it had none.

    Synchronous (a private event loop in a thread), for test teardown.
    """
    import nats
    import nats.errors
    import nats.js.errors

    from ._history import stream_name

    async def quiet(exc: Exception) -> None:
        return

    async def delete() -> bool:
        client = await nats.connect(url, connect_timeout=2, error_cb=quiet)
        try:
            return await client.jetstream().delete_stream(stream_name(namespace))
        except (
            nats.js.errors.NotFoundError,
            nats.js.errors.ServiceUnavailableError,
            nats.errors.NoRespondersError,
        ):
            return False  # no such stream, or a server without JetStream
        finally:
            await client.close()

    if not reachable(url):  # no server (a test that never reached one): nothing to delete
        return False

    deleted: list[bool] = []
    worker = threading.Thread(target=lambda: deleted.append(asyncio.run(delete())))
    worker.start()
    worker.join(timeout=10)
    return bool(deleted and deleted[0])


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
