"""The one interface every contender implements, so scenarios never special-case one.

A contender is a way of doing publish/subscribe on one broker: our `Channel`
on a layer, encode/broadcaster on a backend, or the raw client library. A
scenario opens a `Session` (connections, outside the timed region), opens
subscriptions on it, and publishes plain dict messages. Every contender
carries the same JSON bytes and hands the subscriber the decoded dict, so
the work compared is the same: encode, transport, decode, deliver.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Contender",
    "OnMessage",
    "Session",
    "Stream",
    "dumps",
    "loads",
]

#: Called with each decoded message a subscriber receives (latency probes use it).
OnMessage = Callable[[Any], None]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(message: Any) -> str:
    """The baselines' encoding: the same compact JSON text our channel sends."""
    return _encode(message)


def loads(data: bytes | str) -> Any:
    """The baselines' decoding (the subscriber gets a dict, as with our channel)."""
    return json.loads(data)


class Stream(Protocol):
    """One live subscription, consumed the way the library's users consume it."""

    async def drain(self, count: int, on_message: OnMessage | None) -> None:
        """Receive exactly `count` messages, calling `on_message` with each decoded one."""


class Session(Protocol):
    """The contender's connections (a `Channel`, a `Broadcast`, raw clients)."""

    async def publish(self, group: str, message: Any) -> None:
        """Publish `message` (a dict) to `group`."""

    def subscribe(self, group: str) -> AbstractAsyncContextManager[Stream]:
        """A subscription to `group`, live on the broker when the block starts."""


@dataclass(frozen=True, slots=True)
class Contender:
    """A named way of doing pub/sub, with what it can carry.

    `kind` is ``"channels"``, ``"broadcaster"``, ``"django"`` or ``"raw"``; `broker` is
    ``"memory"``, ``"redis"`` or ``"postgres"``. `max_payload` is the largest
    encoded message it can carry (None: no limit that matters here).
    `open` builds a fresh session; `notes` says what is special about it.
    `no_concurrent_publish` says why concurrent publishers cannot work, if so;
    `no_many_subscribers` why it is left out of the 5,000-subscriber chat.
    """

    name: str
    kind: str
    broker: str
    open: Callable[[], AbstractAsyncContextManager[Session]]
    max_payload: int | None = None
    notes: str = ""
    #: Why concurrent publishers cannot work, or None if they can.
    no_concurrent_publish: str | None = None
    #: Why thousands of subscribers (the chat scenario) are out of reach, or None.
    no_many_subscribers: str | None = None
    #: The broker channel a group travels on, if not the group's own name.
    broker_channel: Callable[[str], str] | None = None
    #: The scenario ids it runs in (None: every one).
    scenarios: frozenset[str] | None = None
    #: Whether it logs every publish (a history row): its frames carry a
    #: position, so Redis's bytes-per-delivery count does not apply.
    history: bool = False
