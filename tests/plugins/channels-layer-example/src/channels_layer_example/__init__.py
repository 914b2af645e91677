"""An example third-party layer: in-process, but shaped like a network layer.

Each connected layer owns a stream of deliveries and a reader task inside
its `connect` context, as a layer reading from a broker socket would. It
ships no hookimpls, so the core merges single-group subscriptions for
``subscribe("a", "b")`` and refuses patterns with `NotSupportedError`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from channels_core import ChannelClosedError, ChannelLayer, Inbox
from channels_core.background import background_tasks

_Delivery = tuple[str, bytes]

#: namespace -> group -> the send streams of the layers subscribed to it
_brokers: defaultdict[str, defaultdict[str, set[MemoryObjectSendStream[_Delivery]]]] = defaultdict(
    lambda: defaultdict(set)
)


class ExampleChannelLayer(ChannelLayer):
    """``example://NAMESPACE``: layers with the same namespace hear each other."""

    url_schemes = ("example",)

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace
        self._send: MemoryObjectSendStream[_Delivery] | None = None
        self._groups: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        if options:
            raise TypeError(f"unexpected options: {', '.join(options)}")
        return cls(urlsplit(url).netloc)

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        send, receive = anyio.create_memory_object_stream[_Delivery](1000)

        async def read() -> None:
            async with receive:
                async for group, payload in receive:
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

    async def subscribe(self, group: str) -> None:
        self._groups.add(group)
        _brokers[self.namespace][group].add(self._connected())

    async def unsubscribe(self, group: str) -> None:
        self._groups.discard(group)
        if self._send is not None:
            _brokers[self.namespace][group].discard(self._send)
