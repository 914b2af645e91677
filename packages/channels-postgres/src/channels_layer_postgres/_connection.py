"""Opening asyncpg connections and pools, and what asyncpg's errors mean for the layer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import asyncpg.exceptions

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ErrorMapping,
    translate_errors,
)

from ._options import PostgreSQLLayerOptions

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECTION_ERRORS",
    "POSTGRES_ERRORS",
    "connect_kwargs",
    "errors_translated",
    "is_refusal",
    "take_transport",
]
#: Seconds a polite close may take before the connection is simply cut
#: (a silently dead connection would otherwise hold up leaving the channel).
CLOSE_TIMEOUT = 1.0

#: Errors a retry or a reconnect can cure: network failures, a killed backend,
#: a server starting up or shutting down, a closed connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError and ConnectionError
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    # The client's protocol state is broken. Seen after pg_terminate_backend or
    # a restart: the server's termination message has arrived but not yet the
    # socket's close, and a statement sent in between fails with "cannot
    # switch to state ...". The connection is unusable either way: replace it.
    asyncpg.exceptions.InternalClientError,
)


def is_refusal(exc: BaseException) -> bool:
    """True for an error the server answered (permission denied, no such table, ...).

    Unlike `CONNECTION_ERRORS`, retrying does not cure it, and the
    connection stays usable.
    """
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, CONNECTION_ERRORS)


def take_transport(connection: asyncpg.Connection, protocol: asyncio.Protocol) -> None:
    """Hand the socket of an open, idle asyncpg `connection` to `protocol`, for good.

    asyncpg has connected and authenticated it (TLS, auth methods, server
    settings); from now on only `protocol` reads and writes the socket. The
    asyncpg connection is marked aborted, so it never touches the socket
    again, reports itself closed, and warns of nothing when collected.
    The only place relying on asyncpg's private attributes (``_transport``,
    ``_aborted``): checked, so a newer asyncpg that renames them fails here.
    """
    transport: Any = getattr(connection, "_transport", None)
    # Duck-typed: uvloop's transports are not asyncio.Transport subclasses.
    if not hasattr(transport, "set_protocol") or connection.is_closed():
        raise asyncpg.exceptions.InterfaceError("the connection is not open")
    if connection.is_in_transaction():
        raise asyncpg.exceptions.InterfaceError("the connection is inside a transaction")
    transport.set_protocol(protocol)
    connection._aborted = True
    connection._cleanup()
    protocol.connection_made(transport)


def connect_kwargs(url: str, settings: PostgreSQLLayerOptions) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` / ``create_pool`` from the URL and settings."""
    kwargs: dict[str, Any] = {"dsn": url, "timeout": settings.connect_timeout}
    if "application_name=" not in url:
        kwargs["server_settings"] = {"application_name": settings.application_name}
    if settings.ssl is not None:
        kwargs["ssl"] = settings.ssl
    return kwargs


#: asyncpg's exceptions -> what the application sees (`from` the original): what a
#: reconnect can cure is an outage, anything else the server answered is a refusal
#: (unknown database or role, wrong password, missing privilege, ...).
POSTGRES_ERRORS: ErrorMapping = {
    **dict.fromkeys(CONNECTION_ERRORS, BrokerUnavailableError),
    asyncpg.PostgresError: BrokerRefusedError,
}

#: What to do about the refusals a user meets most (most specific first).
_HINTS: tuple[tuple[type[Exception], str], ...] = (
    (
        asyncpg.exceptions.InvalidCatalogNameError,
        "create that database or put an existing one in the URL",
    ),
    (asyncpg.exceptions.InvalidPasswordError, "check the user name and password"),
    (
        asyncpg.exceptions.InvalidAuthorizationSpecificationError,
        "check the user name in the URL (and the server's pg_hba.conf)",
    ),
    (
        asyncpg.exceptions.InsufficientPrivilegeError,
        "grant that privilege to the URL's role, or connect as a role that has it "
        "(see the channels-layer-postgres README)",
    ),
)


class errors_translated:
    """The layer's one error boundary: asyncpg's errors become `ChannelsError`s.

    `what` says what was being done, without secrets (``"publish to
    postgresql://app:***@db/app"``); the refusals users meet most get a hint
    saying what to fix. A connection parameter of the URL that the server
    does not know is a bad URL value: `ValueError`.

    A class rather than a generator: it wraps every publish, and entering
    and leaving it costs nothing until an exception passes through.
    """

    __slots__ = ("_secrets", "_what")

    def __init__(self, what: str, secrets: Iterable[str] = ()) -> None:
        self._what = what
        self._secrets = secrets

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return  # nothing happened, or a cancellation: passes through
        with _translated(self._what, self._secrets):
            raise exc


@contextmanager
def _translated(what: str, secrets: Iterable[str]) -> Iterator[None]:
    """The translation `errors_translated` applies to an exception raised in its body."""
    try:
        with translate_errors(POSTGRES_ERRORS, what=what, secrets=secrets):
            try:
                yield
            except asyncpg.exceptions.UndefinedObjectError as exc:
                if "configuration parameter" not in str(exc):
                    raise
                raise ValueError(
                    f"could not {what}: the server refused a connection parameter of the "
                    f"URL: {exc}; remove it from the URL's query (asyncpg sends parameters "
                    "it does not know to the server as settings)"
                ) from exc
    except BrokerRefusedError as refusal:
        cause = refusal.__cause__
        hint = next((hint for kind, hint in _HINTS if isinstance(cause, kind)), None)
        if hint is None:
            raise
        raise BrokerRefusedError(f"{refusal}; {hint}") from cause
