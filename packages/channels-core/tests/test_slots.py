"""`Slots`, the publishing connections' slots shared by the network layers."""

from __future__ import annotations

import anyio
import pytest

from channels_core.slots import Slots

pytestmark = pytest.mark.anyio


async def test_a_connection_opened_while_the_slots_close_is_closed_not_handed_out() -> None:
    opening, opened = anyio.Event(), anyio.Event()
    closed: list[str] = []

    async def open_connection() -> str:
        opening.set()
        await opened.wait()
        return "connection"

    slots: Slots[str] = Slots(
        open_connection, 1, usable=lambda _: True, close=closed.append, error=RuntimeError
    )
    refused: list[str] = []

    async def take() -> None:
        with pytest.raises(RuntimeError, match="closed"):
            await slots.acquire()
        refused.append("refused")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(take)
        await opening.wait()
        slots.close()  # the layer leaves while the connection is being opened
        opened.set()
    assert refused == ["refused"]
    assert closed == ["connection"]
    assert slots.free == 1
