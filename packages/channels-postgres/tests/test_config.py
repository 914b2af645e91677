"""Building the layer: URLs, options, discovery, capabilities, password hygiene."""

from __future__ import annotations

import logging

import pytest

from channels_core import (
    BrokerUnavailableError,
    Channel,
    NotSupportedError,
    get_layer,
    layer_capabilities,
)
from channels_core.reconnect import Backoff
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_postgres.testing import free_loopback_port


def test_both_schemes_resolve_to_the_layer() -> None:
    assert get_layer("postgres") is PostgreSQLChannelLayer
    assert get_layer("postgresql") is PostgreSQLChannelLayer
    channel = Channel.from_url("postgres://u@127.0.0.1:5432/db", publish_timeout=1.0)
    assert isinstance(channel.layer, PostgreSQLChannelLayer)
    assert channel.layer.settings.publish_timeout == 1.0


def test_capabilities_come_from_the_hookimpls() -> None:
    assert layer_capabilities(PostgreSQLChannelLayer) == {"multi-group", "patterns"}


def test_unknown_options_are_named() -> None:
    with pytest.raises(TypeError, match="bogus, colour") as error:
        PostgreSQLChannelLayer.from_url("postgresql://127.0.0.1/db", colour=1, bogus=2)
    assert "publish_timeout" in str(error.value)
    assert "pool" in str(error.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"publish_timeout": 0}, ValueError),
        ({"liveness_interval": float("inf")}, ValueError),
        ({"connect_timeout": "5"}, TypeError),
        ({"max_payload_bytes": 0}, ValueError),
        ({"namespace": "Bad Name"}, ValueError),
        ({"namespace": "x" * 21}, ValueError),
        ({"reconnect_backoff": 1.0}, TypeError),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        PostgreSQLChannelLayer("postgresql://127.0.0.1/db", **options)


def test_options_are_applied() -> None:
    backoff = Backoff(initial=0.01, maximum=0.1)
    layer = PostgreSQLChannelLayer(
        "postgresql://127.0.0.1/db", max_payload_bytes=5000, reconnect_backoff=backoff
    )
    assert layer.max_payload_bytes == 5000
    assert layer.settings.reconnect_backoff is backoff


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0", "http://x", "127.0.0.1:5432"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        PostgreSQLChannelLayer.from_url(url)


def test_pool_and_connection_are_exclusive() -> None:
    with pytest.raises(TypeError, match="either pool or connection"):
        PostgreSQLChannelLayer("postgresql://", pool=object(), connection=object())


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
    port = free_loopback_port()
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
