"""The conformance tests themselves (see the package docstring)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from .. import (
    Channel,
    ChannelClosedError,
    ChannelInUseError,
    ChannelLayer,
    ChannelsError,
    Event,
    LayerStats,
    MessagesLost,
    NotSupportedError,
    PayloadTooLargeError,
    SerializationError,
    Subscriber,
    layer_capabilities,
    url_secrets,
)

LayerFactory = Callable[[], ChannelLayer]

#: ``make(history_size=N, history_ttl=None)``: a new, unconnected layer with history on.
HistoryLayerFactory = Callable[..., ChannelLayer]

#: Options `from_url` must refuse, each with the error it must raise; the
#: message must name the option (the first key of each mapping).
BadOptions = list[tuple[dict[str, Any], type[Exception]]]

#: The fields every layer's `stats()` shares (`LayerStats`).
_SHARED_STATS = tuple(field.name for field in dataclasses.fields(LayerStats))

#: Seconds a test waits for one delivery before failing (never hangs).
DELIVERY_TIMEOUT = 10.0

_ROUND_TRIP_MESSAGES: list[Any] = [
    None,
    True,
    False,
    0,
    -(2**53),
    2**63,
    1.5,
    "",
    "plain",
    "ünïcødé 🚀 \u2028 \x00 control",
    [],
    [1, "two", 3.0, None],
    {},
    {"nested": {"list": [{"deep": [1, [2, [3]]]}]}, "k": "v"},
]

_UNUSUAL_GROUPS = [
    "with spaces and 'quotes' and \"double\"",
    "semi;colon -- comment /* */",
    "ünïcødé 🚀 グループ",
    "a" * 1000,
    "b" * 70 + "1",
    "b" * 70 + "2",
    "x",
]


async def _receive(subscriber: Subscriber) -> Event:
    with anyio.fail_after(DELIVERY_TIMEOUT):
        return await subscriber.receive()


def _unique(name: str) -> str:
    """A group name of its own per test run: a broker's history outlives a test."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


async def _messages(subscriber: Subscriber, count: int) -> list[Any]:
    return [(await _receive(subscriber)).message for _ in range(count)]


def _stats_or_skip(layer: ChannelLayer) -> LayerStats:
    """The layer's stats, or a skip saying why the shared-shape checks cannot run yet.

    Tolerant for now: layers that predate `LayerStats` (no ``stats()``, or
    a snapshot of another type) are skipped, not failed.
    """
    try:
        stats = layer.stats()
    except NotSupportedError:
        pytest.skip(f"{type(layer).__name__}.stats() is not implemented (NotSupportedError)")
    if not isinstance(stats, LayerStats):
        pytest.skip(
            f"{type(layer).__name__}.stats() returns {type(stats).__name__}, "
            "not a channels_core.LayerStats"
        )
    return stats


