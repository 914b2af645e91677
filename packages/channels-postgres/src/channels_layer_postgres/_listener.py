"""The one connection that LISTENs for a whole layer, kept alive and in sync.

One task (`run`) owns the connection: it applies the changes the layer
requests (LISTEN/UNLISTEN of the touched channels, in one batch per round
trip), runs a health check every `health_check_interval` to notice a
connection that died silently, and replaces a lost connection through the
core's `reconnect_forever` (first try at once, then backoff), LISTENing
every wanted channel again; `on_restored` reports the gap.

Subscribers never take a lock: they wait for the round trip that carries
their change, each within its own `subscribe_timeout`, and unsubscribers do
not wait at all.

asyncpg opens the connection; the layer then reads it itself (a `Lane`),
handing every notification to `on_notification`, and `share`s it with the
publishing connections: publishes run on it while it is idle, and the
listener's own statements wait for the publish running there, if any.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import asyncpg

from channels_core import BrokerUnavailableError, reconnect_forever, retry_until

from ._connection import (
    CLOSE_TIMEOUT,
    CONNECTION_ERRORS,
    errors_translated,
    is_refusal,
    take_transport,
)
from ._lane import Lane
from ._options import PostgreSQLLayerOptions
from ._sql import listen_batch
from ._stats import Counters

__all__ = ["Listener"]

logger = logging.getLogger("channels_layer_postgres")


class _Round:
    """One LISTEN/UNLISTEN round trip, which the subscribers it carries wait for."""

    __slots__ = ("done", "error", "retry")

    def __init__(self) -> None:
        self.done = anyio.Event()
        #: The server's refusal, if it refused the batch.
        self.error: BaseException | None = None
        #: The round that carries the change instead, when the connection was lost.
        self.retry: _Round | None = None


class Listener:
    """Owns the listening connection; run `run` in the layer's task group."""

    def __init__(
        self,
        *,
        connect_kwargs: dict[str, Any],
        settings: PostgreSQLLayerOptions,
        describe: str,
        desired: Callable[[], set[str]],
        wants: Callable[[str], bool],
        on_notification: Callable[[str, str], None],
        on_restored: Callable[[], None],
        counters: Counters,
        share: Callable[[Lane | None], None],
    ) -> None:
        self._connect_kwargs = connect_kwargs
        self._settings = settings
        self._describe = describe
        self._desired = desired
        self._wants = wants
        self._on_notification = on_notification
        self._on_restored = on_restored
        self._counters = counters
        self._share = share
        self._lane: Lane | None = None
        self._dead = anyio.Event()
        self._lock = anyio.Lock()  # one statement of the listener's at a time on `_lane`
        self._listening: set[str] = set()
        self._pending: set[str] = set()  # channels to re-check against `wants`
        self._round = _Round()  # the round trip that will carry `_pending`
        self._wake = anyio.Event()  # set when there is something to apply, or `_dead`
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
        """After `start`: serve the connection and replace it whenever it dies.

        Cancelling it leaves the connection open: `close` UNLISTENs and closes it.
        """
        lane = self._lane
        assert lane is not None, "start() first"
        while True:
            cause = await self._serve(lane)
            self._forget(lane)
            self._counters.connection_losses += 1
            held: list[tuple[str, str]] = []
            lane = await reconnect_forever(
                functools.partial(self._open, held),
                what=f"the listening connection to {self._describe}",
                logger=logger,
                backoff=self._settings.reconnect_backoff,
                cause=cause,
                recovers=self._settings.history_size > 0,
            )
            self._counters.reconnects += 1
            # The gap first, then what the new connection received meanwhile: a
            # layer with history recovers from the last position delivered.
            self._on_restored()
            lane.on_notification = self._on_notification
            for channel, text in held:
                self._on_notification(channel, text)

    async def _open(self, held: list[tuple[str, str]] | None = None) -> Lane:
        """A new connection LISTENing every wanted channel, shared for publishing.

        With `held`, notifications that arrive meanwhile (the server sends
        them with its answer to the LISTEN) are kept there, not delivered.
        """
        conn = await asyncpg.connect(**self._connect_kwargs)
        dead = anyio.Event()
        lane = Lane(
            on_notification=(
                self._on_notification
                if held is None
                else lambda channel, text: held.append((channel, text))
            ),
            on_lost=lambda: self._terminated(dead),
        )
        try:
            pid = conn.get_server_pid()
            take_transport(conn, lane)
        except BaseException:
            conn.terminate()
            raise
        try:
            self._listening = set()
            self._pending = self._desired()
            await self._apply(lane)
        except BaseException:
            lane.abort()
            raise
        self._lane, self._dead, self.pid = lane, dead, pid
        self._share(lane)
        return lane

    def _terminated(self, dead: anyio.Event) -> None:
        dead.set()
        self._wake.set()

    async def _serve(self, lane: Lane) -> str:
        """Apply requested changes and run health checks; once `lane` is dead, say why."""
        interval = self._settings.health_check_interval
        next_check = anyio.current_time() + interval
        while True:
            with anyio.move_on_at(next_check):
                await self._wake.wait()
            if self._dead.is_set():
                return "the server closed it"
            if self._wake.is_set():
                self._wake = anyio.Event()
                try:
                    await self._apply(lane)
                except Exception as exc:  # whatever broke, this connection is done with
                    return f"LISTEN/UNLISTEN failed: {type(exc).__name__}: {exc}"
            elif anyio.current_time() >= next_check:
                failure = await self._health_check(lane)
                if failure is not None:
                    return failure
                next_check = anyio.current_time() + interval

    async def _health_check(self, lane: Lane) -> str | None:
        """Run a query; why the connection is dead (counted) if it failed in any way."""
        timeout = self._settings.health_check_timeout
        try:
            with anyio.fail_after(timeout):  # bounds the wait for the lock too
                async with self._lock:
                    # Shielded, so that shutting down never leaves the query in flight.
                    with anyio.CancelScope(shield=True), anyio.fail_after(timeout):
                        await _statement(lane, "SELECT 1")
        except Exception as exc:  # TimeoutError, a closed or broken connection, ...
            self._counters.health_check_failures += 1
            return f"its health check failed ({type(exc).__name__})"
        return None

    def _forget(self, lane: Lane) -> None:
        """Drop `lane`: from now on subscribers wait for the next connection."""
        if lane is self._lane:
            self._lane, self.pid = None, None
            self._listening = set()
            self._dead.set()
            self._share(None)
        lane.abort()

    async def close(self) -> None:
        """UNLISTEN everything and close the connection (bounded in time), then for sure."""
        lane = self._lane
        if lane is None:
            return
        self._share(None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            async with self._lock:
                with contextlib.suppress(Exception):
                    if self._listening:
                        await _statement(lane, "UNLISTEN *")
                    await lane.goodbye()
        self._forget(lane)

    # -- following the desired state ----------------------------------------------

    async def follow(self, channels: Iterable[str], *, wait: bool) -> None:
        """Have the connection LISTEN exactly the wanted ones of `channels`.

        With `wait` (subscribing), return once the server has applied the
        change; an outage is waited out for at most `subscribe_timeout`, then
        BrokerUnavailableError. Without `wait` (unsubscribing), return at
        once. The wanted state is recorded either way: the next round trip,
        or the next connection, applies it.
        """
        self._pending.update(channels)
        self._wake.set()
        if not wait:
            return
        round_ = self._round
        with anyio.move_on_after(self._settings.subscribe_timeout):
            while True:
                await round_.done.wait()
                if round_.retry is not None:
                    round_ = round_.retry
                elif round_.error is not None:
                    with errors_translated(f"LISTEN on {self._describe}"):
                        raise round_.error
                else:
                    return
        raise BrokerUnavailableError(
            f"could not subscribe within {self._settings.subscribe_timeout:g} s: "
            f"{self._describe} is unreachable. The subscription is dropped; "
            "check that the server is running and reachable"
        )

    async def _apply(self, lane: Lane) -> None:
        """One round trip for the pending changes, then release the round's subscribers.

        Raises if the connection failed (the changes wait for the next
        one); a refusal by the server is handed to the subscribers instead.
        """
        round_, self._round = self._round, _Round()
        channels, self._pending = self._pending, set()
        try:
            add = {channel for channel in channels if self._wants(channel)} - self._listening
            remove = {channel for channel in channels if not self._wants(channel)}
            remove &= self._listening
            if add or remove:
                async with self._lock:
                    # Shielded, so that it never stops half-way; past the timeout
                    # the connection is given up (`_serve`).
                    with anyio.CancelScope(shield=True):
                        with anyio.fail_after(self._settings.command_timeout):
                            await _statement(lane, listen_batch(add, remove))
                        self._listening |= add  # in place: O(change), not O(all)
                        self._listening -= remove
        except BaseException as exc:
            if not is_refusal(exc):  # lost connection, cancelled: the next round carries it
                self._pending |= channels
                round_.retry = self._round
                raise
            # One transaction: nothing of the batch took effect.
            round_.error = exc
            logger.warning(
                "%s refused LISTEN/UNLISTEN (%s: %s)", self._describe, type(exc).__name__, exc
            )
        finally:
            round_.done.set()

    async def listening_channels(self) -> list[str]:
        """What the server says the connection LISTENs (``pg_listening_channels()``),
        once the changes requested so far are applied."""
        if self._lane is None:
            return []
        await self.follow((), wait=True)
        lane = self._lane
        if lane is None:
            return []
        async with self._lock:
            rows = await _statement(lane, "SELECT pg_listening_channels()", rows=True)
        return sorted(rows)


async def _statement(lane: Lane, sql: str, *, rows: bool = False) -> list[str]:
    """Run `sql` on the listening connection once no publish runs on it (none starts
    meanwhile); the first column of each row if `rows`."""
    lane.reserved = True
    try:
        await lane.until_idle()
        return await lane.query(sql, rows=rows)
    finally:
        lane.reserved = False
