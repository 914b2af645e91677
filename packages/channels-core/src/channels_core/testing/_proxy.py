"""`TcpProxy`: a loopback TCP proxy to a broker, for faults a layer must survive.

The server's bytes can be handed on a few at a time (every reply split
over several reads), held back (a server that stopped answering), and new
connections refused (a server that is down), while the broker itself runs
untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketStream

from ._servers import LOOPBACK

__all__ = ["TcpProxy"]


class TcpProxy:
    """A TCP proxy on loopback to the server `server_url` names (any scheme with host:port).

    `url` is `server_url` through the proxy (set while `running`). With
    `piece`, the server's bytes are handed on `piece` at a time, each read
    alone; `freeze` holds everything back in both directions until `thaw`;
    while `refusing`, new connections are closed at once.
    """

    def __init__(self, server_url: str, piece: int = 1 << 16) -> None:
        self.server = urlsplit(server_url)
        self.piece = piece
        self.frozen = False
        self.refusing = False
        self._thawed = anyio.Event()
        self.url = ""

    def freeze(self) -> None:
        self.frozen, self._thawed = True, anyio.Event()

    def thaw(self) -> None:
        self.frozen = False
        self._thawed.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TcpProxy]:
        """Serve until the block ends; every proxied connection is closed then."""
        listener = await anyio.create_tcp_listener(local_host=LOOPBACK)
        async with listener, anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, self._serve)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
            netloc = self.server.netloc.rsplit("@", 1)
            auth = netloc[0] + "@" if len(netloc) == 2 else ""
            self.url = self.server._replace(netloc=f"{auth}{LOOPBACK}:{port}").geturl()
            yield self
            self.thaw()
            tasks.cancel_scope.cancel()

    async def _serve(self, client: SocketStream) -> None:
        if self.refusing:
            await client.aclose()
            return
        host, port = self.server.hostname or LOOPBACK, self.server.port
        if port is None:
            raise ValueError(f"no port in {self.server.geturl()!r}")
        async with client, await anyio.connect_tcp(host, port) as upstream:
            async with anyio.create_task_group() as pumps:
                pumps.start_soon(self._pump, client, upstream, 1 << 16)
                pumps.start_soon(self._pump, upstream, client, self.piece)

    async def _pump(self, source: SocketStream, target: SocketStream, piece: int) -> None:
        with anyio.CancelScope() as scope:
            try:
                async for data in source:
                    if self.frozen:
                        await self._thawed.wait()
                    for start in range(0, len(data), piece):
                        await target.send(data[start : start + piece])
                        await anyio.lowlevel.checkpoint()  # the reader sees each piece alone
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            await target.aclose()
            scope.cancel()
