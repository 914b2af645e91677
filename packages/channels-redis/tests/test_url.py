"""URL forms and options: what redis-py's URL parser takes, plus the layer's own."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import anyio
import pytest
import redis.asyncio

from channels_core import BrokerRefusedError, BrokerUnavailableError, Channel, get_layer
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisLayerOptions, RedisPubSubChannelLayer

pytestmark = pytest.mark.anyio


class Server(Protocol):
    """What the conftest's private `RedisServer` offers a test."""

    url: str
    port: int
    tls_port: int | None
    ca_file: Path
    unix_socket: Path


async def round_trip(channel: Channel, group: str = "url-test") -> None:
    async with channel.subscribe(group) as subscriber:
        await channel.publish(group, "over this URL")
        with anyio.fail_after(5):
            assert (await subscriber.receive()).message == "over this URL"


@pytest.mark.parametrize("scheme", ["redis", "rediss", "redis+unix"])
def test_the_schemes_resolve_to_this_layer(scheme: str) -> None:
    assert get_layer(scheme) is RedisPubSubChannelLayer


async def test_db_username_and_password_reach_the_server(throwaway_redis: Server) -> None:
    admin = redis.asyncio.Redis.from_url(throwaway_redis.url)
    try:
        await admin.acl_setuser(
            "alice",
            enabled=True,
            passwords=["+alice-pw"],
            commands=["+@all"],
            keys=["*"],
            channels=["*"],
        )
        url = f"redis://alice:alice-pw@127.0.0.1:{throwaway_redis.port}/5"
        layer = RedisPubSubChannelLayer.from_url(url, client_name="url-test")
        async with Channel(layer) as channel:
            await round_trip(channel)
            mine = [c for c in await admin.client_list() if c["name"] == "url-test"]
        assert mine
        assert {(c["user"], c["db"]) for c in mine} == {("alice", "5")}
    finally:
        await admin.aclose()


@pytest.mark.parametrize("scheme", ["unix", "redis+unix"])
async def test_unix_socket(throwaway_redis: Server, scheme: str) -> None:
    url = f"{scheme}://{throwaway_redis.unix_socket}?db=2"
    async with Channel(RedisPubSubChannelLayer.from_url(url)) as channel:
        await round_trip(channel)
    if scheme == "redis+unix":
        async with Channel.from_url(url) as channel:
            await round_trip(channel)


async def test_tls_with_ssl_options_in_the_url(
    start_redis_server: Callable[..., Server],
) -> None:
    server = start_redis_server(tls=True)
    base = f"rediss://127.0.0.1:{server.tls_port}/0"
    async with Channel.from_url(f"{base}?ssl_ca_certs={server.ca_file}") as channel:
        await round_trip(channel)
    async with Channel.from_url(f"{base}?ssl_cert_reqs=none") as channel:
        await round_trip(channel)
    # Refused at the handshake; the bound only has to outlast a busy machine.
    untrusted = RedisPubSubChannelLayer.from_url(base, connect_timeout=2)
    with pytest.raises(BrokerUnavailableError, match=r"(?i)certificate"):
        async with Channel(untrusted):
            pass


