"""The layer's own publishing connections (`_publishing`): replies, errors, breakage.

asyncpg opens each connection; the layer then writes the statements and
reads the replies itself. Every call must get its own answer: an error
fails its call alone (the connection stays in use); a connection that
breaks, times out or is cancelled part-way is closed, never reused with
replies unread; replies arriving in pieces are put together; nothing is
left open when the layer leaves.
"""

from __future__ import annotations

import functools
import importlib.util
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import asyncpg.exceptions
import pytest

from channels_core import BrokerUnavailableError, Channel, ChannelClosedError, MessagesLost
from channels_core.testing import TcpProxy, eventually, handed_on
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres._connection import take_transport
from channels_layer_postgres._lane import Lane
from channels_layer_postgres._names import quote_ident
from channels_layer_postgres._pgwire import simple_query
from channels_layer_postgres._publishing import PublishingConnections
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio

NOTIFY = "SELECT pg_notify($1, $2)"
#: Notifies the backend's pid on $1: which connection ran a call.
NOTIFY_PID = "SELECT pg_notify($1, pg_backend_pid()::text)"


def soon(seconds: float = 5.0) -> float:
    """A deadline `seconds` from now, in event loop time."""
    return anyio.current_time() + seconds


def connections(url: str, size: int, application_name: str | None = None) -> PublishingConnections:
    settings = {} if application_name is None else {"application_name": application_name}
    return PublishingConnections(
        functools.partial(asyncpg.connect, url, server_settings=settings), size
    )


@asynccontextmanager
async def heard(url: str, channel: str) -> AsyncIterator[list[str]]:
    """The payloads NOTIFYed on `channel` while the block runs (and shortly after)."""
    received: list[str] = []
    listener = await asyncpg.connect(url)
    try:
        await listener.add_listener(channel, lambda *args: received.append(args[-1]))
        yield received
    finally:
        await listener.close()


async def backends(pg: asyncpg.Connection, application_name: str) -> int:
    """Backends of `application_name`, once the server has let closed ones go."""
    count = 0
    for _ in range(200):
        count = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
        if count == 0:
            break
        await anyio.sleep(0.02)
    return int(count)


async def test_an_error_fails_its_own_call_alone_and_keeps_the_connection(
    postgres_url: str,
) -> None:
    """Five calls queue for one connection; the third is refused by the server."""
    channel = f"pw_{secrets.token_hex(4)}"
    publishing = connections(postgres_url, 1)
    try:
        async with heard(postgres_url, channel) as received:
            results: dict[int, BaseException | None] = {}

            async def call(number: int) -> None:
                query = "SELECT 1 / 0" if number == 2 else NOTIFY_PID
                try:
                    await publishing.call(query, () if number == 2 else (channel,), soon())
                except Exception as exc:
                    results[number] = exc
                else:
                    results[number] = None

            async with anyio.create_task_group() as tasks:
                for number in range(5):
                    tasks.start_soon(call, number)
            assert isinstance(results.pop(2), asyncpg.exceptions.DivisionByZeroError)
            assert results == dict.fromkeys((0, 1, 3, 4))
            await eventually(lambda: len(received) == 4)
            assert len(set(received)) == 1  # one backend ran them all
            # A statement prepared on this connection after the error still works.
            await publishing.call(NOTIFY, (channel, "after"), soon())
            await eventually(lambda: len(received) == 5)
            assert received[-1] == "after"
    finally:
        await publishing.aclose(1.0)


async def test_a_refused_statement_is_prepared_again_once_it_can_be(
    postgres_url: str, pg: asyncpg.Connection
) -> None:
    """A Parse the server refuses leaves nothing prepared: the next call prepares anew."""
    table = f"pw_{secrets.token_hex(4)}"
    query = f"INSERT INTO {table} VALUES ($1)"
    publishing = connections(postgres_url, 1)
    try:
        with pytest.raises(asyncpg.exceptions.UndefinedTableError):
            await publishing.call(query, ("one",), soon())
        await pg.execute(f"CREATE TABLE {table} (value text)")
        try:
            await publishing.call(query, ("two",), soon())
            await publishing.call(query, ("three",), soon())
            rows = await pg.fetch(f"SELECT value FROM {table}")
            assert sorted(row["value"] for row in rows) == ["three", "two"]
        finally:
            await pg.execute(f"DROP TABLE {table}")
    finally:
        await publishing.aclose(1.0)


