"""The contenders: our layers, encode/broadcaster's backends, and the raw clients."""

from __future__ import annotations

from .base import Contender, OnMessage, Session, Stream
from .broadcaster_ import broadcaster_contenders
from .django_ import django_contenders
from .ours import channels_contenders
from .raw import raw_contenders

__all__ = ["Contender", "OnMessage", "Session", "Stream", "all_contenders"]


def all_contenders(redis_url: str, postgres_url: str) -> list[Contender]:
    """Every contender, floors first, then broadcaster and Django's layer, then ours."""
    return [
        *raw_contenders(redis_url, postgres_url),
        *broadcaster_contenders(redis_url, postgres_url),
        *django_contenders(redis_url),
        *channels_contenders(redis_url, postgres_url),
    ]
