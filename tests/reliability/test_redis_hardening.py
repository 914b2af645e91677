"""Redis faults that once broke a documented guarantee (issue #11), each against a private server.

* Publishing connections killed while publishing: nothing is delivered twice.
* A message larger than the server will deliver is refused before sending.
* Subscribing and leaving during an outage are bounded; leaving is immediate.
* Publishing during a freeze is bounded by `publish_timeout`, pool wait included.
* A group left while the layer is reconnecting ends up unsubscribed on the server.
* A re-subscription refused after a reconnect (ACL changed) does not end the channel;
  refusals reach the application as `BrokerRefusedError` (a `ChannelsError`).
* One layer entered twice at once is a `LayerInUseError` (a `ChannelsError`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio
from redis.exceptions import AuthenticationError, NoPermissionError

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Channel,
    LayerInUseError,
    MessagesLost,
    PayloadTooLargeError,
)
from channels_core.reconnect import Backoff
from channels_core.testing import eventually
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer
from tests.reliability.support import Recorder

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.01, maximum=0.1)


@asynccontextmanager
async def admin_of(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def app_user(admin: redis.asyncio.Redis, server: RedisServer, **acl: Any) -> str:
    """Create the ACL user ``app`` (password ``pw``, all commands unless `acl` says); its URL."""
    rules: dict[str, Any] = {"keys": ["*"], "channels": ["*"], "commands": ["+@all"], **acl}
    await admin.acl_setuser("app", enabled=True, passwords=["+pw"], **rules)
    return f"redis://app:pw@127.0.0.1:{server.port}"


@asynccontextmanager
async def frozen(server: RedisServer, at_most: float = 8.0) -> AsyncIterator[None]:
    """SIGSTOP the server for the block (a watchdog resumes it after `at_most` s anyway)."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        async with anyio.create_task_group() as tasks:

            async def watchdog() -> None:
                await anyio.sleep(at_most)
                os.kill(server.pid, signal.SIGCONT)

            tasks.start_soon(watchdog)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
    finally:
        os.kill(server.pid, signal.SIGCONT)


# -- item 4: a retried PUBLISH is never delivered twice -----------------------------------


