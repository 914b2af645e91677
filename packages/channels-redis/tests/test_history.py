"""History on Redis: recovery across killed connections, restarts and failovers; the stream itself.

The conformance kit (test_conformance.py, test_sentinel.py) checks since=,
history(), trimming and the replay-to-live handover; these tests add what
only a real Redis can do to a log: connections killed under load, a server
that loses its data or comes back from an older snapshot, a Sentinel
failover, retried publishes, and the keys and their hash slots.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio
from redis.crc import key_slot

from channels_core import Channel, MessagesLost, Subscriber
from channels_core.history import parse_position
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisClusterChannelLayer, RedisPubSubChannelLayer
from channels_layer_redis._wire import WireNames
from channels_layer_redis.testing import ClusterSetup, RedisServer, SentinelSetup

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.02, maximum=0.2)
Eventually = Callable[..., Awaitable[None]]
LayerMaker = Callable[..., RedisPubSubChannelLayer]


async def collect(subscriber: Subscriber, count: int, timeout: float = 20) -> list[Any]:
    """`count` messages, in arrival order; a MessagesLost fails the test."""
    with anyio.fail_after(timeout):
        return [(await subscriber.receive()).message for _ in range(count)]


async def test_killed_subscriber_connection_loses_nothing_under_load(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, eventually: Eventually
) -> None:
    """CLIENT KILL of the pub/sub connection three times while 3,000 messages go out.

    A thousand messages between kills: each reconnect is over (its recovery read
    from the log of 2,000) long before the next kill.
    """
    count, kills = 3_000, (500, 1_500, 2_500)
    subscriber_layer = make_redis_layer(history_size=2_000, reconnect_backoff=FAST)
    async with (
        Channel(subscriber_layer, buffer_size=count) as channel,
        Channel(make_redis_layer(history_size=2_000)) as publisher,
        channel.subscribe("feed") as subscriber,
    ):
        published = 0

        async def publish_all() -> None:
            nonlocal published
            for number in range(count):
                await publisher.publish("feed", number)
                published += 1

        async def kill_at_marks() -> None:
            for round_number, mark in enumerate(kills, start=1):
                await eventually(lambda mark=mark: published >= mark, timeout=20)
                killed = subscriber_layer.stats().pubsub_client_id
                assert await admin.client_kill_filter(_id=str(killed)) == 1
                await eventually(lambda n=round_number: subscriber_layer.stats().reconnects == n)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_all)
            tasks.start_soon(kill_at_marks)
            received = await collect(subscriber, count, timeout=60)
        assert subscriber.dropped == 0
    assert received == list(range(count))
    assert subscriber_layer.stats().reconnects == len(kills)
    assert channel.stats().gaps == len(kills)  # each reconnect was reported, and recovered


async def test_a_server_restarted_without_its_data_reports_the_loss(
    throwaway_redis: RedisServer,
) -> None:
    """Restart without persistence while publishing: MessagesLost, and no gap without one."""
    url = throwaway_redis.url
    options: dict[str, Any] = {
        "history_size": 1_000,
        "reconnect_backoff": FAST,
        "publish_timeout": 10,
    }
    async with (
        Channel(RedisPubSubChannelLayer.from_url(url, **options)) as channel,
        Channel(RedisPubSubChannelLayer.from_url(url, **options)) as publisher,
        channel.subscribe("feed", buffer_size=100_000) as subscriber,
    ):
        stop = anyio.Event()
        sent = 0

        async def publish() -> None:
            nonlocal sent
            while not stop.is_set():
                await publisher.publish("feed", sent)
                sent += 1
                await anyio.sleep(0.001)

        async def restart() -> None:
            await anyio.sleep(0.3)
            throwaway_redis.stop()
            await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(throwaway_redis.start)

        received: list[int] = []
        losses: list[tuple[str, int]] = []  # (reason, messages received before it)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish)
            tasks.start_soon(restart)
            with anyio.fail_after(20):
                while not losses or len(received) < losses[0][1] + 200:
                    try:
                        received.append((await subscriber.receive()).message)
                    except MessagesLost as lost:
                        losses.append((lost.reason, len(received)))
            stop.set()
    assert [reason for reason, _ in losses] == ["reconnect"]
    gap_at = losses[0][1]
    # In order and once; anything missing is missing where the loss was reported.
    assert received[:gap_at] == list(range(gap_at))
    after = received[gap_at:]
    assert after == list(range(after[0], after[0] + len(after)))


async def test_a_log_that_went_back_is_never_taken_as_complete(
    throwaway_redis: RedisServer,
) -> None:
    """A server back from an older snapshot (as a replica that missed the last writes).

    Same epoch, but the log lost events a subscriber saw: reading after
    them is incomplete, also once newer events reuse their numbers; after
    an event the log still has, it is complete.
    """
    layer = RedisPubSubChannelLayer.from_url(
        throwaway_redis.url, history_size=100, reconnect_backoff=FAST, publish_timeout=10
    )
    admin = redis.asyncio.Redis.from_url(throwaway_redis.url)
    try:
        async with Channel(layer) as channel:
            for number in range(5):
                await channel.publish("room", number)
            await admin.save()  # the snapshot the server comes back from
            for number in range(5, 10):
                await channel.publish("room", number)
            seen = await channel.history("room")
            throwaway_redis.stop()
            await anyio.to_thread.run_sync(throwaway_redis.start)
            assert [event.message for event in await channel.history("room")] == list(range(5))
            for after in (seen[-1], seen[6]):
                read = await layer.read_history("room", after.position, None)
                assert not read.complete
            for letter in ("a", "b", "c"):  # numbered 6, 7, 8 like lost ones
                await channel.publish("room", letter)
            for after in (seen[-1], seen[7], seen[5]):
                read = await layer.read_history("room", after.position, None)
                assert not read.complete, after
            read = await layer.read_history("room", seen[4].position, None)
            assert read.complete
            since = await channel.history("room", since=seen[4].position)
            assert [event.message for event in since] == ["a", "b", "c"]
            assert parse_position(read.head).epoch == parse_position(seen[0].position).epoch
    finally:
        await admin.aclose()


async def test_messages_from_a_publisher_without_history_make_recovery_report_a_loss(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, eventually: Eventually
) -> None:
    """What such a publisher sends during an outage is in no log: never claim it recovered."""
    layer = make_redis_layer(history_size=100, reconnect_backoff=FAST)
    async with (
        Channel(layer) as channel,
        Channel(make_redis_layer(history_size=100)) as logged,
        Channel(make_redis_layer()) as unlogged,
        channel.subscribe("mixed") as subscriber,
    ):
        await logged.publish("mixed", "logged")
        assert (await subscriber.receive()).position is not None
        await admin.client_kill_filter(_id=str(layer.stats().pubsub_client_id))
        await eventually(lambda: layer.stats().reconnects == 1)
        await logged.publish("mixed", "recovered")  # nothing unlogged seen yet: silent
        assert await collect(subscriber, 1) == ["recovered"]
        await unlogged.publish("mixed", "plain")
        assert (await subscriber.receive()).position is None
        await admin.client_kill_filter(_id=str(layer.stats().pubsub_client_id))
        await eventually(lambda: layer.stats().reconnects == 2)
        with anyio.fail_after(5), pytest.raises(MessagesLost) as lost:
            await subscriber.receive()
        assert lost.value.reason == "reconnect"


async def test_retried_publishes_are_logged_once(throwaway_redis: RedisServer) -> None:
    """Publishing connections killed every 10 ms: the log and the subscriber get each once."""
    url = throwaway_redis.url
    count = 1_000
    admin = redis.asyncio.Redis.from_url(url)
    options: dict[str, Any] = {"history_size": count, "reconnect_backoff": FAST}
    try:
        async with (
            Channel(RedisPubSubChannelLayer.from_url(url, **options)) as channel,
            Channel(RedisPubSubChannelLayer.from_url(url, publish_timeout=10, **options)) as sender,
            channel.subscribe("feed", buffer_size=count) as subscriber,
        ):
            done = anyio.Event()

            async def publish_all() -> None:
                for number in range(count):
                    await sender.publish("feed", number)
                done.set()

            async def kill_publishing_connections() -> None:
                while not done.is_set():
                    await admin.client_kill_filter(_type="normal", skipme=True)
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish_all)
                tasks.start_soon(kill_publishing_connections)
                received = await collect(subscriber, count, timeout=30)
            logged = [event.message for event in await channel.history("feed")]
            scripts = await admin.info("commandstats")
    finally:
        await admin.aclose()
    assert received == list(range(count))
    assert logged == list(range(count))
    assert scripts["cmdstat_evalsha"]["calls"] > count  # some publishes were tried again


async def test_the_promoted_replica_recovers_subscribers(
    failing_over: SentinelSetup, eventually: Eventually
) -> None:
    """After SENTINEL FAILOVER, the replicated log fills the gap: no MessagesLost."""
    setup = failing_over
    subscriber_layer = RedisPubSubChannelLayer.from_url(
        setup.url, history_size=1_000, reconnect_backoff=FAST
    )
    publisher_layer = RedisPubSubChannelLayer.from_url(
        setup.url, history_size=1_000, reconnect_backoff=FAST, publish_timeout=15
    )
    async with (
        Channel(subscriber_layer) as channel,
        Channel(publisher_layer) as publisher,
        channel.subscribe("room") as subscriber,
    ):
        for number in range(50):
            await publisher.publish("room", number)
        assert await collect(subscriber, 50) == list(range(50))
        await anyio.to_thread.run_sync(setup.failover)
        # Publish on the new master as soon as the publisher follows it (its
        # old pooled connections are closed then), while the subscriber may
        # still be on the old master.
        await eventually(lambda: publisher_layer.stats().reconnects > 0, timeout=10)
        for number in range(50, 100):
            await publisher.publish("room", number)
        assert await collect(subscriber, 50) == list(range(50, 100))
        await eventually(lambda: subscriber_layer.stats().reconnects > 0, timeout=10)
        await publisher.publish("room", "live")
        assert await collect(subscriber, 1) == ["live"]
        assert channel.stats().gaps >= 1  # the layer reported the move; the log covered it


async def _through_a_killed_master(
    url: str,
    namespace: str,
    groups: list[str],
    kill: Callable[[], Awaitable[object]],
    eventually: Eventually,
    *,
    elsewhere: str | None = None,
) -> RedisPubSubChannelLayer:
    """One publisher per group (and `elsewhere`) runs while `kill` kills the groups' master.

    Each group has a subscriber of its own, on a layer that only
    subscribes (so it follows the failover on its own). Checks, per group:
    nothing twice, in order; no ``MessagesLost`` means every message whose
    publish returned arrived (the log proved the gap filled), else one
    ``MessagesLost("reconnect")``, only where the promoted replica's log
    lacks a message the subscriber had seen (replication is asynchronous),
    and everything published after it; `elsewhere` (a group of another
    shard) saw no gap. Returns the subscribing layer.
    """
    options: dict[str, Any] = {
        "namespace": namespace,
        "history_size": 10_000,
        "reconnect_backoff": FAST,
        "publish_timeout": 10,
    }
    layer = RedisPubSubChannelLayer.from_url(url, **options)
    everyone = [*groups, *([elsewhere] if elsewhere else [])]
    acked: dict[str, list[int]] = {group: [] for group in everyone}
    started = dict.fromkeys(everyone, 0)
    received: dict[str, list[int]] = {group: [] for group in everyone}
    #: Per group: (reason, publishes started, messages received) when a loss showed.
    losses: dict[str, list[tuple[str, int, int]]] = {group: [] for group in everyone}
    stop = anyio.Event()

    async def publish(group: str) -> None:
        for number in itertools.count():
            if stop.is_set():
                return
            started[group] = number + 1
            await publisher.publish(group, number)
            acked[group].append(number)
            await anyio.sleep(0.005)

    async def read(subscriber: Subscriber, group: str) -> None:
        while True:
            try:
                received[group].append((await subscriber.receive()).message)
            except MessagesLost as lost:  # what is published from now on must arrive
                losses[group].append((lost.reason, started[group], len(received[group])))

    def delivered() -> bool:
        return all(
            set(received[group]) >= set(acked[group][since:])
            for group in everyone
            for since in [losses[group][-1][1] if losses[group] else 0]
        )

    async with (
        Channel(layer) as channel,
        Channel(RedisPubSubChannelLayer.from_url(url, **options)) as publisher,
        contextlib.AsyncExitStack() as stack,
        anyio.create_task_group() as readers,
    ):
        for group in everyone:
            subscriber = await stack.enter_async_context(
                channel.subscribe(group, buffer_size=100_000)
            )
            readers.start_soon(read, subscriber, group)
        async with anyio.create_task_group() as publishers:
            for group in everyone:
                publishers.start_soon(publish, group)
            await eventually(lambda: min(map(len, received.values())) >= 20, timeout=10)
            await kill()
            await eventually(lambda: layer.stats().reconnects >= 1, timeout=20)
            marks = {group: len(acked[group]) for group in groups}
            await eventually(
                lambda: all(len(acked[group]) >= marks[group] + 100 for group in groups),
                timeout=20,
            )
            stop.set()
        await eventually(delivered, timeout=10)
        await anyio.sleep(0.2)  # time for a late duplicate to show
        # Read before cancelling the readers: their scope is this block's too, and a
        # history read that awaits after it would be cancelled, leaving `logged` unset.
        logged = {
            group: {event.message for event in await channel.history(group)} for group in groups
        }
        readers.cancel_scope.cancel()
    assert channel.stats().gaps >= 1  # the layer reported the lost connection

    for group in everyone:
        got = received[group]
        assert len(got) == len(set(got)), group  # nothing twice
        assert got == sorted(got), group  # in order
        assert set(got) <= set(acked[group]), group
        if not losses[group]:  # no loss told: nothing missing
            assert got == acked[group], group
        else:
            ((reason, _, seen),) = losses[group]
            assert reason == "reconnect", group
            # Not a needless loss: the log lacks a message seen before it.
            assert set(got[:seen]) - logged[group], group
    if elsewhere:
        assert not losses[elsewhere]
    return layer


async def test_a_killed_cluster_master_under_load_is_recovered_or_reported_per_group(
    redis_cluster: ClusterSetup, namespace: str, eventually: Eventually
) -> None:
    """SIGKILL a master while 4 publishers run, history on; its replica takes over."""
    wire = WireNames(namespace, hash_tags=True)

    def master_of(group: str) -> RedisServer:
        return redis_cluster.master_of(key_slot(wire.channel(group)))

    victim = master_of("room-0")
    names = (f"room-{n}" for n in itertools.count())
    groups = list(itertools.islice((name for name in names if master_of(name) is victim), 4))
    elsewhere = next(
        name for name in (f"elsewhere-{n}" for n in range(100)) if master_of(name) is not victim
    )
    replica = redis_cluster.replica_of(victim)

    def kill_master() -> None:
        victim.stop()  # SIGKILL
        client = redis_cluster.client(replica)  # no waiting for failure detection
        try:
            client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")  # type: ignore[no-untyped-call]
        finally:
            client.close()

    try:
        layer = await _through_a_killed_master(
            redis_cluster.url,
            namespace,
            groups,
            lambda: anyio.to_thread.run_sync(kill_master),
            eventually,
            elsewhere=elsewhere,
        )
        assert isinstance(layer, RedisClusterChannelLayer)
        assert layer.stats().reconnects == 1
    finally:
        await anyio.to_thread.run_sync(victim.start)  # back as a replica of the new master
        await anyio.to_thread.run_sync(redis_cluster.wait_until_ok)


async def test_a_killed_sentinel_master_under_load_is_recovered_or_reported_per_group(
    failing_over: SentinelSetup, namespace: str, eventually: Eventually
) -> None:
    """SIGKILL the master while 4 publishers run, history on; the Sentinels promote the replica."""
    setup = failing_over

    async def kill_master() -> None:
        before = await anyio.to_thread.run_sync(setup.master_address)
        setup.master().stop()  # SIGKILL
        await anyio.to_thread.run_sync(setup.wait_for_new_master, before)

    groups = [f"room-{n}" for n in range(4)]
    await _through_a_killed_master(setup.url, namespace, groups, kill_master, eventually)


@pytest.mark.parametrize(
    "group", ["room", "{room}", "a{b}c", "a}b", "}{", "{}x", "x{", "{{}}", "é{ü}", "\x00}\n"]
)
async def test_history_keys_share_the_channel_slot_and_work(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, namespace: str, group: str
) -> None:
    """Hash tags for any group name: the log's keys sit in the live channel's slot."""
    group = f"{group}-{uuid.uuid4().hex[:6]}"
    wire = WireNames(namespace)
    log, meta = wire.history_keys(group)
    slot = key_slot(wire.channel(group))
    assert (key_slot(log), key_slot(meta)) == (slot, slot)
    assert log != meta
    async with Channel(make_redis_layer(history_size=3)) as channel:
        for number in range(5):
            await channel.publish(group, [group, number])
        stored = await channel.history(group)
        assert [event.message for event in stored] == [[group, 2], [group, 3], [group, 4]]
    assert await admin.xlen(log) == 3
    assert await admin.hget(meta, "n") == b"5"


def test_history_keys_of_different_groups_differ() -> None:
    wire = WireNames("ns:")
    groups = ["a", "{a}", "{a}b", "a}", "a}:log", "x{a}", "", "a:log", "{a}:log"]
    keys = [key for group in groups for key in wire.history_keys(group)]
    assert len(set(keys)) == len(keys)


async def test_trimming_by_size_and_ttl_is_done_in_redis(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, namespace: str
) -> None:
    wire = WireNames(namespace)
    async with Channel(make_redis_layer(history_size=10)) as channel:
        for number in range(25):
            await channel.publish("sized", number)
    log, meta = wire.history_keys("sized")
    assert await admin.xlen(log) == 10
    assert await admin.pttl(log) == -1  # no TTL: kept until pushed out
    async with Channel(make_redis_layer(history_size=10, history_ttl=0.3)) as channel:
        await channel.publish("timed", "old")
        await anyio.sleep(0.5)
        await channel.publish("timed", "new")
        log, meta = wire.history_keys("timed")
        assert await admin.xlen(log) == 1
        assert 0 < await admin.pttl(log) <= 300
        assert await admin.pttl(meta) > 86_000_000  # the meta outlives the events (a day)
        await anyio.sleep(0.5)
        assert await channel.history("timed") == []
        assert not await admin.exists(log)


async def test_history_off_publishes_plainly_and_refuses_reads(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis, namespace: str
) -> None:
    """No script, no key: history off is the plain PUBLISH it was."""
    layer = make_redis_layer()
    assert not layer.keeps_history
    async with Channel(layer) as channel, channel.subscribe("plain") as subscriber:
        await channel.publish("plain", 1)
        assert (await subscriber.receive()).position is None
    assert not await admin.exists(*WireNames(namespace).history_keys("plain"))


async def test_positions_no_stream_has_read_as_another_log(make_redis_layer: LayerMaker) -> None:
    layer = make_redis_layer(history_size=10)
    async with Channel(layer) as channel:
        await channel.publish("room", "kept")
        (event,) = await channel.history("room")
        assert event.position is not None
        epoch = parse_position(event.position).epoch
        for foreign in (f"{epoch}-5", f"{epoch}-1-2-3", f"{epoch}-{2**64}-1", "other-1-1"):
            read = await layer.read_history("room", foreign, None)
            assert not read.complete, foreign
            assert [position for position, _ in read.events] == [event.position]


def test_history_options_from_the_url_and_keywords() -> None:
    layer = RedisPubSubChannelLayer.from_url("redis://h/0?history_size=50&history_ttl=2.5")
    assert (layer.options.history_size, layer.options.history_ttl) == (50, 2.5)
    assert layer.keeps_history
    layer = RedisPubSubChannelLayer.from_url("redis://h/0?history_size=50", history_size=7)
    assert layer.options.history_size == 7
    with pytest.raises(ValueError, match="history_ttl needs history_size"):
        RedisPubSubChannelLayer.from_url("redis://h/0?history_ttl=5")
    with pytest.raises(ValueError, match="history_size"):
        RedisPubSubChannelLayer.from_url("redis://h/0", history_size=-1)
    with pytest.raises(TypeError, match="history_size"):
        RedisPubSubChannelLayer.from_url("redis://h/0", history_size="5")
    with pytest.raises(ValueError, match="history_size"):
        RedisPubSubChannelLayer.from_url("redis://h/0?history_size=many")


async def test_forged_history_envelopes_are_skipped_and_the_channel_keeps_working(
    make_redis_layer: LayerMaker, admin: redis.asyncio.Redis
) -> None:
    """Another client PUBLISHes history envelopes that are cut short or carry no position."""
    layer = make_redis_layer(history_size=10)
    channel_name = layer._wire.channel("forged")

    def header(sequence: int) -> bytes:  # magic, publisher id, sequence, watermark
        return b"\x00chr2" + b"forger!!" + sequence.to_bytes(8, "big") + bytes(8)

    forged = [
        b"\x00chr2",  # the magic alone (this recursed until the stack ran out)
        b"\x00chr2" + bytes(20),  # shorter than a header
        header(1) + bytes([200]) + b"short",  # a position longer than the message
        header(2) + bytes([7]) + b"garbage" + b'"forged"',  # not a position
    ]
    async with Channel(layer) as channel, channel.subscribe("forged") as subscriber:
        for payload in forged:
            await admin.publish(channel_name, payload)
        await channel.publish("forged", "real")
        with anyio.fail_after(5):
            event = await subscriber.receive()
        assert event.message == "real"
        assert event.position is not None
        assert channel.stats().undecodable == len(forged)
