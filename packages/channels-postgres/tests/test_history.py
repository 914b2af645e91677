"""History on PostgreSQL: recovery across a killed connection, a lost log, commit order.

The behaviour every layer shares (since=, history(), trimming, unusual
names) is in the conformance suite; these are what PostgreSQL adds:
transactions, killed backends, truncated tables, crashes, the tables
themselves.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import asyncpg
import pytest

from channels_core import Channel, ChannelsError, Event, MessagesLost, Subscriber
from channels_core.history import parse_position
from channels_core.reconnect import Backoff
from channels_core.testing import eventually
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres._listener import Listener
from channels_layer_postgres.testing import LayerMaker, PostgresServer

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.05, maximum=0.2)


def _unique(name: str) -> str:
    """A group of its own: the log outlives a test (the namespace is per session)."""
    return f"{name}-{secrets.token_hex(6)}"


def _epoch(position: str | None) -> str:
    """The epoch of a position."""
    assert position is not None
    return parse_position(position).epoch


def _number(position: str | None) -> int:
    """The offset of a position of this layer (``<epoch>-<n>``)."""
    assert position is not None
    (n,) = parse_position(position).offset
    return n


async def _receive(subscriber: Subscriber, within: float = 10) -> Event:
    with anyio.fail_after(within):
        return await subscriber.receive()


async def _terminate(pg: asyncpg.Connection, layer: PostgreSQLChannelLayer) -> int:
    """Kill the layer's listening connection from the server side (once it has one)."""
    await eventually(lambda: layer.stats().listener_pid is not None)
    pid = layer.stats().listener_pid  # no await since: still that one
    assert pid is not None
    assert await pg.fetchval("SELECT pg_terminate_backend($1)", pid)
    return pid


async def test_a_killed_listening_connection_loses_nothing(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """pg_terminate_backend of the subscriber's LISTEN connection, three times, while
    3,000 messages are published: each arrives once, in order, and no MessagesLost."""
    group, count = _unique("killed"), 3_000
    layer = make_layer(history_size=count, reconnect_backoff=QUICK)
    received: list[int] = []
    async with (
        Channel(layer) as channel,
        Channel(make_layer(history_size=count)) as publisher,
        channel.subscribe(group, buffer_size=2 * count) as subscriber,
    ):

        async def publish_all() -> None:
            for number in range(count):
                await publisher.publish(group, number)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_all)
            positions = []
            while len(received) < count:
                event = await _receive(subscriber)  # a MessagesLost would raise here
                received.append(event.message)
                positions.append(_number(event.position))
                if len(received) in (500, 1_500, 2_500):
                    await _terminate(pg, layer)
        # The last kill may come after the last message was read from the socket.
        await eventually(lambda: layer.stats().reconnects == 3)
    assert received == list(range(count))
    assert positions == list(range(positions[0], positions[0] + count))
    assert layer.stats().reconnects == 3


