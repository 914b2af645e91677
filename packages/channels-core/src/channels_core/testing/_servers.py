"""Throwaway broker servers for tests: one shape for every layer's helpers.

A layer's ``testing`` module subclasses `ThrowawayServer` for its broker,
defining `url`, `start` and `stop` (and `cleanup` for its files); tests
then handle every broker alike::

    with RedisServer(tmp_path) as server:   # started, on a free loopback port
        layer = RedisPubSubChannelLayer.from_url(server.url)
        ...
        server.restart()                    # a fault test's outage
    # stopped and cleaned up

Servers only ever listen on the loopback interface.
"""

from __future__ import annotations

import abc
import shutil
import socket
import threading
import time
from types import TracebackType
from typing import Self

__all__ = [
    "LOOPBACK",
    "ThrowawayServer",
    "ToolMissing",
    "free_port",
    "require_tool",
    "wait_for_port",
]

#: The only address throwaway servers listen on.
LOOPBACK = "127.0.0.1"


class ToolMissing(RuntimeError):
    """A program a throwaway server needs is not installed (tests usually skip then)."""


def require_tool(name: str, install_hint: str) -> str:
    """The path of the program `name`; `ToolMissing` (saying how to install it) without it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed ({install_hint})")
    return path


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now, never one handed out before.

    Fixtures often take several ports before starting anything (a cluster's
    nodes and bus ports): the kernel may offer a port twice meanwhile, and
    a second server on it would fail, or its readiness check would reach
    the first one.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port


#: Ports `free_port` gave this process (its callers may not have bound them yet).
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def wait_for_port(port: int, *, host: str = LOOPBACK, timeout: float = 10.0) -> None:
    """Return once `host`:`port` accepts TCP connections; `TimeoutError` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:g} s ({exc})"
                ) from exc
            time.sleep(0.02)


class ThrowawayServer(abc.ABC):
    """A private broker for tests, on a free loopback port: `url`, `start`, `stop`, `restart`.

    Entering the context starts it; leaving stops it (also if a test left
    it stopped) and calls `cleanup`. `start` returns once the server
    accepts connections; `stop` returns once it is gone; both may be
    called again (a fault test stops a server and starts it on the same
    port, so its clients reconnect to the same URL).
    """

    def __init__(self, port: int | None = None) -> None:
        #: The loopback port the server listens on (kept across restarts).
        self.port = free_port() if port is None else port
        #: The address it listens on.
        self.host = LOOPBACK

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL a layer reaches this server with."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server; return once it accepts connections."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server (at once; no need to be polite); a no-op if it is stopped."""

    def restart(self) -> None:
        """Stop and start again, on the same port."""
        self.stop()
        self.start()

    def cleanup(self) -> None:  # noqa: B027 - optional hook, nothing to clean by default
        """Remove what the server left behind (data directories); called after `stop`."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
