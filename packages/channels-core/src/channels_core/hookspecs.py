"""The pluggy hook specifications: optional capabilities of a layer.

Most layers need none of this: they declare capabilities with class
attributes (`ChannelLayer.supports_multi_group`,
`ChannelLayer.supports_patterns`), which the core's own hookimpls read. A
layer distribution that wants the hooks implements them with
`channels_core.plugins.hookimpl` in the module that defines its layer class
(that module is registered as a plugin when the layer is loaded); its
answers come before the core's. Each hook receives a layer *class* and
returns `SubscribeMethods` if the implementation serves that class, else
``None``; the first non-``None`` answer wins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .history import ReadHistory
    from .layer import ChannelLayer

__all__ = ["PROJECT_NAME", "PublishMany", "SubscribeMethods", "hookimpl", "hookspec"]

PROJECT_NAME = "channels"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``async def method(layer, names) -> None``; an unbound method of the layer works.
NamesMethod = Callable[[Any, Sequence[str]], Awaitable[None]]

#: ``async def publish_many(layer, items) -> None`` with ``(group, payload)`` items.
PublishMany = Callable[[Any, Sequence[tuple[str, bytes]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SubscribeMethods:
    """How a layer subscribes and unsubscribes several names in one go.

    Both are called as ``await method(layer, names)`` with the connected
    layer and a non-empty sequence of distinct names; an unbound method of
    the layer class fits, e.g. ``SubscribeMethods(MyLayer.psubscribe,
    MyLayer.punsubscribe)``. Like `ChannelLayer.subscribe`, `subscribe`
    returns once the broker has confirmed every name.
    """

    subscribe: NamesMethod
    unsubscribe: NamesMethod


@hookspec(firstresult=True)
def channels_multi_group_support(
    layer_class: type[ChannelLayer],
) -> SubscribeMethods | None:
    """Subscribe several groups in one broker round trip.

    Without an implementation the channel calls `ChannelLayer.subscribe`
    once per group.
    """


@hookspec(firstresult=True)
def channels_pattern_support(
    layer_class: type[ChannelLayer],
) -> SubscribeMethods | None:
    """Subscribe glob patterns (Redis PSUBSCRIBE semantics).

    The layer must then deliver matching messages with
    ``inbox.deliver(group, payload, pattern=pattern)``. Without an
    implementation `Channel.subscribe_pattern` raises `NotSupportedError`.
    """


@hookspec(firstresult=True)
def channels_history_support(
    layer_class: type[ChannelLayer],
) -> ReadHistory | None:
    """Keep a replayable log per group: return the layer's ``read_history``.

    See `channels_core.history` for what such a layer does. Without an
    implementation ``since=``, `Channel.history` and the ``history_size``
    option raise `NotSupportedError`.
    """


@hookspec(firstresult=True)
def channels_publish_many_support(
    layer_class: type[ChannelLayer],
) -> PublishMany | None:
    """Send many messages, to any groups, in one broker round trip: return the method.

    Without an implementation `Channel.publish_many` calls
    `ChannelLayer.publish_many`'s default (one `publish` per message), and
    concurrent `Channel.publish` calls are not coalesced.
    """