async def test_parameters_of_every_kind_reach_the_server_intact(postgres_url: str) -> None:
    """str, bytes, int, None and arrays of them, with quotes, backslashes and non-ASCII."""
    channel = f"pw_{secrets.token_hex(4)}"
    awkward = ['a"b', "c\\d", "é ü 😀", "", "NULL", "{x,y}"]
    query = (
        "SELECT pg_notify($1, concat_ws('|', $2::text, encode($3::bytea, 'hex'), $4::bigint,"
        " coalesce($5::text, 'null'), array_to_json($6::text[])::text,"
        " array_to_json($7::bigint[])::text, encode(($8::bytea[])[2], 'hex'),"
        " array_to_json($9::text[])::text))"
    )
    arguments: tuple[Any, ...] = (
        channel,
        'quo"te\\',
        b"\x00\xff\\",
        -(2**63),
        None,
        [*awkward, None],
        [1, None, 2**62],
        [b"", b"\x00\\\x01"],
        awkward,  # text only: the batch's fast path
    )
    publishing = connections(postgres_url, 1)
    try:
        async with heard(postgres_url, channel) as received:
            await publishing.call(query, arguments, soon())
            await eventually(lambda: bool(received))
        assert received[0].split("|") == [
            'quo"te\\',
            "00ff5c",
            str(-(2**63)),
            "null",
            '["a\\"b","c\\\\d","é ü 😀","","NULL","{x,y}",null]',
            f"[1,null,{2**62}]",
            "005c01",
            '["a\\"b","c\\\\d","é ü 😀","","NULL","{x,y}"]',
        ]
    finally:
        await publishing.aclose(1.0)


async def test_replies_that_arrive_in_pieces_are_put_together(
    postgres_url: str, make_layer: LayerMaker
) -> None:
    async with TcpProxy(postgres_url, piece=3).running() as proxy:
        channel = f"pw_{secrets.token_hex(4)}"
        publishing = connections(proxy.url, 1)
        try:
            async with heard(postgres_url, channel) as received:
                for number in range(20):
                    await publishing.call(NOTIFY, (channel, str(number) * number), soon())
                with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                    await publishing.call("SELECT 1 / 0", (), soon())
                await publishing.call(NOTIFY, (channel, "last"), soon())
                await eventually(lambda: len(received) == 21)
            assert received == [str(number) * number for number in range(20)] + ["last"]
        finally:
            await publishing.aclose(1.0)

        # The whole layer through the proxy: publishes, batches, large payloads,
        # and history (its statements, its reads through asyncpg).
        for history in (0, 100):
            layer = make_layer(proxy.url, history_size=history)
            async with Channel(layer) as channel_, channel_.subscribe("g") as subscriber:
                await channel_.publish("g", "one")
                await channel_.publish_many([("g", number) for number in range(30)])
                await channel_.publish("g", "x" * 20_000)  # through the payloads table
                with anyio.fail_after(10):
                    got = [(await subscriber.receive()).message for _ in range(32)]
                assert got == ["one", *range(30), "x" * 20_000]


