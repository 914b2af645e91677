"""Keeping secrets out of sight: the display form of a layer URL.

Every layer shows its URL in `repr`, log records and error messages through
`redact_url`, so that no password, key or token ever appears there. It
works on the text, without parsing hosts, so every form a driver accepts
keeps its shape: several hosts (``postgresql://u:pw@h1:5432,h2:5433/db``),
unix sockets (``unix:///run/redis.sock?password=pw``,
``redis+unix://:pw@/run/redis.sock``,
``postgresql:///db?host=/run/postgresql&password=pw``), IPv6 literals,
and a password holding an unencoded ``@`` or ``/``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

__all__ = ["SECRET_WORDS", "is_secret_name", "redact_url", "url_secrets"]

#: A query parameter whose name contains one of these (any case) carries a secret.
SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "credential")

#: What replaces a secret.
MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def is_secret_name(name: str) -> bool:
    """True if a query parameter called `name` carries a secret (``sslpassword``, ``api_key``)."""
    lowered = unquote_plus(name).lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` with the user-info password and every secret query parameter replaced by ``***``.

    The user name, hosts, path and the other parameters are kept as they
    are written. A password must not hold an unencoded ``?`` or ``#`` (no
    driver accepts that either).
    """
    head, authority, query, fragment = _split(url)
    if authority is not None:
        userinfo, at, hosts = authority.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            if colon and password:
                userinfo = f"{user}:{MASK}"
            authority = f"{userinfo}@{hosts}"
        head += authority
    if query is not None:
        head += "?" + "&".join(
            f"{name}={MASK}" if value and is_secret_name(name) else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in query.split("&"))
        )
    return head if fragment is None else f"{head}#{fragment}"


def url_secrets(url: str) -> list[str]:
    """The secret values in `url`, as written and percent-decoded (to mask them elsewhere)."""
    _, authority, query, _ = _split(url)
    found: list[str] = []
    if authority is not None:
        userinfo, at, _ = authority.rpartition("@")
        if at:
            found.append(userinfo.partition(":")[2])
    for item in (query or "").split("&"):
        name, _, value = item.partition("=")
        if is_secret_name(name):
            found.append(value)
    secrets = [*found, *(unquote(value) for value in found)]
    return list(dict.fromkeys(secret for secret in secrets if secret))


def _split(url: str) -> tuple[str, str | None, str | None, str | None]:
    """``(scheme "://" , authority and path, query, fragment)``, split on the raw text.

    The authority runs up to the query, so that an unencoded ``/`` in a
    password still counts as part of the user info; None marks a part the
    URL does not have.
    """
    rest, hash_sign, fragment = url.partition("#")
    rest, question_mark, query = rest.partition("?")
    scheme = _SCHEME.match(rest)
    head = scheme.group() if scheme else ""
    rest = rest[len(head) :]
    authority: str | None = None
    if rest.startswith("//"):
        head, authority = head + "//", rest[2:]
    else:
        head += rest
    return (
        head,
        authority,
        query if question_mark else None,
        fragment if hash_sign else None,
    )
