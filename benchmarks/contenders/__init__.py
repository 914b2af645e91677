"""The contenders: our layers, encode/broadcaster's backends, and the raw clients.

NATS has no broadcaster backend: its contenders are ours and raw nats-py.
"""

from __future__ import annotations

from .base import Contender, OnMessage, Session, Stream
from .broadcaster_ import broadcaster_contenders
from .django_ import django_contenders
from .ours import channels_contenders
from .raw import raw_contenders

__all__ = ["Contender", "OnMessage", "Session", "Stream", "all_contenders"]


def all_contenders(
    redis_url: str, postgres_url: str, nats_url: str = "nats://127.0.0.1:4222"
) -> list[Contender]:
    """Every contender, floors first, then broadcaster and Django's layer, then ours."""
    return [
        *raw_contenders(redis_url, postgres_url, nats_url),
        *broadcaster_contenders(redis_url, postgres_url),
        *django_contenders(redis_url),
        *channels_contenders(redis_url, postgres_url, nats_url),
    ]
