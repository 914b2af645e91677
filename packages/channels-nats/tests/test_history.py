"""History on JetStream under faults: dropped connections, lost stores, reset streams.

Each test runs its own ``nats-server`` with a JetStream store of its own
(`NatsServer(jetstream=True)`), or a namespace of its own on the shared one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import nats
import pytest

from channels_core import (
    Backoff,
    BrokerRefusedError,
    BrokerUnavailableError,
    Channel,
    Event,
    MessagesLost,
    Subscriber,
)
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer, Relay

pytestmark = pytest.mark.anyio

CUT_AT = (2_000, 5_000, 8_000)  # messages published when the connection is cut
FAST = Backoff(initial=0.05, maximum=0.2)
LayerMaker = Callable[..., NatsChannelLayer]


def history_layer(url: str, **options: object) -> NatsChannelLayer:
    settings: dict[str, object] = {
        "reconnect_backoff": FAST,
        "ping_interval": 1,
        "history_size": 20_000,
        **options,
    }
    return NatsChannelLayer.from_url(url, **settings)


async def receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(10):
        return await subscriber.receive()


async def test_a_dropped_subscriber_connection_loses_nothing(
    js_server: NatsServer, eventually: Callable[..., Awaitable[None]]
) -> None:
    """10,000 messages while the subscriber's connection is cut three times: all, once, in order.

    Eight publishing tasks (an acked publish is a round trip: one task alone
    takes four seconds); each numbers its own messages, so each one's order
    is checked, and the positions prove the log order of them all. The cuts
    come as the publishers reach `CUT_AT` messages, so that messages are
    still being published across each one (the subscriber's buffer can hold
    all of them: cutting by messages received could come after the last
    one had arrived).
    """
    publishers, each = 8, 1_250
    count, received = publishers * each, list[Event]()
    published = 0
    with Relay(js_server.port) as relay:
        listening = history_layer(relay.url)
        async with (
            Channel(history_layer(js_server.url)) as sender,
            Channel(listening) as listener,
            listener.subscribe("ticks", buffer_size=count) as subscriber,
        ):

            async def cut(earlier: int) -> None:
                """Cut the subscriber's connection once it is back from the `earlier` cuts."""
                await eventually(lambda: listening.stats().reconnects >= earlier)
                assert relay.cut() == 1

            async def publish(publisher: int) -> None:
                nonlocal published
                for number in range(each):
                    await sender.publish("ticks", [publisher, number])
                    published += 1
                    if published in CUT_AT:
                        await cut(CUT_AT.index(published))

            async with anyio.create_task_group() as tasks:
                for publisher in range(publishers):
                    tasks.start_soon(publish, publisher)
                while len(received) < count:
                    received.append(await receive(subscriber))  # MessagesLost fails the test
        stats = listening.stats()
    for publisher in range(publishers):
        numbers = [event.message[1] for event in received if event.message[0] == publisher]
        assert numbers == list(range(each))
    sequences = [int(str(event.position).rsplit("-", 1)[1]) for event in received]
    assert sequences == sorted(set(sequences))
    assert (stats.connection_losses, stats.reconnects) == (3, 3)


async def test_a_server_that_lost_its_store_is_a_reported_gap(js_server: NatsServer) -> None:
    listening = history_layer(js_server.url)
    async with (
        Channel(listening) as listener,
        Channel(history_layer(js_server.url)) as sender,
        listener.subscribe("news") as subscriber,
    ):
        for number in range(5):
            await sender.publish("news", number)
        assert [(await receive(subscriber)).message for _ in range(5)] == list(range(5))
        before = (await listener.history("news"))[-1].position
        assert before is not None

        def restart_without_store() -> None:
            js_server.stop()
            js_server.wipe_store()
            js_server.start()

        await anyio.to_thread.run_sync(restart_without_store)
        with pytest.raises(MessagesLost) as gap:
            await receive(subscriber)
        assert gap.value.reason == "reconnect"
        await sender.publish("news", "after")
        after = await receive(subscriber)
        assert after.message == "after"
        assert after.position is not None
        assert after.position.split("-")[0] != before.split("-")[0]  # a new epoch
        with pytest.raises(MessagesLost) as expired:
            await listener.history("news", since=before)
        assert expired.value.reason == "expired"


