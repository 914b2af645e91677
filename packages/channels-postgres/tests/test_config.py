"""Building the layer: URLs, options, old names, discovery, capabilities, secret hygiene."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

import channels_layer_postgres
from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Channel,
    LayerStats,
    NotSupportedError,
    get_layer,
    layer_capabilities,
    url_secrets,
)
from channels_core.reconnect import Backoff
from channels_core.testing import free_port
from channels_layer_postgres import (
    PostgreSQLChannelLayer,
    PostgreSQLLayerOptions,
    PostgreSQLLayerStats,
)


def test_both_schemes_resolve_to_the_layer() -> None:
    assert get_layer("postgres") is PostgreSQLChannelLayer
    assert get_layer("postgresql") is PostgreSQLChannelLayer
    channel = Channel.from_url("postgres://u@127.0.0.1:5432/db", publish_timeout=1.0)
    assert isinstance(channel.layer, PostgreSQLChannelLayer)
    assert channel.layer.options.publish_timeout == 1.0


def test_capabilities_come_from_the_class_attributes() -> None:
    assert layer_capabilities(PostgreSQLChannelLayer) == {
        "multi-group",
        "patterns",
        "publish-many",
        "history",
    }


def test_history_options_as_keywords_and_url_parameters() -> None:
    """Off by default; on with history_size, from a keyword or the URL (keywords win)."""
    assert not PostgreSQLChannelLayer("postgresql://127.0.0.1/db").keeps_history
    layer = PostgreSQLChannelLayer(
        "postgresql://127.0.0.1/db?history_size=50&history_ttl=2.5&sslmode=disable"
    )
    assert (layer.options.history_size, layer.options.history_ttl) == (50, 2.5)
    assert layer.keeps_history
    layer = PostgreSQLChannelLayer("postgresql://127.0.0.1/db?history_size=50", history_size=7)
    assert layer.options.history_size == 7
    with pytest.raises(ValueError, match="history_ttl needs history_size"):
        PostgreSQLChannelLayer("postgresql://127.0.0.1/db", history_ttl=5)


def test_unknown_options_are_named() -> None:
    with pytest.raises(TypeError, match="bogus, colour") as error:
        PostgreSQLChannelLayer.from_url("postgresql://127.0.0.1/db", colour=1, bogus=2)
    assert "publish_timeout" in str(error.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"publish_timeout": 0}, ValueError),
        ({"health_check_interval": float("inf")}, ValueError),
        ({"connect_timeout": "5"}, TypeError),
        ({"max_payload_bytes": 0}, ValueError),
        ({"pool_size": "4"}, TypeError),
        ({"max_backlog": 0}, ValueError),
        ({"namespace": 7}, TypeError),
        ({"namespace": "Bad Name"}, ValueError),
        ({"namespace": "x" * 21}, ValueError),
        ({"reconnect_backoff": 1.0}, TypeError),
        ({"history_size": -1}, ValueError),
        ({"history_size": 1.5}, TypeError),
        ({"history_ttl": -1}, ValueError),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(options))):
        PostgreSQLChannelLayer("postgresql://127.0.0.1/db", **options)


def test_options_are_applied() -> None:
    backoff = Backoff(initial=0.01, maximum=0.1)
    layer = PostgreSQLChannelLayer(
        "postgresql://127.0.0.1/db", max_payload_bytes=5000, reconnect_backoff=backoff
    )
    assert layer.max_payload_bytes == 5000
    assert layer.options == PostgreSQLLayerOptions(
        max_payload_bytes=5000, reconnect_backoff=backoff
    )


def test_old_option_names_warn_and_still_work() -> None:
    with pytest.warns(DeprecationWarning, match="liveness_interval is deprecated"):
        layer = PostgreSQLChannelLayer("postgresql://", liveness_interval=0.5)
    assert layer.options.health_check_interval == 0.5
    with pytest.warns(DeprecationWarning, match="liveness_timeout is deprecated"):
        layer = PostgreSQLChannelLayer("postgresql://", liveness_timeout=0.25)
    assert layer.options.health_check_timeout == 0.25
    with pytest.raises(TypeError, match="give only health_check_interval"):
        PostgreSQLChannelLayer("postgresql://", liveness_interval=1, health_check_interval=1)


def test_old_public_names_warn_and_still_work() -> None:
    layer = PostgreSQLChannelLayer("postgresql://", publish_timeout=2)
    with pytest.warns(DeprecationWarning, match=r"\.settings is deprecated: use \.options"):
        assert layer.settings is layer.options
    with pytest.warns(DeprecationWarning, match=r"\.counters is deprecated: use \.stats\(\)"):
        assert layer.counters == layer.stats()
    with pytest.warns(DeprecationWarning, match="listener_pid is deprecated"):
        assert layer.listener_pid is None
    with pytest.warns(DeprecationWarning, match="Settings is deprecated"):
        assert channels_layer_postgres.Settings is PostgreSQLLayerOptions
    with pytest.warns(DeprecationWarning, match="LayerCounters is deprecated"):
        assert channels_layer_postgres.LayerCounters is PostgreSQLLayerStats
    with pytest.warns(DeprecationWarning, match="Settings is deprecated"):
        old_options = channels_layer_postgres.Settings.from_options({"publish_timeout": 2})
    assert old_options == layer.options
    sys.modules.pop("channels_layer_postgres.layer", None)
    with pytest.warns(DeprecationWarning, match="channels_layer_postgres.layer is deprecated"):
        old_module = importlib.import_module("channels_layer_postgres.layer")
    assert old_module.PostgreSQLChannelLayer is PostgreSQLChannelLayer


def test_stats_before_connecting() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current names never warn
        stats = PostgreSQLChannelLayer("postgresql://").stats()
    assert isinstance(stats, LayerStats)
    assert (stats.connected, stats.listener_pid, stats.skipped, stats.dropped) == (
        False,
        None,
        0,
        0,
    )


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0", "http://x", "127.0.0.1:5432"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        PostgreSQLChannelLayer.from_url(url)


def test_pool_and_connection_are_exclusive() -> None:
    with pytest.raises(TypeError, match="either pool or connection"):
        PostgreSQLChannelLayer("postgresql://", pool=object(), connection=object())


#: Every place a PostgreSQL URL carries a secret (libpq's parameters included).
SECRET_URLS = [
    "postgresql://app:s3cret@127.0.0.1/db",
    "postgres://app:s3cret@127.0.0.1:5432,127.0.0.1:5433/db",
    "postgresql://app@127.0.0.1/db?password=s3cret",
    "postgresql://u:s3cret@127.0.0.1/test?sslpassword=t0psecret",
    "postgresql://app@127.0.0.1/db?sslmode=require&sslpassword=t0psecret&sslkey=/k.pem",
    "postgresql:///db?host=/run/postgresql&user=app&password=s3cret",
    "postgresql://app:s3c%40ret@[::1]:5432/db",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_every_secret_bearing_url_form_is_redacted_in_repr(url: str) -> None:
    layer = PostgreSQLChannelLayer(url)
    for secret in url_secrets(url):
        assert secret not in repr(layer)
        assert secret not in layer.url
    assert "***" in repr(layer)


@pytest.mark.anyio
@pytest.mark.parametrize("url", SECRET_URLS[:5])
async def test_every_secret_bearing_url_form_is_redacted_in_errors_and_logs(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    unreachable = url.replace("127.0.0.1:5432,127.0.0.1:5433", "127.0.0.1").replace(
        "127.0.0.1", f"127.0.0.1:{port}"
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerUnavailableError) as error:
        async with Channel.from_url(unreachable, connect_timeout=0.3):
            pass
    for secret in url_secrets(url):
        assert secret not in str(error.value)
        assert secret not in repr(error.value.__cause__)
        assert secret not in caplog.text
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as refused:
        PostgreSQLChannelLayer("mysql" + url[url.index("://") :])
    for secret in url_secrets(url):
        assert secret not in str(refused.value)


def test_password_never_shows_in_repr() -> None:
    layer = PostgreSQLChannelLayer("postgresql://app:s3cret@127.0.0.1/db?password=s3cret2")
    assert "s3cret" not in repr(layer)
    assert "app:***@127.0.0.1" in repr(layer)
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as error:
        PostgreSQLChannelLayer("mysql://app:s3cret@127.0.0.1/db")
    assert "s3cret" not in str(error.value)


@pytest.mark.anyio
async def test_unreachable_server_fails_at_enter_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    url = f"postgresql://app:s3cret@127.0.0.1:{port}/db"
    caplog.set_level(logging.DEBUG)
    channel = Channel.from_url(url, connect_timeout=0.5)
    with pytest.raises(BrokerUnavailableError) as error:
        async with channel:
            pass
    message = str(error.value)
    assert f"127.0.0.1:{port}" in message
    assert "0.5 s" in message
    assert "s3cret" not in message
    assert "s3cret" not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_with_a_clear_error() -> None:
    with pytest.raises(NotSupportedError, match="asyncio only"):
        async with Channel(PostgreSQLChannelLayer("postgresql://127.0.0.1/db")):
            pass


@pytest.mark.anyio
async def test_layer_options_in_the_url_query(postgres_url: str, namespace: str) -> None:
    """Taken out of the URL before asyncpg sees it (it would send them to the server)."""
    joiner = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{joiner}namespace={namespace}&publish_timeout=2&liveness_timeout=0.5"
    with pytest.warns(DeprecationWarning, match="liveness_timeout"):
        layer = PostgreSQLChannelLayer.from_url(url, publish_timeout=3)  # keywords win
    assert (layer.options.namespace, layer.options.publish_timeout) == (namespace, 3.0)
    assert layer.options.health_check_timeout == 0.5
    async with Channel(layer) as channel, channel.subscribe("query") as subscriber:
        await channel.publish("query", "options")
        with anyio.fail_after(5):
            assert (await subscriber.receive()).message == "options"
    with pytest.raises(ValueError, match="publish_timeout"):
        PostgreSQLChannelLayer.from_url(f"{postgres_url}{joiner}publish_timeout=soon")


@pytest.mark.anyio
async def test_what_the_server_refuses_at_connect_is_a_broker_refused_error(
    postgres_url: str,
) -> None:
    """An unknown database or role: the server answers, retrying cannot help."""
    parts = urlsplit(postgres_url)
    for path, user in (("/no_such_database_here", parts.username), (parts.path, "no_such_role")):
        netloc = f"{user}:s3cret@{parts.hostname}:{parts.port or 5432}"
        url = urlunsplit((parts.scheme, netloc, path, parts.query, ""))
        started = anyio.current_time()
        with pytest.raises(BrokerRefusedError, match="could not connect to") as refused:
            async with Channel.from_url(url, connect_timeout=5):
                pass
        assert anyio.current_time() - started < 2  # not retried until connect_timeout
        assert isinstance(refused.value.__cause__, asyncpg.PostgresError)
        assert "s3cret" not in str(refused.value)
        assert "***" in str(refused.value)
