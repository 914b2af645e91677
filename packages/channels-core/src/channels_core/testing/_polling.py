"""Waiting, in tests, for state that offers nothing to wait on."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["eventually"]


async def eventually(
    predicate: Callable[[], object | Awaitable[object]], timeout: float = 10.0
) -> None:
    """Return once `predicate` (plain or async) gives a true value, polling every 10 ms.

    For what a test cannot await: a layer's counters, a server's state,
    another thread's doing. Raises `TimeoutError` after `timeout` seconds.
    Where there is an event to wait on, wait on it instead.
    """
    with anyio.fail_after(timeout):
        while True:
            holds = predicate()
            if inspect.isawaitable(holds):
                holds = await holds
            if holds:
                return
            await anyio.sleep(0.01)