async def test_a_store_lost_while_publishing_is_one_reported_gap_never_a_recovery(
    js_server: NatsServer,
) -> None:
    """A publisher keeps sending while the server restarts without its store."""
    async with (
        Channel(history_layer(js_server.url), buffer_size=10_000) as listener,
        Channel(history_layer(js_server.url, publish_timeout=0.5)) as sender,
        listener.subscribe("live") as subscriber,
    ):
        sent: list[int] = []
        restarted, under_way = anyio.Event(), anyio.Event()

        async def publish_until_after_the_restart() -> None:
            number = sent_after_restart = 0
            while sent_after_restart < 20:
                try:
                    await sender.publish("live", number)
                except BrokerUnavailableError:
                    pass  # during the outage: neither delivered nor logged
                else:
                    sent.append(number)
                    sent_after_restart += restarted.is_set()
                    if len(sent) == 20:
                        under_way.set()
                number += 1
                await anyio.sleep(0.005)

        def restart_without_store() -> None:
            js_server.stop()
            js_server.wipe_store()
            js_server.start()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_until_after_the_restart)
            await under_way.wait()
            await anyio.to_thread.run_sync(restart_without_store)
            restarted.set()
        received: list[object] = []
        with anyio.fail_after(20):
            while sent[-1] not in received:
                try:
                    received.append((await subscriber.receive()).message)
                except MessagesLost as lost:
                    received.append(f"gap: {lost.reason}")
    gaps = [message for message in received if isinstance(message, str)]
    assert gaps == ["gap: reconnect"], "the lost store is reported once, never recovered"
    numbers = [message for message in received if isinstance(message, int)]
    assert numbers == sorted(set(numbers)), "in order, no duplicate"
    after = received[received.index(gaps[0]) + 1 :]
    resumed = after[0]
    assert isinstance(resumed, int)
    assert after == [number for number in sent if number >= resumed], "everything after it"


async def test_a_restart_with_its_store_recovers_silently(js_server: NatsServer) -> None:
    listening = history_layer(js_server.url)
    async with (
        Channel(listening) as listener,
        Channel(history_layer(js_server.url)) as sender,
        listener.subscribe("kept") as subscriber,
    ):
        await sender.publish("kept", "before")
        assert (await receive(subscriber)).message == "before"
        await anyio.to_thread.run_sync(js_server.restart)
        for number in range(20):  # waits for the sender's reconnect
            await sender.publish("kept", number)
        assert [(await receive(subscriber)).message for _ in range(20)] == list(range(20))
        assert listening.stats().reconnects == 1


async def test_a_stream_deleted_while_connected_is_a_reported_gap(
    make_nats_layer: LayerMaker,
) -> None:
    """No reconnect: the live sequence restarting tells the subscriber the log was reset."""
    listening = make_nats_layer(history_size=100)
    async with (
        Channel(listening) as listener,
        Channel(make_nats_layer(history_size=100)) as sender,
        listener.subscribe("reset") as subscriber,
    ):
        for number in range(3):
            await sender.publish("reset", number)
        first = [await receive(subscriber) for _ in range(3)]
        client = await nats.connect(listening.url)
        try:
            assert listening.history_stream is not None
            await client.jetstream().delete_stream(listening.history_stream)
        finally:
            await client.close()
        await sender.publish("reset", "new log")  # makes the stream again: a new epoch
        with pytest.raises(MessagesLost) as gap:
            await receive(subscriber)
        assert gap.value.reason == "reconnect"
        event = await receive(subscriber)
        assert event.message == "new log"
        assert event.position is not None
        assert first[0].position is not None
        assert event.position.split("-")[0] != first[0].position.split("-")[0]
        assert listening.stats().sequence_breaks == 1
        await sender.publish("reset", "next")
        assert (await receive(subscriber)).message == "next"  # the chain goes on, no new gap


async def test_other_groups_traffic_does_not_break_a_groups_completeness(
    make_nats_layer: LayerMaker,
) -> None:
    """Sequences are global: a busy group trimmed by its own limit costs a quiet one nothing."""
    async with Channel(make_nats_layer(history_size=3)) as channel:
        await channel.publish("quiet", "q0")
        (quiet,) = await channel.history("quiet")
        for number in range(50):
            await channel.publish("busy", number)
        await channel.publish("quiet", "q1")
        assert [e.message for e in await channel.history("quiet", since=quiet.position)] == ["q1"]
        busy = await channel.history("busy")
        assert [event.message for event in busy] == [47, 48, 49]
        assert quiet.position is not None
        with pytest.raises(MessagesLost):  # the busy group's own trimmed past is gone
            await channel.history("busy", since=quiet.position.rsplit("-", 1)[0] + "-2")


async def test_history_off_costs_no_headers_and_positions_are_none(
    make_nats_layer: LayerMaker,
) -> None:
    layer = make_nats_layer()
    async with Channel(layer) as channel, channel.subscribe("plain") as subscriber:
        await channel.publish("plain", 1)
        assert (await receive(subscriber)).position is None
        assert layer.history_stream is None
        assert not layer.keeps_history


async def test_a_server_without_jetstream_refuses_history_clearly(
    nats_server: NatsServer,
) -> None:
    with pytest.raises(BrokerRefusedError, match="JetStream"):
        async with Channel(history_layer(nats_server.url, connect_timeout=2)):
            pass


