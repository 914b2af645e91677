"""Group names -> PostgreSQL channel names, and safe SQL identifiers.

Groups are hashed onto `BUCKETS` channels per namespace,
``<namespace>%<bucket, 3 hex digits>``, never one channel per group:
PostgreSQL (up to 18) keeps each backend's LISTEN channels in a list that
every LISTEN, UNLISTEN and incoming notification scans, so a listener of N
channels pays O(N) server CPU for each (measured on PostgreSQL 15: a
notification cost its listener's backend 17 us with 1,000 channels LISTENed,
50 us with 10,000, 263 us with 50,000; a LISTEN batch of 50,000 channels
took longer than ``command_timeout``). With buckets, the list holds at most
`BUCKETS` names whatever the number of groups. The price: a listener of a
bucket also receives the other groups hashed onto it, and drops them
locally (`_router`); each notification carries its group (`_envelope`).
A pattern subscriber LISTENs every bucket of its namespace and matches
each group locally, so publishing never depends on who has patterns.

The bucket is CRC-32 of the group's UTF-8, so every process (and version)
computes the same channel for a group. The ``%`` separator is outside the
namespace alphabet, so no two namespaces share a channel, nor do these names
meet the per-group ``:`` and ``#`` names of earlier versions.
"""

from __future__ import annotations

import re
import zlib

__all__ = ["BUCKETS", "IDENTIFIER_LIMIT", "ChannelNames", "quote_ident"]

#: PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1).
IDENTIFIER_LIMIT = 63

#: Channels per namespace that groups are hashed onto: a power of two. Part of
#: the wire: publishers and listeners of one namespace must agree on it.
BUCKETS = 1024

_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,19}")


def quote_ident(name: str) -> str:
    """`name` as a quoted SQL identifier (double quotes doubled); NUL is refused."""
    if "\x00" in name:
        raise ValueError("an SQL identifier cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


class ChannelNames:
    """Every name the layer uses in PostgreSQL, derived from one `namespace`."""

    def __init__(self, namespace: str) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace must be 1-20 lowercase letters, digits or underscores, "
                f"starting with a letter; got {namespace!r}"
            )
        self.namespace = namespace
        self.payloads_table = f"{namespace}_payloads"
        self.history_table = f"{namespace}_history"  # with history on (see `_history`)
        self.heads_table = f"{namespace}_history_heads"
        #: Every channel a group can map to (made once: groups share these strings).
        self.buckets = tuple(f"{namespace}%{bucket:03x}" for bucket in range(BUCKETS))

    def channel(self, group: str) -> str:
        """The NOTIFY channel carrying `group`: its bucket (at most 24 bytes, never NUL)."""
        # surrogatepass: a total function of any str; the core refuses such names anyway.
        return self.buckets[zlib.crc32(group.encode("utf-8", "surrogatepass")) & (BUCKETS - 1)]
