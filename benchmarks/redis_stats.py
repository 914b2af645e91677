"""Redis's own view of a fan-out: how many connections subscribe, how many bytes went out.

`RedisProbe` reads ``PUBSUB NUMSUB`` (subscribed connections for the group)
and the change of ``INFO stats`` ``total_net_output_bytes`` around the
timed region. Bytes out divided by (messages x encoded size) is how many
times the server sent each message: 1 for a layer that fans out in the
process, N for N subscriber connections. The counter is server-wide, so
other clients of the same server inflate it slightly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

__all__ = ["RedisProbe"]


class RedisProbe:
    """Observes one Redis server through its own connection (open it with ``async with``).

    `channel_of` maps a group to the Redis channel its contender publishes on
    (Django's layer prefixes group names); identity by default.
    """

    def __init__(self, url: str, channel_of: Callable[[str], str] | None = None) -> None:
        self._client = Redis.from_url(url)
        self._channel_of = channel_of or (lambda group: group)
        self._out_before = 0
        self._numsub = 0
        self._info_reply = 0

    async def __aenter__(self) -> RedisProbe:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def _net_out(self) -> int:
        stats = await self._client.info("stats")
        return int(stats["total_net_output_bytes"])

    async def before(self, group: str) -> None:
        numsub = await self._client.pubsub_numsub(self._channel_of(group))
        self._numsub = int(numsub[0][1]) if numsub else 0
        # The counter includes INFO's own reply: measure it to take it out.
        first = await self._net_out()
        self._out_before = await self._net_out()
        self._info_reply = self._out_before - first

    async def after(self, group: str, messages: int, message_bytes: int) -> dict[str, Any]:
        out = await self._net_out() - self._out_before - self._info_reply
        # What the server writes per delivery (RESP2 "message" frame) and per PUBLISH reply.
        channel = len(self._channel_of(group).encode())
        frame = len(f"*3\r\n$7\r\nmessage\r\n${channel}\r\n\r\n${message_bytes}\r\n\r\n")
        frame += channel + message_bytes
        reply = len(":1\r\n")
        deliveries = (out - messages * reply) / (messages * frame)
        return {
            "pubsub_numsub": self._numsub,
            "net_output_bytes": out,
            "frame_bytes": frame,
            "deliveries_per_message": round(deliveries, 3),
        }
