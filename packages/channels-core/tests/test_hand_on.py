"""`HandOn`: deliveries read with a call's answer go on right after the caller, in order."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from channels_core.hand_on import HandOn

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


async def test_a_flush_hands_on_at_once_and_the_scheduled_hand_on_finds_nothing() -> None:
    got: list[list[str]] = []
    hand_on: HandOn[str] = HandOn(got.append)
    hand_on.hold("before the loss")
    hand_on.release(answered=True)
    hand_on.flush()  # e.g. the connection was lost: what came before goes first
    assert got == [["before the loss"]]
    await anyio.lowlevel.checkpoint()
    assert got == [["before the loss"]]


async def test_a_failing_scheduled_hand_on_reports_to_on_error() -> None:
    errors: list[Exception] = []

    def deliver(held: list[str]) -> None:
        raise RuntimeError(f"cannot deliver {held}")

    hand_on: HandOn[str] = HandOn(deliver, errors.append)
    hand_on.hold("x")
    hand_on.release(answered=True)
    await anyio.lowlevel.checkpoint()
    assert [str(error) for error in errors] == ["cannot deliver ['x']"]
    hand_on.hold("y")
    with pytest.raises(RuntimeError):  # called directly, the error is the caller's
        hand_on.flush()