async def test_killed_publishing_connections_answer_every_caller(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """Ten publishers; their connections are terminated under them again and again.

    Every publish returns or raises; each one that returned was delivered,
    and nothing was delivered that was not published.
    """
    name = f"pw-kill-{secrets.token_hex(4)}"
    layer = make_layer(application_name=name, publish_timeout=10.0, pool_size=4)
    returned: set[tuple[int, int]] = set()
    failed: list[BaseException] = []
    kills = 0
    async with Channel(layer, buffer_size=10_000) as channel, channel.subscribe("k") as subscriber:
        listener_pid = layer.stats().listener_pid

        async def publisher(number: int) -> None:
            for index in range(300):
                try:
                    await channel.publish("k", [number, index])
                except BrokerUnavailableError as exc:
                    failed.append(exc)
                else:
                    returned.add((number, index))

        async def killer() -> None:
            nonlocal kills
            while True:
                kills += await pg.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = $1 AND pid <> $2",
                    name,
                    listener_pid,
                )
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(killer)
            async with anyio.create_task_group() as publishers:
                for number in range(10):
                    publishers.start_soon(publisher, number)
            tasks.cancel_scope.cancel()
        assert len(returned) + len(failed) == 3000
        assert kills > 0
        await channel.publish("k", "end")  # the connections work again
        received: set[tuple[int, int]] = set()
        with anyio.fail_after(20):
            while (message := (await subscriber.receive()).message) != "end":
                received.add((message[0], message[1]))
        assert returned <= received  # a publish that returned was delivered
        assert received <= {(n, i) for n in range(10) for i in range(300)}
    assert await backends(pg, name) == 0


async def test_a_frozen_server_times_out_the_call_and_its_connection_is_not_reused(
    postgres_url: str, pg: asyncpg.Connection
) -> None:
    name = f"pw-frozen-{secrets.token_hex(4)}"
    async with TcpProxy(postgres_url).running() as proxy:
        publishing = connections(proxy.url, 1, application_name=name)
        channel = f"pw_{secrets.token_hex(4)}"
        try:
            async with heard(postgres_url, channel) as received:
                await publishing.call(NOTIFY_PID, (channel,), soon())
                await eventually(lambda: len(received) == 1)
                proxy.freeze()
                started = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await publishing.call(NOTIFY, (channel, "frozen"), soon(0.3))
                assert anyio.current_time() - started < 2.0
                # Cancelled while waiting for a frozen server: the call ends at once.
                with anyio.move_on_after(0.2) as scope:
                    await publishing.call(NOTIFY, (channel, "cancelled"), soon())
                assert scope.cancelled_caught
                proxy.thaw()
                await publishing.call(NOTIFY_PID, (channel,), soon())
                await eventually(lambda: sum(text.isdigit() for text in received) == 2)
            pids = [text for text in received if text.isdigit()]
            assert len(pids) == 2
            assert pids[0] != pids[1]  # a new connection
        finally:
            await publishing.aclose(1.0)
        assert await backends(pg, name) == 0


