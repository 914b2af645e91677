"""Channel behaviour beyond the conformance suite: options, buffers, gaps, failures."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from channels_core import (
    Channel,
    ChannelClosedError,
    ChannelLayer,
    Event,
    Inbox,
    MessagesLost,
    PayloadTooLargeError,
)
from channels_core.layers.local_memory import (
    YIELD_AFTER,
    YIELD_CHECK,
    YIELD_EVERY,
    InMemoryChannelLayer,
)

pytestmark = pytest.mark.anyio


class RecordingLayer(ChannelLayer):
    """A layer whose broker side the test drives: it records calls and can fail them."""

    max_payload_bytes = 100

    def __init__(self) -> None:
        self.inbox: Inbox | None = None
        self.calls: list[tuple[str, str]] = []
        self.subscribe_delay = 0.0
        self.fail_unsubscribe = False
        self.connect_error: Exception | None = None

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        if self.connect_error is not None:
            raise self.connect_error
        self.inbox = inbox
        try:
            yield
        finally:
            self.inbox = None

    async def publish(self, group: str, payload: bytes) -> None:
        assert self.inbox is not None
        self.calls.append(("publish", group))
        self.inbox.deliver(group, payload)

    async def subscribe(self, group: str) -> None:
        self.calls.append(("subscribe", group))
        await anyio.sleep(self.subscribe_delay)
        self.calls.append(("subscribed", group))

    async def unsubscribe(self, group: str) -> None:
        self.calls.append(("unsubscribe", group))
        if self.fail_unsubscribe:
            raise ConnectionError("broker went away")


async def test_drop_oldest_keeps_the_newest_and_reports_the_gap_first() -> None:
    async with Channel(InMemoryChannelLayer(), buffer_size=3) as channel:
        async with channel.subscribe("g") as subscriber:
            for number in range(10):
                await channel.publish("g", number)
            with pytest.raises(MessagesLost) as lost:
                await subscriber.receive()
            assert (lost.value.reason, lost.value.count) == ("overflow", 7)
            assert [(await subscriber.receive()).message for _ in range(3)] == [7, 8, 9]
            assert subscriber.dropped == 7
            await channel.publish("g", 10)
            assert (await subscriber.receive()).message == 10


async def test_drop_newest_keeps_the_oldest_and_reports_the_gap_after_them() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe("g", buffer_size=3, overflow="drop_newest") as subscriber:
            for number in range(10):
                await channel.publish("g", number)
            await channel.publish("g", 10)  # after the reader drains, this one fits
            assert [(await subscriber.receive()).message for _ in range(3)] == [0, 1, 2]
            with pytest.raises(MessagesLost) as lost:
                await subscriber.receive()
            assert lost.value.count == 8


async def test_an_overflowing_subscriber_does_not_slow_or_starve_others() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        async with (
            channel.subscribe("g", buffer_size=1) as stuck,
            channel.subscribe("g", buffer_size=10_000) as healthy,
        ):
            for number in range(5_000):
                await channel.publish("g", number)
            assert [(await healthy.receive()).message for _ in range(5_000)] == list(range(5_000))
            assert stuck.dropped == 4_999


async def test_reconnect_gap_is_raised_in_stream_order_and_iteration_goes_on() -> None:
    layer = RecordingLayer()
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        await channel.publish("g", "before")
        assert layer.inbox is not None
        layer.inbox.messages_lost()
        await channel.publish("g", "after")
        received: list[Any] = []
        gaps: list[MessagesLost] = []
        while len(received) < 3:
            try:
                async for event in subscriber:
                    received.append(event.message)
                    if len(received) == 3:
                        break
            except MessagesLost as gap:
                gaps.append(gap)
                received.append("<gap>")
        assert received == ["before", "<gap>", "after"]
        assert (gaps[0].reason, gaps[0].count) == ("reconnect", None)
        assert channel.stats().gaps == 1


async def test_a_gap_of_some_groups_reaches_only_their_subscribers() -> None:
    """A layer with several broker connections (a cluster's shards) reports per group."""
    layer = RecordingLayer()
    async with (
        Channel(layer) as channel,
        channel.subscribe("lost") as lost,
        channel.subscribe("kept") as kept,
        channel.subscribe("kept", "lost") as both,
    ):
        assert layer.inbox is not None
        layer.inbox.messages_lost(groups=["lost", "not subscribed"])
        for group in ("lost", "kept"):
            await channel.publish(group, "after")
        with pytest.raises(MessagesLost):
            await lost.receive()
        assert (await lost.receive()).message == "after"
        assert (await kept.receive()).message == "after"  # no gap for another group
        with pytest.raises(MessagesLost):
            await both.receive()
        assert channel.stats().gaps == 1


async def test_undecodable_payload_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    layer = InMemoryChannelLayer()
    async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
        with caplog.at_level(logging.WARNING, logger="channels_core"):
            layer.hub.publish("g", b"\xff not json")
        await channel.publish("g", "good")
        assert (await subscriber.receive()).message == "good"
        assert channel.stats().undecodable == 1
    assert "could not be decoded" in caplog.text


async def test_payload_limit_of_the_layer_is_enforced_before_sending() -> None:
    layer = RecordingLayer()
    async with Channel(layer) as channel:
        with pytest.raises(PayloadTooLargeError, match="at most 100"):
            await channel.publish("g", "x" * 200)
        assert layer.calls == []
        await channel.publish("g", "small")
        assert layer.calls == [("publish", "g")]


async def test_multi_group_fallback_subscribes_each_new_group_once() -> None:
    layer = RecordingLayer()
    async with Channel(layer) as channel:
        assert channel.capabilities == frozenset()
        async with channel.subscribe("a", "b"), channel.subscribe("b", "c"):
            pass
    subscribed = [group for call, group in layer.calls if call == "subscribe"]
    unsubscribed = [group for call, group in layer.calls if call == "unsubscribe"]
    assert subscribed == ["a", "b", "c"]
    assert sorted(unsubscribed) == ["a", "b", "c"]


async def test_concurrent_subscribers_are_all_live_when_their_blocks_start() -> None:
    layer = RecordingLayer()
    layer.subscribe_delay = 0.05
    live: list[bool] = []
    async with Channel(layer) as channel:

        async def subscriber_task() -> None:
            async with channel.subscribe("g"):
                live.append(("subscribed", "g") in layer.calls)

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(subscriber_task)
    assert live == [True] * 5


async def test_cancelled_while_subscribing_leaves_no_subscription() -> None:
    layer = RecordingLayer()
    layer.subscribe_delay = 10
    async with Channel(layer) as channel:
        with anyio.move_on_after(0.05):
            async with channel.subscribe("slow"):
                pytest.fail("the block must not start")
        assert channel.stats().subscribers == 0
        assert layer.calls[-1] == ("unsubscribe", "slow")


async def test_failed_unsubscribe_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    layer = RecordingLayer()
    async with Channel(layer) as channel:
        layer.fail_unsubscribe = True
        with caplog.at_level(logging.WARNING, logger="channels_core"):
            async with channel.subscribe("g"):
                pass
        assert channel.stats().subscribers == 0
        layer.fail_unsubscribe = False
        async with channel.subscribe("g") as subscriber:
            await channel.publish("g", 1)
            assert (await subscriber.receive()).message == 1
    assert "could not unsubscribe" in caplog.text


async def test_a_failed_connect_can_be_retried() -> None:
    layer = RecordingLayer()
    layer.connect_error = ConnectionError("refused")
    channel = Channel(layer)
    with pytest.raises(ConnectionError):
        await channel.__aenter__()
    layer.connect_error = None
    async with channel:
        await channel.publish("g", 1)


async def test_subscriber_iteration_ends_when_the_channel_closes_mid_wait() -> None:
    async with anyio.create_task_group() as group:
        channel = Channel(InMemoryChannelLayer())
        received: list[Event] = []
        async with channel:
            ready = anyio.Event()

            async def consume() -> None:
                async with channel.subscribe("g") as subscriber:
                    ready.set()
                    received.extend([event async for event in subscriber])

            group.start_soon(consume)
            await ready.wait()
            await channel.publish("g", 1)
        await anyio.wait_all_tasks_blocked()
    assert [event.message for event in received] == [1]


def test_from_url_splits_channel_and_layer_options() -> None:
    channel = Channel.from_url("memory://", buffer_size=7, overflow="drop_newest")
    assert isinstance(channel.layer, InMemoryChannelLayer)
    with pytest.raises(TypeError, match="other than history_size and history_ttl, got bogus"):
        Channel.from_url("memory://", bogus=1)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"buffer_size": 0}, ValueError, "buffer_size"),
        ({"buffer_size": "10"}, ValueError, "buffer_size"),
        ({"overflow": "block"}, ValueError, "overflow"),
        ({"serializer": "yaml"}, ValueError, "serializer"),
    ],
)
def test_bad_channel_options_are_clear(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Channel(InMemoryChannelLayer(), **options)


def test_channel_needs_a_layer_instance() -> None:
    with pytest.raises(TypeError, match="ChannelLayer instance"):
        Channel(InMemoryChannelLayer)  # type: ignore[arg-type]


async def test_named_memory_hubs_connect_channels_in_one_process() -> None:
    async with (
        Channel.from_url("memory://shared-room") as listener,
        Channel.from_url("memory://shared-room") as sender,
        Channel.from_url("memory://") as stranger,
    ):
        async with listener.subscribe("g") as subscriber:
            await stranger.publish("g", "private hub")
            await sender.publish("g", "shared hub")
            assert (await subscriber.receive()).message == "shared hub"


async def test_receive_after_the_block_reports_closed() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe("g") as subscriber:
            pass
        with pytest.raises(ChannelClosedError, match="ended"):
            await subscriber.receive()


async def test_an_ended_subscription_cannot_be_spun_on() -> None:
    """Iterating again after the end raises instead of returning without awaiting."""
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe("g") as subscriber:
            await channel.publish("g", "buffered")
        received: list[Any] = []
        passes = 0

        async def retry_loop() -> None:  # as around MessagesLost, bounded for the test
            nonlocal passes
            while passes < 100:
                passes += 1
                async for event in subscriber:
                    received.append(event.message)

        with pytest.raises(ChannelClosedError, match="ended"):
            await retry_loop()
        assert received == ["buffered"]  # the buffered event, then the end, once
        assert passes == 2
        with pytest.raises(ChannelClosedError, match="subscribe again"):
            await subscriber.__anext__()


async def test_an_ended_subscription_reported_by_receive_stays_ended() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe("g") as subscriber:
            pass
        for _ in range(3):
            with pytest.raises(ChannelClosedError):
                await subscriber.receive()
        with pytest.raises(ChannelClosedError):
            async for _event in subscriber:
                pass


def test_layer_methods_need_a_connection() -> None:
    async def publish_unconnected() -> None:
        await InMemoryChannelLayer().publish("g", b"1")

    with pytest.raises(ChannelClosedError):
        anyio.run(publish_unconnected)


async def test_many_groups_fan_out_independently() -> None:
    groups: Sequence[str] = [f"room-{n}" for n in range(50)]
    async with Channel(InMemoryChannelLayer()) as channel:
        async with channel.subscribe(*groups) as everything, channel.subscribe("room-7") as one:
            for group in groups:
                await channel.publish(group, group)
            assert [(await everything.receive()).group for _ in groups] == list(groups)
            assert (await one.receive()).group == "room-7"


async def test_a_subscriber_that_keeps_pace_loses_nothing_even_with_a_tiny_buffer() -> None:
    async with Channel(InMemoryChannelLayer(), buffer_size=2) as channel:
        async with channel.subscribe("g") as subscriber, anyio.create_task_group() as tasks:
            received: list[int] = []

            async def consume() -> None:
                async for event in subscriber:
                    received.append(event.message)
                    if event.message == 9_999:
                        return

            tasks.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            for number in range(10_000):
                await channel.publish("g", number)
        assert received == list(range(10_000))
        assert subscriber.dropped == 0


async def test_a_reader_started_but_not_yet_run_loses_nothing_to_a_tight_publishing_loop() -> None:
    """The publisher yields before the buffer overflows, though the reader never waited yet."""
    async with Channel(InMemoryChannelLayer(), buffer_size=100) as channel:
        async with channel.subscribe("g") as subscriber, anyio.create_task_group() as tasks:
            received: list[int] = []

            async def consume() -> None:
                for _ in range(5_000):
                    received.append((await subscriber.receive()).message)

            tasks.start_soon(consume)  # not run yet when the loop below starts
            for number in range(5_000):
                await channel.publish("g", number)
        assert received == list(range(5_000))
        assert subscriber.dropped == 0


async def test_a_subscriber_nobody_reads_slows_the_publisher_for_half_a_buffer_only() -> None:
    async with Channel(InMemoryChannelLayer(), buffer_size=20) as channel:
        async with channel.subscribe("nobody-listens") as stuck:
            ticks = await _publish_beside_a_ticker(channel, YIELD_EVERY - 1)
        assert stuck.dropped == YIELD_EVERY - 1 - 20
    # A yield per message while the buffer fills from half to full, and one as
    # the loop ends; then none per message, though the buffer stays full.
    assert ticks <= 10 + 2


async def _publish_beside_a_ticker(channel: Channel, messages: int) -> int:
    """Publish `messages` with another task ticking at each checkpoint; its ticks.

    The ticker only runs when the publishing loop yields, once per yield.
    """
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ticker)
        for number in range(messages):
            await channel.publish("nobody-listens", number)
        tasks.cancel_scope.cancel()
    return ticks


