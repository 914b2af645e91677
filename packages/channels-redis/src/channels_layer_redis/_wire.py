"""Group and pattern names as they travel to Redis: UTF-8, behind the layer's prefix."""

from __future__ import annotations

__all__ = ["WireNames", "pack_publish"]

_GLOB_SPECIAL = frozenset("\\*?[]^")


class WireNames:
    """Encodes names for the wire and decodes channel names coming back.

    Redis channel names are binary-safe, so a group name of any length and
    content is sent as its UTF-8 bytes; the prefix is escaped in patterns so
    that it matches only itself.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.encode()
        self._pattern_prefix = "".join(
            "\\" + char if char in _GLOB_SPECIAL else char for char in prefix
        ).encode()

    def channel(self, group: str) -> bytes:
        return self._prefix + group.encode()

    def pattern(self, pattern: str) -> bytes:
        return self._pattern_prefix + pattern.encode()

    def group(self, channel: bytes) -> str | None:
        """The group of a channel that arrived, or None if it is not one of ours."""
        if not channel.startswith(self._prefix):
            return None
        try:
            return channel[len(self._prefix) :].decode()
        except UnicodeDecodeError:
            return None


def pack_publish(channel: bytes, message: bytes) -> bytes:
    """``PUBLISH channel message`` as a RESP command, ready to write (or to join with others)."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(message),
        message,
    )
