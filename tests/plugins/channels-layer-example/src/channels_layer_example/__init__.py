"""An example third-party layer: in-process, but shaped like a network layer.

Each connected layer owns a stream of deliveries and a reader task inside
its `connect` context, as a layer reading from a broker socket would.
Everything it needs comes from `channels_core`: it declares multi-group
subscriptions with a class attribute (no pluggy code), takes its options
through `LayerOptions`, reports `LayerStats`, and shows its URL redacted.
It has no pattern support, so `subscribe_pattern` raises `NotSupportedError`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from channels_core import (
    ChannelClosedError,
    ChannelLayer,
    Inbox,
    LayerOptions,
    LayerStats,
    background_tasks,
    options,
    redact_url,
)

_Delivery = tuple[str, bytes]

#: namespace -> group -> the send streams of the layers subscribed to it
_brokers: defaultdict[str, defaultdict[str, set[MemoryObjectSendStream[_Delivery]]]] = defaultdict(
    lambda: defaultdict(set)
)


@dataclass(frozen=True, slots=True)
class ExampleLayerOptions(LayerOptions):
    """The example layer's options (keywords, or ``?queue_size=N`` in the URL)."""

    #: Deliveries a connected layer holds before a publisher waits for its reader.
    queue_size: int = options.count(1000)


class ExampleChannelLayer(ChannelLayer):
    """``example://NAMESPACE``: layers with the same namespace hear each other."""

    url_schemes = ("example",)
    supports_multi_group = True

    def __init__(self, namespace: str = "", **layer_options: Any) -> None:
        self.namespace = namespace
        self.options = ExampleLayerOptions.from_options(layer_options)
        self._url = f"example://{namespace}"
        self._send: MemoryObjectSendStream[_Delivery] | None = None
        self._groups: set[str] = set()
        self._published = 0
        self._received = 0

    @classmethod
    def from_url(cls, url: str, **layer_options: Any) -> Self:
        """``example://[user:password@]NAMESPACE[?queue_size=N]`` (credentials are ignored)."""
        parts = urlsplit(url)
        layer = cls(parts.netloc.rpartition("@")[2])
        layer.options = ExampleLayerOptions.from_options(layer_options, query=parts.query)
        layer._url = url
        return layer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self._url)}>"

    def stats(self) -> LayerStats:
        return LayerStats(
            connected=self._send is not None,
            published=self._published,
            received=self._received,
            connection_losses=0,
            reconnects=0,
        )

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        send, receive = anyio.create_memory_object_stream[_Delivery](self.options.queue_size)

        async def read() -> None:
            async with receive:
                async for group, payload in receive:
                    self._received += 1
                    inbox.deliver(group, payload)

        async with background_tasks() as tasks, send:
            tasks.start_soon(read)
            self._send = send
            try:
                yield
            finally:
                for group in self._groups:
                    _brokers[self.namespace][group].discard(send)
                self._groups.clear()
                self._send = None

    def _connected(self) -> MemoryObjectSendStream[_Delivery]:
        if self._send is None:
            raise ChannelClosedError("the example layer is not connected")
        return self._send

    async def publish(self, group: str, payload: bytes) -> None:
        self._connected()
        for stream in list(_brokers[self.namespace].get(group, ())):
            await stream.send((group, payload))
        self._published += 1

    async def subscribe(self, group: str) -> None:
        await self.subscribe_groups([group])

    async def unsubscribe(self, group: str) -> None:
        await self.unsubscribe_groups([group])

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        send = self._connected()
        for group in groups:
            self._groups.add(group)
            _brokers[self.namespace][group].add(send)

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        for group in groups:
            self._groups.discard(group)
            if self._send is not None:
                _brokers[self.namespace][group].discard(self._send)