async def test_what_a_new_listening_connection_hears_while_it_listens_waits_for_the_gap(
    make_layer: LayerMaker, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL sends notifications with its answer to LISTEN. One that arrived
    then, delivered before the layer reports the reconnect, would move the channel's
    last position past the messages published during the outage, and its recovery
    would skip them. Here messages 1-3 are published while the listening connection
    is down, and 4 on the new connection itself, inside its LISTEN round."""
    group = _unique("listen-round")
    layer = make_layer(history_size=10, reconnect_backoff=QUICK)
    armed = [False]  # True: the next LISTEN round is the new connection's
    apply = Listener._apply

    async def apply_and_publish(listener: Listener, lane: Any) -> None:
        if not armed[0]:
            await apply(listener, lane)
            return
        armed[0] = False
        for number in (1, 2, 3):
            await publisher.publish(group, number)
        await apply(listener, lane)
        query, arguments, _ = layer._prepare(group, layer._inbox.encode(group, 4))  # type: ignore[union-attr]
        publishing = layer._publisher.publishing
        assert publishing is not None
        publishing.share(lane, frozenset((query,)))  # before the listener: 4 goes out on `lane`
        await publishing.call(query, arguments, publishing.clock() + 5)

    monkeypatch.setattr(Listener, "_apply", apply_and_publish)
    async with (
        Channel(layer) as channel,
        Channel(make_layer(history_size=10)) as publisher,
        channel.subscribe(group) as subscriber,
    ):
        await publisher.publish(group, 0)
        assert (await _receive(subscriber)).message == 0
        armed[0] = True
        await _terminate(pg, layer)
        received = [(await _receive(subscriber)).message for _ in range(4)]
    assert received == [1, 2, 3, 4]
    assert layer.stats().reconnects == 1


async def test_a_truncated_log_is_reported_as_a_loss_never_as_recovered(
    make_layer: LayerMaker, pg: asyncpg.Connection, namespace: str
) -> None:
    """The tables are emptied (the PostgreSQL form of a broker losing its log) while
    the listening connection is down and a publisher runs: the recovery cannot be
    proven, so MessagesLost("reconnect"); then delivery goes on, in order."""
    group, names = _unique("truncated"), ChannelNames(namespace)
    layer = make_layer(history_size=1_000, reconnect_backoff=QUICK)
    async with (
        Channel(layer) as channel,
        Channel(make_layer(history_size=1_000)) as publisher,
        channel.subscribe(group, buffer_size=10_000) as subscriber,
    ):

        async def publish_flat_out() -> None:
            number = 0
            while True:
                await publisher.publish(group, number)
                number += 1

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_flat_out)
            first = await _receive(subscriber)
            before_position = first.position
            before = [first.message] + [(await _receive(subscriber)).message for _ in range(99)]
            # One transaction: the log is gone before the listener is, and nobody
            # reads or writes it until both are done.
            async with pg.transaction():
                # In the order publishers take them (the counters first): no deadlock.
                await pg.execute(f'TRUNCATE "{names.heads_table}", "{names.history_table}"')
                await _terminate(pg, layer)
                await anyio.sleep(0.2)
            after: list[int] = []
            lost = await _until_lost(subscriber, after)
            assert lost.reason == "reconnect"
            resumed = [(await _receive(subscriber)).message for _ in range(100)]
            tasks.cancel_scope.cancel()
    delivered = before + after + resumed
    assert delivered == sorted(set(delivered))  # in order, none twice
    # What the log now holds belongs to the new epoch, and replaying it from an
    # old position says it cannot reach back.
    async with Channel(make_layer(history_size=1_000)) as reader:
        with pytest.raises(MessagesLost) as expired:
            await reader.history(group, since=f"{_epoch(before_position)}-1")
        assert expired.value.reason == "expired"


async def _until_lost(subscriber: Subscriber, received: list[Any]) -> MessagesLost:
    """Receive into `received` until the subscriber raises MessagesLost; that error."""
    while True:
        try:
            received.append((await _receive(subscriber)).message)
        except MessagesLost as lost:
            return lost


async def test_positions_follow_commit_order_across_transactions(
    make_layer: LayerMaker, postgres_url: str
) -> None:
    """Transactions that publish to one group and commit in another order than they
    published: every subscriber sees positions in delivery order, dense, the same as
    the log's (a sequence drawn at publish time would deliver them out of order)."""
    group, count = _unique("commit-order"), 24
    layer = make_layer(history_size=100)
    connections = [await asyncpg.connect(postgres_url) for _ in range(6)]
    try:
        async with Channel(layer) as channel, channel.subscribe(group) as subscriber:

            async def one_transaction(conn: asyncpg.Connection, number: int) -> None:
                async with conn.transaction():
                    await anyio.sleep(random.uniform(0, 0.01))
                    await layer.publish_in(conn, group, number)
                    await anyio.sleep(random.uniform(0, 0.02))

            async def worker(conn: asyncpg.Connection, numbers: range) -> None:
                for number in numbers:
                    await one_transaction(conn, number)

            async with anyio.create_task_group() as tasks:
                for index, conn in enumerate(connections):
                    tasks.start_soon(worker, conn, range(index, count, len(connections)))
            live = [await _receive(subscriber) for _ in range(count)]
            logged = await channel.history(group)
    finally:
        for conn in connections:
            await conn.close()
    numbers = [_number(event.position) for event in live]
    assert numbers == list(range(numbers[0], numbers[0] + count))
    assert logged == live
    assert sorted(event.message for event in live) == list(range(count))


async def test_a_second_transaction_waits_for_the_first_to_commit(
    make_layer: LayerMaker, postgres_url: str
) -> None:
    """The group's counter row stays locked until commit: the later publisher waits,
    then takes the next number, so the first to commit is the first delivered."""
    group = _unique("wait")
    layer = make_layer(history_size=10)
    first, second = [await asyncpg.connect(postgres_url) for _ in range(2)]
    try:
        async with Channel(layer) as channel, channel.subscribe(group) as subscriber:
            started = first.transaction()
            await started.start()
            await layer.publish_in(first, group, "first")
            done = anyio.Event()

            async def publish_second() -> None:
                async with second.transaction():
                    await layer.publish_in(second, group, "second")
                done.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish_second)
                await anyio.sleep(0.3)
                assert not done.is_set()  # waiting for the first transaction
                await started.commit()
            events = [await _receive(subscriber) for _ in range(2)]
    finally:
        await first.close()
        await second.close()
    assert [event.message for event in events] == ["first", "second"]
    assert [_number(event.position) for event in events] == [1, 2]


