"""PostgreSQL layer hardening (issue #11): each test replays an attack or a fault that broke it.

Foreign notifications and table tricks run on the shared server, each in a
namespace of its own; terminated backends and frozen servers only ever hit
the private throwaway server.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest

from channels_core import (
    BrokerUnavailableError,
    Channel,
    ChannelsError,
    Event,
    MessagesLost,
    Subscriber,
)
from channels_core.reconnect import Backoff
from channels_core.testing import eventually
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres.testing import drop_tables
from tests.reliability.support import postgres_processes, signal_all

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.02, maximum=0.2)
LARGE = "x" * 9_000  # too large for a NOTIFY: travels through the payloads table


async def receive(subscriber: Subscriber, timeout: float = 10) -> Event:
    with anyio.fail_after(timeout):
        return await subscriber.receive()


@pytest.fixture
async def own_namespace(postgres_url: str) -> AsyncIterator[str]:
    """A namespace of this test alone on the shared server (its tables dropped after)."""
    name = f"hard{secrets.token_hex(6)}"
    yield name
    await drop_tables(postgres_url, ChannelNames(name))


# -- 1. foreign notifications -------------------------------------------------------------

#: (what the attacker notifies, on which channel: the subscribed group's, or a bucket
#: only the pattern subscription LISTENs).
FOREIGN = {
    "nested brackets": ("chl1t0:" + "[" * 7000, "group"),
    "lone surrogate on a pattern's bucket": ('chl1t0:"\\ud800"boom', "pattern"),
    "lone surrogate on a group": ('chl1t0:"\\udfff"boom', "group"),
}


@pytest.mark.parametrize("attack", FOREIGN, ids=list(FOREIGN))
async def test_a_foreign_notification_is_counted_and_skipped_and_the_channel_lives(
    attack: str, postgres_url: str, pg_namespace: str, pg_admin: asyncpg.Connection
) -> None:
    """Any role that can connect can NOTIFY a layer's channel: nothing it sends may
    break the listening connection (it raised RecursionError inside asyncpg's
    callback, then every statement on the connection failed)."""
    text, target = FOREIGN[attack]
    layer = PostgreSQLChannelLayer(postgres_url, namespace=pg_namespace, health_check_interval=60)
    async with (
        Channel(layer) as channel,
        channel.subscribe("room") as by_name,
        channel.subscribe_pattern("ro*") as by_pattern,
    ):
        channel_name = layer.channel_name("room")
        if target == "pattern":
            buckets = ChannelNames(pg_namespace).buckets
            channel_name = next(bucket for bucket in buckets if bucket != channel_name)
        await pg_admin.execute("SELECT pg_notify($1, $2)", channel_name, text)
        await eventually(lambda: layer.stats().skipped == 1)
        # The next statement on the listening connection (it raised InternalClientError).
        async with channel.subscribe("other") as other:
            await channel.publish("room", "after")
            await channel.publish("other", "too")
            assert await receive(by_name) == Event("room", "after")
            assert await receive(by_pattern) == Event("room", "after", "ro*")
            assert await receive(other) == Event("other", "too")
        assert layer.channel_name("room") in await layer.listening_channels()
    assert (layer.stats().skipped, layer.stats().reconnects) == (1, 0)


# -- 2. large payloads after the row ids restart ------------------------------------------


async def test_a_reused_row_id_never_delivers_an_old_large_payload(
    postgres_url: str, own_namespace: str, pg_admin: asyncpg.Connection
) -> None:
    """The payloads table is unlogged: a crash, like ``TRUNCATE ... RESTART IDENTITY``,
    restarts its ids. A receiver that had fetched row 1 delivered that old
    payload again for the next message stored as row 1, to another group."""
    layer = PostgreSQLChannelLayer(postgres_url, namespace=own_namespace)
    payloads = ChannelNames(own_namespace).payloads_table
    async with (
        Channel(layer) as channel,
        channel.subscribe("room-A") as room_a,
        channel.subscribe("room-B") as room_b,
    ):
        await channel.publish("room-A", "OLD message for room-A " + LARGE)
        assert (await receive(room_a)).message == "OLD message for room-A " + LARGE
        await pg_admin.execute(f'TRUNCATE "{payloads}" RESTART IDENTITY')
        await channel.publish("room-B", "NEW message for room-B " + LARGE)
        assert await receive(room_b) == Event("room-B", "NEW message for room-B " + LARGE)
    assert layer.stats().large_fetched == 2


# -- 3. the server's termination message races the next statement -------------------------


def private_layer(url: str, **options: Any) -> PostgreSQLChannelLayer:
    # No TLS negotiation: a connection attempt abandoned in the middle of it is
    # reported by asyncpg later as an unretrieved future exception.
    return PostgreSQLChannelLayer(
        f"{url}?sslmode=disable", namespace="hardening", reconnect_backoff=QUICK, **options
    )


#: Seconds between terminating a backend and the next statement: the window
#: in which asyncpg has read the termination message but not the socket's close
#: is about a millisecond wide on loopback.
RACE_DELAYS = (0.0, 0.0005, 0.001, 0.0015, 0.002)


async def test_a_publish_racing_a_terminated_backend_goes_through(
    private_postgres_url: str,
) -> None:
    """A publish on an idle connection whose backend was just terminated raised
    InternalClientError at once, despite publish_timeout."""
    name = f"hard-pub-{secrets.token_hex(4)}"
    publisher = private_layer(private_postgres_url, application_name=name, publish_timeout=10)
    listener = private_layer(private_postgres_url)
    admin = await asyncpg.connect(private_postgres_url)
    try:
        async with (
            Channel(listener) as receiving,
            Channel(publisher) as channel,
            receiving.subscribe("race") as subscriber,
        ):
            rounds = 5 * len(RACE_DELAYS)
            for number in range(rounds):
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    name,
                )
                await anyio.sleep(RACE_DELAYS[number % len(RACE_DELAYS)])
                await channel.publish("race", number)
            received = [(await receive(subscriber)).message for _ in range(rounds)]
            assert received == list(range(rounds))
    finally:
        await admin.close()


async def test_a_health_check_racing_a_terminated_backend_reconnects(
    private_postgres_url: str,
) -> None:
    """A liveness query in the same window raised InternalClientError, which ended
    the listener task and with it the whole channel."""
    layer = private_layer(private_postgres_url, health_check_interval=0.001, health_check_timeout=1)
    admin = await asyncpg.connect(private_postgres_url)
    terminations = 12
    try:
        async with Channel(layer) as channel, channel.subscribe("alive") as subscriber:
            for _ in range(terminations):
                pid = layer.stats().listener_pid
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                await eventually(lambda: layer.stats().listener_pid not in (None, pid))  # noqa: B023
            await channel.publish("alive", "still")
            gaps = 0
            while True:
                try:
                    event = await receive(subscriber)
                except MessagesLost:
                    gaps += 1
                else:
                    break
            assert event == Event("alive", "still")
            assert 1 <= gaps <= terminations
    finally:
        await admin.close()
    assert layer.stats().reconnects == terminations


# -- 7 and 8. subscribing and leaving during an outage -------------------------------------


@asynccontextmanager
async def frozen(pid: int | None) -> AsyncIterator[None]:
    """The whole server of backend `pid` stopped (SIGSTOP) for the block."""
    assert pid is not None
    processes = postgres_processes(pid)
    signal_all(processes, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_all(processes[::-1], signal.SIGCONT)


async def test_concurrent_subscribes_to_a_frozen_server_each_fail_within_subscribe_timeout(
    private_postgres_url: str,
) -> None:
    """The first LISTEN sent to the frozen server held the connection's lock for
    command_timeout (5 s), and every other subscribe queued behind it."""
    subscribe_timeout = 1.0
    layer = private_layer(
        private_postgres_url, subscribe_timeout=subscribe_timeout, health_check_interval=60
    )
    took: dict[str, float] = {}

    async def subscribe(group: str) -> None:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            await layer.subscribe_groups([group])
        took[group] = time.monotonic() - started

    async with Channel(layer):
        async with frozen(layer.stats().listener_pid), anyio.create_task_group() as tasks:
            for number in range(4):
                tasks.start_soon(subscribe, f"group-{number}")
    print("concurrent subscribes failed after " + ", ".join(f"{t:.2f} s" for t in took.values()))
    assert len(took) == 4
    assert max(took.values()) < subscribe_timeout + 0.5, took


async def test_leaving_while_another_subscribe_waits_on_a_frozen_server_returns_at_once(
    private_postgres_url: str,
) -> None:
    """Unsubscribing waited for the connection's lock, held by another task's
    LISTEN to the frozen server, until the liveness check gave up on it."""
    layer = private_layer(private_postgres_url, subscribe_timeout=1, health_check_interval=60)
    async with Channel(layer):
        await layer.subscribe_groups(["kept"])
        async with frozen(layer.stats().listener_pid), anyio.create_task_group() as tasks:

            async def subscribe() -> None:
                with pytest.raises(BrokerUnavailableError):
                    await layer.subscribe_groups(["new"])
                await layer.unsubscribe_groups(["new"])  # as the channel does on failure

            tasks.start_soon(subscribe)
            await anyio.sleep(0.1)  # the subscribe's LISTEN is on its way
            started = time.monotonic()
            await layer.unsubscribe_groups(["kept"])
            took = time.monotonic() - started
            print(f"leaving took {took * 1000:.2f} ms")
            assert took < 0.1
        # Once the server is back, the connection listens to neither.
        assert await layer.listening_channels() == []


async def test_concurrent_channel_subscribes_to_a_frozen_server_each_fail_within_subscribe_timeout(
    private_postgres_url: str,
) -> None:
    """Through a Channel, the core ran one subscribe at a time: the k-th failed after
    about k x subscribe_timeout, whatever the layer did."""
    layer = private_layer(private_postgres_url, subscribe_timeout=1, health_check_interval=60)
    took: dict[str, float] = {}
    async with Channel(layer) as channel:

        async def subscribe(group: str) -> None:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError):
                async with channel.subscribe(group):
                    pytest.fail("subscribed to a frozen server")
            took[group] = time.monotonic() - started

        async with frozen(layer.stats().listener_pid), anyio.create_task_group() as tasks:
            for number in range(4):
                tasks.start_soon(subscribe, f"group-{number}")
        assert await layer.listening_channels() == []
    print("channel subscribes failed after " + ", ".join(f"{t:.2f} s" for t in took.values()))
    assert len(took) == 4
    assert max(took.values()) < 1.5, took


async def test_leaving_a_channel_subscription_while_another_subscribe_waits_returns_at_once(
    private_postgres_url: str,
) -> None:
    """Leaving waited (shielded, so cancelling did not help) for the channel's lock,
    held by another task's subscribe to the frozen server."""
    layer = private_layer(private_postgres_url, subscribe_timeout=1, health_check_interval=60)
    async with Channel(layer) as channel:
        kept = channel.subscribe("kept")
        await kept.__aenter__()
        async with frozen(layer.stats().listener_pid), anyio.create_task_group() as tasks:

            async def stuck() -> None:
                with pytest.raises(BrokerUnavailableError):
                    async with channel.subscribe("new"):
                        pytest.fail("subscribed to a frozen server")

            tasks.start_soon(stuck)
            # Registered, so its broker subscribe is issued (in the same step).
            await eventually(lambda: channel.stats().subscribers == 2)
            started = time.monotonic()
            await kept.__aexit__(None, None, None)
            took = time.monotonic() - started
            print(f"leaving took {took * 1000:.2f} ms")
            assert took < 0.1
        assert await layer.listening_channels() == []
        async with channel.subscribe("after") as subscriber:
            await channel.publish("after", "back")
            assert (await receive(subscriber)).message == "back"


