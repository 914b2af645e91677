"""History in the core: options, positions, and the recovery after a reconnect.

`FlakyMemoryLayer` is an in-process layer whose link to its hub can drop:
while it is down, what is published on the hub does not reach it; when it
comes back the layer reports it (`Inbox.messages_lost`), as a network layer
does after re-subscribing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import pytest

from channels_core import Channel, Event, MessagesLost, NotSupportedError, Subscriber
from channels_core.channel import _check_history_options
from channels_core.history import HistoryOptions, format_position, parse_position
from channels_core.layers.local_memory import InMemoryChannelLayer, MemoryHub

pytestmark = pytest.mark.anyio


class FlakyMemoryLayer(InMemoryChannelLayer):
    def drop_link(self) -> None:
        port = self._port
        assert port is not None
        self.hub.unsubscribe(port, list(self._groups))
        self.hub.punsubscribe(port, list(self._patterns))

    def restore_link(self) -> None:
        port = self._port
        assert port is not None
        self.hub.subscribe(port, list(self._groups))
        self.hub.psubscribe(port, list(self._patterns))
        port._inbox.messages_lost()


class TrailingMemoryLayer(FlakyMemoryLayer):
    """Its live deliveries can trail its log, as a network layer's pub/sub socket can trail
    a read on another connection: while `trail` is on, live deliveries wait for `catch_up`."""

    def trail(self) -> None:
        port = self._port
        assert port is not None
        self._late: list[tuple[Any, ...]] = []
        self._deliver = port.deliver

        def deliver_later(
            group: str, payload: bytes, pattern: str | None = None, position: str | None = None
        ) -> bool:
            self._late.append((group, payload, pattern, position))
            return False

        port.deliver = deliver_later

    def catch_up(self) -> None:
        port = self._port
        assert port is not None
        port.deliver = self._deliver
        for delivery in self._late:
            self._deliver(*delivery)


class NoHistoryMemoryLayer(InMemoryChannelLayer):
    supports_history = False


Flaky = TypeVar("Flaky", bound=FlakyMemoryLayer)


@asynccontextmanager
async def _flaky_channel(
    history_size: int, kind: type[Flaky]
) -> AsyncIterator[tuple[Flaky, Channel, Channel]]:
    """A `kind` layer of a new hub, a channel on it, and a publishing channel on the hub
    (both layers keeping `history_size` events): ``(layer, channel, publisher)``."""
    hub = MemoryHub()
    layer = kind(hub, history_size=history_size)
    async with (
        Channel(layer) as channel,
        Channel(InMemoryChannelLayer(hub, history_size=history_size)) as publisher,
    ):
        yield layer, channel, publisher


async def _receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(5):
        return await subscriber.receive()


async def _messages(subscriber: Subscriber, count: int) -> list[object]:
    return [(await _receive(subscriber)).message for _ in range(count)]


async def _nothing_more(subscriber: Subscriber) -> None:
    await anyio.wait_all_tasks_blocked()
    with anyio.move_on_after(0.05):
        event = await subscriber.receive()
        raise AssertionError(f"unexpected {event!r}")


# -- recovery after a reconnect -------------------------------------------------------


async def test_a_reconnect_recovers_the_missed_events_silently() -> None:
    async with (
        _flaky_channel(100, FlakyMemoryLayer) as (flaky, channel, publisher),
        channel.subscribe("room") as subscriber,
    ):
        for number in range(3):
            await publisher.publish("room", number)
        assert await _messages(subscriber, 3) == [0, 1, 2]
        flaky.drop_link()
        for number in range(3, 8):
            await publisher.publish("room", number)
        flaky.restore_link()
        await publisher.publish("room", 8)
        assert await _messages(subscriber, 6) == [3, 4, 5, 6, 7, 8]
        await _nothing_more(subscriber)
        assert channel.stats().gaps == 1  # the layer's report is still counted


async def test_a_quiet_group_is_recovered_from_the_head_noted_at_subscribe() -> None:
    async with (
        _flaky_channel(100, FlakyMemoryLayer) as (flaky, channel, publisher),
    ):
        await publisher.publish("quiet", "before subscribing")
        async with channel.subscribe("quiet") as subscriber:
            flaky.drop_link()
            await publisher.publish("quiet", "while down")
            flaky.restore_link()
            assert (await _receive(subscriber)).message == "while down"
            await _nothing_more(subscriber)


async def test_a_reconnect_past_the_history_is_reported() -> None:
    async with (
        _flaky_channel(3, FlakyMemoryLayer) as (flaky, channel, publisher),
        channel.subscribe("room") as subscriber,
    ):
        await publisher.publish("room", 0)
        assert await _messages(subscriber, 1) == [0]
        flaky.drop_link()
        for number in range(1, 10):
            await publisher.publish("room", number)
        flaky.restore_link()
        with pytest.raises(MessagesLost) as lost:
            await _receive(subscriber)
        assert lost.value.reason == "reconnect"
        assert await _messages(subscriber, 3) == [7, 8, 9]


async def test_recovery_under_a_running_publisher_has_no_gap_and_no_duplicate() -> None:
    count = 2000
    async with (
        _flaky_channel(count, FlakyMemoryLayer) as (flaky, channel, publisher),
        channel.subscribe("room", buffer_size=count) as subscriber,
    ):

        async def publish_all() -> None:
            for number in range(count):
                await publisher.publish("room", number)
                if number % 10 == 0:
                    await anyio.lowlevel.checkpoint()

        async def flap() -> None:
            for _ in range(20):
                flaky.drop_link()
                await anyio.sleep(0.001)
                flaky.restore_link()
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_all)
            tasks.start_soon(flap)
            received = await _messages(subscriber, count)
        assert received == list(range(count))
        assert channel.stats().gaps == 20


async def test_pattern_subscribers_are_told_of_every_reconnect_never_a_false_complete() -> None:
    """The log is per group: a pattern's matches during the outage cannot be listed.

    So a pattern subscriber gets ``MessagesLost("reconnect")`` after every
    reconnect, even one where nothing was published, whether or not a named
    subscriber of a matching group recovers (silently) beside it; it never
    gets the outage's events as if nothing had happened.
    """
    hub = MemoryHub()
    flaky, flaky_too = FlakyMemoryLayer(hub, history_size=10), FlakyMemoryLayer(hub)
    async with (
        Channel(flaky) as channel,
        Channel(InMemoryChannelLayer(hub, history_size=10)) as publisher,
        Channel(flaky_too) as patterns_only,
        channel.subscribe_pattern("room.*") as by_pattern,
        channel.subscribe("room.1") as by_name,
        patterns_only.subscribe_pattern("room.*") as alone,
    ):
        await publisher.publish("room.1", "first")
        for subscriber in (by_pattern, by_name, alone):
            assert (await _receive(subscriber)).message == "first"
        for layer in (flaky, flaky_too):
            layer.drop_link()
        await publisher.publish("room.1", "missed on room.1")
        await publisher.publish("room.2", "missed on room.2")  # only the patterns match it
        for layer in (flaky, flaky_too):
            layer.restore_link()
        await publisher.publish("room.2", "after on room.2")
        await publisher.publish("room.1", "after on room.1")
        assert await _messages(by_name, 2) == ["missed on room.1", "after on room.1"]
        for subscriber in (by_pattern, alone):
            with pytest.raises(MessagesLost) as lost:
                await _receive(subscriber)
            assert (lost.value.reason, lost.value.count) == ("reconnect", None)
            assert await _messages(subscriber, 2) == ["after on room.2", "after on room.1"]
            await _nothing_more(subscriber)
        await _nothing_more(by_name)

        for layer in (flaky, flaky_too):  # a quiet outage: still not provably complete
            layer.drop_link()
            layer.restore_link()
        for subscriber in (by_pattern, alone):
            with pytest.raises(MessagesLost) as lost:
                await _receive(subscriber)
            assert lost.value.reason == "reconnect"
        await _nothing_more(by_name)
        assert (channel.stats().gaps, patterns_only.stats().gaps) == (2, 2)


async def test_without_history_a_reconnect_is_a_gap() -> None:
    flaky = FlakyMemoryLayer()
    async with Channel(flaky) as channel, channel.subscribe("room") as subscriber:
        flaky.drop_link()
        await channel.publish("room", "lost")
        flaky.restore_link()
        with pytest.raises(MessagesLost) as lost:
            await _receive(subscriber)
        assert lost.value.reason == "reconnect"


# -- options and refusals ---------------------------------------------------------------


def test_history_options_as_keywords_and_url_parameters() -> None:
    layer = InMemoryChannelLayer.from_url("memory://?history_size=100&history_ttl=2.5")
    assert (layer.options.history_size, layer.options.history_ttl) == (100, 2.5)
    assert layer.keeps_history
    named = Channel.from_url("memory://history-options-hub", history_size=5).layer
    assert isinstance(named, InMemoryChannelLayer)
    assert named.options.history_size == 5
    assert not InMemoryChannelLayer.from_url("memory://").keeps_history


@pytest.mark.parametrize(
    ("url", "options", "error", "named"),
    [
        ("memory://?history_size=many", {}, ValueError, "history_size"),
        ("memory://?history_size=-1", {}, ValueError, "history_size"),
        ("memory://", {"history_size": "5"}, TypeError, "history_size"),
        ("memory://", {"history_ttl": 0, "history_size": 5}, ValueError, "history_ttl"),
        ("memory://", {"history_ttl": 5}, ValueError, "history_ttl"),
        ("memory://?history_size=5&bogus=1", {}, ValueError, "bogus"),
    ],
)
def test_bad_history_options_are_refused_naming_them(
    url: str, options: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        InMemoryChannelLayer.from_url(url, **options)


def test_layers_on_one_hub_share_its_history_settings() -> None:
    hub = MemoryHub()
    InMemoryChannelLayer(hub, history_size=10)
    assert InMemoryChannelLayer(hub).keeps_history
    InMemoryChannelLayer(hub, history_size=10)
    with pytest.raises(ValueError, match="history_size=10"):
        InMemoryChannelLayer(hub, history_size=20)


def test_history_options_reach_no_layer_without_history() -> None:
    for options, url in (({"history_size": 5}, "memory://"), ({}, "memory://?history_ttl=1")):
        with pytest.raises(NotSupportedError, match="NoHistoryMemoryLayer"):
            _check_history_options(NoHistoryMemoryLayer, url, options)
    _check_history_options(InMemoryChannelLayer, "memory://?history_size=5", {})


async def test_a_layer_without_history_refuses_since_and_history() -> None:
    async with Channel(NoHistoryMemoryLayer()) as channel:
        assert "history" not in channel.capabilities
        with pytest.raises(NotSupportedError, match="NoHistoryMemoryLayer"):
            channel.subscribe("g", since="e-1")
        with pytest.raises(NotSupportedError, match="NoHistoryMemoryLayer"):
            await channel.history("g")


async def test_history_off_costs_nothing_and_says_how_to_turn_it_on() -> None:
    async with Channel(InMemoryChannelLayer()) as channel:
        with pytest.raises(NotSupportedError, match="history_size"):
            await channel.history("g")
        async with channel.subscribe("g") as subscriber:
            await channel.publish("g", 1)
            assert (await _receive(subscriber)).position is None


# -- positions ---------------------------------------------------------------------------


def test_positions_round_trip_and_order_within_their_epoch() -> None:
    text = format_position("k3f9", 1700000000000, 5)
    assert text == "k3f9-1700000000000-5"
    assert parse_position(text).offset == (1700000000000, 5)
    assert parse_position("e-10").is_after(parse_position("e-9"))
    assert not parse_position("e-9").is_after(parse_position("e-10"))
    assert parse_position("other-1").is_after(parse_position("e-10"))  # another log
    for bad in ("", "e", "e-", "-1", "e-x", "e-1-", "e f-1"):
        with pytest.raises(ValueError, match="position"):
            parse_position(bad)
    with pytest.raises(TypeError, match="since"):
        parse_position(5, "since")
    with pytest.raises(ValueError, match="epoch"):
        format_position("a-b", 1)


def test_event_keeps_its_old_constructor() -> None:
    assert Event("g", 1) == Event("g", 1, None, None)
    assert Event("g", 1, "g*").position is None
    assert Event("g", 1, position="e-1").position == "e-1"
    assert HistoryOptions().history_size == 0


async def test_joining_with_since_during_a_recovery_gets_each_event_once() -> None:
    async with (
        _flaky_channel(100, FlakyMemoryLayer) as (flaky, channel, publisher),
        channel.subscribe("room") as early,
    ):
        await publisher.publish("room", 0)
        start = await _receive(early)
        assert start.position is not None
        flaky.drop_link()
        for number in range(1, 6):
            await publisher.publish("room", number)
        flaky.restore_link()  # the recovery starts; the subscription below joins meanwhile
        async with channel.subscribe("room", since=start.position) as late:
            await publisher.publish("room", 6)
            assert await _messages(late, 6) == [1, 2, 3, 4, 5, 6]
            assert await _messages(early, 6) == [1, 2, 3, 4, 5, 6]
            await _nothing_more(late)


async def test_live_events_trailing_a_recovery_are_not_delivered_twice() -> None:
    async with (
        _flaky_channel(100, TrailingMemoryLayer) as (layer, channel, publisher),
        channel.subscribe("room") as subscriber,
    ):
        await publisher.publish("room", 0)
        assert await _messages(subscriber, 1) == [0]
        layer.drop_link()
        await publisher.publish("room", 1)
        layer.trail()
        layer.restore_link()  # the recovery reads 1 and 2; 2 arrives live only later
        await publisher.publish("room", 2)
        assert await _messages(subscriber, 2) == [1, 2]
        layer.catch_up()
        await publisher.publish("room", 3)
        assert await _messages(subscriber, 1) == [3]
        await _nothing_more(subscriber)


async def test_live_events_trailing_a_since_replay_are_not_delivered_twice() -> None:
    async with (
        _flaky_channel(100, TrailingMemoryLayer) as (layer, channel, publisher),
        channel.subscribe("room") as early,
    ):
        await publisher.publish("room", 0)
        start = await _receive(early)
        assert start.position is not None
        layer.trail()
        for number in (1, 2):
            await publisher.publish("room", number)
        async with channel.subscribe("room", since=start.position) as late:
            assert await _messages(late, 2) == [1, 2]  # from the log
            layer.catch_up()  # 1 and 2 arrive live: for `early` only
            await publisher.publish("room", 3)
            assert await _messages(late, 1) == [3]
            assert await _messages(early, 3) == [1, 2, 3]
            await _nothing_more(late)
