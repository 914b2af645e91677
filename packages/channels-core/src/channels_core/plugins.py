"""The plugin manager and what it says about a layer's optional capabilities.

A layer declares its capabilities with class attributes
(`ChannelLayer.supports_multi_group`, `ChannelLayer.supports_patterns`,
`ChannelLayer.supports_history`, `ChannelLayer.supports_publish_many`),
which the core's own hookimpls read; a layer or plugin that wants pluggy
hooks uses `hookimpl` and `SubscribeMethods` from here. Applications rarely
need anything but `layer_capabilities`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache

import pluggy

from . import _declared, hookspecs
from .history import ReadHistory
from .hookspecs import PROJECT_NAME, PublishMany, SubscribeMethods, hookimpl
from .layer import ChannelLayer

__all__ = [
    "Capabilities",
    "SubscribeMethods",
    "hookimpl",
    "layer_capabilities",
    "plugin_manager",
    "register_layer_plugins",
]

MULTI_GROUP = "multi-group"
PATTERNS = "patterns"
HISTORY = "history"
PUBLISH_MANY = "publish-many"


@cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager holding the hookspecs and every hookimpl."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(_declared, name="channels_core.declared-capabilities")
    return manager


def register_layer_plugins(layer_class: type[ChannelLayer]) -> None:
    """Register the modules defining `layer_class` (and its layer bases) as plugins.

    This is how a layer's hookimpls are found with nothing but its entry
    point: they live in the module that defines the layer class.
    """
    manager = plugin_manager()
    for cls in layer_class.__mro__:
        if cls is ChannelLayer or not issubclass(cls, ChannelLayer):
            continue
        module = sys.modules.get(cls.__module__)
        if module is not None and not manager.is_registered(module):
            manager.register(module)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The optional capabilities of one layer class, as declared (attributes or hookimpls)."""

    multi_group: SubscribeMethods | None
    patterns: SubscribeMethods | None
    history: ReadHistory | None = None
    publish_many: PublishMany | None = None

    @property
    def names(self) -> frozenset[str]:
        """Capability names, e.g. ``{"multi-group", "patterns", "history", "publish-many"}``."""
        found = {
            MULTI_GROUP: self.multi_group,
            PATTERNS: self.patterns,
            HISTORY: self.history,
            PUBLISH_MANY: self.publish_many,
        }
        return frozenset(name for name, methods in found.items() if methods is not None)


def capabilities_of(layer_class: type[ChannelLayer]) -> Capabilities:
    """Ask the hooks (the core's, reading the class attributes, last) what `layer_class` has."""
    register_layer_plugins(layer_class)
    hook = plugin_manager().hook
    return Capabilities(
        multi_group=hook.channels_multi_group_support(layer_class=layer_class),
        patterns=hook.channels_pattern_support(layer_class=layer_class),
        history=hook.channels_history_support(layer_class=layer_class),
        publish_many=hook.channels_publish_many_support(layer_class=layer_class),
    )


def layer_capabilities(layer_class: type[ChannelLayer]) -> frozenset[str]:
    """Names of the optional capabilities of `layer_class` (``multi-group``, ``patterns``,
    ``history``, ``publish-many``)."""
    return capabilities_of(layer_class).names
