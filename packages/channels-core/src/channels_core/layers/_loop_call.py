"""Calling into a running event loop from any thread, without waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

import anyio.lowlevel

__all__ = ["loop_caller"]

LoopCall = Callable[[Callable[[], object]], object]


class _TrioToken(Protocol):
    def run_sync_soon(self, callback: Callable[[], object]) -> None: ...


def loop_caller() -> LoopCall:
    """A thread-safe ``call_soon(callback)`` for the event loop running this call.

    The callback runs in that loop soon after; the caller never waits for
    it, so two loops calling each other cannot deadlock. Raises
    `RuntimeError` from the returned function once that loop has finished.
    """
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.call_soon_threadsafe
    return cast(_TrioToken, native).run_sync_soon  # trio's TrioToken
