"""Faults on a private server: restarts, outages, churn; nothing lost after the gap signal."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
import pytest

from channels_core import (
    Backoff,
    BrokerUnavailableError,
    Channel,
    ChannelClosedError,
    MessagesLost,
    Subscriber,
)
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.05, maximum=0.2)
Eventually = Callable[..., Awaitable[None]]


def layer_for(server: NatsServer, **options: object) -> NatsChannelLayer:
    settings: dict[str, object] = {"reconnect_backoff": FAST, "ping_interval": 1, **options}
    return NatsChannelLayer.from_url(server.url, **settings)


async def next_message(subscriber: Subscriber) -> object:
    with anyio.fail_after(10):
        return (await subscriber.receive()).message


async def test_server_restart_one_gap_signal_then_everything(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    listening, sending = layer_for(nats_server), layer_for(nats_server)
    async with Channel(listening) as listener, Channel(sending) as sender:
        async with (
            listener.subscribe("prices", "news") as by_name,
            listener.subscribe_pattern("pri*") as by_pattern,
        ):
            await sender.publish("prices", "before")
            assert await next_message(by_name) == "before"
            assert await next_message(by_pattern) == "before"

            await anyio.to_thread.run_sync(nats_server.restart)
            for subscriber in (by_name, by_pattern):
                with anyio.fail_after(10), pytest.raises(MessagesLost) as gap:
                    await subscriber.receive()
                assert gap.value.reason == "reconnect"
            for number in range(100):  # waits for the sender's own reconnect if needed
                await sender.publish("prices", number)
            assert [await next_message(by_name) for _ in range(100)] == list(range(100))
            assert [await next_message(by_pattern) for _ in range(100)] == list(range(100))
            await sender.publish("news", "still subscribed")
            assert await next_message(by_name) == "still subscribed"
        stats = listening.stats()
        assert (stats.connection_losses, stats.reconnects, stats.connected) == (1, 1, True)


async def test_publish_during_an_outage_waits_then_fails_and_is_never_sent(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    async with Channel(layer_for(nats_server)) as listener:
        async with listener.subscribe("outage") as subscriber:
            sending = layer_for(nats_server, publish_timeout=1)
            async with Channel(sending) as sender:
                await anyio.to_thread.run_sync(nats_server.stop)
                await eventually(lambda: not sending.stats().connected)
                started = anyio.current_time()
                with pytest.raises(BrokerUnavailableError, match="within 1 s"):
                    await sender.publish("outage", "lost")
                waited = anyio.current_time() - started
                assert 0.9 <= waited < 2, waited
                assert sending.stats().pending_bytes < 1024

                await anyio.to_thread.run_sync(nats_server.start)
                with anyio.fail_after(10), pytest.raises(MessagesLost):
                    await subscriber.receive()
                await sender.publish("outage", "after")
                assert await next_message(subscriber) == "after"  # never "lost"


async def test_a_publish_within_its_timeout_goes_through_once_the_server_is_back(
    nats_server: NatsServer,
) -> None:
    async with Channel(layer_for(nats_server, publish_timeout=10)) as sender:
        await anyio.to_thread.run_sync(nats_server.stop)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.to_thread.run_sync, _start_later, nats_server)
            await sender.publish("late", "delivered")  # waits for the reconnect
        assert sender.stats().published == 1


def _start_later(server: NatsServer) -> None:
    import time

    time.sleep(0.5)
    server.start()


async def test_churn_leaves_no_subscription_on_the_server(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    baseline = nats_server.subscriptions()
    random.seed(7)
    async with Channel(layer_for(nats_server)) as channel:
        async with channel.subscribe("first"):  # its confirmation proves the inbox's SUB
            with_channel = nats_server.subscriptions() - 1  # the layer's own inbox stays
        for cycle in range(300):
            groups = [f"g{random.randrange(20)}" for _ in range(random.randrange(1, 4))]
            with anyio.move_on_after(random.choice((0, 0.0005, 0.002, 1))):
                async with channel.subscribe(*groups), channel.subscribe_pattern(f"g{cycle % 7}*"):
                    await channel.publish(groups[0], cycle)
                    await anyio.sleep(0 if cycle % 2 else 0.001)
        assert channel.stats().groups == 0
        # UNSUBSCRIBEs are sent without waiting for the server: give it a round trip.
        await eventually(lambda: nats_server.subscriptions() == with_channel)
    await eventually(lambda: nats_server.subscriptions() == baseline)


async def test_leaving_the_channel_ends_a_publish_waiting_out_an_outage(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    layer = layer_for(nats_server, publish_timeout=30)
    ended: list[BaseException] = []

    async def publish(channel: Channel) -> None:
        try:
            await channel.publish("waiting", 1)
        except Exception as error:  # what the waiting publish ends with
            ended.append(error)

    async with anyio.create_task_group() as tasks:
        async with Channel(layer) as channel:
            await anyio.to_thread.run_sync(nats_server.stop)
            await eventually(lambda: not layer.stats().connected)
            tasks.start_soon(publish, channel)
            await anyio.sleep(0.2)
            left = anyio.current_time()
        with anyio.fail_after(5):
            await eventually(lambda: bool(ended))
    assert anyio.current_time() - left < 2
    assert isinstance(ended[0], ChannelClosedError)


async def test_a_frozen_server_is_noticed_by_pings_then_one_gap_signal(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    layer = layer_for(nats_server, ping_interval=0.3, connect_timeout=1)
    async with Channel(layer) as channel, channel.subscribe("frozen") as subscriber:
        nats_server.freeze()
        frozen = anyio.current_time()
        try:
            await eventually(lambda: not layer.stats().connected)  # three unanswered PINGs
            noticed = anyio.current_time() - frozen
        finally:
            nats_server.thaw()
        assert noticed < 3, noticed
        with anyio.fail_after(10), pytest.raises(MessagesLost):
            await subscriber.receive()
        await channel.publish("frozen", "after")
        assert await next_message(subscriber) == "after"


async def test_the_gap_signal_comes_before_the_new_connections_first_message(
    make_nats_layer: Callable[..., NatsChannelLayer],
) -> None:
    """nats-py reports a reconnect only after a PING/PONG on the new connection, and
    messages can arrive in between (seen once in `test_cluster.py`): they must follow
    the gap signal. The callbacks are driven as nats-py calls them, on a real connection,
    to make that order certain."""
    layer = make_nats_layer()
    async with Channel(layer) as channel, channel.subscribe("news") as subscriber:
        await layer._on_disconnected()  # the connection broke
        client = layer._client
        assert client is not None
        on_message = client._routes[layer._groups["news"]._id]
        on_message(layer.subject("news").encode(), b'"early"', None)  # the new connection's
        with anyio.fail_after(5), pytest.raises(MessagesLost) as gap:
            await subscriber.receive()
        assert gap.value.reason == "reconnect"
        assert await next_message(subscriber) == "early"
        await layer._on_reconnected()  # nats-py's report: no second signal
        await channel.publish("news", "after")
        assert await next_message(subscriber) == "after"
        assert (layer.stats().connection_losses, layer.stats().reconnects) == (1, 1)
