"""encode/broadcaster: what users would pick instead (memory, redis and postgres backends).

broadcaster carries strings and leaves encoding to the application, so the
session JSON-encodes before `publish` and decodes what a subscriber gets,
exactly as an application would. Its postgres backend sends NOTIFY through
`pg_notify`, so it cannot carry payloads over 8000 bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Any

from broadcaster import Broadcast

from .base import Contender, OnMessage, Session, Stream, dumps, loads

__all__ = ["broadcaster_contenders"]

NOTIFY_LIMIT = 7999  # PostgreSQL: "payload string too long" from 8000 bytes on


class _BroadcastStream:
    def __init__(self, subscriber: Any) -> None:
        self._subscriber = subscriber

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        if count <= 0:
            return
        left = count
        async with aclosing(self._subscriber.__aiter__()) as events:
            async for event in events:
                message = loads(event.message)
                if on_message is not None:
                    on_message(message)
                left -= 1
                if not left:
                    return


class _BroadcastSession:
    def __init__(self, broadcast: Broadcast) -> None:
        self._broadcast = broadcast

    async def publish(self, group: str, message: Any) -> None:
        await self._broadcast.publish(group, dumps(message))

    @asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[Stream]:
        async with self._broadcast.subscribe(group) as subscriber:
            _rearm_redis_listener(self._broadcast)
            yield _BroadcastStream(subscriber)


def _rearm_redis_listener(broadcast: Broadcast) -> None:
    """Work around a race in broadcaster 0.3.1's redis backend (with redis-py >= 5).

    Its `subscribe` sets the listener's ready event *before* awaiting
    redis-py's SUBSCRIBE; the listener wakes, finds `PubSub.subscribed`
    still false (redis-py records the channel only after the command),
    leaves `listen()` at once, clears the event and never reads: nothing is
    ever delivered. Setting the event again once SUBSCRIBE has returned lets
    the listener start. The memory and postgres backends have no such event.
    """
    ready = getattr(broadcast._backend, "_ready", None)
    if ready is not None:
        ready.set()


def _opener(url: str) -> Callable[[], AbstractAsyncContextManager[Session]]:
    @asynccontextmanager
    async def open_session() -> AsyncIterator[Session]:
        async with Broadcast(url) as broadcast:
            yield _BroadcastSession(broadcast)

    return open_session


def broadcaster_contenders(redis_url: str, postgres_url: str) -> list[Contender]:
    """broadcaster's memory, redis and postgres backends."""
    return [
        Contender("broadcaster memory", "broadcaster", "memory", _opener("memory://")),
        Contender("broadcaster redis", "broadcaster", "redis", _opener(redis_url)),
        Contender(
            "broadcaster postgres",
            "broadcaster",
            "postgres",
            _opener(postgres_url),
            max_payload=NOTIFY_LIMIT,
            notes="pg_notify on the listening connection; NOTIFY payloads stop at 8000 bytes",
            no_concurrent_publish=(
                "broadcaster's postgres backend publishes on its one listening connection: "
                "concurrent publishes fail (asyncpg InterfaceError: another operation is in "
                "progress)"
            ),
        ),
    ]