def _error_texts(error: BaseException) -> list[str]:
    """str and repr of `error` and of every exception chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current)]
        pending += [current.__cause__, current.__context__]
    return texts


class ChannelLayerConformance:
    """The behaviour every layer must show through the public `Channel` API."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def make_layer(self) -> LayerFactory:
        raise NotImplementedError(
            "override the make_layer fixture: return a callable that builds a new, "
            "unconnected layer; all layers it builds must reach the same broker"
        )

    @pytest.fixture
    def layer_url(self) -> str | None:
        """A URL the layer's ``from_url`` accepts, for the option checks; None skips them."""
        return None

    @pytest.fixture
    def bad_options(self) -> BadOptions:
        """Options ``from_url(layer_url, **options)`` must refuse; extend with the layer's own.

        For example ``({"connect_timeout": "5"}, TypeError)`` and
        ``({"connect_timeout": -1}, ValueError)``.
        """
        return [({"no_such_option": 1}, TypeError)]

    @pytest.fixture
    def secret_url(self) -> str | None:
        """A URL carrying secrets (a password, a ``?password=``/``token``/``key`` parameter).

        Connecting with it may fail (an unreachable port, a wrong password:
        keep its timeouts short) or succeed; either way no secret may show
        in ``repr(layer)``, the channel, the stats, an error or a log
        record. None skips the check.
        """
        return None

    @pytest.fixture
    def make_history_layer(
        self, make_layer: LayerFactory, layer_url: str | None
    ) -> HistoryLayerFactory:
        """Builds layers with history on: ``make(history_size=N, history_ttl=None)``.

        By default ``from_url(layer_url, **options)``. Every layer built in
        one test must reach the same broker and log (so override it where the
        layer_url is shared in a way history settings cannot be, e.g. a
        process-wide hub). The history tests run for layers declaring the
        "history" capability; the others check `NotSupportedError` instead.
        """
        self._history_or_skip(make_layer)
        layer_class = type(make_layer())
        if layer_url is None:
            pytest.skip("no layer_url (nor make_history_layer) fixture: the history tests need one")
        return lambda **options: layer_class.from_url(layer_url, **options)

    def _history_or_skip(self, make_layer: LayerFactory) -> None:
        layer = make_layer()
        if "history" not in layer_capabilities(type(layer)):
            pytest.skip(f"{type(layer).__name__} does not declare the history capability")

    @asynccontextmanager
    async def _channel(self, make_layer: LayerFactory, **options: Any) -> AsyncIterator[Channel]:
        async with Channel(make_layer(), **options) as channel:
            yield channel

    # -- delivery ------------------------------------------------------------------

    async def test_subscriber_receives_what_is_published(self, make_layer: LayerFactory) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("chatroom") as subscriber:
                await channel.publish("chatroom", {"message": "hi"})
                event = await _receive(subscriber)
        assert event == Event("chatroom", {"message": "hi"}, None)

    async def test_json_values_round_trip(self, make_layer: LayerFactory) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("types") as subscriber:
                for message in _ROUND_TRIP_MESSAGES:
                    await channel.publish("types", message)
                received = [(await _receive(subscriber)).message for _ in _ROUND_TRIP_MESSAGES]
        assert received == _ROUND_TRIP_MESSAGES

    async def test_large_message_round_trips(self, make_layer: LayerFactory) -> None:
        layer = make_layer()
        size = min(64 * 1024, (layer.max_payload_bytes or math.inf) - 16)
        message = "x" * int(size)
        async with Channel(layer) as channel, channel.subscribe("large") as subscriber:
            await channel.publish("large", message)
            assert (await _receive(subscriber)).message == message

    async def test_every_subscriber_gets_every_message_in_order(
        self, make_layer: LayerFactory
    ) -> None:
        count = 200
        async with (
            self._channel(make_layer) as channel,
            channel.subscribe("fan") as first,
            channel.subscribe("fan") as second,
            channel.subscribe("fan") as third,
        ):
            for number in range(count):
                await channel.publish("fan", number)
            for subscriber in (first, second, third):
                received = [(await _receive(subscriber)).message for _ in range(count)]
                assert received == list(range(count))

    async def test_each_publisher_order_is_kept(self, make_layer: LayerFactory) -> None:
        count = 100
        async with (
            self._channel(make_layer) as listener,
            self._channel(make_layer) as publisher_a,
            self._channel(make_layer) as publisher_b,
        ):
            async with listener.subscribe("order", buffer_size=4 * count) as subscriber:

                async def run(channel: Channel, name: str) -> None:
                    for number in range(count):
                        await channel.publish("order", [name, number])

                async with anyio.create_task_group() as group:
                    group.start_soon(run, publisher_a, "a")
                    group.start_soon(run, publisher_b, "b")
                received = [(await _receive(subscriber)).message for _ in range(2 * count)]
        for name in ("a", "b"):
            assert [n for who, n in received if who == name] == list(range(count))

    async def test_other_channel_receives_once_subscription_is_entered(
        self, make_layer: LayerFactory
    ) -> None:
        async with self._channel(make_layer) as listener, self._channel(make_layer) as sender:
            for round_number in range(5):
                async with listener.subscribe("live") as subscriber:
                    await sender.publish("live", round_number)
                    assert (await _receive(subscriber)).message == round_number

    async def test_groups_are_isolated(self, make_layer: LayerFactory) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("mine") as subscriber:
                await channel.publish("other", "not for me")
                await channel.publish("mine", "for me")
                assert (await _receive(subscriber)).message == "for me"

    async def test_unusual_group_names_work_and_stay_distinct(
        self, make_layer: LayerFactory
    ) -> None:
        async with self._channel(make_layer) as channel:
            for group in _UNUSUAL_GROUPS:
                async with channel.subscribe(group) as subscriber:
                    for other in _UNUSUAL_GROUPS:
                        if other != group:
                            await channel.publish(other, "wrong group")
                    await channel.publish(group, group)
                    event = await _receive(subscriber)
                    assert (event.group, event.message) == (group, group)

    async def test_one_subscription_over_several_groups(self, make_layer: LayerFactory) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("a", "b", "c", "a") as subscriber:
                for group in ("c", "a", "b", "elsewhere", "a"):
                    await channel.publish(group, f"to {group}")
                received = [await _receive(subscriber) for _ in range(4)]
                await channel.publish("b", "last")
                assert (await _receive(subscriber)).message == "last"
        assert [(e.group, e.message) for e in received] == [
            ("c", "to c"),
            ("a", "to a"),
            ("b", "to b"),
            ("a", "to a"),
        ]

    async def test_overlapping_subscriptions_keep_each_other_alive(
        self, make_layer: LayerFactory
    ) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("shared", "solo") as both:
                async with channel.subscribe("shared") as only_shared:
                    await channel.publish("shared", 1)
                    assert (await _receive(only_shared)).message == 1
                    assert (await _receive(both)).message == 1
                await channel.publish("shared", 2)
                assert (await _receive(both)).message == 2

    # -- patterns -----------------------------------------------------------------------

    async def test_pattern_subscription(self, make_layer: LayerFactory) -> None:
        layer = make_layer()
        async with Channel(layer) as channel:
            if "patterns" not in layer_capabilities(type(layer)):
                with pytest.raises(NotSupportedError, match=type(layer).__name__):
                    channel.subscribe_pattern("chat.*")
                async with channel.subscribe("still-usable") as subscriber:
                    await channel.publish("still-usable", 1)
                    assert (await _receive(subscriber)).message == 1
                return
            async with channel.subscribe_pattern("chat.*", "user.?", "[xy]z") as subscriber:
                for group in ("chat.1", "chatroom", "user.7", "user.42", "yz", "az", "chat."):
                    await channel.publish(group, group)
                received = [await _receive(subscriber) for _ in range(4)]
        assert [(e.group, e.pattern) for e in received] == [
            ("chat.1", "chat.*"),
            ("user.7", "user.?"),
            ("yz", "[xy]z"),
            ("chat.", "chat.*"),
        ]

    async def test_pattern_and_group_subscribers_both_receive(
        self, make_layer: LayerFactory
    ) -> None:
        layer = make_layer()
        if "patterns" not in layer_capabilities(type(layer)):
            # The refused pattern subscription leaves the named one undisturbed.
            async with Channel(layer) as channel, channel.subscribe("news.sport") as by_name:
                with pytest.raises(NotSupportedError):
                    channel.subscribe_pattern("news.*")
                await channel.publish("news.sport", "goal")
                assert await _receive(by_name) == Event("news.sport", "goal", None)
            return
        async with (
            Channel(layer) as channel,
            channel.subscribe_pattern("news.*") as by_pattern,
            channel.subscribe("news.sport") as by_name,
        ):
            await channel.publish("news.sport", "goal")
            assert await _receive(by_pattern) == Event("news.sport", "goal", "news.*")
            assert await _receive(by_name) == Event("news.sport", "goal", None)

    # -- leaving, cancelling, closing -----------------------------------------------------

    async def test_leaving_a_subscription_stops_its_delivery(
        self, make_layer: LayerFactory
    ) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("room") as staying:
                async with channel.subscribe("room") as leaving:
                    pass
                assert leaving.closed
                await channel.publish("room", 1)
                assert (await _receive(staying)).message == 1
                with pytest.raises(ChannelClosedError):
                    await leaving.receive()
            assert channel.stats().subscribers == 0
            async with channel.subscribe("room") as again:
                await channel.publish("room", 2)
                assert (await _receive(again)).message == 2

    async def test_cancelled_subscriber_leaves_nothing_behind(
        self, make_layer: LayerFactory
    ) -> None:
        async with self._channel(make_layer) as channel:
            with anyio.move_on_after(0.2):
                async with channel.subscribe("cancel-me") as subscriber:
                    async for _ in subscriber:
                        pass
            async with anyio.create_task_group() as group:

                async def consume() -> None:
                    async with channel.subscribe("cancel-me", "and-me") as subscriber:
                        async for _ in subscriber:
                            pass

                group.start_soon(consume)
                await anyio.sleep(0.1)
                group.cancel_scope.cancel()
            stats = channel.stats()
            assert (stats.subscribers, stats.groups) == (0, 0)
            async with channel.subscribe("cancel-me") as fresh:
                await channel.publish("cancel-me", "after")
                assert (await _receive(fresh)).message == "after"

    async def test_error_in_subscription_body_unsubscribes(self, make_layer: LayerFactory) -> None:
        async with self._channel(make_layer) as channel:
            with pytest.raises(KeyError):
                async with channel.subscribe("boom"):
                    raise KeyError("body failed")
            assert channel.stats().subscribers == 0
            async with channel.subscribe("boom") as subscriber:
                await channel.publish("boom", "fine")
                assert (await _receive(subscriber)).message == "fine"

    async def test_leaving_the_channel_ends_iteration(self, make_layer: LayerFactory) -> None:
        ended = anyio.Event()
        async with anyio.create_task_group() as group:
            async with self._channel(make_layer) as channel:
                subscribed = anyio.Event()

                async def consume() -> None:
                    async with channel.subscribe("closing") as subscriber:
                        subscribed.set()
                        async for _ in subscriber:
                            pass
                    ended.set()

                group.start_soon(consume)
                with anyio.fail_after(DELIVERY_TIMEOUT):
                    await subscribed.wait()
            with anyio.fail_after(DELIVERY_TIMEOUT):
                await ended.wait()

    async def test_errors_in_the_channel_body_propagate_unchanged(
        self, make_layer: LayerFactory
    ) -> None:
        async def fail_in_body() -> None:
            async with self._channel(make_layer) as channel, channel.subscribe("errors"):
                raise KeyError("from the body")

        with pytest.raises(KeyError, match="from the body"):
            await fail_in_body()
        with anyio.CancelScope() as scope:
            async with self._channel(make_layer) as channel:
                async with channel.subscribe("errors") as subscriber:
                    scope.cancel()
                    await subscriber.receive()
        assert scope.cancelled_caught

    async def test_unopened_and_closed_channels_refuse_use(self, make_layer: LayerFactory) -> None:
        channel = Channel(make_layer())
        with pytest.raises(ChannelClosedError):
            await channel.publish("group", 1)
        with pytest.raises(ChannelClosedError):
            async with channel.subscribe("group"):
                pass
        async with channel:
            await channel.publish("group", 1)
        with pytest.raises(ChannelClosedError):
            await channel.publish("group", 1)
        with pytest.raises(ChannelClosedError):
            async with channel.subscribe("group"):
                pass

    async def test_a_closed_channel_can_be_entered_again(self, make_layer: LayerFactory) -> None:
        """Each entry is a fresh connection; an open channel refuses a second entry."""
        channel = Channel(make_layer())
        for round_number in range(3):
            async with channel:
                with pytest.raises(ChannelInUseError, match="already open"):
                    async with channel:
                        pass
                async with channel.subscribe("group") as subscriber:
                    await channel.publish("group", round_number)
                    assert (await _receive(subscriber)).message == round_number
                assert channel.stats().published == 1  # counters start afresh

    # -- bad input ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("group", "error"),
        [
            (None, TypeError),
            (1, TypeError),
            (b"bytes", TypeError),
            ("", ValueError),
            ("\ud800", ValueError),
        ],
    )
    async def test_bad_group_names_are_refused(
        self, make_layer: LayerFactory, group: Any, error: type[Exception]
    ) -> None:
        async with self._channel(make_layer) as channel:
            with pytest.raises(error, match="group"):
                await channel.publish(group, "x")
            with pytest.raises(error, match="group"):
                channel.subscribe(group)
            with pytest.raises(error, match="group"):
                channel.subscribe("fine", group)
            async with channel.subscribe("fine") as subscriber:
                await channel.publish("fine", "still usable")
                assert (await _receive(subscriber)).message == "still usable"

    async def test_unserializable_message_sends_nothing(self, make_layer: LayerFactory) -> None:
        async with self._channel(make_layer) as channel:
            async with channel.subscribe("codec") as subscriber:
                for bad in (object(), {1, 2}, float("nan"), b"raw bytes"):
                    with pytest.raises(SerializationError):
                        await channel.publish("codec", {"bad": bad})
                await channel.publish("codec", "ok")
                assert (await _receive(subscriber)).message == "ok"
            assert channel.stats().published == 1

    # -- publishing many ---------------------------------------------------------------

    async def test_publish_many_delivers_every_item_in_order(
        self, make_layer: LayerFactory
    ) -> None:
        groups = [f"room-{number}" for number in range(100)] + _UNUSUAL_GROUPS[:3]
        items: list[tuple[str, Any]] = [
            (group, {"to": group, "n": n}) for n, group in enumerate(groups)
        ]
        items += [(groups[0], "again"), (groups[1], "and again")]
        async with self._channel(make_layer) as listener, self._channel(make_layer) as sender:
            async with (
                listener.subscribe(*groups) as everything,
                listener.subscribe(groups[0]) as first,
            ):
                await sender.publish_many(items)
                received = [await _receive(everything) for _ in items]
                first_received = [(await _receive(first)).message for _ in range(2)]
                await sender.publish_many([])  # nothing to send: returns at once
                assert sender.stats().published == len(items)
        # In order within each group (a layer may carry groups on several
        # connections, e.g. Redis Cluster's shards: no order across groups).
        assert _by_group([(event.group, event.message) for event in received]) == _by_group(items)
        assert first_received == [items[0][1], "again"]

    async def test_publish_many_carries_large_messages_in_order(
        self, make_layer: LayerFactory
    ) -> None:
        layer = make_layer()
        size = int(min(64 * 1024, (layer.max_payload_bytes or math.inf) - 16))
        items = [("big", "small 1"), ("big", "x" * size), ("big", "small 2")]
        async with Channel(layer) as channel, channel.subscribe("big") as subscriber:
            await channel.publish_many(items)
            assert await _messages(subscriber, 3) == [message for _, message in items]

    async def test_publish_many_checks_every_item_before_sending(
        self, make_layer: LayerFactory
    ) -> None:
        layer = make_layer()
        good = ("checked", "fine")
        bad_batches: list[tuple[list[Any], type[Exception], str]] = [
            ([good, good, ("checked", object())], SerializationError, "item 2"),
            ([good, (123, "x")], TypeError, "item 1"),
            ([("", "x"), good], ValueError, "item 0"),
            ([good, "not a pair"], TypeError, "item 1"),
        ]
        if layer.max_payload_bytes is not None:
            huge = "x" * (layer.max_payload_bytes + 1)
            bad_batches.append(([good, ("checked", huge)], PayloadTooLargeError, "item 1"))
        async with Channel(layer) as channel, channel.subscribe("checked") as subscriber:
            for batch, error, where in bad_batches:
                with pytest.raises(error, match=where):
                    await channel.publish_many(batch)
            assert channel.stats().published == 0
            await channel.publish_many([("checked", "first sent")])
            assert (await _receive(subscriber)).message == "first sent"

    # -- slow subscribers ---------------------------------------------------------------

    async def test_slow_subscriber_loses_messages_and_is_told(
        self, make_layer: LayerFactory
    ) -> None:
        count = 50
        async with (
            self._channel(make_layer) as channel,
            channel.subscribe("burst", buffer_size=5) as slow,
            channel.subscribe("burst", buffer_size=count) as fast,
        ):
            for number in range(count):
                await channel.publish("burst", number)
            fast_received = [(await _receive(fast)).message for _ in range(count)]
            with pytest.raises(MessagesLost) as lost:
                await _receive(slow)
            tail = [(await _receive(slow)).message for _ in range(5)]
        assert fast_received == list(range(count))
        assert lost.value.reason == "overflow"
        assert lost.value.count == count - 5
        assert tail == list(range(count - 5, count))

    # -- the shared shape -----------------------------------------------------------------

    async def test_stats_is_a_frozen_snapshot_of_the_shared_counters(
        self, make_layer: LayerFactory
    ) -> None:
        layer = make_layer()
        before = _stats_or_skip(layer)
        assert before.connected is False
        async with Channel(layer) as channel, channel.subscribe("stats") as subscriber:
            inside = _stats_or_skip(layer)
            await channel.publish("stats", "counted")
            await _receive(subscriber)
            after = _stats_or_skip(layer)
            with pytest.raises(dataclasses.FrozenInstanceError):
                after.published = 0  # type: ignore[misc]
        for stats in (before, inside, after):
            for name in _SHARED_STATS:
                value = getattr(stats, name)
                if name == "connected":
                    assert type(value) is bool
                else:
                    assert type(value) is int, (name, value)
                    assert value >= 0, (name, value)
            assert stats.connection_losses - stats.reconnects in (0, 1)
        assert inside.connected is True
        assert after.published == inside.published + 1  # and `inside` did not change
        assert after.received >= inside.received + 1
        assert _stats_or_skip(layer).connected is False

    async def test_health_is_checked_against_the_broker(self, make_layer: LayerFactory) -> None:
        """`ChannelLayer.check` answers on a connected layer; `Channel.health` reports it."""
        layer = make_layer()
        async with Channel(layer) as channel, channel.subscribe("health"):
            with anyio.fail_after(10):
                await layer.check(5.0)
                report = await channel.health(timeout=5.0)
            assert report.healthy, report.reason
            assert report.connected
            assert report.subscriptions_live
            assert report.round_trip is not None
        report = await channel.health()
        assert not report.healthy
        assert report.reason == "the channel is closed"

    async def test_bad_options_are_refused_naming_the_option(
        self, make_layer: LayerFactory, layer_url: str | None, bad_options: BadOptions
    ) -> None:
        if layer_url is None:
            pytest.skip("no layer_url fixture: the option checks need a URL for from_url")
        layer_class = type(make_layer())
        for options, error in bad_options:
            name = next(iter(options))
            with pytest.raises(error, match=re.escape(name)):
                layer_class.from_url(layer_url, **options)
        layer_class.from_url(layer_url)  # and the URL itself is fine

    async def test_secrets_in_the_url_never_show(
        self,
        make_layer: LayerFactory,
        secret_url: str | None,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        if secret_url is None:
            pytest.skip("no secret_url fixture: nothing to check redaction with")
        secrets = url_secrets(secret_url)
        assert secrets, f"secret_url carries no secret to check: {secret_url!r}"
        caplog.set_level(logging.DEBUG)
        layer = type(make_layer()).from_url(secret_url)
        shown = [repr(layer), str(layer)]
        try:
            with anyio.fail_after(3 * DELIVERY_TIMEOUT):
                async with Channel(layer) as channel:
                    shown += [repr(channel), str(channel)]
                    with contextlib.suppress(NotSupportedError):
                        shown.append(repr(layer.stats()))
        except ChannelsError as error:  # a failed connect is a ChannelsError too
            shown += _error_texts(error)
        shown += [record.getMessage() for record in caplog.records]
        shown += [record.exc_text or "" for record in caplog.records]
        for secret in secrets:
            leaks = [text for text in shown if secret in text]
            assert not leaks, f"a secret from secret_url shows in: {leaks}"

    # -- history ----------------------------------------------------------------------

    async def test_history_is_refused_without_the_capability_or_when_off(
        self, make_layer: LayerFactory, layer_url: str | None
    ) -> None:
        layer = make_layer()
        name = type(layer).__name__
        declared = "history" in layer_capabilities(type(layer))
        if not declared and layer_url is not None:
            with pytest.raises(NotSupportedError, match=name):
                Channel.from_url(layer_url, history_size=10)
        async with Channel(layer) as channel:
            if declared and layer.keeps_history:
                pytest.skip("make_layer builds layers with history on")
            with pytest.raises(NotSupportedError, match=name):
                channel.subscribe("group", since="e-1")
            with pytest.raises(NotSupportedError, match=name):
                await channel.history("group")
            async with channel.subscribe("group") as subscriber:
                await channel.publish("group", "no history")
                event = await _receive(subscriber)
        assert event == Event("group", "no history", None, None)

    async def test_history_events_carry_ordered_positions(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        group = _unique("positions")
        async with Channel(make_history_layer(history_size=100)) as channel:
            assert "history" in channel.capabilities
            async with channel.subscribe(group) as subscriber:
                for number in range(5):
                    await channel.publish(group, number)
                live = [await _receive(subscriber) for _ in range(5)]
            stored = await channel.history(group)
        assert [event.message for event in live] == list(range(5))
        assert all(isinstance(event.position, str) for event in live)
        assert len({event.position for event in live}) == 5
        assert stored == live

    async def test_publish_many_and_concurrent_publishes_are_logged_like_publish(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        group = _unique("logged-many")
        async with Channel(make_history_layer(history_size=100)) as channel:
            async with channel.subscribe(group) as subscriber:
                await channel.publish_many([(group, number) for number in range(3)])
                async with anyio.create_task_group() as tasks:
                    for number in range(3, 6):
                        tasks.start_soon(channel.publish, group, number)
                live = [await _receive(subscriber) for _ in range(6)]
            stored = await channel.history(group)
        assert [event.message for event in live[:3]] == [0, 1, 2]
        assert sorted(event.message for event in live) == list(range(6))
        assert len({event.position for event in live}) == 6
        assert stored == live

    async def test_since_replays_from_the_start_middle_and_end(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        group = _unique("since")
        async with (
            Channel(make_history_layer(history_size=100)) as channel,
            Channel(make_history_layer(history_size=100)) as publisher,
        ):
            for number in range(10):
                await publisher.publish(group, number)
            stored = await channel.history(group)
            assert [event.message for event in stored] == list(range(10))
            logged = list(range(10))
            for start, live in ((0, 100), (4, 101), (9, 102)):
                expected = logged[start + 1 :]
                async with channel.subscribe(group, since=stored[start].position) as subscriber:
                    replayed = await _messages(subscriber, len(expected))
                    await publisher.publish(group, live)
                    assert (await _receive(subscriber)).message == live
                assert replayed == expected
                logged.append(live)
            # Past the end of the log: a position newer than anything stored since.
            newest = (await channel.history(group, limit=1))[0]
            async with channel.subscribe(group, since=newest.position) as subscriber:
                await publisher.publish(group, "only this")
                assert (await _receive(subscriber)).message == "only this"

    async def test_since_hands_over_to_live_without_gap_or_duplicate(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        """A publisher runs flat out while subscribers join with since= at different points."""
        self._history_or_skip(make_layer)
        group, count = _unique("handover"), 600
        async with (
            Channel(make_history_layer(history_size=count)) as channel,
            Channel(make_history_layer(history_size=count)) as publisher,
        ):
            async with channel.subscribe(group) as watcher:
                await publisher.publish(group, -1)
                origin = await _receive(watcher)

                async def publish_all() -> None:
                    for number in range(count):
                        await publisher.publish(group, number)
                        if number % 25 == 0:
                            await anyio.lowlevel.checkpoint()

                async def join_at(wait_for: int) -> list[Any]:
                    while (await _receive(watcher)).message < wait_for:
                        pass
                    async with channel.subscribe(
                        group, since=origin.position, buffer_size=2 * count
                    ) as subscriber:
                        return await _messages(subscriber, count)

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(publish_all)
                    received = await join_at(count // 3)
        assert received == list(range(count))

    async def test_since_for_several_groups(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        first, second, third = _unique("a"), _unique("b"), _unique("c")
        async with Channel(make_history_layer(history_size=10)) as channel:
            for number in range(3):
                await channel.publish(first, f"a{number}")
                await channel.publish(second, f"b{number}")
            a0 = (await channel.history(first))[0].position
            b1 = (await channel.history(second))[1].position
            assert a0 is not None
            assert b1 is not None
            with pytest.raises(ValueError, match="since"):
                channel.subscribe(first, second, since=a0)
            with pytest.raises(ValueError, match="does not include"):
                channel.subscribe(first, since={third: a0})
            async with channel.subscribe(
                first, second, third, since={first: a0, second: b1}
            ) as subscriber:
                replayed = await _messages(subscriber, 3)
                await channel.publish(third, "c-live")
                assert (await _receive(subscriber)).message == "c-live"
        assert sorted(replayed) == ["a1", "a2", "b2"]

    async def test_history_is_trimmed_by_size_and_an_old_position_expires(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        group = _unique("trimmed")
        async with Channel(make_history_layer(history_size=5)) as channel:
            await channel.publish(group, 0)
            (first,) = await channel.history(group)
            for number in range(1, 12):
                await channel.publish(group, number)
            assert [event.message for event in await channel.history(group)] == list(range(7, 12))
            with pytest.raises(MessagesLost) as lost:
                await channel.history(group, since=first.position)
            assert lost.value.reason == "expired"
            async with channel.subscribe(group, since=first.position) as subscriber:
                with pytest.raises(MessagesLost) as lost:
                    await _receive(subscriber)
                assert lost.value.reason == "expired"
                assert await _messages(subscriber, 5) == list(range(7, 12))
                await channel.publish(group, "live")
                assert (await _receive(subscriber)).message == "live"

    async def test_history_is_trimmed_by_ttl(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        group, ttl = _unique("ttl"), 0.5
        async with Channel(make_history_layer(history_size=100, history_ttl=ttl)) as channel:
            for number in range(3):
                await channel.publish(group, number)
            first = (await channel.history(group))[0]
            await anyio.sleep(2 * ttl)  # the TTL itself is what is tested
            await channel.publish(group, "fresh")
            assert [event.message for event in await channel.history(group)] == ["fresh"]
            async with channel.subscribe(group, since=first.position) as subscriber:
                with pytest.raises(MessagesLost) as lost:
                    await _receive(subscriber)
                assert lost.value.reason == "expired"
                assert (await _receive(subscriber)).message == "fresh"

    async def test_history_limits(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        group = _unique("limits")
        async with Channel(make_history_layer(history_size=100)) as channel:
            assert await channel.history(group) == []
            for number in range(10):
                await channel.publish(group, number)
            everything = await channel.history(group)
            assert [event.message for event in everything] == list(range(10))
            assert await channel.history(group, limit=3) == everything[-3:]
            assert await channel.history(group, limit=0) == []
            assert await channel.history(group, limit=50) == everything
            after = everything[2].position
            assert await channel.history(group, limit=3, since=after) == everything[3:6]
            assert await channel.history(group, since=everything[-1].position) == []
            with pytest.raises(ValueError, match="limit"):
                await channel.history(group, limit=-1)
            with pytest.raises(TypeError, match="limit"):
                await channel.history(group, limit="3")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="since"):
                await channel.history(group, since="not a position")
            with pytest.raises(ValueError, match="since"):
                channel.subscribe(group, since="")

    async def test_a_position_of_another_log_expires(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        """A position the log never had (another epoch: a broker that lost its data)."""
        self._history_or_skip(make_layer)
        group = _unique("epoch")
        async with Channel(make_history_layer(history_size=10)) as channel:
            await channel.publish(group, "kept")
            async with channel.subscribe(group, since="otherepoch0-5") as subscriber:
                with pytest.raises(MessagesLost) as lost:
                    await _receive(subscriber)
                assert lost.value.reason == "expired"
                assert (await _receive(subscriber)).message == "kept"

    async def test_unusual_group_names_keep_working_with_history(
        self, make_layer: LayerFactory, make_history_layer: HistoryLayerFactory
    ) -> None:
        self._history_or_skip(make_layer)
        suffix = uuid.uuid4().hex[:8]
        groups = [f"{group}{suffix}" for group in _UNUSUAL_GROUPS]
        async with Channel(make_history_layer(history_size=10)) as channel:
            for group in groups:
                await channel.publish(group, [group, 1])
                await channel.publish(group, [group, 2])
            for group in groups:
                stored = await channel.history(group)
                assert [(e.group, e.message) for e in stored] == [
                    (group, [group, 1]),
                    (group, [group, 2]),
                ]
                async with channel.subscribe(group, since=stored[0].position) as subscriber:
                    assert (await _receive(subscriber)).message == [group, 2]


def _by_group(items: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    """Each group's messages, in the order given."""
    grouped: dict[str, list[Any]] = {}
    for group, message in items:
        grouped.setdefault(group, []).append(message)
    return grouped
