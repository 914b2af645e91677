"""Django's channels_redis `RedisPubSubChannelLayer`: the layer a Django user would pick.

Its API is Django Channels' channel layer: every consumer gets a channel name
from `new_channel()`, joins a group with `group_add(group, channel)`, and
reads one message per `await receive(channel)`; `group_send(group, message)`
publishes a dict (it needs a ``"type"``) that the layer msgpack-encodes. The
session therefore sends ``{"type": "bench.message", "text": <the same compact
JSON>}`` and each consumer decodes the JSON text it receives, as a Django
consumer that relays JSON would.

What that API forces, measured as such:

* one `receive` call per message per consumer (no batch), each msgpack-
  decoding its own copy, then the JSON decode;
* every `group_send` (and every `group_add`) holds the shard's one
  `asyncio.Lock` around redis-py's `PUBLISH`: concurrent publishers take turns;
* its reader polls `PubSub.get_message(timeout=0.1)` one message at a time
  and puts the raw bytes in every local consumer's `asyncio.Queue`;
* its reader starts reading 0.1 s after the first subscription; the session
  waits that out once, untimed, so that latency is not charged for it;
* it cannot subscribe to patterns. Fan-out is N consumer channels in one
  group, i.e. one Redis subscription per group per process, like ours.

The package is imported by name so that the lint environment (mypy) does
not need Django installed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio

from .base import Contender, OnMessage, Session, Stream, dumps, loads

__all__ = ["django_contenders"]

_TYPE = "bench.message"
#: The layer's default prefix: a group travels on the Redis channel ``asgi__group__<group>``.
_PREFIX = "asgi"


def _group_channel(group: str) -> str:
    return f"{_PREFIX}__group__{group}"


class _DjangoStream:
    def __init__(self, layer: Any, channel: str) -> None:
        self._layer = layer
        self._channel = channel

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        receive = self._layer.receive
        channel = self._channel
        for _ in range(count):
            message = loads((await receive(channel))["text"])
            if on_message is not None:
                on_message(message)


#: Its reader task starts with the first subscription and, finding the `PubSub` not yet
#: subscribed, sleeps 0.1 s before it first reads: messages published meanwhile wait.
_READER_START = 0.12


class _DjangoSession:
    def __init__(self, layer: Any) -> None:
        self._layer = layer
        self._reading = False

    async def publish(self, group: str, message: Any) -> None:
        await self._layer.group_send(group, {"type": _TYPE, "text": dumps(message)})

    @asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[Stream]:
        channel = await self._layer.new_channel()
        await self._layer.group_add(group, channel)
        if not self._reading:  # once per session, outside any timed region
            await anyio.sleep(_READER_START)
            self._reading = True
        try:
            yield _DjangoStream(self._layer, channel)
        finally:
            await self._layer.group_discard(group, channel)


def _opener(url: str) -> Callable[[], AbstractAsyncContextManager[Session]]:
    @asynccontextmanager
    async def open_session() -> AsyncIterator[Session]:
        pubsub = importlib.import_module("channels_redis.pubsub")
        # A receive() cancelled while idle (the idle-memory scenario) unsubscribes its
        # channel and, when that is cancelled too, logs the traceback: expected here.
        logging.getLogger(pubsub.__name__).setLevel(logging.CRITICAL)
        layer = pubsub.RedisPubSubChannelLayer(hosts=[url], prefix=_PREFIX)
        try:
            yield _DjangoSession(layer)
        finally:
            await layer.flush()  # closes its connections and its reader task

    return open_session


def django_contenders(redis_url: str) -> list[Contender]:
    """channels_redis's pub/sub layer on Redis."""
    return [
        Contender(
            "django channels_redis",
            "django",
            "redis",
            _opener(redis_url),
            broker_channel=_group_channel,
            notes=(
                "RedisPubSubChannelLayer: a channel per consumer in a group, one receive() per "
                "message, msgpack around the JSON text, one lock around every publish"
            ),
        )
    ]
