"""Concurrent subscribes and leaves: no channel-wide queue, and the broker order per name holds.

The layer is the memory layer with broker calls the test can hold and fail;
it records every call and flags two calls for one name at once. Tasks are
stepped with `wait_all_tasks_blocked`, so each race is replayed exactly.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskGroup

from channels_core import BrokerUnavailableError, Channel, ChannelClosedError, Subscriber
from channels_core.layers.local_memory import InMemoryChannelLayer

pytestmark = pytest.mark.anyio

Call = tuple[str, str]  # ("subscribe" or "unsubscribe", name)


class GatedLayer(InMemoryChannelLayer):
    """The memory layer; a test can hold or fail its broker calls, and check their order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []  # in the order they started
        self.overlaps: list[str] = []  # names with two calls at once
        self.subscribed: set[str] = set()  # confirmed and not unsubscribed since
        self.failing: dict[str, Exception] = {}  # name -> what its subscribe raises
        self.rng: random.Random | None = None  # random delays and failures if set
        self._held: dict[Call, anyio.Event] = {}
        self._busy: set[str] = set()

    def hold(self, kind: str, name: str) -> anyio.Event:
        """Hold every `kind` call of `name` until the returned event is set."""
        event = self._held[kind, name] = anyio.Event()
        return event

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        await self._call("subscribe", groups, super().subscribe_groups)

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        await self._call("unsubscribe", groups, super().unsubscribe_groups)

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        await self._call("subscribe", patterns, super().subscribe_patterns)

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        await self._call("unsubscribe", patterns, super().unsubscribe_patterns)

    async def _call(
        self, kind: str, names: Sequence[str], call: Callable[[Sequence[str]], Awaitable[None]]
    ) -> None:
        self.overlaps += [name for name in names if name in self._busy]
        self._busy.update(names)
        self.calls += [(kind, name) for name in names]
        if kind == "unsubscribe":
            self.subscribed.difference_update(names)
        try:
            for name in names:
                if (held := self._held.get((kind, name))) is not None:
                    await held.wait()
            if self.rng is not None:
                for _ in range(self.rng.randint(0, 3)):
                    await anyio.lowlevel.checkpoint()
                if kind == "subscribe" and self.rng.random() < 0.1:
                    raise BrokerUnavailableError("the broker went away")
            for name in names:
                if kind == "subscribe" and name in self.failing:
                    raise self.failing[name]
            await call(names)
            if kind == "subscribe":
                self.subscribed.update(names)
        finally:
            self._busy.difference_update(names)

    def check_order(self) -> None:
        """Per name: never two calls at once, subscribe and unsubscribe alternating."""
        assert self.overlaps == []
        last: dict[str, str] = {}
        for kind, name in self.calls:
            assert last.get(name, "unsubscribe") != kind, (name, self.calls)
            last[name] = kind


async def receives(channel: Channel, subscriber: Subscriber, group: str) -> bool:
    """Whether a message published to `group` now reaches `subscriber`."""
    await channel.publish(group, "probe")
    with anyio.move_on_after(1):
        message: object = (await subscriber.receive()).message
        return message == "probe"
    return False


async def hold_open(
    channel: Channel,
    name: str,
    tasks: TaskGroup,
    *,
    entered: list[str] | None = None,
    errors: list[BaseException] | None = None,
) -> anyio.Event:
    """Subscribe to `name` in a task; the block stays open until the returned event is set."""
    leave = anyio.Event()

    async def subscriber() -> None:
        try:
            async with channel.subscribe(name):
                if entered is not None:
                    entered.append(name)
                await leave.wait()
        except BrokerUnavailableError as exc:
            assert errors is not None
            errors.append(exc)

    tasks.start_soon(subscriber)
    return leave


async def test_a_stuck_subscribe_holds_up_neither_other_groups_nor_leaving() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        release = layer.hold("subscribe", "stuck")
        entered: list[str] = []
        async with channel.subscribe("kept"):
            await hold_open(channel, "stuck", tasks, entered=entered)
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(5):  # would never end if either waited for "stuck"
                async with channel.subscribe("free") as free:
                    assert await receives(channel, free, "free")
        assert layer.calls[-1] == ("unsubscribe", "kept")  # left while "stuck" was held
        assert entered == []
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert entered == ["stuck"]
        tasks.cancel_scope.cancel()
    layer.check_order()


