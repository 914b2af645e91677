"""Group and pattern names as they travel to Redis: UTF-8, behind the layer's prefix.

In cluster mode every channel name starts with a hash tag derived from the
group (`WireNames.hash_tag`): Redis Cluster hashes only the tag to pick the
slot, so any other key of the group that starts with the same tag (the
group's history stream) lives in the same slot, on the same shard, as its
live channel.
"""

from __future__ import annotations

import hashlib

__all__ = ["WireNames"]

_GLOB_SPECIAL = frozenset("\\*?[]^")


class WireNames:
    """Encodes names for the wire and decodes channel names coming back.

    Redis channel names are binary-safe, so a group name of any length and
    content is sent as its UTF-8 bytes; the prefix is escaped in patterns so
    that it matches only itself. With `hash_tags` (cluster mode) a channel
    is ``{TAG}`` + prefix + group, see `hash_tag`.
    """

    def __init__(self, prefix: str, *, hash_tags: bool = False) -> None:
        self._prefix = prefix.encode()
        self._pattern_prefix = "".join(
            "\\" + char if char in _GLOB_SPECIAL else char for char in prefix
        ).encode()
        self.hash_tags = hash_tags

    def hash_tag(self, group: str) -> bytes:
        """``b"{TAG}"`` for `group` in cluster mode, else ``b""``: every key of the group starts so.

        TAG is 8 hex digits of BLAKE2b over prefix + group (UTF-8): it never
        holds a brace (a group's own ``{`` or ``}`` cannot change the slot),
        spreads groups evenly over the slots, and is the same in every
        process and language that computes it.
        """
        if not self.hash_tags:
            return b""
        digest = hashlib.blake2b(self._prefix + group.encode(), digest_size=4).hexdigest()
        return b"{" + digest.encode() + b"}"

    def channel(self, group: str) -> bytes:
        return self.hash_tag(group) + self._prefix + group.encode()

    def pattern(self, pattern: str) -> bytes:
        return self._pattern_prefix + pattern.encode()

    def group(self, channel: bytes) -> str | None:
        """The group of a channel that arrived, or None if it is not one of ours."""
        if self.hash_tags:
            if not channel.startswith(b"{") or channel[9:10] != b"}":
                return None
            channel = channel[10:]
        if not channel.startswith(self._prefix):
            return None
        try:
            return channel[len(self._prefix) :].decode()
        except UnicodeDecodeError:
            return None
