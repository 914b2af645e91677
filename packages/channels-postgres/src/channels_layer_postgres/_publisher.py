"""Where the layer's statements run: its own pool, or the application's pool or connection.

Publishing never waits behind the listening connection. The application
may hand over an asyncpg pool or connection it owns; the layer then uses it
without ever closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import asyncpg

from ._connection import CLOSE_TIMEOUT

__all__ = ["Publisher"]


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
        self._loop: asyncio.AbstractEventLoop | None = None
        # The kept connection's statement timeout, without a timer per statement
        # (asyncpg's ``timeout=`` arms and cancels one each time: a fifth of a
        # publish's CPU). One lazy timer: when it fires it cuts the connection
        # if the statement running then is past its deadline, else it re-arms
        # for that statement's deadline, or stops if none is running.
        self._running: Any = None  # the kept connection while a statement runs on it
        self._deadline = 0.0  # loop time by which that statement must end
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out: Any = None  # the connection the timer cut

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
        self._loop = asyncio.get_running_loop()
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
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
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

    async def run_on_idle(self, query: str, arguments: Sequence[Any], timeout: float) -> bool:
        """Run `query` on the kept connection, bounded by `timeout`; False if none is kept.

        The cheap path of a publish: no pool, no cancel scope, no timer of
        its own (the shared deadline timer bounds it). A failure cuts the
        connection (the caller then retries through `acquire`); one past
        its deadline raises TimeoutError.
        """
        conn = self._idle
        if conn is None:
            return False
        self._idle = None
        raw = _unwrapped(conn)
        if raw is None or raw.is_closed():
            await self._discard(conn)
            return False
        loop = self._loop
        assert loop is not None
        self._deadline = loop.time() + timeout
        self._running = conn
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_deadline)
        try:
            await raw.execute(query, *arguments)
        except BaseException as exc:
            self._running = None
            timed_out, self._timed_out = self._timed_out is conn, None
            await self._discard(conn)
            if timed_out and isinstance(exc, Exception):
                raise TimeoutError(f"no answer within {timeout:g} s") from exc
            raise
        self._running = self._timed_out = None  # cut just after it answered: that is fine
        if self._idle is None and self._pool is not None:
            self._idle = conn  # kept for the next publish (what `_give_back` does)
        else:
            await self._give_back(conn)
        return True

    def time_left(self) -> float:
        """Seconds left until the deadline of the kept connection's last statement."""
        assert self._loop is not None
        return self._deadline - self._loop.time()

    def _on_deadline(self) -> None:
        """The deadline timer: cut a statement running past its deadline, or wait for it."""
        self._timer = None
        conn = self._running
        if conn is None:
            return  # the next statement re-arms
        loop = self._loop
        assert loop is not None
        if loop.time() >= self._deadline:
            self._timed_out = conn
            # The statement fails at once (run_on_idle raises TimeoutError); the
            # pool takes the connection back and replaces it.
            conn.terminate()
        else:
            self._timer = loop.call_at(self._deadline, self._on_deadline)

    async def _take_idle(self) -> Any:
        conn, self._idle = self._idle, None
        if conn is not None:
            raw = _unwrapped(conn)
            if raw is None or raw.is_closed():
                await self._discard(conn)
                return None
        return conn

    async def _give_back(self, conn: Any) -> None:
        """Keep `conn` for the next publish, or return it to the pool if one is kept already."""
        if self._pool is None:  # the pool closed meanwhile
            raw = _unwrapped(conn)
            if raw is not None:
                raw.terminate()
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
        raw = _unwrapped(conn)
        if raw is not None:  # None: terminated already, and so back in the pool
            raw.terminate()
        if self._pool is not None:
            await _release(self._pool, conn)


def _unwrapped(conn: Any) -> Any:
    """The asyncpg connection behind a pool's proxy, None once it went back to the pool.

    Statements run on it directly: the proxy's per-call indirection costs
    as much again as a statement's own Python work. Terminating a connection
    (the deadline timer does) hands it back to the pool at once, leaving the
    proxy empty; the proxy is still what `Pool.release` takes.
    """
    if isinstance(conn, _PROXY):
        return conn._con
    return conn


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
