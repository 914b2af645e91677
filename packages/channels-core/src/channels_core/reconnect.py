"""Retry timing for network layers: reconnect backoff and bounded publish retries.

Shared so that every layer backs off the same way, logs an outage the same
way and reports it with the same error, `BrokerUnavailableError`:

* `reconnect_forever`: the policy for a lost connection (first try at once,
  then exponential backoff with jitter, never giving up);
* `call_with_deadline`: the publish path (try once; on a connection failure
  retry within the time budget; then `BrokerUnavailableError`);
* `retry_until`: retry for a bounded time (connecting when a channel opens).

Log levels of `reconnect_forever`, the same in every layer: the loss is a
WARNING, the first failed attempt a WARNING, later failed attempts DEBUG
(the outage is already reported), and the recovery a WARNING (it closes the
outage an operator saw, and messages published meanwhile were missed).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import anyio

from .exceptions import BrokerUnavailableError

__all__ = ["Backoff", "call_with_deadline", "reconnect_forever", "retry_until"]

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
    return await _retry(operation, deadline, timeout, retry_on, what, backoff)


async def call_with_deadline(
    operation: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff = Backoff(),
    first_attempt: Callable[[], Awaitable[T]] | None = None,
    deadline: float | None = None,
) -> T:
    """Try once; on a `retry_on` error retry with backoff until `timeout` s have passed.

    The publish path of a network layer: the first try costs nothing more
    than the operation itself, the first retry goes at once (a pooled
    connection that died is replaced), later ones after backoff delays.
    Every try is bounded by what is left of `timeout` (hitting that bound
    counts as a connection failure), except `first_attempt`: pass it to
    make the first try without a cancel scope, when it bounds itself (a
    driver's socket or statement timeout). When the time is up,
    `BrokerUnavailableError` is raised from the last error; any other error
    passes through at once. `deadline` (event loop time, by default `timeout`
    s from now) is for a caller whose time started before this call.
    """
    if deadline is None:
        deadline = anyio.current_time() + timeout
    retryable: tuple[type[BaseException], ...] = (*retry_on, TimeoutError)

    async def bounded() -> T:
        with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
            return await operation()

    try:
        return await (bounded if first_attempt is None else first_attempt)()
    except retryable as exc:
        if anyio.current_time() >= deadline:
            raise _unavailable(what, timeout, exc) from exc
    return await _retry(bounded, deadline, timeout, retryable, what, backoff)


async def reconnect_forever(
    connect: Callable[[], Awaitable[T]],
    *,
    what: str,
    logger: logging.Logger,
    backoff: Backoff = Backoff(),
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    cause: object = None,
    on_attempt: Callable[[], object] | None = None,
    recovers: bool = False,
) -> T:
    """Call `connect` until it succeeds: at once, then after each backoff delay, forever.

    `what` names the connection and server without secrets (``"the
    pub/sub connection to redis://127.0.0.1:6379/0"``); `cause`, if given,
    is why the connection was lost, logged first. `on_attempt` is called
    before every attempt (to count them); `recovers` says that the layer
    keeps history, so the channel reads back what was published meanwhile
    (the log says so instead of "missed"). Errors outside `retry_on` end the
    loop; by default every `Exception` is retried, since a refused password
    or a missing permission may be fixed while the layer waits. Log levels:
    see the module docstring.
    """
    if cause is not None:
        logger.warning("lost %s (%s); reconnecting", what, _describe(cause))
    started = anyio.current_time()
    delays = backoff.delays()
    attempts = 0
    while True:
        attempts += 1
        if on_attempt is not None:
            on_attempt()
        try:
            result = await connect()
        except retry_on as exc:
            level = logging.WARNING if attempts == 1 else logging.DEBUG
            logger.log(
                level,
                "could not reconnect %s (attempt %d: %s); retrying with backoff up to %g s",
                what,
                attempts,
                _describe(exc),
                backoff.maximum,
            )
            await anyio.sleep(next(delays))
            continue
        logger.warning(
            "reconnected %s after %d attempt(s) in %.1f s; messages published meanwhile %s",
            what,
            attempts,
            anyio.current_time() - started,
            "are read back from the history" if recovers else "were missed",
        )
        return result


async def _retry(
    operation: Callable[[], Awaitable[T]],
    deadline: float,
    timeout: float,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff,
) -> T:
    delays = backoff.delays()
    while True:
        try:
            return await operation()
        except retry_on as exc:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise _unavailable(what, timeout, exc) from exc
            await anyio.sleep(min(next(delays), remaining))


def _unavailable(what: str, timeout: float, exc: BaseException) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"could not {what} within {timeout:g} s: {_describe(exc)}. "
        "Check that the server is running and reachable."
    )


def _describe(cause: object) -> str:
    if isinstance(cause, BaseException):
        # drivers' messages may end with their own period
        text = str(cause).rstrip(". ")
        return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return str(cause)