async def test_a_frozen_server_fails_a_publish_at_publish_timeout(
    postgres_url: str, make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    name = f"pw-layer-{secrets.token_hex(4)}"
    async with TcpProxy(postgres_url).running() as proxy:
        # No health check fails meanwhile: the listener's connection goes through the proxy too.
        layer = make_layer(
            proxy.url, application_name=name, publish_timeout=0.5, health_check_interval=60
        )
        async with Channel(layer) as channel, channel.subscribe("f") as subscriber:
            await channel.publish("f", "before")
            proxy.freeze()
            with pytest.raises(BrokerUnavailableError, match="TimeoutError"):
                await channel.publish("f", "during")
            with anyio.move_on_after(0.2) as scope:
                await channel.publish("f", "cancelled")
            assert scope.cancelled_caught
            proxy.thaw()
            await channel.publish("f", "after")
            got = [await _message(subscriber)]
            while got[-1] != "after":  # the held statements may run once thawed
                got.append(await _message(subscriber))
            assert got[0] == "before"
            assert set(got) <= {"before", "during", "cancelled", "after"}
    assert await backends(pg, name) == 0


async def test_a_publish_retrying_when_the_layer_leaves_fails_at_once(
    postgres_url: str, make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """Not until `publish_timeout`: the closed publishing connections are not retried."""
    name = f"pw-leave-{secrets.token_hex(4)}"
    outcome: list[BaseException] = []
    async with TcpProxy(postgres_url).running() as proxy:
        layer = make_layer(proxy.url, application_name=name, publish_timeout=30)
        async with anyio.create_task_group() as tasks:
            async with Channel(layer) as channel:
                await channel.publish("r", "warm")
                proxy.refusing = True  # the server is down: every reconnect fails
                await pg.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    name,
                )

                async def publish() -> None:
                    try:
                        await channel.publish("r", "retrying")
                    except Exception as exc:
                        outcome.append(exc)

                tasks.start_soon(publish)
                await anyio.sleep(0.3)  # retrying with backoff meanwhile
                assert not outcome
            with anyio.fail_after(5):  # far within publish_timeout
                await eventually(lambda: bool(outcome))
    assert isinstance(outcome[0], ChannelClosedError), repr(outcome[0])
    assert await backends(pg, name) == 0


async def test_arguments_it_cannot_send_fail_their_call_and_keep_the_connection(
    postgres_url: str,
) -> None:
    publishing = connections(postgres_url, 1)
    try:
        for _ in range(3):  # more than the one connection there is
            with pytest.raises(TypeError):
                await publishing.call("SELECT $1::text", (1.5,), soon())
        await publishing.call("SELECT 1", (), soon())
    finally:
        await publishing.aclose(1.0)


async def _message(subscriber: Any) -> Any:
    with anyio.fail_after(5):
        return (await subscriber.receive()).message


async def test_closing_fails_calls_and_opens_nothing_more(postgres_url: str) -> None:
    publishing = connections(postgres_url, 1)
    await publishing.call("SELECT 1", (), soon())
    await publishing.aclose(1.0)
    with pytest.raises(asyncpg.exceptions.InterfaceError, match="closed"):
        await publishing.call("SELECT 1", (), soon())


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
@pytest.mark.parametrize("anyio_backend", [pytest.param(("asyncio", {"use_uvloop": True}))])
async def test_publishing_connections_work_on_uvloop(make_layer: LayerMaker) -> None:
    """uvloop's transports are not asyncio.Transport subclasses: taken over all the same."""
    async with Channel(make_layer()) as channel, channel.subscribe("uv") as subscriber:
        await channel.publish("uv", "one")
        await channel.publish_many([("uv", "two"), ("uv", "three")])
        assert [await _message(subscriber) for _ in range(3)] == ["one", "two", "three"]


async def test_closing_returns_once_the_server_has_let_every_connection_go(
    postgres_url: str, pg: asyncpg.Connection
) -> None:
    """No backend is left when `aclose` returns: checked at once, not waited for."""
    for _ in range(10):  # a race without the wait: lost in some of the rounds
        name = f"pw-close-{secrets.token_hex(4)}"
        publishing = connections(postgres_url, 4, application_name=name)
        async with anyio.create_task_group() as tasks:
            for _ in range(4):  # four at once: four connections
                tasks.start_soon(publishing.call, "SELECT pg_sleep(0.01)", (), soon())
        await publishing.aclose(1.0)
        count = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
        )
        assert count == 0


@asynccontextmanager
async def senders(url: str, channel: str) -> AsyncIterator[list[int]]:
    """The pids of the backends NOTIFYing on `channel` while the block runs."""
    pids: list[int] = []
    listener = await asyncpg.connect(url)
    try:
        await listener.add_listener(channel, lambda _, pid, *rest: pids.append(pid))
        yield pids
    finally:
        await listener.close()


@pytest.mark.parametrize(
    ("history", "size", "on_listener"),
    [(False, 100, True), (False, 20_000, False), (True, 100, False)],
    ids=["history-off", "history-off-large", "history-on"],
)
async def test_only_publishes_that_only_notify_run_on_the_listening_connection(
    make_layer: LayerMaker, postgres_url: str, history: bool, size: int, on_listener: bool
) -> None:
    """Its own notification then comes back with the reply, from one backend. Not a
    statement that writes a table (a large payload's, or any with history on): one
    waiting for a lock would hold up the listening connection."""
    layer = make_layer(history_size=10 if history else 0)
    group = f"pw-{secrets.token_hex(4)}"
    bucket = ChannelNames(layer.options.namespace).channel(group)
    async with Channel(layer) as channel, channel.subscribe(group) as subscriber:
        async with senders(postgres_url, bucket) as pids:
            await channel.publish(group, "x" * size)
            assert await _message(subscriber) == "x" * size
            await eventually(lambda: bool(pids))
        assert (pids == [layer.stats().listener_pid]) is on_listener