async def test_other_settings_in_one_namespace_the_last_to_connect_sets_them(
    make_nats_layer: LayerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_nats_layer(history_size=5)
    async with Channel(first) as before:
        for number in range(10):
            await before.publish("shared", number)
        async with Channel(make_nats_layer(history_size=8, history_ttl=60)) as after:
            assert "the last layer to connect decides" in caplog.text
            for number in range(10, 20):
                await after.publish("shared", number)
            await before.history("shared")  # reading never changes the settings back
            assert [event.message for event in await after.history("shared")] == list(range(12, 20))
        client = await nats.connect(first.url)
        try:
            assert first.history_stream is not None
            config = (await client.jetstream().stream_info(first.history_stream)).config
        finally:
            await client.close()
    assert (config.max_msgs_per_subject, config.max_age) == (8, 60)


async def test_a_predecessor_expired_by_ttl_is_no_gap(make_nats_layer: LayerMaker) -> None:
    """The next message names no predecessor (it expired): checked once, delivered, no loss."""
    listening = make_nats_layer(history_size=10, history_ttl=0.3)
    async with (
        Channel(listening) as listener,
        Channel(make_nats_layer(history_size=10, history_ttl=0.3)) as sender,
        listener.subscribe("sparse") as subscriber,
    ):
        await sender.publish("sparse", "a")
        assert (await receive(subscriber)).message == "a"
        await anyio.sleep(1)  # the TTL itself is what is tested
        for message in ("b", "c", "d"):
            await sender.publish("sparse", message)
            assert (await receive(subscriber)).message == message  # a MessagesLost fails
        assert listening.stats().sequence_breaks == 1


HOSTILE = [".", "a..b", "*", ">", "a.*.>", "~", "~h" + "0" * 32, "_chlog.~.x", "x" * 300, "é.ü"]


async def test_hostile_group_names_keep_their_own_logs(make_nats_layer: LayerMaker) -> None:
    """Names that look like wildcards, escapes, hashes or the log's own subjects."""
    async with Channel(make_nats_layer(history_size=10)) as channel:
        for group in HOSTILE:
            await channel.publish(group, [group, 1])
        for group in HOSTILE:
            async with channel.subscribe(
                group, since=(await channel.history(group))[0].position
            ) as subscriber:
                await channel.publish(group, [group, 2])
                assert (await receive(subscriber)).message == [group, 2]
            assert [e.message for e in await channel.history(group)] == [[group, 1], [group, 2]]
    with pytest.raises(ValueError, match="_chlog"):
        make_nats_layer(namespace="_chlog.app", history_size=10)


async def test_a_long_history_is_read_in_batches_beyond_the_timeout(
    make_nats_layer: LayerMaker,
) -> None:
    """A read taking twice `subscribe_timeout` succeeds: each batch has it, not the read.

    How long 20,000 events take depends on the machine: the first read
    measures it, the second runs with half of that as its timeout (a
    batch is about a twentieth of the read).
    """
    count = 20_000
    layer = make_nats_layer(history_size=count)
    async with Channel(layer) as channel:
        filler = await nats.connect(layer.url)  # fast set-up: straight into the log subject
        try:
            subject = f"_chlog.{layer.options.namespace}.~.{layer.subject('long').split('.', 1)[1]}"
            for number in range(count):
                await filler.publish(subject, str(number).encode())
            assert layer.history_stream is not None
            stream = layer.history_stream
            for _ in range(200):  # stored a moment after the server got them
                if (await filler.jetstream().stream_info(stream)).state.messages == count:
                    break
                await anyio.sleep(0.05)
            else:
                pytest.fail("the stream did not store the set-up messages within 10 s")
        finally:
            await filler.close()
        started = anyio.current_time()
        events = await channel.history("long")
        took = anyio.current_time() - started
    assert [event.message for event in events] == list(range(count))
    timeout = took / 2
    async with Channel(make_nats_layer(history_size=count, subscribe_timeout=timeout)) as channel:
        started = anyio.current_time()
        events = await channel.history("long")
        again = anyio.current_time() - started
    assert [event.message for event in events] == list(range(count))
    assert again > timeout, f"read in {again:.2f} s, within the {timeout:.2f} s: proves nothing"


async def test_a_quiet_group_recovers_from_the_head_of_its_empty_log(
    js_server: NatsServer,
) -> None:
    """Its position is the stream's head, another group's message: proven by the limits."""
    with Relay(js_server.port) as relay:
        listening = history_layer(relay.url)
        async with (
            Channel(history_layer(js_server.url)) as sender,
            Channel(listening) as listener,
        ):
            await sender.publish("other", "the stream's head")
            async with listener.subscribe("quiet") as subscriber:
                assert relay.cut() == 1
                for number in range(3):
                    await sender.publish("quiet", number)
                received = [(await receive(subscriber)).message for _ in range(3)]
            stats = listening.stats()
    assert received == [0, 1, 2]  # a MessagesLost would have failed the test
    assert stats.reconnects == 1
