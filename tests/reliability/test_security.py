"""Security: least-privilege and TLS Redis, passwords never shown, pickle never by default.

What the layers' own tests already cover is not repeated here (an ACL user
with every permission, TLS with the right and an untrusted CA, a wrong
password, the hostile group names of the PostgreSQL tests). SQL injection
through generated group names is in ``test_hostile_input``.
"""

from __future__ import annotations

import base64
import inspect
import logging
import os
import pickle
import re
import secrets
import traceback
from collections.abc import Callable
from pathlib import Path

import anyio
import asyncpg
import pytest
import redis.asyncio
import redis.exceptions

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Channel,
    MessagesLost,
    Subscriber,
)
from channels_core.reconnect import Backoff
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_postgres.testing import PostgresServer, free_loopback_port
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.02, maximum=0.2)
SOURCES = Path(__file__).resolve().parents[2] / "packages"


async def receive(subscriber: Subscriber) -> object:
    with anyio.fail_after(5):
        return (await subscriber.receive()).message


async def round_trip(channel: Channel, group: str = "secure") -> None:
    async with channel.subscribe(group) as subscriber:
        await channel.publish(group, {"over": "this connection"})
        assert await receive(subscriber) == {"over": "this connection"}


def shown(error: BaseException) -> str:
    """Everything a traceback of `error` shows, causes and contexts included."""
    return "".join(traceback.format_exception(error))


# -- Redis: least privilege, TLS -----------------------------------------------------


async def test_redis_acl_user_limited_to_its_namespace(
    start_redis: Callable[..., RedisServer],
) -> None:
    """A user allowed only pub/sub on `app:*` channels is all the layer needs."""
    server = start_redis()
    admin = redis.asyncio.Redis.from_url(server.url)
    try:
        await admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "app", "on", ">app-password", "resetchannels", "&app:*",
            "-@all", "+@pubsub", "+ping", "+client|id", "+client|setname",
        )  # fmt: skip
        url = f"redis://app:app-password@127.0.0.1:{server.port}"
        async with Channel.from_url(url, namespace="app:") as channel:
            await round_trip(channel)
            # Outside its channels the server refuses, with the server's reason...
            outsider = RedisPubSubChannelLayer.from_url(url, namespace="other:")
            async with Channel(outsider) as other:
                # (a BrokerRefusedError, chained to redis-py's error)
                with pytest.raises(BrokerRefusedError, match="permission") as refused:
                    await other.publish("secure", "nope")
                assert isinstance(refused.value.__cause__, redis.exceptions.NoPermissionError)
                with pytest.raises(BrokerRefusedError, match=r"(?i)permission") as refused:
                    async with other.subscribe("secure"):
                        pass
                assert isinstance(refused.value.__cause__, redis.exceptions.ResponseError)
                assert other.stats().subscribers == 0
                assert outsider.stats().groups == 0
            # ... and both channels stay usable.
            await round_trip(channel, "after-refusal")
    finally:
        await admin.aclose()


async def test_redis_tls_with_a_password_and_no_plaintext_fallback(
    start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = f"tls-{secrets.token_hex(8)}"
    server = start_redis(password=password, tls=True)
    assert server.tls_port is not None
    tls_url = f"rediss://:{password}@127.0.0.1:{server.tls_port}/0?ssl_ca_certs={server.ca_file}"
    async with Channel.from_url(tls_url) as channel:
        await round_trip(channel)
    # TLS to the plaintext port, and plaintext to the TLS port: clear errors, no fallback.
    plain_port = f"rediss://:{password}@127.0.0.1:{server.port}/0?ssl_ca_certs={server.ca_file}"
    tls_port_plain = f"redis://:{password}@127.0.0.1:{server.tls_port}/0"
    for url in (plain_port, tls_port_plain):
        layer = RedisPubSubChannelLayer.from_url(url, connect_timeout=0.5)
        with pytest.raises(BrokerUnavailableError, match="could not connect") as error:
            async with Channel(layer):
                pytest.fail(f"connected through {layer.url}")
        assert password not in shown(error.value)
    assert password not in caplog.text


# -- passwords never shown -------------------------------------------------------------


async def test_redis_password_never_shown(
    start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Through connect, publish, an outage and reconnect, and every failure."""
    caplog.set_level(logging.DEBUG)  # every logger: the layer's, redis-py's, asyncio's
    password = f"pw-{secrets.token_hex(8)}"
    server = start_redis(password=password)
    assert password in server.url
    seen: list[str] = []
    layer = RedisPubSubChannelLayer.from_url(
        server.url, reconnect_backoff=QUICK, publish_timeout=0.3
    )
    async with Channel(layer) as channel, channel.subscribe("secure") as subscriber:
        seen += [repr(layer), layer.url, repr(channel), repr(layer.stats())]
        await channel.publish("secure", "one")
        assert await receive(subscriber) == "one"
        server.stop()
        with pytest.raises(BrokerUnavailableError) as outage:
            await channel.publish("secure", "lost")
        seen.append(shown(outage.value))
        await anyio.to_thread.run_sync(server.start)
        with anyio.fail_after(10), pytest.raises(MessagesLost):
            await subscriber.receive()
    wrong = server.url.replace(password, "not-the-right-one")
    with pytest.raises(BrokerRefusedError, match="AuthenticationError") as refused:
        async with Channel.from_url(wrong):
            pass
    unreachable = f"redis://:{password}@127.0.0.1:{free_loopback_port()}"
    with pytest.raises(BrokerUnavailableError) as down:
        async with Channel.from_url(unreachable, connect_timeout=0.3):
            pass
    seen += [shown(refused.value), shown(down.value), caplog.text]
    assert "reconnected" in caplog.text  # the logs did speak of the server
    for text in seen:
        assert password not in text
        assert "not-the-right-one" not in text


async def test_postgres_password_never_shown(
    private_postgres: PostgresServer,
    private_postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = f"pw-{secrets.token_hex(8)}"
    url = private_postgres_url.replace("postgres@", f"postgres:{password}@")  # trust ignores it
    seen: list[str] = []
    layer = PostgreSQLChannelLayer(
        url, reconnect_backoff=QUICK, publish_timeout=0.3, health_check_interval=0.2
    )
    async with Channel(layer) as channel, channel.subscribe("secure") as subscriber:
        seen += [repr(layer), repr(channel), repr(layer.stats())]
        await channel.publish("secure", "one")
        assert await receive(subscriber) == "one"
        await anyio.to_thread.run_sync(private_postgres.stop)
        with pytest.raises(BrokerUnavailableError) as outage:
            await channel.publish("secure", "lost")
        seen.append(shown(outage.value))
        await anyio.to_thread.run_sync(private_postgres.start)
        with anyio.fail_after(10), pytest.raises(MessagesLost):
            await subscriber.receive()
    for unreachable in (
        f"postgresql://postgres:{password}@127.0.0.1:{free_loopback_port()}/postgres",
        f"postgresql://postgres@127.0.0.1:{free_loopback_port()}/postgres?password={password}",
    ):
        with pytest.raises(BrokerUnavailableError) as down:
            async with Channel.from_url(unreachable, connect_timeout=0.3):
                pass
        seen.append(shown(down.value))
    seen.append(caplog.text)
    assert "reconnect" in caplog.text
    for text in seen:
        assert password not in text


# -- pickle only by name ------------------------------------------------------------------


class Exploit:
    """Unpickling this creates `marker`: proof that a payload was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.marker),))