def _slow_publish_shared(
    layer: PostgreSQLChannelLayer, group: str, message: str, seconds: float
) -> tuple[PublishingConnections, str, tuple[Any, ...]]:
    """A publish of `message` to `group` that takes `seconds`, let run on the open
    `layer`'s listening connection: its publishing connections, statement, arguments."""
    publishing, listener = layer._publisher.publishing, layer._listener
    assert publishing is not None
    assert listener is not None
    slow = f"SELECT pg_notify($1, $2) FROM pg_sleep({seconds})"
    publishing.share(listener._lane, layer._sql.notify_only | {slow})
    query, arguments, _ = layer._prepare(group, layer._inbox.encode(group, message))  # type: ignore[union-attr]
    assert query == layer._sql.publish
    return publishing, slow, arguments


async def test_the_listener_waits_for_a_publish_running_on_its_connection(
    make_layer: LayerMaker,
) -> None:
    """A subscribe (LISTEN) while a publish holds the listening connection: it is sent
    once the publish is answered, and both work."""
    layer = make_layer()
    async with Channel(layer) as channel, channel.subscribe("first") as first:
        publishing, slow, arguments = _slow_publish_shared(layer, "first", "held", 0.5)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publishing.call, slow, arguments, soon())  # on the listening one
            await anyio.sleep(0.1)
            entered = anyio.Event()

            async def subscribe_second() -> None:
                async with channel.subscribe("second") as second:
                    entered.set()
                    await channel.publish("second", "to second")
                    assert await _message(second) == "to second"

            tasks.start_soon(subscribe_second)
            await anyio.sleep(0.2)
            assert not entered.is_set()  # its LISTEN waits for the publish
        assert await _message(first) == "held"
    assert layer.stats().reconnects == 0