async def test_a_publishing_loop_does_not_starve_other_tasks() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        assert await _publish_beside_a_ticker(channel, 4 * YIELD_EVERY) >= 3


class _SlowJSON:
    """JSON that burns a millisecond of CPU per message, as a costly publish would."""

    def dumps(self, message: Any) -> bytes:
        until = time.thread_time() + 0.001
        while time.thread_time() < until:
            pass
        return json.dumps(message).encode()

    def loads(self, payload: bytes) -> Any:
        return json.loads(payload)


async def test_a_loop_of_costly_publishes_yields_long_before_yield_every() -> None:
    """`YIELD_AFTER` bounds the time between yields, not only `YIELD_EVERY` their count."""
    assert YIELD_CHECK * 0.001 > YIELD_AFTER  # each check finds >= 32 ms of CPU gone
    async with Channel(InMemoryChannelLayer(), serializer=_SlowJSON()) as channel:
        assert await _publish_beside_a_ticker(channel, 4 * YIELD_CHECK) >= 3


async def test_a_memory_layer_subclass_that_overrides_publish_has_it_called() -> None:
    """The channel calls the memory layer's `publish_nowait` only when `publish` is its own."""
    published: list[str] = []

    class Recording(InMemoryChannelLayer):
        async def publish(self, group: str, payload: bytes) -> None:
            published.append(group)
            await super().publish(group, payload)

    async with Channel(Recording()) as channel, channel.subscribe("g") as subscriber:
        await channel.publish("g", 1)
        assert (await subscriber.receive()).message == 1
    assert published == ["g"]