def test_layer_options_from_the_url_and_keywords() -> None:
    layer = RedisPubSubChannelLayer.from_url(
        "redis://127.0.0.1/0?publish_timeout=0.25&namespace=app%3A&health_check_interval=1.5"
        "&pool_size=3",
        subscribe_timeout=3,
        namespace="keyword-wins:",
        reconnect_backoff=Backoff(initial=0.1),
    )
    assert layer.options == RedisLayerOptions(
        namespace="keyword-wins:",
        pool_size=3,
        publish_timeout=0.25,
        subscribe_timeout=3,
        health_check_interval=1.5,
        reconnect_backoff=Backoff(initial=0.1),
    )


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("redis://127.0.0.1/0", {"publish_timeuot": 1}, "publish_timeuot"),
        ("redis://127.0.0.1/0?colour=blue", {}, "colour"),
        ("unix:///tmp/redis.sock", {"host": "elsewhere"}, "host"),
        ("redis://127.0.0.1/0", {"retry": None}, "retry"),
    ],
)
def test_unknown_options_are_refused_by_name(
    url: str, options: dict[str, object], named: str
) -> None:
    with pytest.raises(TypeError, match=named):
        RedisPubSubChannelLayer.from_url(url, **options)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("http://127.0.0.1/0", {}),
        ("redis://127.0.0.1/0?publish_timeout=soon", {}),
        ("redis://127.0.0.1/0", {"publish_timeout": 0}),
        ("redis://127.0.0.1/0", {"health_check_interval": float("inf")}),
        ("redis://127.0.0.1/0", {"pool_size": 0}),
        ("redis://127.0.0.1/0?db=first", {}),
    ],
)
def test_bad_values_are_refused(url: str, options: dict[str, object]) -> None:
    with pytest.raises(
        ValueError, match=r"publish_timeout|health_check_interval|pool_size|db|Redis URL"
    ):
        RedisPubSubChannelLayer.from_url(url, **options)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://bob:s3cret@cache.internal/1", "rediss://bob:***@cache.internal/1"),
        ("redis://127.0.0.1/0?password=s3cret&db=1", "redis://127.0.0.1/0?password=***&db=1"),
    ],
)
def test_passwords_never_show(url: str, shown: str) -> None:
    layer = RedisPubSubChannelLayer.from_url(url)
    assert layer.url == shown
    assert repr(layer) == f"<RedisPubSubChannelLayer {shown}>"
    assert "s3cret" not in repr(Channel(layer))
    with pytest.raises(TypeError) as error:
        RedisPubSubChannelLayer.from_url(url, bogus=1)
    assert "s3cret" not in str(error.value)
    with pytest.raises(ValueError, match="not a Redis URL") as error2:
        RedisPubSubChannelLayer.from_url(url.replace("redis", "http", 1))
    assert "s3cret" not in str(error2.value)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"publish_timeout": "5"}, TypeError, "publish_timeout must be a number"),
        ({"namespace": b"app:"}, TypeError, "namespace must be a str"),
        ({"pool_size": 2.5}, TypeError, "pool_size must be an int"),
        ({"max_payload_bytes": 0}, ValueError, "max_payload_bytes must be an int >= 1"),
        ({"reconnect_backoff": 1.0}, TypeError, "reconnect_backoff must be a Backoff"),
    ],
)
def test_a_wrong_type_is_a_type_error_and_a_bad_value_a_value_error(
    options: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        RedisPubSubChannelLayer.from_url("redis://127.0.0.1/0", **options)


def test_old_option_names_still_work_and_warn() -> None:
    with pytest.warns(DeprecationWarning, match="prefix is deprecated: use namespace") as warned:
        layer = RedisPubSubChannelLayer.from_url("redis://127.0.0.1/0?prefix=old%3A")
    assert layer.options.namespace == "old:"
    assert [warning.filename for warning in warned] == [__file__]  # where it was passed
    with pytest.warns(DeprecationWarning, match="max_connections is deprecated: use pool_size"):
        layer = RedisPubSubChannelLayer.from_url("redis://127.0.0.1/0", max_connections=4)
    assert layer.options.pool_size == 4
    with pytest.warns(DeprecationWarning, match="use RedisLayerOptions.namespace"):
        assert layer.options.prefix == ""
    with pytest.warns(DeprecationWarning, match="use RedisLayerOptions.pool_size"):
        assert layer.options.max_connections == 4
    with pytest.raises(TypeError, match="give only namespace"):
        RedisPubSubChannelLayer.from_url("redis://127.0.0.1/0", prefix="a:", namespace="b:")


def test_old_options_class_name_and_builder_still_work_and_warn() -> None:
    with pytest.warns(
        DeprecationWarning, match="LayerOptions is deprecated: use RedisLayerOptions"
    ):
        from channels_layer_redis import LayerOptions
    assert LayerOptions is RedisLayerOptions
    with pytest.warns(DeprecationWarning, match="from_mapping is deprecated: use .*from_options"):
        built = RedisLayerOptions.from_mapping({"publish_timeout": "2.5", "namespace": "app:"})
    assert built == RedisLayerOptions(publish_timeout=2.5, namespace="app:")


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SECRET_FORMS = [
    "redis://:s3cret-pw@127.0.0.1:{port}/0",
    "redis://alice:s3cret-pw@127.0.0.1:{port}/0",
    "rediss://alice:s3cret-pw@127.0.0.1:{port}/1?ssl_cert_reqs=none",
    "redis://127.0.0.1:{port}/0?password=s3cret-pw",
    "redis://alice@127.0.0.1:{port}/0?password=s3cret%2Dpw",
    "rediss://127.0.0.1:{port}/0?ssl_password=s3cret-pw&ssl_cert_reqs=none",
    "unix:///nonexistent/redis-{port}.sock?db=1&password=s3cret-pw",
    "redis+unix://:s3cret-pw@/nonexistent/redis-{port}.sock?db=1",
]


@pytest.mark.parametrize("form", SECRET_FORMS)
async def test_every_secret_bearing_url_form_is_redacted(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = form.format(port=_closed_port())
    layer = RedisPubSubChannelLayer.from_url(url, connect_timeout=0.3)
    with pytest.raises(BrokerUnavailableError) as error:
        async with Channel(layer):
            pytest.fail("connected to a server that is not there")
    with pytest.raises(TypeError) as unknown:
        RedisPubSubChannelLayer.from_url(url, bogus=1)
    shown = [repr(layer), layer.url, repr(Channel(layer)), str(error.value), str(unknown.value)]
    assert "***" in layer.url
    leaks = [text for text in [*shown, caplog.text] if "s3cret" in text]
    assert not leaks


async def test_a_password_given_as_an_option_never_shows(
    start_redis_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_redis_server(password="right-password")
    url = server.url.replace(":right-password@", "")
    layer = RedisPubSubChannelLayer.from_url(url, password="s3cret-wrong")
    with pytest.raises(BrokerRefusedError) as refused:
        async with Channel(layer):
            pass
    assert "s3cret" not in str(refused.value) + repr(layer) + caplog.text


@pytest.fixture
def subclass_registered_as_myredis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An installed distribution whose entry point ``myredis`` is a Redis-layer subclass."""
    (tmp_path / "my_redis_layer.py").write_text(
        "from channels_layer_redis import RedisPubSubChannelLayer\n\n\n"
        "class MyRedisLayer(RedisPubSubChannelLayer):\n    pass\n"
    )
    dist_info = tmp_path / "my_redis_layer-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-redis-layer\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[channels.layers]\nmyredis = my_redis_layer:MyRedisLayer\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myredis"
    sys.modules.pop("my_redis_layer", None)


async def test_a_subclass_registered_under_its_own_name_builds_from_its_url(
    subclass_registered_as_myredis: str, redis_url: str, namespace: str
) -> None:
    scheme, _, rest = redis_url.partition("://")
    assert scheme == "redis"
    url = f"{subclass_registered_as_myredis}://{rest}"
    async with Channel.from_url(url, namespace=namespace) as channel:
        assert type(channel.layer).__name__ == "MyRedisLayer"
        await round_trip(channel)
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisPubSubChannelLayer.from_url(url)  # the base class is not registered as myredis
