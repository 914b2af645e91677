"""The core's own hookimpls: capabilities a layer declares with class attributes.

A layer sets ``supports_multi_group``, ``supports_patterns``,
``supports_history`` or ``supports_publish_many`` to True and defines the
matching methods (see `ChannelLayer`); these hooks, registered with the
plugin manager by the core and tried last, turn that into the answers a
pluggy hookimpl would give. A layer's own hookimpls, if
it has any, answer first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hookspecs import PublishMany, SubscribeMethods, hookimpl

if TYPE_CHECKING:
    from .history import ReadHistory
    from .layer import ChannelLayer

__all__ = [
    "channels_history_support",
    "channels_multi_group_support",
    "channels_pattern_support",
    "channels_publish_many_support",
]


@hookimpl(trylast=True)
def channels_multi_group_support(layer_class: type[ChannelLayer]) -> SubscribeMethods | None:
    if layer_class.supports_multi_group:
        return SubscribeMethods(layer_class.subscribe_groups, layer_class.unsubscribe_groups)
    return None


@hookimpl(trylast=True)
def channels_pattern_support(layer_class: type[ChannelLayer]) -> SubscribeMethods | None:
    if layer_class.supports_patterns:
        return SubscribeMethods(layer_class.subscribe_patterns, layer_class.unsubscribe_patterns)
    return None


@hookimpl(trylast=True)
def channels_history_support(layer_class: type[ChannelLayer]) -> ReadHistory | None:
    if layer_class.supports_history:
        return layer_class.read_history
    return None


@hookimpl(trylast=True)
def channels_publish_many_support(layer_class: type[ChannelLayer]) -> PublishMany | None:
    if layer_class.supports_publish_many:
        return layer_class.publish_many
    return None
