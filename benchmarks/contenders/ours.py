"""Our layers, through the public `Channel` API only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from channels_core import Channel, LayerNotFoundError
from channels_core.discovery import layer_for_url
from channels_core.plugins import layer_capabilities
from channels_core.subscriber import Subscriber

from ..scenarios import HISTORY_QUERY, HISTORY_SCENARIOS, HISTORY_SUFFIX
from .base import Contender, OnMessage, Session, Stream

__all__ = ["channels_contenders"]

#: Subscriber buffers large enough that no scenario overflows them: broadcaster
#: and the raw clients buffer without bound, so dropping would not be fair play.
BUFFER_SIZE = 1_000_000

#: The PostgreSQL layer's namespace (its tables' prefix) for the suite, apart from
#: the default ``channels`` tables other users of a shared server may have made.
POSTGRES_NAMESPACE = "bench"

#: The NATS layer's namespace (first subject token) for the suite.
NATS_NAMESPACE = "bench"


class _ChannelStream:
    def __init__(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        if count <= 0:
            return
        left = count
        async for event in self._subscriber:
            if on_message is not None:
                on_message(event.message)
            left -= 1
            if not left:
                return


class _ChannelSession:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        # The bound method itself: no wrapper frame between the scenario and our API.
        self.publish = channel.publish

    @asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[Stream]:
        async with self._channel.subscribe(group) as subscriber:
            yield _ChannelStream(subscriber)


def _opener(url: str, **options: Any) -> Callable[[], AbstractAsyncContextManager[Session]]:
    @asynccontextmanager
    async def open_session() -> AsyncIterator[Session]:
        async with Channel.from_url(url, buffer_size=BUFFER_SIZE, **options) as channel:
            yield _ChannelSession(channel)

    return open_session


def _keeps_history(url: str) -> bool:
    """Whether the layer serving `url` declares the "history" capability (and is installed)."""
    try:
        return "history" in layer_capabilities(layer_for_url(url))
    except LayerNotFoundError:
        return False


def _contender(
    name: str, broker: str, url: str, notes: str = "", **options: Any
) -> list[Contender]:
    """Our layer on `url`; and again with history on (`HISTORY_QUERY`) if it has the capability."""
    contenders = [Contender(name, "channels", broker, _opener(url, **options), notes=notes)]
    if _keeps_history(url):
        separator = "&" if "?" in url else "?"
        contenders.append(
            Contender(
                name + HISTORY_SUFFIX,
                "channels",
                broker,
                _opener(f"{url}{separator}{HISTORY_QUERY}", **options),
                notes=f"{name} with {HISTORY_QUERY}: every publish is also logged",
                scenarios=HISTORY_SCENARIOS,
                history=True,
            )
        )
    return contenders


def channels_contenders(redis_url: str, postgres_url: str, nats_url: str) -> list[Contender]:
    """Our memory, Redis, PostgreSQL and NATS layers (each with history too, where it has it)."""
    return [
        *_contender("channels memory", "memory", "memory://"),
        *_contender("channels redis", "redis", redis_url),
        *_contender(
            "channels postgres",
            "postgres",
            postgres_url,
            notes="payloads over NOTIFY's 8000 bytes travel through the layer's payload table",
            namespace=POSTGRES_NAMESPACE,
        ),
        *_contender(
            "channels nats",
            "nats",
            nats_url,
            notes="one connection; messages go from the socket to the subscribers' buffers",
            namespace=NATS_NAMESPACE,
        ),
    ]