# -- 11. a least-privilege role -----------------------------------------------------------


@pytest.fixture
async def dml_role(
    least_privilege_role: Callable[..., AbstractAsyncContextManager[dict[str, str]]],
    pg_admin: asyncpg.Connection,
) -> AsyncIterator[dict[str, str]]:
    """A role with DML rights only, those the package README lists (conftest.py)."""
    async with least_privilege_role(pg_admin, "dml") as role:
        yield role


async def test_a_role_with_dml_rights_only_can_use_existing_tables(
    dml_role: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every connect ran CREATE TABLE IF NOT EXISTS (needs CREATE on the schema)
    and ALTER TABLE ... ADD COLUMN IF NOT EXISTS (needs ownership)."""
    caplog.set_level(logging.WARNING, "channels_layer_postgres")
    layer = PostgreSQLChannelLayer(dml_role["url"], namespace=dml_role["namespace"])
    async with (
        Channel(layer) as channel,
        channel.subscribe("room") as by_name,
        channel.subscribe_pattern("r*") as by_pattern,
    ):
        for message in ("small", "large " + LARGE):
            await channel.publish("room", message)
            assert await receive(by_name) == Event("room", message)
            assert await receive(by_pattern) == Event("room", message, "r*")
        conn = await asyncpg.connect(dml_role["url"])
        try:
            async with conn.transaction():
                await layer.publish_in(conn, "room", "in a transaction")
        finally:
            await conn.close()
        assert await receive(by_name) == Event("room", "in a transaction")
    # Nothing refused on the way, the deletion of expired large payloads included.
    assert caplog.records == []


async def test_what_the_server_refuses_is_a_channels_error(
    dml_role: dict[str, str], pg_admin: asyncpg.Connection
) -> None:
    """Refusals came out as raw asyncpg errors: missing tables the role may not create,
    a payloads table it may not write."""
    role, schema = dml_role["role"], dml_role["schema"]
    names = ChannelNames(dml_role["namespace"])
    missing = PostgreSQLChannelLayer(dml_role["url"], namespace=f"{names.namespace}x")
    with pytest.raises(ChannelsError, match="create or update the tables") as refused:
        async with Channel(missing):
            pass
    assert isinstance(refused.value.__cause__, asyncpg.InsufficientPrivilegeError)

    await pg_admin.execute(f"REVOKE INSERT ON {schema}.{names.payloads_table} FROM {role}")
    layer = PostgreSQLChannelLayer(dml_role["url"], namespace=names.namespace)
    async with Channel(layer) as channel, channel.subscribe("room") as subscriber:
        with pytest.raises(ChannelsError) as large:
            await channel.publish("room", LARGE)
        assert isinstance(large.value.__cause__, asyncpg.InsufficientPrivilegeError)
        async with channel.subscribe_pattern("r*") as by_pattern:  # needs no table
            await channel.publish("room", "still works")
            assert await receive(by_pattern) == Event("room", "still works", "r*")
        assert await receive(subscriber) == Event("room", "still works")


# -- minor: subscribing many groups ---------------------------------------------------------


def cpu_seconds() -> float:
    return time.process_time()


async def test_subscribing_one_more_group_costs_the_same_with_thousands_subscribed(
    postgres_url: str, pg_namespace: str
) -> None:
    """Each subscribe rebuilt and compared the whole set of channels: with 10,000
    groups, subscribing grew quadratically in client CPU."""
    layer = PostgreSQLChannelLayer(postgres_url, namespace=pg_namespace)
    batch = 1_500
    async with Channel(layer):
        costs = []
        for block in range(3):
            started = cpu_seconds()
            for number in range(batch):
                await layer.subscribe_groups([f"many-{block}-{number}"])
            costs.append(cpu_seconds() - started)
    print(f"client CPU per {batch} subscribes: " + ", ".join(f"{c:.3f} s" for c in costs))
    assert costs[2] < 2 * costs[0], costs  # was 3.9 times (0.117 s, 0.225 s, 0.452 s)
