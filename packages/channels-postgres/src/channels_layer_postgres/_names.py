"""Group names -> PostgreSQL channel names, and safe SQL identifiers.

A NOTIFY channel is an identifier of at most 63 bytes. Short printable
ASCII group names map readably to ``<namespace>:<group>``; every other name
(longer, non-ASCII, control characters) maps to ``<namespace>#<readable
prefix>~<128-bit hash>``, so that long names sharing a prefix never share a
channel. The two forms differ in their separator, so they never meet. The
real group name also travels in each notification (see `_envelope`), so a
hash collision or a foreign NOTIFY could never misdeliver anyway.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["IDENTIFIER_LIMIT", "ChannelNames", "quote_ident"]

#: PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1).
IDENTIFIER_LIMIT = 63

_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,19}")
_HASH_CHARS = 32  # hex digits: 128 bits
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


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
        #: The channel every publish also notifies while someone has a pattern subscription.
        self.firehose = f"{namespace}!patterns"
        self.payloads_table = f"{namespace}_payloads"
        self.patterns_table = f"{namespace}_pattern_listeners"
        self.history_table = f"{namespace}_history"  # with history on (see `_history`)
        self.heads_table = f"{namespace}_history_heads"
        self._direct_prefix = f"{namespace}:"
        self._hashed_prefix = f"{namespace}#"

    def channel(self, group: str) -> str:
        """The NOTIFY channel carrying `group` (at most 63 bytes, never NUL)."""
        direct = self._direct_prefix + group
        if len(direct) <= IDENTIFIER_LIMIT and _PRINTABLE.fullmatch(group):
            return direct
        digest = hashlib.sha256(group.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
        room = IDENTIFIER_LIMIT - len(self._hashed_prefix) - 1 - _HASH_CHARS
        readable = "".join(char for char in group[: room * 4] if " " <= char <= "~")[:room]
        return f"{self._hashed_prefix}{readable}~{digest}"
