"""`HandOn`: deliveries read with a call's answer go on right after the caller, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from channels_core._coalesce import CoalescingPublisher
from channels_core.hand_on import HandOn
from channels_core.testing import handed_on

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


async def test_deliveries_of_a_read_that_answered_no_call_go_on_at_once() -> None:
    got: list[list[str]] = []
    hand_on: HandOn[str] = HandOn(got.append)
    hand_on.hold("a")
    hand_on.hold("b")
    hand_on.release(answered=False)
    assert got == [["a", "b"]]
    hand_on.release(answered=False)  # nothing held: nothing handed on
    assert got == [["a", "b"]]


async def test_deliveries_read_with_an_answer_go_on_after_the_caller_has_resumed() -> None:
    events: list[str] = []
    hand_on: HandOn[str] = HandOn(events.extend)
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def caller() -> None:
        await answer
        events.append("caller resumed")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(caller)
        await anyio.lowlevel.checkpoint()  # the caller waits for its answer
        # One read: the caller's own message, then the answer to its call.
        hand_on.hold("own message")
        answer.set_result(None)
        hand_on.release(answered=True)
        hand_on.hold("next read's message")  # a later read, before the hand-on ran
        hand_on.release(answered=False)  # the scheduled hand-on takes it, in order
        assert events == []
    assert events == ["caller resumed", "own message", "next read's message"]


async def test_deliveries_go_on_after_the_callers_a_relay_wakes_and_their_next_write() -> None:
    # Coalesced publishers are woken by the channel's sender task, which their
    # batch's answer wakes: their messages must wait until they have published
    # again and the sender has written the next batch.
    events: list[str] = []
    hand_on: HandOn[str] = HandOn(events.extend)
    answers: list[asyncio.Future[None]] = []

    async def send(what: str) -> None:
        events.append(f"sent {what}")
        answers.append(asyncio.get_running_loop().create_future())
        await answers[-1]

    async def publish(group: str, payload: bytes) -> None:
        await send(payload.decode())

    async def publish_many(items: Sequence[tuple[str, bytes]]) -> None:
        await send(",".join(payload.decode() for _, payload in items))

    coalescer = CoalescingPublisher(publish, publish_many)

    async def publisher(name: str) -> None:
        await coalescer.publish("g", f"{name}1".encode())
        events.append(f"{name} answered")
        await coalescer.publish("g", f"{name}2".encode())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(coalescer.run)
        for name in "ABC":
            tasks.start_soon(publisher, name)
        await anyio.wait_all_tasks_blocked()
        assert events == ["sent A1", "sent B1,C1"]  # A alone, then B and C as a batch
        # One read: the batch's messages, then its answer.
        hand_on.hold("B1 delivered")
        hand_on.hold("C1 delivered")
        answers[1].set_result(None)
        hand_on.release(answered=True)
        await anyio.wait_all_tasks_blocked()
        tasks.cancel_scope.cancel()
    assert events[2:] == [
        "B answered",
        "C answered",
        "sent B2,C2",
        "B1 delivered",
        "C1 delivered",
    ]


async def test_a_flush_hands_on_at_once_and_the_scheduled_hand_on_finds_nothing() -> None:
    got: list[list[str]] = []
    hand_on: HandOn[str] = HandOn(got.append)
    hand_on.hold("before the loss")
    hand_on.release(answered=True)
    hand_on.flush()  # e.g. the connection was lost: what came before goes first
    assert got == [["before the loss"]]
    await handed_on()
    assert got == [["before the loss"]]


async def test_a_failing_scheduled_hand_on_reports_to_on_error() -> None:
    errors: list[Exception] = []

    def deliver(held: list[str]) -> None:
        raise RuntimeError(f"cannot deliver {held}")

    hand_on: HandOn[str] = HandOn(deliver, errors.append)
    hand_on.hold("x")
    hand_on.release(answered=True)
    await anyio.lowlevel.checkpoint()  # no relay under way: one turn, no more
    assert [str(error) for error in errors] == ["cannot deliver ['x']"]
    hand_on.hold("y")
    with pytest.raises(RuntimeError):  # called directly, the error is the caller's
        hand_on.flush()