async def test_publishing_connections_killed_every_10_ms_deliver_nothing_twice(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    listener = RedisPubSubChannelLayer.from_url(server.url, reconnect_backoff=QUICK)
    publisher = RedisPubSubChannelLayer.from_url(
        server.url, reconnect_backoff=QUICK, publish_timeout=10
    )
    # Rounds of 4 x 1,500 publishes until a retried PUBLISH that Redis had already
    # run was dropped (one round in three has none), at most `most_rounds`.
    per_task, tasks_count, most_rounds = 1500, 4, 8
    rounds = 0
    async with (
        admin_of(server) as admin,
        Channel(listener, buffer_size=per_task * tasks_count * most_rounds + 10) as listening,
        Channel(publisher) as publishing,
        listening.subscribe("dup") as subscriber,
    ):
        recorder = Recorder("dup", subscriber)
        done = anyio.Event()
        kills = 0

        async def kill_publishers() -> None:
            nonlocal kills
            while not done.is_set():
                # TYPE normal: the publishing pool, never a pub/sub connection (nor this one).
                kills += await admin.client_kill_filter(_type="normal", skipme=True)
                await anyio.sleep(0.01)

        async def publish(task: int, first: int) -> None:
            for number in range(first, first + per_task):
                await publishing.publish("dup", [task, number])

        async with anyio.create_task_group() as background:
            background.start_soon(recorder.run)
            background.start_soon(kill_publishers)
            while rounds < most_rounds and (rounds == 0 or listener.stats().duplicates == 0):
                async with anyio.create_task_group() as publishers:
                    for task in range(tasks_count):
                        publishers.start_soon(publish, task, rounds * per_task)
                rounds += 1
            done.set()
            await publishing.publish("dup", "end")
            with anyio.fail_after(10):
                await recorder.wait_for(lambda items: ("dup", "end") in items)
            background.cancel_scope.cancel()

    received = Counter(tuple(message) for _, message in recorder.messages() if message != "end")
    duplicates = {message: count for message, count in received.items() if count > 1}
    assert kills > 10
    assert duplicates == {}, f"{len(duplicates)} message(s) delivered more than once"
    assert len(received) == rounds * per_task * tasks_count  # and nothing lost
    assert recorder.gaps() == []  # the listener itself was never cut
    assert listener.stats().duplicates > 0  # retried PUBLISHes Redis had run were dropped


# -- item 5: what the server would not deliver is refused, nothing sent --------------------


async def test_payload_over_the_servers_pubsub_buffer_limit_is_refused(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    async with admin_of(server) as admin:
        await admin.config_set("client-output-buffer-limit", "pubsub 1mb 0 0")
        layer = RedisPubSubChannelLayer.from_url(server.url)
        async with (
            Channel(layer, serializer=_RawBytes()) as channel,
            channel.subscribe("big") as by_name,
            channel.subscribe_pattern("bi*") as by_pattern,
        ):
            limit = layer.max_payload_bytes
            assert limit is not None
            # A message at the limit reaches a connection subscribed by name and by pattern.
            assert limit <= 1024 * 1024 // 2
            await channel.publish("big", b"x" * limit)
            assert len((await by_name.receive()).message) == limit
            assert len((await by_pattern.receive()).message) == limit
            with pytest.raises(PayloadTooLargeError, match="carries at most"):
                await channel.publish("big", b"y" * (700 * 1024))
            await channel.publish("big", b"after")
            assert (await by_name.receive()).message == b"after"  # no gap, nothing else
            assert layer.stats().connection_losses == 0


async def test_without_config_access_the_payload_limit_is_the_documented_default(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    async with admin_of(server) as admin:
        url = await app_user(admin, server, commands=["+@all", "-config"])
        layer = RedisPubSubChannelLayer.from_url(url)
        async with Channel(layer):
            without_config = layer.max_payload_bytes
        # The same as read from a server with the default configuration.
        layer = RedisPubSubChannelLayer.from_url(server.url)
        async with Channel(layer):
            assert layer.max_payload_bytes == without_config
        assert 8_000_000 < without_config < 8 * 1024 * 1024


class _RawBytes:
    """A serializer that sends bytes as they are (so a test can size payloads exactly)."""

    def dumps(self, message: Any) -> bytes:
        return bytes(message)

    def loads(self, payload: bytes) -> Any:
        return payload


# -- items 7 and 8: subscribing and leaving during an outage ---------------------------------


async def test_leaving_during_a_freeze_returns_at_once(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    layer = RedisPubSubChannelLayer.from_url(server.url, reconnect_backoff=QUICK)
    async with admin_of(server) as admin, Channel(layer, unsubscribe_timeout=5) as channel:
        async with channel.subscribe("kept") as kept:
            subscription = channel.subscribe("left")
            await subscription.__aenter__()
            async with frozen(server):
                started = time.monotonic()
                await subscription.__aexit__(None, None, None)
                assert time.monotonic() - started < 0.5
            # Once the server answers again, it has dropped the group.
            for _ in range(500):
                if dict(await admin.pubsub_numsub("left")) == {b"left": 0}:
                    break
                await anyio.sleep(0.01)
            else:
                pytest.fail("the server still has the group left during the freeze")
            await channel.publish("kept", "still subscribed")
            assert (await kept.receive()).message == "still subscribed"


async def subscribes_during_an_outage(
    start_redis: Callable[..., RedisServer], count: int, via_channel: bool
) -> list[float]:
    """Stop the server, then start `count` subscribes at once: how long each took to fail."""
    server = start_redis()
    layer = RedisPubSubChannelLayer.from_url(
        server.url, subscribe_timeout=1, reconnect_backoff=QUICK
    )
    took: list[float] = []
    async with Channel(layer) as channel:
        server.stop()
        await eventually(lambda: not layer.stats().connected)

        async def enter_and_leave(group: str) -> None:
            async with channel.subscribe(group):
                pass

        async def subscribe(group: str) -> None:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError):
                await (enter_and_leave(group) if via_channel else layer.subscribe(group))
            took.append(time.monotonic() - started)

        async with anyio.create_task_group() as tasks:
            for number in range(count):
                tasks.start_soon(subscribe, f"outage-{number}")
    assert len(took) == count
    return took


async def test_concurrent_layer_subscribes_during_an_outage_each_fail_within_the_timeout(
    start_redis: Callable[..., RedisServer],
) -> None:
    took = await subscribes_during_an_outage(start_redis, 4, via_channel=False)
    assert max(took) < 1.5


async def test_concurrent_channel_subscribes_during_an_outage_each_fail_within_the_timeout(
    start_redis: Callable[..., RedisServer],
) -> None:
    """The channel ran one subscribe at a time: the k-th failed after k x subscribe_timeout."""
    took = await subscribes_during_an_outage(start_redis, 4, via_channel=True)
    print("channel subscribes failed after " + ", ".join(f"{t:.2f} s" for t in sorted(took)))
    assert max(took) < 1.5, took


async def test_leaving_a_channel_subscription_while_another_subscribe_is_stuck_returns_at_once(
    start_redis: Callable[..., RedisServer],
) -> None:
    """Leaving waited (shielded, so cancelling did not help) for the channel's lock,
    held by another task's subscribe to the frozen server."""
    server = start_redis()
    layer = RedisPubSubChannelLayer.from_url(
        server.url, subscribe_timeout=1, reconnect_backoff=QUICK
    )
    async with Channel(layer) as channel:
        kept = channel.subscribe("kept")
        await kept.__aenter__()
        async with frozen(server), anyio.create_task_group() as tasks:

            async def stuck() -> None:
                with pytest.raises(BrokerUnavailableError):
                    async with channel.subscribe("stuck"):
                        pytest.fail("subscribed to a frozen server")

            tasks.start_soon(stuck)
            # Registered, so its broker subscribe is issued (in the same step).
            await eventually(lambda: channel.stats().subscribers == 2)
            started = time.monotonic()
            await kept.__aexit__(None, None, None)
            took = time.monotonic() - started
            print(f"leaving took {took * 1000:.2f} ms")
            assert took < 0.1, took
        # Once the server is back, the channel works.
        async with channel.subscribe("after") as subscriber:
            await channel.publish("after", "back")
            with anyio.fail_after(5):
                assert (await subscriber.receive()).message == "back"


# -- item 9: publish_timeout bounds the wait for a pooled connection -----------------------


async def test_thirty_publishes_during_a_freeze_all_end_within_publish_timeout(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    layer = RedisPubSubChannelLayer.from_url(server.url, publish_timeout=1, pool_size=10)
    async with Channel(layer) as channel:
        await channel.publish("warm", "up")
        took: list[float] = []

        async def publish(number: int) -> None:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError):
                await channel.publish("frozen", number)
            took.append(time.monotonic() - started)

        async with frozen(server):
            async with anyio.create_task_group() as tasks:
                for number in range(30):
                    tasks.start_soon(publish, number)
        assert len(took) == 30
        assert max(took) < 1.5, sorted(took)[-5:]


# -- item 10: a group left during a reconnect is not left subscribed -----------------------


async def test_group_left_while_reconnecting_is_unsubscribed_once_back(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    layer = RedisPubSubChannelLayer.from_url(server.url, reconnect_backoff=QUICK, connect_timeout=5)
    async with admin_of(server) as admin, Channel(layer) as channel:
        async with channel.subscribe("kept") as kept:
            left = channel.subscribe("left")
            await left.__aenter__()
            client_id = layer.stats().pubsub_client_id
            # Kill the pub/sub connection and hold every command (the reconnect's
            # SUBSCRIBE included) for a moment: the reconnect is in flight.
            pipe = admin.pipeline(transaction=False)
            pipe.client_kill_filter(_id=str(client_id))
            pipe.execute_command("CLIENT", "PAUSE", "700", "ALL")
            await pipe.execute()
            await eventually(lambda: layer.stats().reconnect_attempts >= 1)
            await left.__aexit__(None, None, None)
            await eventually(lambda: layer.stats().reconnects == 1)
            with pytest.raises(MessagesLost):
                await kept.receive()
            await channel.publish("kept", "sync")
            assert (await kept.receive()).message == "sync"
            counts = dict(await admin.pubsub_numsub("left", "kept"))
            assert counts == {b"left": 0, b"kept": 1}


# -- refusals --------------------------------------------------------------------------------


async def test_resubscription_refused_after_a_reconnect_keeps_the_channel_and_retries(
    start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_layer_redis")
    server = start_redis()
    async with admin_of(server) as admin:
        url = await app_user(admin, server)
        layer = RedisPubSubChannelLayer.from_url(url, reconnect_backoff=QUICK)
        async with (
            Channel(layer) as channel,
            channel.subscribe("open") as open_group,
            channel.subscribe("secret"),
        ):
            # Revoking "secret" disconnects the subscribed connection; subscribing
            # it again is refused until the permission comes back.
            await admin.acl_setuser("app", enabled=True, reset_channels=True, channels=["open"])
            await eventually(lambda: layer.stats().reconnect_attempts >= 3)
            assert not layer.stats().connected
            # Reported: the refusal, with the server's reason, and that it is retried.
            refused = [
                r.getMessage() for r in caplog.records if "NoPermissionError" in r.getMessage()
            ]
            assert refused
            assert "retrying with backoff" in refused[0]
            await admin.acl_setuser("app", enabled=True, channels=["*"])
            with pytest.raises(MessagesLost):
                await open_group.receive()
            await channel.publish("open", "still here")
            assert (await open_group.receive()).message == "still here"


async def test_refused_commands_are_channels_errors(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    async with admin_of(server) as admin:
        layer = RedisPubSubChannelLayer.from_url(await app_user(admin, server, channels=["open*"]))
        async with Channel(layer) as channel:
            with pytest.raises(BrokerRefusedError, match="NoPermissionError") as publish_refused:
                await channel.publish("closed", "no")
            assert isinstance(publish_refused.value.__cause__, NoPermissionError)
            with pytest.raises(BrokerRefusedError, match="NoPermissionError") as subscribe_refused:
                async with channel.subscribe("closed"):
                    pass
            assert isinstance(subscribe_refused.value.__cause__, NoPermissionError)
            async with channel.subscribe("open") as subscriber:  # still usable
                await channel.publish("open", "yes")
                assert (await subscriber.receive()).message == "yes"


async def test_a_publish_with_credentials_no_longer_accepted_is_refused_at_once(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    async with admin_of(server) as admin:
        layer = RedisPubSubChannelLayer.from_url(
            await app_user(admin, server), publish_timeout=5, reconnect_backoff=QUICK
        )
        async with Channel(layer) as channel:
            await channel.publish("open", "warm up the pool")
            await admin.acl_setuser("app", enabled=True, reset_passwords=True, passwords=["+new"])
            await admin.client_kill_filter(user="app")  # new connections must AUTH again
            started = time.monotonic()
            with pytest.raises(BrokerRefusedError, match="AuthenticationError") as refused:
                await channel.publish("open", "no longer allowed")
            assert time.monotonic() - started < 2.0  # not retried for publish_timeout
            assert isinstance(refused.value.__cause__, AuthenticationError)
            assert layer.stats().published == 1


async def test_a_connection_the_server_refuses_is_a_channels_error(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    async with admin_of(server) as admin:
        url = await app_user(admin, server, commands=["+@all", "-client|setname"])
        layer = RedisPubSubChannelLayer.from_url(url, client_name="app")
        with pytest.raises(BrokerRefusedError, match="NoPermissionError") as refused:
            async with Channel(layer):
                pass
        assert isinstance(refused.value.__cause__, NoPermissionError)


# -- one layer, one channel ------------------------------------------------------------------


async def test_a_layer_entered_twice_at_once_is_a_channels_error(redis_url: str) -> None:
    layer = RedisPubSubChannelLayer.from_url(redis_url)
    async with Channel(layer):
        with pytest.raises(LayerInUseError, match="already connected"):
            async with Channel(layer):
                pass
        assert layer.stats().connected
