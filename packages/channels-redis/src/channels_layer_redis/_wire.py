"""Group and pattern names as they travel to Redis: UTF-8, behind the layer's prefix.

In cluster mode every channel name starts with a hash tag derived from the
group (`WireNames.hash_tag`): Redis Cluster hashes only the tag to pick the
slot. With history on, each group also has two keys (`WireNames.history_keys`):
its log (a stream) and the log's meta hash (epoch, counter, last time). Both
carry a hash tag that puts them in the live channel's hash slot, so a script
can write the log and publish on the channel in one atomic step under Redis
Cluster too.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from itertools import count

from redis.crc import key_slot

__all__ = ["WireNames", "pack_command", "pack_publish", "slot_tag"]

_GLOB_SPECIAL = frozenset("\\*?[]^")
#: Names remembered each way (`WireNames.channel`, `WireNames.group`) before starting afresh.
_REMEMBERED = 4096


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
        #: Recent names both ways: each message publishes to and arrives on one.
        self._channels: dict[str, bytes] = {}
        self._groups: dict[bytes, str | None] = {}

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
        channel = self._channels.get(group)
        if channel is None:
            if len(self._channels) >= _REMEMBERED:
                self._channels.clear()
            channel = self._channels[group] = self.hash_tag(group) + self._prefix + group.encode()
        return channel

    def pattern(self, pattern: str) -> bytes:
        return self._pattern_prefix + pattern.encode()

    def group(self, channel: bytes) -> str | None:
        """The group of a channel that arrived, or None if it is not one of ours."""
        try:
            return self._groups[channel]
        except KeyError:
            pass
        if len(self._groups) >= _REMEMBERED:
            self._groups.clear()
        group = self._groups[channel] = self._decode(channel)
        return group

    def _decode(self, channel: bytes) -> str | None:
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

    def history_keys(self, group: str) -> tuple[bytes, bytes]:
        """``(log, meta)``: the keys of `group`'s history, in its channel's hash slot.

        ``{tag}:log`` when the channel itself is a valid tag (the common
        case: ``{room}:log`` for group ``room``), else ``{tag}<channel>:log``;
        the tag holds no ``}``, so the channel after it keeps keys of
        different groups apart.
        """
        channel = self.channel(group)
        if self.hash_tags:  # the channel starts with its own tag already
            return channel + b":log", channel + b":meta"
        tag = slot_tag(channel)
        base = b"{" + tag + b"}" + (b"" if tag == channel else channel)
        return base + b":log", base + b":meta"


def slot_tag(name: bytes) -> bytes:
    """A hash tag (no ``}`` in it) whose cluster slot is `name`'s own.

    `name`'s own tag if it has one (text between its first ``{`` and the
    next ``}``), else `name` if it holds no ``}``; else (a name with a
    ``}`` but no valid tag) the first decimal number in that slot.
    """
    start = name.find(b"{")
    if start > -1:
        end = name.find(b"}", start + 1)
        if end > start + 1:
            return name[start + 1 : end]
    if b"}" not in name:
        return name
    return _number_in_slot(key_slot(name))


@lru_cache(maxsize=1024)
def _number_in_slot(slot: int) -> bytes:
    """The smallest decimal number whose hash slot is `slot` (16,384 tries on average)."""
    for number in count():
        tag = b"%d" % number
        if key_slot(tag) == slot:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


def pack_command(*args: bytes | str | int) -> bytes:
    """A command as RESP, ready to write: str as UTF-8, int in decimal, bytes as they are."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def pack_publish(channel: bytes, message: bytes, command: bytes = b"PUBLISH") -> bytes:
    """``PUBLISH channel message`` (or `command`) as `pack_command` packs it, in one formatting."""
    return b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(command),
        command,
        len(channel),
        channel,
        len(message),
        message,
    )
