"""Connection loss: killed backend, silently dead connection, server restart, outages.

Server restarts and outages use a private throwaway server on another free
loopback port; the shared server is never restarted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import asyncpg
import pytest

from channels_core import BrokerUnavailableError, Channel, MessagesLost, Subscriber
from channels_core.reconnect import Backoff
from channels_layer_postgres.testing import LayerMaker, PostgresServer

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.05, maximum=0.2)


async def _gap(subscriber: Subscriber, within: float) -> None:
    """The subscriber is told, within `within` seconds, that it may have missed messages.

    The layer signals it once it is listening again, so what is published
    from then on is delivered.
    """
    with anyio.fail_after(within):
        with pytest.raises(MessagesLost) as lost:
            await subscriber.receive()
    assert lost.value.reason == "reconnect"


async def _receive(subscriber: Subscriber) -> object:
    with anyio.fail_after(5):
        return (await subscriber.receive()).message


async def test_killed_backend_is_replaced_and_subscribers_resume(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer(application_name="channels-kill-test", reconnect_backoff=QUICK)
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe("survivor", "other") as subscriber:
            pid = await pg.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid = $2",
                "channels-kill-test",
                layer.stats().listener_pid,
            )
            assert pid is not None
            assert await pg.fetchval("SELECT pg_terminate_backend($1)", pid)
            await _gap(subscriber, within=5)
            await sender.publish("survivor", "after")
            assert await _receive(subscriber) == "after"
            assert layer.stats().listener_pid not in (None, pid)
            assert await layer.listening_channels() == sorted(
                {layer.channel_name(group) for group in ("survivor", "other")}
            )
    assert layer.stats().reconnects == 1


class FreezingProxy:
    """A loopback TCP proxy whose current connections can be frozen (silently dead)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._frozen: set[int] = set()
        self._connections = 0
        self._open: set[int] = set()

    def freeze_current(self) -> None:
        """Stop forwarding on every open connection, without closing any of them."""
        self._frozen |= self._open

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self._connections += 1
        number = self._connections
        self._open.add(number)
        try:
            async with client, await anyio.connect_tcp("127.0.0.1", self.upstream_port) as server:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._pump, client, server, number, tasks.cancel_scope)
                    tasks.start_soon(self._pump, server, client, number, tasks.cancel_scope)
        finally:
            self._open.discard(number)

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        number: int,
        both: anyio.CancelScope,
    ) -> None:
        """Forward until either side closes, then end both directions."""
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for chunk in source:
                if number not in self._frozen:
                    await sink.send(chunk)
        both.cancel()


@asynccontextmanager
async def running_proxy(url: str) -> AsyncIterator[tuple[FreezingProxy, str]]:
    """A proxy in front of the server of `url`, and the URL through it."""
    parts = urlsplit(url)
    proxy = FreezingProxy(parts.port or 5432)
    async with anyio.create_task_group() as tasks:
        await tasks.start(proxy.serve)
        netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
        yield proxy, urlunsplit(parts._replace(netloc=netloc))
        tasks.cancel_scope.cancel()


async def test_silently_dead_connection_is_noticed_by_the_health_check(
    make_layer: LayerMaker, postgres_url: str
) -> None:
    async with running_proxy(postgres_url) as (proxy, via_proxy):
        await _survive_freeze(make_layer, proxy, via_proxy)


async def _survive_freeze(make_layer: LayerMaker, proxy: FreezingProxy, via_proxy: str) -> None:
    layer = make_layer(
        via_proxy, health_check_interval=0.3, health_check_timeout=0.3, reconnect_backoff=QUICK
    )
    async with Channel(layer) as listener, Channel(make_layer()) as sender:
        async with listener.subscribe("quiet") as subscriber:
            frozen_at = anyio.current_time()
            proxy.freeze_current()
            await _gap(subscriber, within=5)
            assert anyio.current_time() - frozen_at < 3.0  # 0.3 + 0.3 s, plus reconnecting
            assert layer.stats().health_check_failures == 1
            await sender.publish("quiet", "still here")
            assert await _receive(subscriber) == "still here"


@pytest.fixture
def private_url(private_server: PostgresServer) -> str:
    """The private server's URL, with a password (trust auth ignores it) to check redaction."""
    return private_server.url.replace("postgres@", "postgres:hunter2@")


async def test_server_restart(
    make_layer: LayerMaker, private_server: PostgresServer, private_url: str
) -> None:
    layer = make_layer(private_url, reconnect_backoff=QUICK)
    async with Channel(layer) as listener, Channel(make_layer(private_url)) as sender:
        async with (
            listener.subscribe("restart") as by_name,
            listener.subscribe_pattern("re*") as by_pattern,
        ):
            await anyio.to_thread.run_sync(private_server.restart)
            await _gap(by_name, within=10)
            await _gap(by_pattern, within=1)
            await sender.publish("restart", "back")
            assert await _receive(by_name) == "back"
            assert await _receive(by_pattern) == "back"
    assert layer.stats().reconnects == 1


async def test_publish_during_an_outage_fails_within_the_bound(
    make_layer: LayerMaker, private_server: PostgresServer, private_url: str
) -> None:
    async with Channel(make_layer(private_url, publish_timeout=1.0)) as channel:
        await channel.publish("outage", "before")
        await anyio.to_thread.run_sync(private_server.stop)
        started = anyio.current_time()
        with pytest.raises(BrokerUnavailableError) as error:
            await channel.publish("outage", "during")
        assert anyio.current_time() - started < 2.5
        assert "publish to postgresql://postgres:***@127.0.0.1" in str(error.value)
        assert "hunter2" not in str(error.value)
        await anyio.to_thread.run_sync(private_server.start)
        await channel.publish("outage", "after")  # usable again


async def test_subscribe_during_an_outage_is_bounded_and_keeps_state(
    make_layer: LayerMaker, private_server: PostgresServer, private_url: str
) -> None:
    impatient = make_layer(private_url, subscribe_timeout=0.5, reconnect_backoff=QUICK)
    patient = make_layer(private_url, subscribe_timeout=20.0, reconnect_backoff=QUICK)
    async with (
        Channel(impatient) as refused,
        Channel(patient) as listener,
        Channel(make_layer(private_url)) as sender,
    ):
        async with listener.subscribe("leaving"):
            await anyio.to_thread.run_sync(private_server.stop)
            started = anyio.current_time()
            with pytest.raises(BrokerUnavailableError, match=r"could not subscribe within 0\.5 s"):
                async with refused.subscribe("refused"):
                    pass
            assert anyio.current_time() - started < 1.5
            left_at = anyio.current_time()
        assert anyio.current_time() - left_at < 0.5  # unsubscribing does not wait
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.to_thread.run_sync, private_server.start)
            async with listener.subscribe("arriving") as subscriber:  # waits for the server
                await sender.publish("arriving", "hello")
                with anyio.fail_after(5):
                    assert await _next_message(subscriber) == "hello"
        assert await patient.listening_channels() == []
        assert await impatient.listening_channels() == []


async def _next_message(subscriber: Subscriber) -> object:
    while True:
        try:
            return (await subscriber.receive()).message
        except MessagesLost:
            continue
