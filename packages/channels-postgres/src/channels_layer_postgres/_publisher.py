"""Where the layer's statements run: its own pool, or the application's pool or connection.

Publishing never waits behind the listening connection. The application
may hand over an asyncpg pool or connection it owns; the layer then uses it
without ever closing it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import asyncpg

from ._connection import CLOSE_TIMEOUT

__all__ = ["Publisher", "Statement"]

#: ``await statement(connection, timeout)``: one statement, bounded by the driver.
Statement = Callable[[Any, float | None], Awaitable[None]]


class Publisher:
    """Hands out connections for publishing and fetching payloads."""

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
        # One connection of the layer's own pool kept out between uses: asyncpg's
        # acquire/release costs more than a NOTIFY round trip. Others come and
        # go through the pool when publishers run concurrently.
        self._idle: Any = None

    @property
    def owned(self) -> bool:
        """True when the layer opens (and closes) its own pool."""
        return self._app_pool is None and self._app_connection is None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Open the layer's own pool for the duration of the context (nothing when given one).

        The pool connects lazily (``min_size=0``), so the first statement is
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
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            idle, self._idle = self._idle, None
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(CLOSE_TIMEOUT):
                    with contextlib.suppress(Exception):
                        if idle is not None:
                            await pool.release(idle)
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
        conn = await self._take_idle() or await pool.acquire()
        try:
            yield conn
        except BaseException:
            await self._discard(conn)
            raise
        await self._give_back(conn)

    async def run_on_idle(self, statement: Statement, timeout: float) -> bool:
        """Run `statement` on the kept connection, bounded by `timeout`; False if none is kept.

        The cheap path of a publish: no pool, no cancel scope, only the
        driver's own statement timeout. A failure cuts the connection (the
        caller then retries through `acquire`).
        """
        conn = await self._take_idle()
        if conn is None:
            return False
        try:
            await statement(conn, timeout)
        except BaseException:
            await self._discard(conn)
            raise
        await self._give_back(conn)
        return True

    async def _take_idle(self) -> Any:
        conn, self._idle = self._idle, None
        if conn is not None and conn.is_closed():
            await self._discard(conn)
            return None
        return conn

    async def _give_back(self, conn: Any) -> None:
        """Keep `conn` for the next publish, or return it to the pool if one is kept already."""
        if self._pool is None:
            conn.terminate()  # the pool closed meanwhile
        elif self._idle is None:
            self._idle = conn
        else:
            await _release(self._pool, conn)

    async def _discard(self, conn: Any) -> None:
        """Cut `conn` and hand it back to the pool, which replaces it.

        A statement may still be in flight (a timeout, a cancellation): the
        pool would wait for the server to confirm its cancellation, which a
        frozen server never does.
        """
        conn.terminate()
        if self._pool is not None:
            await _release(self._pool, conn)


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