async def test_the_memory_layer_counts_every_publish_between_and_across_yields() -> None:
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        for index in range(3 * YIELD_CHECK + 1):
            await channel.publish("g", index)
        await channel.publish_many([("g", "a"), ("nobody", "b")])
        assert channel.layer.stats().published == 3 * YIELD_CHECK + 3
        assert channel.layer.stats().received == 3 * YIELD_CHECK + 2
        assert (await subscriber.receive()).message == 0
    assert channel.layer.stats().published == 3 * YIELD_CHECK + 3


async def test_a_receive_cancelled_once_woken_loses_no_event() -> None:
    """Cancelled after the publish woke it but before it ran: the event waits for the next call."""
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        got: list[Any] = []
        scope = anyio.CancelScope()

        async def receive_one() -> None:
            with scope:
                got.append((await subscriber.receive()).message)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive_one)
            await anyio.wait_all_tasks_blocked()
            await channel.publish("g", "only")  # wakes the receiver, does not yield
            scope.cancel()
        await channel.publish("g", "next")
        with anyio.fail_after(5):
            rest = [(await subscriber.receive()).message for _ in range(2 - len(got))]
        assert got + rest == ["only", "next"]


async def test_a_gap_before_the_subscription_went_live_is_not_reported() -> None:
    layer = RecordingLayer()
    layer.subscribe_delay = 0.05
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:

        async def lose_messages_while_subscribing() -> None:
            await anyio.sleep(0.01)
            assert layer.inbox is not None
            layer.inbox.messages_lost()

        tasks.start_soon(lose_messages_while_subscribing)
        async with channel.subscribe("g") as subscriber:
            await channel.publish("g", "first")
            assert (await subscriber.receive()).message == "first"


