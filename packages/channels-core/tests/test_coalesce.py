"""Coalesced publishing: concurrent publishes share `publish_many`, answers stay per call.

The layer here is the memory layer with coalescing turned on and a gate in
front of the "broker": a publish or batch waits until the test opens it,
so the tests decide exactly what is in flight when. Every wait is bounded:
a hang fails the test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc
import pytest

from channels_core import BrokerUnavailableError, Channel, ChannelClosedError
from channels_core._coalesce import MAX_BATCH
from channels_core.layers.local_memory import InMemoryChannelLayer

pytestmark = pytest.mark.anyio

PATIENCE = 5.0


class GatedLayer(InMemoryChannelLayer):
    """Publishes wait at a gate; `fail_next_batch` makes the next batch fail at the broker."""

    @property
    def coalesce_publishes(self) -> bool:
        return True

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.singles: list[Any] = []
        self.batches: list[list[bytes]] = []
        self.fail_next_batch = False

    async def publish(self, group: str, payload: bytes) -> None:
        self.singles.append(payload)
        await self.gate.wait()
        await super().publish(group, payload)

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.batches.append([payload for _, payload in items])
        await self.gate.wait()
        if self.fail_next_batch:
            self.fail_next_batch = False
            raise BrokerUnavailableError("the broker went away mid-batch")
        await super().publish_many(items)


async def _publish(channel: Channel, message: Any, outcomes: dict[Any, str]) -> None:
    try:
        await channel.publish("g", message)
    except anyio.get_cancelled_exc_class():
        outcomes[message] = "cancelled"
        raise
    except Exception as exc:
        outcomes[message] = type(exc).__name__
    else:
        outcomes[message] = "sent"


async def test_concurrent_publishes_share_one_batch_and_each_returns_when_sent() -> None:
    layer = GatedLayer()
    outcomes: dict[Any, str] = {}
    with anyio.fail_after(PATIENCE):
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            async with anyio.create_task_group() as tasks:
                await _start(tasks, channel, ["first"], outcomes)
                # Started together, they join one open batch before the sender takes it.
                await _start(tasks, channel, ["b", "c", "d"], outcomes)
                assert outcomes == {}  # nobody is told "sent" before the broker took it
                layer.gate.set()
            received = [(await subscriber.receive()).message for _ in range(4)]
    assert layer.singles == [b'"first"']  # nothing in flight: straight to the layer
    # The rest: one round trip (in the order they came, which trio randomizes).
    assert [sorted(batch) for batch in layer.batches] == [[b'"b"', b'"c"', b'"d"']]
    assert outcomes == dict.fromkeys(("first", "b", "c", "d"), "sent")
    assert sorted(received) == ["b", "c", "d", "first"]
    assert channel.stats().published == 4


async def test_a_publish_cancelled_while_waiting_for_its_batch_is_never_sent() -> None:
    layer = GatedLayer()
    outcomes: dict[Any, str] = {}
    with anyio.fail_after(PATIENCE):
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            async with anyio.create_task_group() as tasks:
                await _start(tasks, channel, ["first"], outcomes)
                await _start(tasks, channel, ["b"], outcomes)  # a batch on the wire
                # The next batch fills up meanwhile; c leaves it before it is sent.
                withdrawn = anyio.CancelScope()
                tasks.start_soon(_cancellable, channel, "c", outcomes, withdrawn)
                tasks.start_soon(_publish, channel, "d", outcomes)
                await anyio.wait_all_tasks_blocked()
                assert layer.batches == [[b'"b"']]
                withdrawn.cancel()
                await anyio.wait_all_tasks_blocked()
                layer.gate.set()
            received = [(await subscriber.receive()).message for _ in range(3)]
            await channel.publish("g", "last")
            assert (await subscriber.receive()).message == "last"
    assert outcomes == {"first": "sent", "b": "sent", "c": "cancelled", "d": "sent"}
    assert layer.batches == [[b'"b"'], [b'"d"']]
    assert sorted(received) == ["b", "d", "first"]


async def test_a_publish_cancelled_with_its_batch_on_the_wire_leaves_the_others_answered() -> None:
    layer = GatedLayer()
    outcomes: dict[Any, str] = {}
    with anyio.fail_after(PATIENCE):
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            async with anyio.create_task_group() as tasks:
                await _start(tasks, channel, ["first"], outcomes)
                scope = anyio.CancelScope()
                tasks.start_soon(_publish, channel, "b", outcomes)
                tasks.start_soon(_cancellable, channel, "c", outcomes, scope)
                await anyio.wait_all_tasks_blocked()
                # On the wire, waiting at the gate:
                assert [sorted(batch) for batch in layer.batches] == [[b'"b"', b'"c"']]
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                layer.gate.set()
            # Like a cancelled publish whose command had left: it may have been sent.
            received = [(await subscriber.receive()).message for _ in range(3)]
    assert outcomes == {"first": "sent", "b": "sent", "c": "cancelled"}
    assert sorted(received) == ["b", "c", "first"]


async def test_a_failed_batch_fails_each_of_its_publishes_and_the_next_ones_go_on() -> None:
    layer = GatedLayer()
    layer.fail_next_batch = True
    outcomes: dict[Any, str] = {}
    with anyio.fail_after(PATIENCE):
        async with Channel(layer) as channel, channel.subscribe("g") as subscriber:
            async with anyio.create_task_group() as tasks:
                await _start(tasks, channel, ["first"], outcomes)
                await _start(tasks, channel, ["b", "c"], outcomes)
                layer.gate.set()
            assert (await subscriber.receive()).message == "first"
            await channel.publish("g", "after")
            assert (await subscriber.receive()).message == "after"
            assert channel.stats().published == 2
    assert outcomes == {
        "first": "sent",
        "b": "BrokerUnavailableError",
        "c": "BrokerUnavailableError",
    }


async def test_leaving_the_channel_answers_every_waiting_publish() -> None:
    layer = GatedLayer()
    outcomes: dict[Any, str] = {}
    with anyio.fail_after(PATIENCE):
        async with anyio.create_task_group() as tasks:
            async with Channel(layer) as channel:
                await _start(tasks, channel, ["first"], outcomes)
                await _start(tasks, channel, ["b", "c"], outcomes)
                assert [sorted(batch) for batch in layer.batches] == [[b'"b"', b'"c"']]
                tasks.start_soon(_publish, channel, "d", outcomes)  # in the next batch
                await anyio.wait_all_tasks_blocked()
            assert outcomes["b"] == outcomes["c"] == outcomes["d"] == "ChannelClosedError"
            layer.gate.set()  # the lone publish in flight then finds the layer gone
    assert outcomes["first"] == "ChannelClosedError"
    with pytest.raises(ChannelClosedError):
        await channel.publish("g", "closed")


async def test_a_sequential_publisher_never_batches() -> None:
    layer = GatedLayer()
    layer.gate.set()
    async with Channel(layer) as channel:
        for number in range(50):
            await channel.publish("g", number)
    assert (len(layer.singles), layer.batches) == (50, [])


async def test_more_publishes_than_one_batch_holds_all_get_their_answer() -> None:
    """A full batch is followed by another; neither is dropped (their callers would hang)."""
    layer = GatedLayer()
    outcomes: dict[Any, str] = {}
    count = MAX_BATCH * 2 + 5
    with anyio.fail_after(PATIENCE):
        async with Channel(layer, buffer_size=count + 1) as channel:
            async with channel.subscribe("g") as subscriber, anyio.create_task_group() as tasks:
                await _start(tasks, channel, ["first"], outcomes)
                await _start(tasks, channel, list(range(count)), outcomes)
                layer.gate.set()
            received = [(await subscriber.receive()).message for _ in range(count + 1)]
    assert set(outcomes.values()) == {"sent"}
    assert len(outcomes) == count + 1
    assert sorted(message for message in received if message != "first") == list(range(count))
    assert [len(batch) for batch in layer.batches] == [MAX_BATCH, MAX_BATCH, 5]


async def test_each_publisher_s_messages_arrive_in_its_order_across_batches() -> None:
    layer = GatedLayer()
    layer.gate.set()
    publishers, each = 10, 50
    with anyio.fail_after(PATIENCE):
        async with Channel(layer, buffer_size=publishers * each) as channel:
            async with channel.subscribe("g") as subscriber, anyio.create_task_group() as tasks:

                async def publish(publisher: int) -> None:
                    for number in range(each):
                        await channel.publish("g", [publisher, number])

                for publisher in range(publishers):
                    tasks.start_soon(publish, publisher)
            received = [(await subscriber.receive()).message for _ in range(publishers * each)]
    assert len(layer.batches) > 1  # they did share round trips
    for publisher in range(publishers):
        numbers = [number for sender, number in received if sender == publisher]
        assert numbers == list(range(each))


async def _start(
    tasks: anyio.abc.TaskGroup, channel: Channel, messages: list[Any], outcomes: dict[Any, str]
) -> None:
    """Start a publish of each message in the same tick; return once all of them wait."""
    for message in messages:
        tasks.start_soon(_publish, channel, message, outcomes)
    await anyio.wait_all_tasks_blocked()


async def _cancellable(
    channel: Channel, message: Any, outcomes: dict[Any, str], scope: anyio.CancelScope
) -> None:
    with scope:
        await _publish(channel, message, outcomes)