async def expect_skipped(channel: Channel, subscriber: Subscriber, group: str) -> None:
    """The forged payload was skipped as undecodable; the next real message comes through."""
    await channel.publish(group, "real")
    assert await receive(subscriber) == "real"
    assert channel.stats().undecodable == 1


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_redis_never_unpickles_a_forged_payload(
    redis_url: str, redis_admin: redis.asyncio.Redis, prefix: str, tmp_path: Path, serializer: str
) -> None:
    marker = tmp_path / "pwned"
    forged = pickle.dumps(Exploit(marker))
    layer = RedisPubSubChannelLayer.from_url(redis_url, namespace=prefix)
    async with Channel(layer, serializer=serializer) as channel:
        async with channel.subscribe("victim") as subscriber:
            assert await redis_admin.publish(prefix + "victim", forged) == 1
            await expect_skipped(channel, subscriber, "victim")
    assert not marker.exists()
    # The same payload *is* an exploit for a channel that asked for pickle by name.
    async with Channel(
        RedisPubSubChannelLayer.from_url(redis_url, namespace=prefix), serializer="pickle"
    ) as channel:
        async with channel.subscribe("victim") as subscriber:
            await redis_admin.publish(prefix + "victim", forged)
            await receive(subscriber)
    assert marker.exists()


async def test_postgres_never_unpickles_a_forged_payload(
    postgres_url: str, pg_namespace: str, pg_admin: asyncpg.Connection, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    # A well-formed binary envelope of the layer around the pickle.
    envelope = 'chl1bff:"victim"' + base64.b64encode(pickle.dumps(Exploit(marker))).decode()
    layer = PostgreSQLChannelLayer(postgres_url, namespace=pg_namespace)
    async with Channel(layer) as channel, channel.subscribe("victim") as subscriber:
        await pg_admin.execute("SELECT pg_notify($1, $2)", layer.channel_name("victim"), envelope)
        await expect_skipped(channel, subscriber, "victim")
    assert not marker.exists()
    assert layer.stats().skipped == 0  # the envelope was fine: the codec refused it


async def test_a_url_cannot_switch_pickle_on(redis_url: str, postgres_url: str) -> None:
    """Configuration that often comes from the environment cannot turn pickle on."""
    with pytest.raises(TypeError, match="serializer"):
        Channel.from_url(f"{redis_url}?serializer=pickle")
    with pytest.raises(ValueError, match="serializer"):
        async with Channel.from_url(f"{postgres_url}?serializer=pickle"):
            pass
    with pytest.raises(ValueError, match="serializer"):
        Channel.from_url("memory://?serializer=pickle")


def test_pickle_is_loaded_in_one_place_only() -> None:
    """Grep-level: the only unpickling in the shipped code is the opt-in serializer."""
    loads = re.compile(r"\bpickle\.(loads?|Unpickler)\b|\bfrom pickle import\b")
    found = [
        (path.relative_to(SOURCES).as_posix(), number)
        for path in SOURCES.glob("*/src/**/*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if loads.search(line)
    ]
    assert [path for path, _ in found] == ["channels-core/src/channels_core/serializers.py"]
    source = (SOURCES / found[0][0]).read_text().splitlines()
    owner = next(line for line in reversed(source[: found[0][1]]) if line.startswith("class "))
    assert owner.startswith("class PickleSerializer")
    assert inspect.signature(Channel).parameters["serializer"].default == "json"
