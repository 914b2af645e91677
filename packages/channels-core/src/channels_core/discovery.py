"""Finding layers: the ``channels.layers`` entry-point group.

An entry point's name is the layer's name and a URL scheme it serves; its
object is the layer class. Nothing here knows any particular layer: the
in-memory layer is found through the core's own ``memory`` entry point.

``Channel.from_url`` asks for a layer every time, and reading the entry
points means reading every installed distribution's metadata (milliseconds):
what was read is kept while `installation_state` stays the same (no
distribution installed or removed, `sys.path` unchanged), so a layer
installed while the process runs is still found, as soon as
`importlib.metadata` finds it. Loading an entry point is not cached: once
the layer's module is imported it is a look-up in `sys.modules`, and a
reloaded or replaced class is the one found.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from urllib.parse import urlsplit

from ._installed import InstallationState, installation_state
from .exceptions import ChannelsError, LayerImportError, LayerNotFoundError
from .layer import ChannelLayer
from .plugins import register_layer_plugins

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_layers",
    "get_layer",
    "layer_for_url",
    "registered_as",
]

ENTRY_POINT_GROUP = "channels.layers"

#: The layers this project ships, by name: the extra of ``channels-core``
#: that installs each, which is also its folder in the repository
#: (``packages/channels-<extra>``), for "not found" messages.
_SHIPPED_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "redis+unix": "redis",
    "redis+sentinel": "redis",
    "rediss+sentinel": "redis",
    "postgres": "postgres",
    "postgresql": "postgres",
    "nats": "nats",
    "nats+tls": "nats",
}


#: The last reading: the state it was read under, the `entry_points` function
#: that read it (tests replace it), and the entry points by name.
_read: tuple[InstallationState, object, dict[str, list[EntryPoint]]] | None = None


def _layer_entry_points() -> dict[str, list[EntryPoint]]:
    """The entry points by name, read again only if the installation may have changed."""
    global _read
    state = installation_state()
    read = _read
    if read is None or not (read[0].settled and read[0] == state and read[1] is entry_points):
        read = _read = (state, entry_points, _read_entry_points())
    return read[2]


def _read_entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        same_name = found.setdefault(entry_point.name, [])
        if all(other.value != entry_point.value for other in same_name):
            same_name.append(entry_point)
    return found


def available_layers() -> list[str]:
    """Names of the installed layers (each is also a URL scheme), sorted."""
    return sorted(_layer_entry_points())


def get_layer(name: str) -> type[ChannelLayer]:
    """The layer class registered under `name` in ``channels.layers``.

    Raises `LayerNotFoundError` if no installed distribution provides it and
    `LayerImportError` if the one that does fails to load.
    """
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a str, got {type(name).__name__}")
    candidates = _layer_entry_points().get(name)
    if not candidates:
        raise LayerNotFoundError(_not_found_message(name))
    if len(candidates) > 1:
        sources = "; ".join(f"{_distribution(ep)} ({ep.value})" for ep in candidates)
        raise LayerImportError(
            f"several installed distributions register the channel layer {name!r}: "
            f"{sources}. Uninstall all but one."
        )
    return _load(candidates[0])


def registered_as(layer_class: type[ChannelLayer], name: str) -> bool:
    """True if the entry point `name` is `layer_class` (a subclass's own name, an alias).

    A layer's ``from_url`` accepts such a scheme besides its `url_schemes`,
    so that ``Channel.from_url`` builds it for every name it is registered under.
    """
    try:
        return get_layer(name) is layer_class
    except (ChannelsError, TypeError):
        return False


def layer_for_url(url: str) -> type[ChannelLayer]:
    """The layer class serving `url`'s scheme (``redis://...`` -> the ``redis`` layer)."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if not scheme or "://" not in url:
        raise ValueError(
            f"{url!r} is not a layer URL: it needs a scheme naming the layer, "
            f"e.g. memory:// or redis://localhost:6379/0 (installed: {_installed_text()})"
        )
    return get_layer(scheme)


def _load(entry_point: EntryPoint) -> type[ChannelLayer]:
    try:
        layer_class = entry_point.load()
    except Exception as exc:
        raise LayerImportError(
            f"the channel layer plugin {_origin(entry_point)} failed to load: "
            f"{type(exc).__name__}: {exc}. Reinstall or fix that distribution; "
            "the other layers are not affected."
        ) from exc
    if not (isinstance(layer_class, type) and issubclass(layer_class, ChannelLayer)):
        raise LayerImportError(
            f"the channel layer plugin {_origin(entry_point)} does not point to a ChannelLayer "
            f"subclass (it points to {layer_class!r})"
        )
    register_layer_plugins(layer_class)
    return layer_class


def _origin(entry_point: EntryPoint) -> str:
    """The entry point and its distribution, for errors (reads the distribution's metadata)."""
    return f"{entry_point.name!r} ({entry_point.value}, from {_distribution(entry_point)})"


def _distribution(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _installed_text() -> str:
    return ", ".join(available_layers()) or "none"


def _not_found_message(name: str) -> str:
    extra = _SHIPPED_EXTRAS.get(name.lower())
    if extra is None:
        install = (
            "install the distribution that provides it; this project's layers install "
            "with pip install 'channels-core[redis]' (or [postgres], [nats], [all]) "
            "from the package index, or from a checkout of the channels repository with "
            "pip install ./packages/channels-core ./packages/channels-redis "
            "(or ./packages/channels-postgres, ./packages/channels-nats)"
        )
    else:
        install = (
            f"install it with pip install 'channels-core[{extra}]' from the package index, "
            "or from a checkout of the channels repository with "
            f"pip install ./packages/channels-core ./packages/channels-{extra}"
        )
    installed = _installed_text()
    return f"no channel layer named {name!r} is installed (installed: {installed}); {install}"
