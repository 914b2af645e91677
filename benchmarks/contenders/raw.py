"""The raw client libraries: the floor our network layers add cost to.

* redis-py asyncio: one client (connection pool) publishes; each subscriber
  is a `PubSub` object, which is one pub/sub connection per subscriber, the
  way redis-py is used without a fan-out layer on top.
* asyncpg: one connection publishes with ``SELECT pg_notify($1, $2)`` (concurrent
  publishers take turns on it behind a lock); one
  listening connection carries every subscriber, each an `add_listener`
  callback feeding its own queue (asyncpg's own fan-out). NOTIFY payloads
  stop at 8000 bytes, so 64 KiB messages cannot be sent at all.
* nats-py: one client publishes and carries every subscriber, each a
  `Subscription` consumed through its `messages` iterator (nats-py's own
  queue per subscription), confirmed by a `flush()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from .base import Contender, OnMessage, Session, Stream, dumps, loads

__all__ = ["raw_contenders"]

NOTIFY_LIMIT = 7999
NATS_NAMESPACE = "bench-raw"
MAX_CONNECTIONS = 2000


class _RedisStream:
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        if count <= 0:
            return
        left = count
        listen: Any = self._pubsub.listen()  # an async generator, typed as an iterator
        async with aclosing(listen) as items:
            async for item in items:
                if item["type"] != "message":
                    continue
                message = loads(item["data"])
                if on_message is not None:
                    on_message(message)
                left -= 1
                if not left:
                    return


class _RedisSession:
    def __init__(self, client: Redis) -> None:
        self._client = client

    async def publish(self, group: str, message: Any) -> None:
        await self._client.publish(group, dumps(message))

    @asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[Stream]:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(group)
            # Consume the confirmation so the subscription is live on return.
            while (await pubsub.get_message(timeout=5.0)) is None:
                pass
            yield _RedisStream(pubsub)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _redis_opener(url: str) -> Callable[[], AbstractAsyncContextManager[Session]]:
    @asynccontextmanager
    async def open_session() -> AsyncIterator[Session]:
        # Each PubSub takes its own connection from the pool: room for 1,000 idle subscribers.
        client = Redis.from_url(url, max_connections=MAX_CONNECTIONS)
        try:
            yield _RedisSession(client)
        finally:
            await client.aclose()

    return open_session


class _PostgresStream:
    def __init__(self, queue: asyncio.Queue[str]) -> None:
        self._queue = queue

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        get = self._queue.get
        for _ in range(count):
            message = loads(await get())
            if on_message is not None:
                on_message(message)


class _PostgresSession:
    def __init__(self, publisher: Any, listener: Any) -> None:
        self._publisher = publisher
        self._listener = listener
        # One connection runs one query at a time: concurrent publishers take turns.
        self._lock = asyncio.Lock()

    async def publish(self, group: str, message: Any) -> None:
        async with self._lock:
            await self._publisher.execute("SELECT pg_notify($1, $2)", group, dumps(message))

    @asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[Stream]:
        queue: asyncio.Queue[str] = asyncio.Queue()

        def callback(connection: Any, pid: int, channel: str, payload: str) -> None:
            queue.put_nowait(payload)

        await self._listener.add_listener(group, callback)
        try:
            yield _PostgresStream(queue)
        finally:
            await self._listener.remove_listener(group, callback)


def _postgres_opener(url: str) -> Callable[[], AbstractAsyncContextManager[Session]]:
    @asynccontextmanager
    async def open_session() -> AsyncIterator[Session]:
        publisher = await asyncpg.connect(url)
        try:
            listener = await asyncpg.connect(url)
            try:
                yield _PostgresSession(publisher, listener)
            finally:
                await listener.close()
        finally:
            await publisher.close()

    return open_session


class _NatsStream:
    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        if count <= 0:
            return
        left = count
        async for msg in self._subscription.messages:
            message = loads(msg.data)
            if on_message is not None:
                on_message(message)
            left -= 1
            if not left:
                return


class _NatsSession:
    def __init__(self, client: NatsClient) -> None:
        self._client = client

    async def publish(self, group: str, message: Any) -> None:
        await self._client.publish(f"{NATS_NAMESPACE}.{group}", dumps(message).encode())

    @asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[Stream]:
        subscription = await self._client.subscribe(f"{NATS_NAMESPACE}.{group}")
        try:
            await self._client.flush()
            yield _NatsStream(subscription)
        finally:
            await subscription.unsubscribe()


def _nats_opener(url: str) -> Callable[[], AbstractAsyncContextManager[Session]]:
    @asynccontextmanager
    async def open_session() -> AsyncIterator[Session]:
        client = await nats.connect(url)
        try:
            yield _NatsSession(client)
        finally:
            await client.close()

    return open_session


def raw_contenders(redis_url: str, postgres_url: str, nats_url: str) -> list[Contender]:
    """redis-py asyncio PubSub, asyncpg LISTEN/pg_notify and nats-py subscriptions."""
    return [
        Contender(
            "raw redis-py",
            "raw",
            "redis",
            _redis_opener(redis_url),
            notes="one PubSub connection per subscriber",
            no_many_subscribers=(
                "raw redis-py opens one pub/sub connection per subscriber: the chat's 5,000 "
                "subscribers would be 5,000 connections"
            ),
        ),
        Contender(
            "raw asyncpg",
            "raw",
            "postgres",
            _postgres_opener(postgres_url),
            max_payload=NOTIFY_LIMIT,
            notes="one LISTEN connection, one add_listener callback per subscriber",
        ),
        Contender(
            "raw nats-py",
            "raw",
            "nats",
            _nats_opener(nats_url),
            notes="one connection, one Subscription (and its queue) per subscriber",
        ),
    ]
