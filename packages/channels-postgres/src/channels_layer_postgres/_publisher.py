"""Where the layer's statements run: its own pool, or the application's pool or connection.

Publishing never waits behind the listening connection. The layer's own
publishes go through its publishing connections (`_publishing`), every
other statement through its asyncpg pool. The application may hand over an
asyncpg pool or connection it owns; the layer then runs everything on it
(through asyncpg) without ever closing it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg

from ._connection import CLOSE_TIMEOUT
from ._publishing import PublishingConnections

__all__ = ["Publisher"]


class Publisher:
    """Hands out connections for statements, and the publishing connections."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        pool_size: int,
        *,
        pool: Any = None,
        connection: Any = None,
    ) -> None:
        if pool is not None and connection is not None:
            raise TypeError("pass either pool or connection, not both")
        self._connect_kwargs = connect_kwargs
        self._pool_size = pool_size
        self._app_pool = pool
        self._app_connection = connection
        self._pool: Any = None
        self._connection_lock: anyio.Lock | None = None  # made in open(), inside the event loop
        #: Where the layer's own publishes run (`_publishing`), while open and owned.
        self.publishing: PublishingConnections | None = None

    @property
    def owned(self) -> bool:
        """True when the layer opens (and closes) its own pool."""
        return self._app_pool is None and self._app_connection is None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Open the layer's own pool and publishing connections for the duration of the
        context (nothing when given a pool or connection).

        Both connect lazily (``min_size=0``), so the first statement is
        what reaches the server, inside the caller's retry bound.
        """
        self._connection_lock = anyio.Lock()
        if not self.owned:
            yield
            return
        self._pool = await asyncpg.create_pool(
            **self._connect_kwargs,
            min_size=0,
            max_size=self._pool_size,
            reset=_reset_if_needed,
        )
        self.publishing = PublishingConnections(
            functools.partial(asyncpg.connect, **self._connect_kwargs), self._pool_size
        )
        try:
            yield
        finally:
            publishing, self.publishing = self.publishing, None
            await publishing.aclose(CLOSE_TIMEOUT)
            pool, self._pool = self._pool, None
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(CLOSE_TIMEOUT):
                    with contextlib.suppress(Exception):
                        await pool.close()
                pool.terminate()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A connection to run one operation on."""
        if self._app_connection is not None:
            assert self._connection_lock is not None, "open() first"
            async with self._connection_lock:
                yield self._app_connection
            return
        pool = self._app_pool if self._app_pool is not None else self._pool
        if pool is None:
            raise RuntimeError("the publisher is not open")
        if pool is not self._pool:  # the application's pool: borrow as it expects
            async with pool.acquire() as conn:
                yield conn
            return
        conn = await pool.acquire()
        try:
            yield conn
        except BaseException:
            await self._discard(conn)
            raise
        await _release(pool, conn)

    @contextlib.asynccontextmanager
    async def setup(self) -> AsyncIterator[Any]:
        """A connection for the layer's setup statements (the schema check).

        With the layer's own pool, a new connection that then becomes the
        first publishing connection (a layer that only publishes holds no
        pooled connection); else one from `acquire`.
        """
        publishing = self.publishing
        if publishing is None:
            async with self.acquire() as conn:
                yield conn
            return
        conn = await asyncpg.connect(**self._connect_kwargs)
        try:
            yield conn
        except BaseException:
            conn.terminate()
            raise
        publishing.adopt(conn)

    async def _discard(self, conn: Any) -> None:
        """Cut `conn` and hand it back to the pool, which replaces it.

        A statement may still be in flight (a timeout, a cancellation): the
        pool would wait for the server to confirm its cancellation, which a
        frozen server never does.
        """
        raw = conn._con if isinstance(conn, _PROXY) else conn
        if raw is not None:  # None: terminated already, and so back in the pool
            raw.terminate()
        if self._pool is not None:
            await _release(self._pool, conn)


_PROXY = asyncpg.pool.PoolConnectionProxy


async def _release(pool: Any, conn: Any) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await pool.release(conn)


async def _reset_if_needed(connection: Any) -> None:
    """Pool reset for the layer's own pool: usually nothing to do.

    asyncpg's default reset costs a round trip on every release (UNLISTEN,
    RESET ALL, ...). The layer's statements leave no session state behind,
    so only a connection released inside a transaction (a cancelled
    statement) gets the full reset.
    """
    if connection.is_in_transaction():
        await connection.reset()
