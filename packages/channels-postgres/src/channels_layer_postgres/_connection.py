"""Opening asyncpg connections and pools, and which errors mean "the server is gone"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import asyncpg.exceptions

from ._config import Settings

__all__ = ["CLOSE_TIMEOUT", "CONNECTION_ERRORS", "ListenConnection", "connect_kwargs"]

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
)


class ListenConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection handing every notification to `on_notification`.

    asyncpg only dispatches channels registered with ``add_listener``, which
    costs one LISTEN round trip per channel; taking over its dispatch lets
    the layer LISTEN and UNLISTEN many channels in one batch.
    """

    on_notification: Callable[[str, str], None] | None = None

    def _process_notification(self, pid: int, channel: str, payload: str) -> None:
        handler = self.on_notification
        if handler is not None:
            handler(channel, payload)


def connect_kwargs(url: str, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` / ``create_pool`` from the URL and settings."""
    kwargs: dict[str, Any] = {"dsn": url, "timeout": settings.connect_timeout}
    if "application_name=" not in url:
        kwargs["server_settings"] = {"application_name": settings.application_name}
    if settings.ssl is not None:
        kwargs["ssl"] = settings.ssl
    return kwargs
