"""channels-layer-postgres: a PostgreSQL LISTEN/NOTIFY layer for channels-core.

    from channels_core import Channel

    async with Channel.from_url("postgresql://user@127.0.0.1:5432/app") as channel:
        ...

Entry points ``postgres`` and ``postgresql`` in ``channels.layers`` serve
`PostgreSQLChannelLayer`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._layer import PostgreSQLChannelLayer
from ._names import ChannelNames
from ._options import PostgreSQLLayerOptions
from ._stats import PostgreSQLLayerStats

__all__ = [
    "ChannelNames",
    "PostgreSQLChannelLayer",
    "PostgreSQLLayerOptions",
    "PostgreSQLLayerStats",
    "__version__",
]

__version__ = "0.1.0"

#: Old public names -> their replacements (importable for one release, with a warning).
_DEPRECATED = {"Settings": PostgreSQLLayerOptions, "LayerCounters": PostgreSQLLayerStats}


def __getattr__(name: str) -> Any:
    replacement = _DEPRECATED.get(name)
    if replacement is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"channels_layer_postgres.{name} is deprecated: use {replacement.__name__}",
        DeprecationWarning,
        stacklevel=2,
    )
    return replacement