async def test_a_receive_cancelled_while_waiting_leaves_the_subscriber_usable() -> None:
    """A timed-out wait must not leave a dead waiter behind (asyncio waits on a bare future)."""
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        for round_number in range(3):
            with anyio.move_on_after(0.01) as waited:
                await subscriber.receive()
            assert waited.cancelled_caught
            await channel.publish("g", round_number)
            with anyio.fail_after(5):
                assert (await subscriber.receive()).message == round_number

        async def late_publish() -> None:
            await anyio.sleep(0.01)
            await channel.publish("g", "woken")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(late_publish)
            with anyio.fail_after(5):
                assert (await subscriber.receive()).message == "woken"


async def test_cancelling_one_of_two_tasks_receiving_leaves_the_other_waiting() -> None:
    """On asyncio both wait on one future, which the cancelled task's cancellation cancels."""
    async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:
        got: list[Any] = []
        cancelled = anyio.CancelScope()

        async def receive_one(scope: anyio.CancelScope) -> None:
            with scope:
                got.append((await subscriber.receive()).message)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive_one, cancelled)
            tasks.start_soon(receive_one, anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()
            cancelled.cancel()
            await anyio.wait_all_tasks_blocked()
            await channel.publish("g", "for the other")
        assert got == ["for the other"]
