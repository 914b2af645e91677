"""Retry timing for network layers: reconnect backoff and bounded publish retries.

Shared so that every layer backs off the same way and reports an outage
with the same error, `BrokerUnavailableError`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import anyio

from .exceptions import BrokerUnavailableError

__all__ = ["Backoff", "retry_until"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: `initial`, times `factor` each step, capped at `maximum`."""

    initial: float = 0.05
    maximum: float = 2.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 <= self.initial <= self.maximum) or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"inconsistent backoff settings: {self!r}")

    def delays(self) -> Iterator[float]:
        """An endless sequence of delays in seconds."""
        delay = self.initial
        while True:
            yield delay * (1 - self.jitter * random.random())  # noqa: S311 - not crypto
            delay = min(self.maximum, delay * self.factor)


async def retry_until(
    operation: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff = Backoff(),
) -> T:
    """Run `operation` until it succeeds, retrying `retry_on` errors for `timeout` seconds.

    Raises `BrokerUnavailableError` (chained to the last error) when the
    time is up; `what` names the operation and server in that message, e.g.
    ``"publish to redis://127.0.0.1:6379/0"`` (without any password).
    """
    deadline = anyio.current_time() + timeout
    delays = backoff.delays()
    while True:
        try:
            return await operation()
        except retry_on as exc:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise BrokerUnavailableError(
                    f"could not {what} within {timeout:g} s: {_describe(exc)}. "
                    "Check that the server is running and reachable."
                ) from exc
            await anyio.sleep(min(next(delays), remaining))


def _describe(exc: BaseException) -> str:
    """``Type: message``, without the message's own final period (``Type`` alone if empty)."""
    message = str(exc).rstrip(". ")
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
