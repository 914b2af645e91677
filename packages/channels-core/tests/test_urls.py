"""`redact_url` masks every secret in every URL form the layers accept, and nothing else."""

from __future__ import annotations

import pytest

from channels_core import redact_url
from channels_core.urls import is_secret_name, url_secrets

REDACTED = [
    # Redis: user info, with and without a user name; TLS; a password parameter
    ("redis://user:hunter2@127.0.0.1:6379/0", "redis://user:***@127.0.0.1:6379/0"),
    ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    (
        "rediss://default:hunter2@[::1]:6380/1?ssl_cert_reqs=none",
        "rediss://default:***@[::1]:6380/1?ssl_cert_reqs=none",
    ),
    ("redis://127.0.0.1/0?password=hunter2&db=1", "redis://127.0.0.1/0?password=***&db=1"),
    # Redis unix sockets, both spellings
    ("unix:///run/redis.sock?db=2&password=hunter2", "unix:///run/redis.sock?db=2&password=***"),
    ("redis+unix://:hunter2@/run/redis.sock?db=2", "redis+unix://:***@/run/redis.sock?db=2"),
    ("unix://user:hunter2@/run/redis.sock", "unix://user:***@/run/redis.sock"),
    # PostgreSQL: the leak, several hosts, a socket directory, libpq parameters
    (
        "postgresql://u:secret@127.0.0.1/test?sslpassword=topsecret",
        "postgresql://u:***@127.0.0.1/test?sslpassword=***",
    ),
    (
        "postgres://app:hunter2@db1:5432,db2:5433/app?target_session_attrs=read-write",
        "postgres://app:***@db1:5432,db2:5433/app?target_session_attrs=read-write",
    ),
    (
        "postgresql:///app?host=/var/run/postgresql&user=app&password=hunter2",
        "postgresql:///app?host=/var/run/postgresql&user=app&password=***",
    ),
    (
        "postgresql://app@%2Fvar%2Frun%2Fpostgresql/app?PassWord=hunter2",
        "postgresql://app@%2Fvar%2Frun%2Fpostgresql/app?PassWord=***",
    ),
    # any parameter naming a password, secret, token or key, in any case
    (
        "nats://127.0.0.1:4222?auth_token=t0k3n&nkey_seed=s33d&client_secret=shh&API_KEY=k3y0&name=x",
        "nats://127.0.0.1:4222?auth_token=***&nkey_seed=***&client_secret=***&API_KEY=***&name=x",
    ),
    # percent-encoded and unencoded special characters in the password
    ("postgresql://u:p%40ss%2Fw@host/db", "postgresql://u:***@host/db"),
    ("redis://u:p@ss@host:6379/0", "redis://u:***@host:6379/0"),
    ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),
    # a fragment is kept
    ("memory://user:hunter2@hub#part", "memory://user:***@hub#part"),
]

UNCHANGED = [
    "memory://",
    "memory://hub",
    "redis://127.0.0.1:6379/0",
    "redis://user@127.0.0.1:6379/0",
    "postgresql://postgres@127.0.0.1:5432/test?application_name=x&sslmode=require",
    "postgresql://u:@127.0.0.1/db",
    "unix:///run/redis.sock?db=0",
    "redis://127.0.0.1/0?password=",
    "not a url at all",
    "",
]


@pytest.mark.parametrize(("url", "expected"), REDACTED)
def test_every_secret_is_masked_and_the_rest_kept(url: str, expected: str) -> None:
    shown = redact_url(url)
    assert shown == expected
    assert url_secrets(url)
    for secret in url_secrets(url):
        assert secret not in shown


@pytest.mark.parametrize("url", UNCHANGED)
def test_urls_without_secrets_are_unchanged(url: str) -> None:
    assert redact_url(url) == url
    assert url_secrets(url) == []


def test_url_secrets_lists_raw_and_decoded_values() -> None:
    url = "postgresql://u:p%40ss@host/db?sslpassword=a%2Bb&user=app"
    assert url_secrets(url) == ["p%40ss", "a%2Bb", "p@ss", "a+b"]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("sslpassword", True),
        ("SSL_KEYFILE_PASSWORD", True),
        ("access%5Ftoken", True),
        ("passwd", True),
        ("client_secret", True),
        ("credentials", True),
        ("user", False),
        ("host", False),
        ("socket_keepalive", False),
        ("db", False),
    ],
)
def test_secret_parameter_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