async def test_concurrent_subscribes_of_one_group_share_one_broker_subscribe() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        release = layer.hold("subscribe", "g")
        entered: list[str] = []
        leaves = [await hold_open(channel, "g", tasks, entered=entered) for _ in range(3)]
        await anyio.wait_all_tasks_blocked()
        assert layer.calls == [("subscribe", "g")]
        assert entered == []  # nobody's block starts before the broker confirmed
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert entered == ["g"] * 3
        assert layer.subscribed == {"g"}
        for leave in leaves:
            leave.set()
    assert layer.calls == [("subscribe", "g"), ("unsubscribe", "g")]
    assert channel.stats().groups == 0


async def test_a_failed_subscribe_fails_every_subscriber_waiting_for_it() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel:
        release = layer.hold("subscribe", "g")
        failure = layer.failing["g"] = BrokerUnavailableError("timed out")
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tasks:
            for _ in range(2):
                await hold_open(channel, "g", tasks, errors=errors)
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert errors == [failure, failure]  # after one broker call, not one each
        assert layer.calls == [("subscribe", "g"), ("unsubscribe", "g")]
        assert channel.stats().subscribers == 0
        del layer.failing["g"]
        async with channel.subscribe("g") as subscriber:
            assert await receives(channel, subscriber, "g")
    layer.check_order()


async def test_a_cancelled_subscribe_is_taken_over_by_the_one_waiting_for_it() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        release = layer.hold("subscribe", "g")
        first = anyio.CancelScope()
        tasks.start_soon(channel_subscribe_forever, channel, "g", first)
        await anyio.wait_all_tasks_blocked()  # its subscribe is the one in flight
        entered: list[str] = []
        leave = await hold_open(channel, "g", tasks, entered=entered)
        await anyio.wait_all_tasks_blocked()
        first.cancel()  # the subscribe that the second one waits for
        await anyio.wait_all_tasks_blocked()
        # Cleaned up, then subscribed again by the second subscriber (still held).
        assert layer.calls == [("subscribe", "g"), ("unsubscribe", "g"), ("subscribe", "g")]
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert entered == ["g"]
        assert layer.subscribed == {"g"}
        leave.set()
    layer.check_order()
    assert layer.subscribed == set()


async def channel_subscribe_forever(channel: Channel, name: str, scope: anyio.CancelScope) -> None:
    with scope:
        async with channel.subscribe(name):
            await anyio.sleep_forever()


async def test_cancelling_a_subscriber_that_waits_leaves_the_other_one_alone() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        release = layer.hold("subscribe", "g")
        entered: list[str] = []
        leave = await hold_open(channel, "g", tasks, entered=entered)
        await anyio.wait_all_tasks_blocked()
        second = anyio.CancelScope()
        tasks.start_soon(channel_subscribe_forever, channel, "g", second)
        await anyio.wait_all_tasks_blocked()
        second.cancel()
        await anyio.wait_all_tasks_blocked()
        assert channel.stats().subscribers == 1
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert entered == ["g"]
        assert layer.calls == [("subscribe", "g")]
        leave.set()
    layer.check_order()


async def test_subscribing_again_while_the_last_leave_is_unsubscribing_waits_for_it() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        release = layer.hold("unsubscribe", "g")
        leave = await hold_open(channel, "g", tasks)
        await anyio.wait_all_tasks_blocked()
        leave.set()  # its unsubscribe is held
        entered: list[str] = []
        leave = await hold_open(channel, "g", tasks, entered=entered)
        await anyio.wait_all_tasks_blocked()
        assert layer.calls == [("subscribe", "g"), ("unsubscribe", "g")]
        assert entered == []
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert layer.calls[2:] == [("subscribe", "g")]
        assert entered == ["g"]
        assert layer.subscribed == {"g"}
        leave.set()
    layer.check_order()