async def test_a_large_publish_waiting_for_a_table_lock_holds_up_no_other_delivery(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """A large payload's publish waits while an application holds a lock on the payloads
    table; meanwhile other messages are delivered and the listening connection passes
    its health checks (it runs none of that publish). Once the lock goes, it arrives."""
    layer = make_layer(health_check_interval=0.1, health_check_timeout=0.2)
    table = quote_ident(ChannelNames(layer.options.namespace).payloads_table)
    large = "large" + "x" * 20_000  # too large for a NOTIFY: it writes the locked table
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        await pg.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(channel.publish, "g", large)
                await anyio.sleep(0.1)
                for number in range(3):
                    await channel.publish("g", number)
                    assert await _message(subscriber) == number
                await anyio.sleep(0.5)  # several health checks
                await channel.publish("g", "before unlocking")
                assert await _message(subscriber) == "before unlocking"
                await pg.execute("COMMIT")  # the lock goes: the large one goes on
        finally:
            if pg.is_in_transaction():
                await pg.execute("ROLLBACK")
        assert await _message(subscriber) == large
        stats = layer.stats()
    assert (stats.reconnects, stats.health_check_failures) == (0, 0)


async def test_a_publish_finding_every_publishing_connection_held_waits_for_the_listening_one(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """The one publishing connection is held by a large payload's publish waiting for a
    lock, the listening connection by a slow publish: the next publish goes on the
    listening connection once that is idle, instead of waiting for the held one until
    its publish_timeout."""
    layer = make_layer(pool_size=1)
    table = quote_ident(ChannelNames(layer.options.namespace).payloads_table)
    large = "large" + "x" * 20_000  # too large for a NOTIFY: it writes the locked table
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        publishing, slow, arguments = _slow_publish_shared(layer, "g", "slow", 0.3)
        await pg.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(channel.publish, "g", large)  # on the publishing connection
                await anyio.sleep(0.1)
                tasks.start_soon(publishing.call, slow, arguments, soon())  # on the listening one
                await anyio.sleep(0.05)
                with anyio.fail_after(1):  # publish_timeout is 2 s
                    await channel.publish("g", "next")
                assert [await _message(subscriber) for _ in range(2)] == ["slow", "next"]
                await pg.execute("COMMIT")  # the lock goes: the large one goes on
        finally:
            if pg.is_in_transaction():
                await pg.execute("ROLLBACK")
        assert await _message(subscriber) == large
    assert layer.stats().reconnects == 0


async def test_a_call_waiting_for_either_connection_takes_the_first_free_and_leaks_none(
    postgres_url: str,
) -> None:
    """Every publishing connection in use and the listening one too: a call that may
    run on either takes the first free, here the publishing one; a call cancelled
    while it waits for either leaves every connection to the others."""
    channel = f"pw_{secrets.token_hex(4)}"
    sleep = "SELECT pg_sleep($1::float8)"
    slow = "SELECT pg_notify($1, $2) FROM pg_sleep(1)"
    publishing = connections(postgres_url, 1)
    async with listening_lane(postgres_url, channel, lambda *_: None) as lane:
        publishing.share(lane, frozenset((NOTIFY, slow)))
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publishing.call, sleep, ("0.2",), soon())  # not shared
                await anyio.sleep(0.05)
                tasks.start_soon(publishing.call, slow, (channel, "slow"), soon())  # shared
                await anyio.sleep(0.05)
                with anyio.move_on_after(0.05):  # cancelled while it waits for either
                    await publishing.call(NOTIFY, (channel, "withdrawn"), soon())
                started = anyio.current_time()
                await publishing.call(NOTIFY, (channel, "first free"), soon())
                assert anyio.current_time() - started < 0.5  # not after the slow one
                assert lane.waiter is not None  # the slow one still runs there
            with anyio.fail_after(1):  # the one publishing connection is free again
                await publishing.call(sleep, ("0",), soon())
        finally:
            publishing.share(None)
            await publishing.aclose(1.0)


async def test_a_killed_listening_connection_answers_the_publishes_running_on_it(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """Ten publishers while the listening connection, which publishes too, is terminated
    five times: every publish returns or raises, the subscriber is told of the gaps,
    and what comes after them arrives."""
    name = f"pw-listener-{secrets.token_hex(4)}"
    layer = make_layer(application_name=name, publish_timeout=10.0, pool_size=2)
    outcomes: list[object] = []
    received: list[Any] = []
    gaps = 0
    async with Channel(layer, buffer_size=10_000) as channel, channel.subscribe("l") as subscriber:

        async def publisher(number: int) -> None:
            for index in range(200):
                try:
                    await channel.publish("l", [number, index])
                except BrokerUnavailableError as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)

        async def reader() -> None:
            nonlocal gaps
            while True:
                try:
                    received.append((await subscriber.receive()).message)
                except MessagesLost:
                    gaps += 1

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reader)
            async with anyio.create_task_group() as publishers:
                for number in range(10):
                    publishers.start_soon(publisher, number)
                for _ in range(5):
                    await eventually(lambda: layer.stats().listener_pid is not None)
                    await pg.execute("SELECT pg_terminate_backend($1)", layer.stats().listener_pid)
                    await anyio.sleep(0.05)
            assert len(outcomes) == 2000
            await eventually(lambda: layer.stats().listener_pid is not None)
            await channel.publish("l", "end")
            await eventually(lambda: "end" in received)
            tasks.cancel_scope.cancel()
        assert layer.stats().reconnects >= 1
        assert gaps >= 1
        assert received[-1] == "end"
        for number in range(10):  # each publisher's in order (a retried one maybe twice)
            indexes = [index for n, index in received[:-1] if n == number]
            assert indexes == sorted(indexes)
    assert await backends(pg, name) == 0


@asynccontextmanager
async def listening_lane(
    url: str, channel: str, on_notification: Callable[[str, str], None]
) -> AsyncIterator[Lane]:
    """A connection taken over by a `Lane` that LISTENs on `channel`."""
    lane = Lane(on_notification=on_notification)
    take_transport(await asyncpg.connect(url), lane)
    try:
        await lane.query(f'LISTEN "{channel}"')
        yield lane
    finally:
        lane.abort()


