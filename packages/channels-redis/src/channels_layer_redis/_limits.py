"""The largest message the server will actually deliver, from its pub/sub output buffer limit.

Redis closes a subscriber's connection as soon as its output buffer passes
``client-output-buffer-limit pubsub <hard>`` (32 MiB by default), so a
message near that size is published fine and delivered to nobody. One
message can also reach a connection twice (through a name and a pattern
subscription). The layer therefore accepts payloads up to a quarter of the
hard limit (minus its envelope): twice the message still leaves half the
buffer for whatever else is queued. Without a hard limit (0), Redis's own
bulk string limit (512 MiB) applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._envelope import HEADER_BYTES

__all__ = ["DEFAULT_PUBSUB_HARD_LIMIT", "MAX_BULK_BYTES", "payload_limit", "pubsub_hard_limit"]

#: Redis refuses bulk strings beyond 512 MiB (proto-max-bulk-len's default).
MAX_BULK_BYTES = 512 * 1024 * 1024
#: Redis's default ``client-output-buffer-limit pubsub`` hard limit.
DEFAULT_PUBSUB_HARD_LIMIT = 32 * 1024 * 1024


def payload_limit(hard_limit: int) -> int:
    """The largest payload to accept under a pub/sub hard limit of `hard_limit` bytes."""
    if hard_limit <= 0:
        return MAX_BULK_BYTES - HEADER_BYTES
    return min(MAX_BULK_BYTES, hard_limit // 4) - HEADER_BYTES


def pubsub_hard_limit(config: Mapping[Any, Any]) -> int | None:
    """The pub/sub hard limit in a ``CONFIG GET client-output-buffer-limit`` reply, if any."""
    for key, value in config.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name != "client-output-buffer-limit" or value is None:
            continue
        words = str(value.decode() if isinstance(value, bytes) else value).split()
        for index, word in enumerate(words[:-1]):
            if word == "pubsub" and words[index + 1].isdigit():
                return int(words[index + 1])
    return None