async def test_a_subscriber_of_several_groups_waits_only_for_the_ones_in_flight() -> None:
    layer = GatedLayer()
    async with Channel(layer) as channel, anyio.create_task_group() as tasks:
        release = layer.hold("subscribe", "shared")
        await hold_open(channel, "shared", tasks)
        await anyio.wait_all_tasks_blocked()
        entered = anyio.Event()

        async def both() -> None:
            async with channel.subscribe("own", "shared") as subscriber:
                entered.set()
                assert await receives(channel, subscriber, "own")

        tasks.start_soon(both)
        await anyio.wait_all_tasks_blocked()
        assert layer.calls == [("subscribe", "shared"), ("subscribe", "own")]
        assert not entered.is_set()
        release.set()
        with anyio.fail_after(5):
            await entered.wait()
        tasks.cancel_scope.cancel()
    layer.check_order()


async def test_an_unsubscribe_that_hangs_is_abandoned_after_unsubscribe_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = GatedLayer()
    async with Channel(layer, unsubscribe_timeout=0.2) as channel:
        layer.hold("unsubscribe", "g")
        with caplog.at_level(logging.WARNING, logger="channels_core"), anyio.fail_after(5):
            async with channel.subscribe("g"):
                pass
        assert "could not unsubscribe ['g'] from the broker" in caplog.text
        async with channel.subscribe("g") as subscriber:  # not held up by the abandoned one
            assert await receives(channel, subscriber, "g")
    layer.check_order()


async def test_subscribes_in_flight_when_the_channel_closes_end_with_channel_closed() -> None:
    layer = GatedLayer()
    ended: list[str] = []

    async def subscribe(channel: Channel) -> None:
        with pytest.raises(ChannelClosedError):
            async with channel.subscribe("g"):
                pytest.fail("subscribed on a closed channel")
        ended.append("g")

    async with anyio.create_task_group() as tasks:
        async with Channel(layer) as channel:
            release = layer.hold("subscribe", "g")
            for _ in range(2):  # one issues the subscribe, the other waits for it
                tasks.start_soon(subscribe, channel)
            await anyio.wait_all_tasks_blocked()
        release.set()
    assert ended == ["g", "g"]
    assert channel.stats().subscribers == 0


@pytest.mark.parametrize("seed", range(4))
async def test_random_subscribes_leaves_failures_and_cancellations_keep_the_broker_in_step(
    seed: int,
) -> None:
    """Many tasks over a few names, each call delayed at random, some failing or cancelled."""
    rng = random.Random(seed)
    layer = GatedLayer()
    layer.rng = rng
    names = ["a", "b", "c", "a*"]
    outcomes = {"live": 0, "failed": 0, "cancelled": 0}
    async with Channel(layer) as channel:

        async def cancel_later(scope: anyio.CancelScope, steps: int) -> None:
            for _ in range(steps):
                await anyio.lowlevel.checkpoint()
            scope.cancel()

        async def worker(tasks: TaskGroup) -> None:
            for _ in range(60):
                picked = rng.sample(names, rng.randint(1, 2))
                patterns = [name for name in picked if name.endswith("*")]
                subscription = (
                    channel.subscribe_pattern(*patterns) if patterns else channel.subscribe(*picked)
                )
                with anyio.CancelScope() as scope:
                    if rng.random() < 0.3:
                        tasks.start_soon(cancel_later, scope, rng.randint(0, 8))
                    try:
                        async with subscription as subscriber:
                            outcomes["live"] += 1
                            # Live means subscribed at the broker, now.
                            assert set(subscriber.groups + subscriber.patterns) <= layer.subscribed
                            for _ in range(rng.randint(0, 3)):
                                await anyio.lowlevel.checkpoint()
                    except BrokerUnavailableError:
                        outcomes["failed"] += 1
                if scope.cancelled_caught:
                    outcomes["cancelled"] += 1

        async with anyio.create_task_group() as tasks:
            for _ in range(6):
                tasks.start_soon(worker, tasks)
        layer.check_order()
        assert layer.subscribed == set()
        assert channel.stats().subscribers == channel.stats().groups == 0
    assert min(outcomes.values()) > 0, outcomes