async def test_a_query_collecting_rows_on_the_listening_connection_hands_on_notifications(
    postgres_url: str,
) -> None:
    channel = f"pw_{secrets.token_hex(4)}"
    got: list[str] = []
    async with listening_lane(postgres_url, channel, lambda _, text: got.append(text)) as lane:
        rows = await lane.query(f"SELECT pg_notify('{channel}', 'during rows'), 'row'", rows=True)
        await lane.query("SELECT 1")
    assert rows == [""]  # pg_notify's void, as text
    assert got == ["during rows"]


async def test_a_calls_own_notifications_are_handed_on_once_the_caller_has_resumed(
    postgres_url: str,
) -> None:
    """The reply to a publish on the listening connection brings its notification:
    the publisher runs first (a sequential publisher writes its next statement
    while its subscribers run and the server works), the notifications right after,
    in order."""
    channel = f"pw_{secrets.token_hex(4)}"
    got: list[str] = []
    async with listening_lane(postgres_url, channel, lambda _, text: got.append(text)) as lane:
        await lane.query(
            f"SELECT pg_notify('{channel}', 'first'), pg_notify('{channel}', 'second')"
        )
        assert got == []  # the caller resumed before anything was handed on
        await handed_on()
        assert got == ["first", "second"]
        await lane.query(f"SELECT pg_notify('{channel}', 'third')")
        await lane.query("SELECT 1")
    assert got == ["first", "second", "third"]


async def test_notifications_held_when_the_connection_is_lost_are_handed_on_before_the_loss(
    postgres_url: str,
) -> None:
    """What arrived before a connection was lost is delivered before the listener
    hears of the loss (and reports the gap)."""
    channel = f"pw_{secrets.token_hex(4)}"
    events: list[str] = []
    lane = Lane(
        on_notification=lambda _, text: events.append(text), on_lost=lambda: events.append("lost")
    )
    take_transport(await asyncpg.connect(postgres_url), lane)
    try:
        await lane.query(f'LISTEN "{channel}"')
        await lane.query(f"SELECT pg_notify('{channel}', 'before')")
        lane.connection_lost(None)  # as the transport reports it, before the hand-on ran
        assert events == ["before", "lost"]
        await handed_on()
        assert events == ["before", "lost"]  # handed on once, not again
    finally:
        lane.abort()


async def test_one_cancelled_wait_for_the_listening_connection_leaves_the_others_waiting(
    postgres_url: str,
) -> None:
    channel = f"pw_{secrets.token_hex(4)}"
    async with listening_lane(postgres_url, channel, lambda *_: None) as lane:
        busy = lane.start(simple_query("SELECT pg_sleep(0.3)"))  # a publish running there
        with anyio.move_on_after(0.05):
            await lane.until_idle()
        with anyio.fail_after(5):
            await lane.until_idle()  # not cancelled: waits for the answer
        assert busy.done()
        assert await busy is None


async def test_a_publish_started_by_its_predecessors_notification_keeps_its_deadline(
    postgres_url: str,
) -> None:
    """A task woken by the notification of a publish on the listening connection
    publishes there before that publish has resumed: the first must not end the
    second's deadline."""
    channel = f"pw_{secrets.token_hex(4)}"
    publishing = connections(postgres_url, 1)
    notified = anyio.Event()
    outcome: list[BaseException | None] = []

    async def reply() -> None:
        await notified.wait()
        started = anyio.current_time()
        try:
            await publishing.call("SELECT pg_sleep(2)", (), soon(0.3))
        except TimeoutError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        assert anyio.current_time() - started < 1.5

    async with listening_lane(postgres_url, channel, lambda *_: notified.set()) as lane:
        publishing.share(lane, frozenset((NOTIFY, "SELECT pg_sleep(2)")))
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(reply)
                await publishing.call(NOTIFY, (channel, "go"), soon())
        finally:
            publishing.share(None)
            await publishing.aclose(1.0)
    assert isinstance(outcome[0], TimeoutError)
