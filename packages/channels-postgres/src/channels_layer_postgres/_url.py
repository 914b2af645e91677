"""What a ``postgresql://`` URL may be: the schemes, and a check before any connection."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from channels_core import redact_url

__all__ = ["DEFAULT_URL", "SCHEMES", "SSL_MODES", "check_url"]

SCHEMES = ("postgres", "postgresql")
DEFAULT_URL = "postgresql://"
#: libpq's ``sslmode`` values (asyncpg would only refuse another at the first connection).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def check_url(url: object) -> str:
    """Return `url` if it is a postgres:// or postgresql:// URL, else raise ValueError.

    The message shows the URL through `redact_url` only: no password, and no
    secret query parameter (``password``, ``sslpassword``, ...).
    """
    if not isinstance(url, str):
        raise TypeError(f"the PostgreSQL URL must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{redact_url(url)!r} is not a PostgreSQL URL; "
            "use postgresql://user@host:5432/database (or postgres://)"
        )
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name == "sslmode" and value not in SSL_MODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, got {value!r}")
    return url