async def test_a_rolled_back_publish_leaves_no_history_and_no_hole(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    group = _unique("rollback")
    layer = make_layer(history_size=10)
    async with Channel(layer) as channel, channel.subscribe(group) as subscriber:
        await channel.publish(group, "kept")
        (kept,) = await channel.history(group)
        transaction = pg.transaction()
        await transaction.start()
        await layer.publish_in(pg, group, "rolled back")
        await layer.publish_in(pg, group, "x" * 20_000)  # large: the payloads table too
        await transaction.rollback()
        async with pg.transaction():
            await layer.publish_in(pg, group, "committed")
        live = [await _receive(subscriber) for _ in range(2)]
        assert [event.message for event in live] == ["kept", "committed"]
        assert [_number(event.position) for event in live] == [1, 2]  # no hole
        assert await channel.history(group) == live
        # Dense, so a replay after the first one is provably complete: no MessagesLost.
        async with channel.subscribe(group, since=kept.position) as replayed:
            assert await _receive(replayed) == live[1]


async def test_trimming_deletes_rows_by_size_and_by_ttl(
    make_layer: LayerMaker, pg: asyncpg.Connection, namespace: str
) -> None:
    """Not only hidden: the rows are gone (size: by each publish; TTL: by a sweep)."""
    names = ChannelNames(namespace)
    count_rows = (
        f'SELECT count(*) FROM "{names.history_table}" h JOIN "{names.heads_table}" c'
        " ON c.grp = h.grp AND c.epoch = h.epoch"
        " WHERE h.grp = sha256(convert_to($1, 'UTF8'))"
    )
    sized, timed = _unique("sized"), _unique("timed")
    async with Channel(make_layer(history_size=5)) as channel:
        for number in range(20):
            await channel.publish(sized, number)
        assert await pg.fetchval(count_rows, sized) == 5
    async with Channel(make_layer(history_size=100, history_ttl=0.3)) as channel:
        for number in range(10):
            await channel.publish(timed, number)
        assert await pg.fetchval(count_rows, timed) == 10
        await anyio.sleep(1.1)  # the TTL, and the sweep's once-a-second bound
        await channel.publish(timed, "fresh")
        assert await pg.fetchval(count_rows, timed) == 1
        assert [event.message for event in await channel.history(timed)] == ["fresh"]


async def test_large_payloads_and_hostile_group_names_with_history(
    make_layer: LayerMaker,
) -> None:
    """Through the payloads table (large, or a name too long for a NOTIFY) the
    position still travels, and the log keeps the whole payload."""
    large = "x" * 50_000
    groups = [
        _unique("large"),
        "quote ' \" ; -- \x00 nul " + secrets.token_hex(4),
        "long " * 3_000 + secrets.token_hex(4),  # too long for a NOTIFY
        "ünïcødé 🚀 " * 300 + secrets.token_hex(4),
    ]
    async with (
        Channel(make_layer(history_size=10)) as channel,
        channel.subscribe_pattern("*") as by_pattern,
    ):
        for group in groups:
            async with channel.subscribe(group) as subscriber:
                await channel.publish(group, "small")
                await channel.publish(group, large)
                live = [await _receive(subscriber) for _ in range(2)]
                assert [event.message for event in live] == ["small", large]
                assert [_number(event.position) for event in live] == [1, 2]
                assert await channel.history(group) == live
            async with channel.subscribe(group, since=live[0].position) as replayed:
                assert await _receive(replayed) == live[1]
            patterned = [await _receive(by_pattern) for _ in range(2)]
            assert [event.position for event in patterned] == [e.position for e in live]


async def test_a_large_payload_gone_before_its_fetch_is_recovered_from_the_log(
    make_layer: LayerMaker, pg: asyncpg.Connection, namespace: str
) -> None:
    """Its payloads-table row is deleted before subscribers fetch it (as an expiry
    would): the log still has it, so subscribers get it, in order, and no loss."""
    group, large = _unique("gone"), "y" * 20_000
    layer = make_layer(history_size=10)
    payloads = ChannelNames(namespace).payloads_table
    async with Channel(layer) as channel, channel.subscribe(group) as subscriber:
        await channel.publish(group, "before")
        async with pg.transaction():
            await layer.publish_in(pg, group, large)
            await pg.execute(f'DELETE FROM "{payloads}"')
        await channel.publish(group, "after")
        received = [(await _receive(subscriber)).message for _ in range(3)]
    assert received == ["before", large, "after"]
    assert layer.stats().large_missing == 1


async def test_a_publisher_with_history_off_makes_recovery_report_a_loss(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    """Its messages are not in the log: once one arrived, a recovery of that group
    cannot be proven complete, so it says MessagesLost rather than claim one."""
    group = _unique("unlogged")
    layer = make_layer(history_size=10, reconnect_backoff=QUICK)
    async with (
        Channel(layer) as channel,
        Channel(make_layer()) as history_off,
        channel.subscribe(group) as subscriber,
    ):
        await history_off.publish(group, "unlogged")
        assert (await _receive(subscriber)).position is None
        await channel.publish(group, "logged")
        logged = await _receive(subscriber)
        await _terminate(pg, layer)
        with anyio.fail_after(10), pytest.raises(MessagesLost) as lost:
            await subscriber.receive()
        assert lost.value.reason == "reconnect"
        with pytest.raises(MessagesLost):
            await channel.history(group, since=logged.position)
    async with Channel(make_layer(history_size=10)) as fresh:  # not listening: provable
        assert await fresh.history(group, since=logged.position) == []


async def test_pattern_subscribers_get_positions_too(make_layer: LayerMaker) -> None:
    group = _unique("pattern")
    async with (
        Channel(make_layer(history_size=10)) as channel,
        channel.subscribe_pattern("pattern-*") as subscriber,
    ):
        await channel.publish(group, "hello")
        event = await _receive(subscriber)
    assert (event.group, event.message, event.pattern) == (group, "hello", "pattern-*")
    assert _number(event.position) == 1


# -- a crash: the server's own way of losing the (unlogged) log -----------------------


async def test_a_crash_empties_the_log_and_recovery_says_so(
    make_layer: LayerMaker, private_server: PostgresServer
) -> None:
    """An immediate stop is a crash: PostgreSQL empties unlogged tables on restart.
    The subscriber is told MessagesLost("reconnect"), never a recovery that did not
    happen, and an old position replays as expired."""
    group, url = _unique("crash"), private_server.url
    layer = make_layer(url, history_size=100, reconnect_backoff=QUICK)
    async with (
        Channel(layer) as channel,
        Channel(make_layer(url, history_size=100)) as publisher,
        channel.subscribe(group) as subscriber,
    ):
        for number in range(5):
            await publisher.publish(group, number)
        before = [await _receive(subscriber) for _ in range(5)]
        await anyio.to_thread.run_sync(private_server.stop, "immediate")
        await anyio.to_thread.run_sync(private_server.start)
        with pytest.raises(MessagesLost) as lost:
            await _receive(subscriber)
        assert lost.value.reason == "reconnect"
        await publisher.publish(group, "after the crash")
        event = await _receive(subscriber)
        assert event.message == "after the crash"
        assert _epoch(event.position) != _epoch(before[0].position)
        assert [e.message for e in await channel.history(group)] == ["after the crash"]
        with pytest.raises(MessagesLost) as expired:
            await channel.history(group, since=before[-1].position)
        assert expired.value.reason == "expired"


# -- least privilege ---------------------------------------------------------------------


@pytest.fixture
async def history_role(
    least_privilege_role: Callable[..., AbstractAsyncContextManager[dict[str, str]]],
    pg: asyncpg.Connection,
) -> AsyncIterator[dict[str, str]]:
    """A role with exactly the privileges the README lists, history's included (conftest.py)."""
    async with least_privilege_role(pg, "hist", history_size=10) as role:
        yield role


async def test_the_documented_grants_are_enough_for_history(
    history_role: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Publish (small, large, in a transaction, with the TTL sweep), subscribe to a
    group without a counter row yet, replay, read history: nothing refused."""
    caplog.set_level("WARNING", "channels_layer_postgres")
    group = _unique("granted")
    layer = PostgreSQLChannelLayer(
        history_role["url"],
        namespace=history_role["namespace"],
        history_size=10,
        history_ttl=60,
    )
    async with Channel(layer) as channel, channel.subscribe(group) as subscriber:
        await channel.publish(group, "small")
        await channel.publish(group, "large " + "x" * 20_000)
        conn = await asyncpg.connect(history_role["url"])
        try:
            async with conn.transaction():
                await layer.publish_in(conn, group, "in a transaction")
        finally:
            await conn.close()
        live = [await _receive(subscriber) for _ in range(3)]
        assert await channel.history(group) == live
        async with channel.subscribe(group, since=live[0].position) as replayed:
            assert [await _receive(replayed) for _ in range(2)] == live[1:]
    assert caplog.records == []


async def test_a_role_without_the_history_grants_gets_a_channels_error(
    history_role: dict[str, str], pg: asyncpg.Connection
) -> None:
    names, schema = ChannelNames(history_role["namespace"]), history_role["schema"]
    await pg.execute(f"REVOKE INSERT ON {schema}.{names.history_table} FROM {history_role['role']}")
    layer = PostgreSQLChannelLayer(
        history_role["url"], namespace=history_role["namespace"], history_size=10
    )
    async with Channel(layer) as channel:
        with pytest.raises(ChannelsError) as refused:
            await channel.publish(_unique("refused"), "no")
        assert isinstance(refused.value.__cause__, asyncpg.InsufficientPrivilegeError)


async def test_concurrent_batches_on_shared_groups_log_every_item_once_in_commit_order(
    make_layer: LayerMaker,
) -> None:
    """Six publishers send batches spanning six shared groups, each batch naming them
    in its own order, all at once: each group's positions are dense and in delivery
    order, its log holds every item once, and each publisher's items keep their order.
    (Counter rows locked in each batch's own order deadlock here within a few batches.)"""
    groups = [_unique(f"batch-{number}") for number in range(6)]
    publishers, batches, size = 6, 20, 24
    layers = [make_layer(history_size=1000) for _ in range(publishers)]
    async with Channel(make_layer(history_size=1000), buffer_size=10_000) as listener:
        async with listener.subscribe(*groups) as subscriber:

            async def publish(index: int, channel: Channel) -> None:
                for batch in range(batches):
                    ordered = random.sample(groups, len(groups))
                    await channel.publish_many(
                        [
                            (ordered[item % len(groups)], (index, batch, item))
                            for item in range(size)
                        ]
                    )

            async with AsyncExitStack() as stack:
                channels = [await stack.enter_async_context(Channel(layer)) for layer in layers]
                async with anyio.create_task_group() as tasks:
                    for index, channel in enumerate(channels):
                        tasks.start_soon(publish, index, channel)
            total = publishers * batches * size
            live = [await _receive(subscriber) for _ in range(total)]
            logged = {group: await listener.history(group) for group in groups}
    for group in groups:
        mine = [event for event in live if event.group == group]
        assert [_number(event.position) for event in mine] == list(range(1, len(mine) + 1))
        assert logged[group] == mine
        for index in range(publishers):
            theirs = [tuple(event.message) for event in mine if event.message[0] == index]
            assert theirs == sorted(theirs)
    assert sorted(tuple(event.message) for event in live) == sorted(
        (index, batch, item)
        for index in range(publishers)
        for batch in range(batches)
        for item in range(size)
    )


async def test_a_batch_longer_than_the_history_keeps_only_the_newest(
    make_layer: LayerMaker, pg: asyncpg.Connection, namespace: str
) -> None:
    """A batch of 12 into a log of 5 after 3 publishes: the rows are the newest 5,
    numbered 11 to 15, and a batch's items the log no longer holds are still delivered."""
    names = ChannelNames(namespace)
    group = _unique("batch-trim")
    async with Channel(make_layer(history_size=5)) as channel:
        async with channel.subscribe(group) as subscriber:
            for number in range(3):
                await channel.publish(group, number)
            await channel.publish_many([(group, number) for number in range(3, 15)])
            live = [await _receive(subscriber) for _ in range(15)]
        logged = await channel.history(group)
    rows = await pg.fetch(
        f"SELECT n FROM \"{names.history_table}\" WHERE grp = sha256(convert_to($1, 'UTF8'))"
        " ORDER BY n",
        group,
    )
    assert [event.message for event in live] == list(range(15))
    assert [_number(event.position) for event in live] == list(range(1, 16))
    assert [row["n"] for row in rows] == list(range(11, 16))
    assert logged == live[10:]
