"""The layer's options, and what a ``nats://`` URL says: servers and credentials.

Options come as keyword arguments or URL query parameters
(``nats://127.0.0.1:4222?namespace=myapp&publish_timeout=2``); keywords win.
"""

from __future__ import annotations

import ssl as ssl_module
from dataclasses import dataclass, fields
from urllib.parse import unquote, urlsplit

from channels_core import Backoff, options, redact_url
from channels_core.history import HistoryOptions
from channels_core.urls import is_secret_name

__all__ = ["SCHEMES", "NatsLayerOptions", "ServerList", "parse_url"]

SCHEMES = ("nats", "nats+tls")
_DEFAULT_PORT = 4222


@dataclass(frozen=True, slots=True)
class NatsLayerOptions(HistoryOptions):
    """Every option of the NATS layer (see the package README for each).

    ``history_size``/``history_ttl`` (from `HistoryOptions`) turn history on:
    a JetStream stream per namespace (see `channels_layer_nats._history`).
    """

    #: First subject token(s) of every group: isolates applications on one server.
    namespace: str = options.text("channels", allow_empty=False)
    #: Seconds entering the channel keeps trying to reach a server.
    connect_timeout: float = options.seconds(5.0)
    #: Seconds a publish waits for a connection during an outage, then BrokerUnavailableError.
    publish_timeout: float = options.seconds(5.0)
    #: Seconds a subscribe waits for the server's confirmation (also across a reconnect).
    subscribe_timeout: float = options.seconds(5.0)
    #: Delays between reconnection attempts.
    reconnect_backoff: Backoff = options.instance(Backoff, default_factory=Backoff)
    #: Seconds between the client's PINGs; two unanswered ones mean the server is gone.
    ping_interval: float = options.seconds(20.0)
    #: Bytes of outgoing messages nats-py may hold before a publish waits for the socket.
    pending_size: int = options.count(2 * 1024 * 1024)
    #: Token authentication (``?token=`` or a keyword; never in the user info).
    token: str = options.text("")
    #: Path of a ``.creds`` file (user JWT and NKEY seed), for decentralised auth.
    credentials_file: str = options.text("")
    #: Path of a file holding an NKEY seed, for NKEY auth.
    nkey_seed_file: str = options.text("")
    #: An NKEY seed itself (``SU...``), for NKEY auth without a file; a secret,
    #: never shown (prefer `nkey_seed_file`, or an environment variable).
    nkey_seed: str = options.text("")
    #: CA certificate file to verify servers with (``nats+tls://``).
    tls_ca_file: str = options.text("")
    #: Client certificate and key files, for servers that verify clients.
    tls_cert_file: str = options.text("")
    tls_key_file: str = options.text("")
    #: Host name expected in the server's certificate (default: the URL's host).
    tls_hostname: str = options.text("")
    #: A ready ``ssl.SSLContext`` (keyword only; wins over the ``tls_*`` files).
    ssl: ssl_module.SSLContext | None = options.instance(
        ssl_module.SSLContext, default=None, allow_none=True
    )
    #: Connection name shown in the server's monitoring (``/connz``).
    client_name: str = options.text("channels-layer-nats")

    def __repr__(self) -> str:
        """The options, secrets (``token``, ``nkey_seed``) masked."""
        shown = (
            f"{field.name}={'***' if is_secret_name(field.name) and value else value!r}"
            for field in fields(self)
            for value in [getattr(self, field.name)]
        )
        return f"{type(self).__name__}({', '.join(shown)})"

    def tls_context(self, tls: bool) -> ssl_module.SSLContext | None:
        """The SSL context for a ``nats+tls://`` URL (or when any TLS option is set)."""
        if self.ssl is not None:
            return self.ssl
        if not (tls or self.tls_ca_file or self.tls_cert_file):
            return None
        context = ssl_module.create_default_context(cafile=self.tls_ca_file or None)
        if self.tls_cert_file:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file or None)
        return context


@dataclass(frozen=True, slots=True)
class ServerList:
    """What the URL says: the seed servers (without credentials), TLS, user and password."""

    servers: tuple[str, ...]
    tls: bool
    user: str | None
    password: str | None
    query: str


def parse_url(url: str) -> ServerList:
    """Split ``nats[+tls]://[user:password@]host:port[,host:port...][?options]``.

    Raises `ValueError` (never showing a secret) for another scheme, a
    malformed seed list, or user info without a password.
    """
    if not isinstance(url, str):
        raise TypeError(f"the NATS URL must be a str, got {type(url).__name__}")
    shown = redact_url(url)
    scheme, separator, rest = url.partition("://")
    if scheme.lower() not in SCHEMES or not separator:
        raise ValueError(
            f"{shown!r} is not a NATS URL; use nats://host:4222[,host:port...] or nats+tls://"
        )
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    userinfo, at, hosts = rest.rpartition("@")
    user = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        if not (colon and name and secret):
            shown = shown.replace(f"{userinfo}@", "***@", 1)  # a token, maybe: never shown
            raise ValueError(
                f"{shown!r}: user info must be user:password; for token authentication "
                "pass token=... (keyword or ?token=), never in the URL's user info"
            )
        user, password = unquote(name), unquote(secret)
    tls = scheme.lower() == "nats+tls"
    servers = tuple(_server(host, tls, shown) for host in hosts.rstrip("/").split(",") if host)
    return ServerList(servers or (_server("127.0.0.1", tls, shown),), tls, user, password, query)


def _server(host: str, tls: bool, shown: str) -> str:
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port or _DEFAULT_PORT
    except ValueError:
        raise ValueError(f"{shown!r}: {host!r} is not host:port") from None
    if not parts.hostname or parts.path:
        raise ValueError(f"{shown!r}: {host!r} is not host:port")
    hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{'tls' if tls else 'nats'}://{hostname}:{port}"
