"""What a ``postgresql://`` URL says: the server (for asyncpg), and layer options.

Layer options may come as query parameters too
(``postgresql://app@db/app?namespace=myapp&publish_timeout=2``); they are
taken out of the URL before asyncpg sees it. Keywords win.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from channels_core import redact_url

__all__ = ["DEFAULT_URL", "SCHEMES", "SSL_MODES", "check_url", "split_options"]

SCHEMES = ("postgres", "postgresql")
DEFAULT_URL = "postgresql://"
#: libpq's ``sslmode`` values (asyncpg would only refuse another at the first connection).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: Query parameters that belong to the driver although a layer option has the same name.
_DRIVER_PARAMETERS = frozenset({"application_name", "ssl"})


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


def split_options(url: str, names: Iterable[str]) -> tuple[str, list[tuple[str, str]]]:
    """`url` without the layer options of its query, and those options as (name, text).

    `names` are the layer's option names; every other parameter stays in
    the URL for asyncpg (libpq's ``sslmode``, ``application_name``, ...).
    """
    rest, hash_sign, fragment = url.partition("#")
    base, question_mark, query = rest.partition("?")
    if not question_mark:
        return url, []
    options = set(names) - _DRIVER_PARAMETERS
    kept: list[str] = []
    taken: list[tuple[str, str]] = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if unquote_plus(name) in options:
            taken.append((unquote_plus(name), unquote_plus(value)))
        else:
            kept.append(item)
    dsn = base + ("?" + "&".join(kept) if kept else "") + hash_sign + fragment
    return dsn, taken
