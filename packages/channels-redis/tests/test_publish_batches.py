"""Coalesced publishing against a server that fails under it (a private ``redis-server``).

Ten tasks publish as fast as they can through one channel, so their
publishes travel in shared batches (`Channel.publish` coalesces them into
`publish_many` pipelines); then the server freezes or dies. Every caller
must get an answer within the publish bound, and a caller told "sent" must
have had its message accepted.
"""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from channels_core import BrokerUnavailableError, Channel
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
