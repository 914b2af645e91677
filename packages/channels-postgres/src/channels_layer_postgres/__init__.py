"""channels-layer-postgres: a PostgreSQL LISTEN/NOTIFY layer for channels-core.

from channels_core import Channel

async with Channel.from_url("postgresql://user@127.0.0.1:5432/app") as channel:
    ...
"""

from ._config import Settings
from ._counters import LayerCounters
from ._names import ChannelNames
from .layer import PostgreSQLChannelLayer

__all__ = ["ChannelNames", "LayerCounters", "PostgreSQLChannelLayer", "Settings"]

__version__ = "0.1.0"
