"""Translating a driver's exceptions into `ChannelsError` subclasses, once, at the layer boundary.

A layer wraps every call into its driver (or its whole public method) in
`translate_errors` with one mapping, so that an application's
``except ChannelsError`` sees every broker problem::

    REDIS_ERRORS = {
        redis.ConnectionError: BrokerUnavailableError,
        redis.TimeoutError: BrokerUnavailableError,
        redis.AuthenticationError: BrokerRefusedError,
        redis.exceptions.NoPermissionError: BrokerRefusedError,
        redis.RedisError: ChannelsError,
    }

    with translate_errors(REDIS_ERRORS, what=f"publish to {self.url}"):
        await client.publish(channel, payload)

The most specific mapped class of the exception wins (a NoPermissionError
above is refused, not a generic ChannelsError). Modelled on httpx's
``map_httpcore_exceptions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from .exceptions import ChannelsError

__all__ = ["ErrorMapping", "translate_errors"]

#: Driver exception class -> the `ChannelsError` subclass it becomes.
ErrorMapping = Mapping[type[BaseException], type[ChannelsError]]

_MASK = "***"


@contextmanager
def translate_errors(
    mapping: ErrorMapping, *, what: str, secrets: Iterable[str] = ()
) -> Iterator[None]:
    """Re-raise a mapped driver exception as its `ChannelsError`, ``from`` the original.

    The message reads ``"could not {what}: {DriverError}: {driver message}"``;
    `what` must already be free of secrets (use `channels_core.urls.redact_url`),
    and every string in `secrets` (e.g. ``url_secrets(url)``) is masked in
    the driver's message too. `ChannelsError`s, unmapped exceptions and
    cancellation pass through unchanged.
    """
    try:
        yield
    except ChannelsError:
        raise
    except Exception as exc:
        target = _most_specific(mapping, type(exc))
        if target is None:
            raise
        detail = _masked(str(exc), secrets)
        message = f"could not {what}: {type(exc).__name__}"
        raise target(f"{message}: {detail}" if detail else message) from exc


def _most_specific(
    mapping: ErrorMapping, error_class: type[BaseException]
) -> type[ChannelsError] | None:
    for cls in error_class.__mro__:
        target = mapping.get(cls)
        if target is not None:
            return target
    return None


def _masked(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text
