"""The one connection that LISTENs for a whole layer, kept alive and in sync.

The layer says which channels it wants (`desired`); the listener makes its
connection LISTEN exactly those, in one batch per change. A liveness query
every `liveness_interval` notices a connection that died silently; a lost
connection is replaced with backoff, every wanted channel is LISTENed
again, and `on_restored` reports the gap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg

from channels_core.exceptions import BrokerUnavailableError
from channels_core.reconnect import retry_until

from ._config import Settings
from ._connection import CLOSE_TIMEOUT, CONNECTION_ERRORS, ListenConnection
from ._counters import LayerCounters
from ._sql import listen_batch

__all__ = ["Listener"]

logger = logging.getLogger("channels_layer_postgres")

Statements = Callable[[set[str], set[str]], list[str]]


class Listener:
    """Owns the listening connection; run `run` in the layer's task group."""

    def __init__(
        self,
        *,
        connect_kwargs: dict[str, Any],
        settings: Settings,
        describe: str,
        desired: Callable[[], set[str]],
        extra_statements: Statements,
        on_notification: Callable[[str, str], None],
        on_restored: Callable[[], None],
        counters: LayerCounters,
    ) -> None:
        self._connect_kwargs = connect_kwargs
        self._settings = settings
        self._describe = describe
        self._desired = desired
        self._extra_statements = extra_statements
        self._on_notification = on_notification
        self._on_restored = on_restored
        self._counters = counters
        self._conn: ListenConnection | None = None
        self._dead = anyio.Event()
        self._live = anyio.Event()  # set while `_conn` is up and in sync
        self._lock = anyio.Lock()  # one statement at a time on `_conn`
        self._listening: set[str] = set()
        #: Backend process id of the listening connection, while connected.
        self.pid: int | None = None

    # -- the supervisor ---------------------------------------------------------

    async def start(self) -> None:
        """Connect and LISTEN; BrokerUnavailableError after `connect_timeout`."""
        settings = self._settings
        await retry_until(
            self._open,
            timeout=settings.connect_timeout,
            retry_on=CONNECTION_ERRORS,
            what=f"connect to {self._describe}",
            backoff=settings.reconnect_backoff,
        )

    async def run(self) -> None:
        """After `start`: watch the connection and replace it whenever it dies.

        Cancelling it leaves the connection open: the layer still needs it to
        unsubscribe while it shuts down, then calls `close`.
        """
        conn = self._conn
        assert conn is not None, "start() first"
        while True:
            await self._watch(conn)
            self._forget(conn)
            conn = await self._reconnect()
            self._counters.reconnects += 1
            logger.info("reconnected to %s; listening again", self._describe)
            self._on_restored()

    async def _open(self) -> ListenConnection:
        conn: ListenConnection = await asyncpg.connect(
            **self._connect_kwargs, connection_class=ListenConnection
        )
        try:
            dead = anyio.Event()
            conn.add_termination_listener(lambda _connection: dead.set())
            conn.on_notification = self._on_notification
            async with self._lock:
                self._listening = set()
                await self._sync_locked(conn)
            self._conn, self._dead, self.pid = conn, dead, conn.get_server_pid()
            self._live.set()
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _reconnect(self) -> ListenConnection:
        delays = self._settings.reconnect_backoff.delays()
        while True:
            try:
                return await self._open()
            except Exception as exc:  # keep trying: the layer must come back by itself
                logger.warning(
                    "cannot reconnect to %s yet (%s: %s)", self._describe, type(exc).__name__, exc
                )
            await anyio.sleep(next(delays))

    async def _watch(self, conn: ListenConnection) -> None:
        """Return once `conn` is dead: closed by the server, or failing its liveness query."""
        settings = self._settings
        while True:
            with anyio.move_on_after(settings.liveness_interval):
                await self._dead.wait()
                return
            timeout = settings.liveness_timeout
            try:
                with anyio.fail_after(timeout):  # bounds the wait for the lock too
                    async with self._lock:
                        if conn is not self._conn:
                            return
                        # Shielded, so that shutting down never leaves the query in flight.
                        with anyio.CancelScope(shield=True):
                            await conn.fetchval("SELECT 1", timeout=timeout)
            except CONNECTION_ERRORS as exc:  # TimeoutError is an OSError
                self._counters.liveness_failures += 1
                logger.warning(
                    "the listening connection to %s failed its liveness check (%s); reconnecting",
                    self._describe,
                    type(exc).__name__,
                )
                return

    def _forget(self, conn: ListenConnection) -> None:
        """Drop `conn`: from now on callers wait for the next connection."""
        if conn is self._conn:
            self._conn, self.pid = None, None
            self._live = anyio.Event()
            self._listening = set()
            self._dead.set()
        conn.terminate()

    async def close(self) -> None:
        """UNLISTEN everything and close the connection (bounded in time), then for sure.

        Unlistening first also takes this connection out of the
        pattern-listeners table, so publishers stop paying for the firehose.
        """
        conn = self._conn
        if conn is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            async with self._lock:
                with contextlib.suppress(Exception):
                    if self._listening:
                        await conn.execute(self._batch(set(), self._listening))
                    await conn.close()
        self._forget(conn)

    # -- following the desired state ----------------------------------------------

    async def sync(self, *, wait: bool) -> None:
        """Make the connection LISTEN exactly the desired channels.

        With `wait` (subscribing), an outage is waited out for at most
        `subscribe_timeout`, then BrokerUnavailableError; the desired state
        stays recorded either way, and the next connection LISTENs it.
        Without `wait` (unsubscribing), an outage returns at once: the next
        connection will simply not LISTEN what is no longer desired.
        """
        with anyio.move_on_after(self._settings.subscribe_timeout) as scope:
            while True:
                if not self._live.is_set():
                    if not wait:
                        return
                    await self._live.wait()
                    continue
                conn = self._conn
                assert conn is not None
                try:
                    async with self._lock:
                        if conn is self._conn:
                            await self._sync_locked(conn)
                            return
                except CONNECTION_ERRORS as exc:
                    logger.warning(
                        "LISTEN/UNLISTEN on %s failed (%s: %s); reconnecting",
                        self._describe,
                        type(exc).__name__,
                        exc,
                    )
                    self._forget(conn)
                    if not wait:
                        return
        if scope.cancelled_caught:
            raise BrokerUnavailableError(
                f"could not subscribe within {self._settings.subscribe_timeout:g} s: "
                f"{self._describe} is unreachable. The subscription is dropped; "
                "check that the server is running and reachable"
            )

    async def _sync_locked(self, conn: ListenConnection) -> None:
        """One round trip applying the difference; shielded so it never stops half-way."""
        while True:
            desired = self._desired()
            add, remove = desired - self._listening, self._listening - desired
            if not (add or remove):
                return
            with anyio.CancelScope(shield=True):
                await conn.execute(self._batch(add, remove), timeout=self._settings.command_timeout)
            self._listening = (self._listening | add) - remove

    def _batch(self, add: set[str], remove: set[str]) -> str:
        return "; ".join([listen_batch(add, remove), *self._extra_statements(add, remove)])

    async def listening_channels(self) -> list[str]:
        """What the server says the connection LISTENs (``pg_listening_channels()``)."""
        if not self._live.is_set() or self._conn is None:
            return []
        async with self._lock:
            rows = await self._conn.fetch("SELECT pg_listening_channels() AS channel")
        return sorted(row["channel"] for row in rows)
