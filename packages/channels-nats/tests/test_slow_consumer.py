"""A subscriber that stops reading: the server cuts it, nothing grows unbounded, losses are told.

The layer's routed subscriptions hand each message straight to the
channel (`channels_layer_nats._client`): nats-py's per-subscription pending
limits never apply. What bounds memory is the server's ``max_pending``
(bytes it holds for one client before it closes the connection as a slow
consumer) and each subscriber's own `buffer_size`. A stalled event loop is
simulated by blocking it (`time.sleep`) while another thread publishes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from channels_core import Backoff, BlockingChannel, Channel, Event, MessagesLost, Subscriber
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer

pytestmark = pytest.mark.anyio

PAYLOAD = "x" * 16_000  # 2,000 of them: 32 MB, more than any socket buffer holds
FAST = Backoff(initial=0.05, maximum=0.2)


def flood(url: str, count: int, threads: int, **options: Any) -> threading.Thread:
    """Publish `count` numbered messages from `threads` threads (started at once)."""

    def run() -> None:
        with BlockingChannel.from_url(url, **options) as channel:

            def send(first: int) -> None:
                for number in range(first, count, threads):
                    channel.publish("flood", [number, PAYLOAD])

            workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def drain(
    subscriber: Subscriber, until: Callable[[list[int], list[MessagesLost]], bool]
) -> tuple[list[int], list[MessagesLost]]:
    """Numbers received and losses reported, until `until` says so."""
    numbers: list[int] = []
    losses: list[MessagesLost] = []
    with anyio.fail_after(20):
        while not until(numbers, losses):
            try:
                event: Event = await subscriber.receive()
            except MessagesLost as lost:
                losses.append(lost)
                continue
            numbers.append(event.message[0])
    return numbers, losses


async def test_a_stalled_subscriber_is_cut_by_the_server_and_told(
    nats_server_slow: NatsServer,
) -> None:
    count = 2_000
    layer = NatsChannelLayer(nats_server_slow.url, reconnect_backoff=FAST)
    async with Channel(layer) as channel, channel.subscribe("flood", buffer_size=100) as subscriber:
        flood(nats_server_slow.url, count, threads=1).join()  # blocks the event loop: the stall
        numbers, losses = await drain(subscriber, lambda _, losses: bool(losses))
        assert [lost.reason for lost in losses] == ["reconnect"]
        await channel.publish("flood", [count, "after"])
        after, _ = await drain(subscriber, lambda numbers, _: bool(numbers))
        stats = layer.stats()
    assert after == [count]
    assert stats.connection_losses == 1  # the server closed the slow consumer's connection
    assert len(numbers) < count // 2  # what the server dropped is gone, and was reported
    assert numbers == sorted(numbers)
    assert stats.pending_bytes < 1024


async def test_with_history_a_stalled_subscriber_recovers_everything(
    nats_server_slow: NatsServer,
) -> None:
    count = 2_000
    options: dict[str, Any] = {"history_size": count + 1, "reconnect_backoff": FAST}
    layer = NatsChannelLayer(nats_server_slow.url, **options)
    async with (
        Channel(layer) as channel,
        channel.subscribe("flood", buffer_size=count) as subscriber,
    ):
        flood(nats_server_slow.url, count, threads=8, **options).join()  # blocks the event loop
        numbers, losses = await drain(subscriber, lambda numbers, _: len(numbers) == count)
        stats = layer.stats()
    assert stats.connection_losses == 1  # cut as a slow consumer, then recovered from the log
    assert losses == []
    assert sorted(numbers) == list(range(count))
