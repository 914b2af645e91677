"""Coalesced publishing against a server that fails under it (a private ``redis-server``).

Ten tasks publish as fast as they can through one channel, so their
publishes travel in shared batches (`Channel.publish` coalesces them into
`publish_many` pipelines); then the server freezes or dies. Every caller
must get an answer within the publish bound, and a caller told "sent" must
have had its message accepted. With history on, a batch retried across a
freeze is logged and delivered once.
"""

from __future__ import annotations

import os
import signal

import anyio
import pytest
import redis.asyncio

from channels_core import BrokerUnavailableError, Channel
from channels_core.history import parse_position
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio

PUBLISHERS = 10


async def publish_until_refused(channel: Channel, sent: list[int], failed: list[int]) -> None:
    """Run `PUBLISHERS` tasks publishing numbered messages until each gets an error."""

    async def run(publisher: int) -> None:
        for number in range(publisher * 10**6, (publisher + 1) * 10**6):
            try:
                await channel.publish("g", number)
            except BrokerUnavailableError:
                failed.append(number)
                return
            sent.append(number)

    async with anyio.create_task_group() as tasks:
        for publisher in range(PUBLISHERS):
            tasks.start_soon(run, publisher)


async def test_a_frozen_server_fails_each_batched_publish_and_confirms_only_what_it_took(
    throwaway_redis: RedisServer,
) -> None:
    server = throwaway_redis
    publishing = RedisPubSubChannelLayer.from_url(server.url, publish_timeout=0.5)
    # The listener must ride out the freeze: no health check in that time.
    listening = RedisPubSubChannelLayer.from_url(server.url, health_check_interval=60)
    sent: list[int] = []
    failed: list[int] = []
    async with (
        Channel(listening, buffer_size=10**6) as listener,
        listener.subscribe("g") as subscriber,
        Channel(publishing) as publisher,
    ):
        try:
            with anyio.fail_after(10):  # nobody hangs
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(publish_until_refused, publisher, sent, failed)
                    await anyio.sleep(0.3)
                    os.kill(server.pid, signal.SIGSTOP)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert len(failed) == PUBLISHERS  # every publisher got its answer: an error
        assert len(sent) > 100  # and published plenty before, in shared batches
        assert publishing.stats().published == len(sent)
        # Everything confirmed was accepted: it reaches the subscriber once the
        # server runs again (failed ones may arrive too: they may have been taken).
        received: set[int] = set()
        with anyio.fail_after(10):
            while not received.issuperset(sent):
                received.add((await subscriber.receive()).message)
        # The channel publishes again once the server answers.
        await publisher.publish("g", -1)
        with anyio.fail_after(10):
            while (await subscriber.receive()).message != -1:
                pass


async def test_a_server_killed_under_batched_publishes_answers_every_caller_in_bound(
    throwaway_redis: RedisServer,
) -> None:
    server = throwaway_redis
    layer = RedisPubSubChannelLayer.from_url(
        server.url, publish_timeout=0.5, reconnect_backoff=Backoff(initial=0.02, maximum=0.2)
    )
    sent: list[int] = []
    failed: list[int] = []
    async with Channel(layer) as channel:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish_until_refused, channel, sent, failed)
                await anyio.sleep(0.3)
                server.stop()
        assert len(failed) == PUBLISHERS
        assert layer.stats().published == len(sent) > 100
        server.start()
        with anyio.fail_after(10):
            await channel.publish("g", "back")


async def test_a_batch_retried_across_a_freeze_is_logged_and_delivered_once_in_order(
    throwaway_redis: RedisServer,
) -> None:
    """History on: batches go on while the server is frozen long enough for retries.

    A reply missing for 0.2 s (`socket_timeout`) counts as a lost connection:
    the batch on the wire is tried again, and again, until the server runs
    again; then it runs the first try, and each retry must find the batch
    logged and add nothing.
    """
    server = throwaway_redis
    kept = 10_000
    history = {"history_size": kept, "reconnect_backoff": Backoff(initial=0.02, maximum=0.1)}
    publishing = RedisPubSubChannelLayer.from_url(
        server.url, publish_timeout=10, socket_timeout=0.2, **history
    )
    listening = RedisPubSubChannelLayer.from_url(server.url, health_check_interval=60, **history)
    admin = redis.asyncio.Redis.from_url(server.url)
    size, batches = 50, 0
    sent: list[int] = []
    try:
        async with (
            Channel(listening, buffer_size=10**5) as listener,
            listener.subscribe("g") as subscriber,
            Channel(publishing) as publisher,
        ):
            await publisher.publish("g", -1)  # the script is loaded: every call counts below
            await admin.config_resetstat()
            stop = anyio.Event()

            async def publish_batches() -> None:
                nonlocal batches
                # No more than the log keeps: every message must still be in it.
                while not stop.is_set() and len(sent) + size < kept:
                    numbers = range(len(sent), len(sent) + size)
                    await publisher.publish_many([("g", number) for number in numbers])
                    sent.extend(numbers)
                    batches += 1

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(publish_batches)
                    await anyio.sleep(0.2)
                    os.kill(server.pid, signal.SIGSTOP)
                    try:
                        await anyio.sleep(0.7)
                    finally:
                        os.kill(server.pid, signal.SIGCONT)
                    await anyio.sleep(0.2)
                    stop.set()
                received = [await subscriber.receive() for _ in range(len(sent) + 1)]
            logged = await publisher.history("g")
            scripts = (await admin.info("commandstats"))["cmdstat_evalsha"]["calls"]
    finally:
        await admin.aclose()
    assert batches > 10
    assert scripts > batches  # some batch was tried again
    assert [event.message for event in received] == [-1, *sent]
    assert logged == received  # every message logged once, at the position it arrived with
    positions = [parse_position(event.position or "") for event in received]
    assert [position.offset[1] for position in positions] == list(range(1, len(sent) + 2))
