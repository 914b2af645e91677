"""Waiting, in a layer's tests, for what a `channels_core.hand_on.HandOn` holds."""

from __future__ import annotations

import anyio

from ..hand_on import TURNS

__all__ = ["handed_on"]


async def handed_on() -> None:
    """Return once the deliveries a hand-on held before this call have been handed on.

    It lets the event loop turn `TURNS` times: a test asserting that
    something was *not* delivered waits here first, so that its assertion
    could fail.
    """
    for _ in range(TURNS):
        await anyio.lowlevel.checkpoint()
