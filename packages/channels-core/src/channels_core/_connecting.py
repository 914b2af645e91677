"""What the channel checks before a layer connects, so that no layer repeats it.

A layer instance serves one channel at a time (`LayerInUseError` for a
second one), and a layer whose driver is asyncio-based (`asyncio_only`)
is refused on any other event loop with a clear `NotSupportedError`
instead of failing deep inside its driver.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .exceptions import LayerInUseError, NotSupportedError
from .layer import ChannelLayer, Inbox

__all__ = ["check_event_loop", "connected"]

_in_use: set[int] = set()  # id() of every connected layer; each is alive while listed
_in_use_lock = threading.Lock()


def check_event_loop(layer_class: type[ChannelLayer]) -> None:
    """Raise `NotSupportedError` if `layer_class` is `asyncio_only` and asyncio is not running."""
    if not layer_class.asyncio_only:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise NotSupportedError(
            f"{layer_class.__name__} runs on asyncio only (its driver is asyncio-based); "
            "run the application on asyncio, e.g. anyio.run(main, backend='asyncio')"
        ) from None


@asynccontextmanager
async def connected(layer: ChannelLayer, inbox: Inbox) -> AsyncIterator[None]:
    """``layer.connect(inbox)``, after checking the event loop and that `layer` is free."""
    check_event_loop(type(layer))
    key = id(layer)
    with _in_use_lock:
        if key in _in_use:
            raise LayerInUseError(
                f"this {type(layer).__name__} is already connected: a layer serves one "
                "Channel at a time; build a new layer for each channel"
            )
        _in_use.add(key)
    try:
        async with layer.connect(inbox):
            yield
    finally:
        with _in_use_lock:
            _in_use.discard(key)
