"""Encrypted payloads on every layer, and proof that no plaintext reaches the broker.

Each test uses a Redis prefix or PostgreSQL namespace of its own on the
shared servers. The wire captures (Redis ``MONITOR``, a raw PostgreSQL
``LISTEN`` and the large-payloads table) first see a message sent in clear,
so that a capture that saw nothing could not pass.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import asyncpg
import pytest
import redis.asyncio
from cryptography.fernet import Fernet

from channels_core import Channel, PayloadTooLargeError, Subscriber, encrypted
from channels_core.testing import eventually
from channels_layer_nats.testing import delete_history
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres.testing import drop_tables

pytestmark = pytest.mark.anyio

K1, K2 = Fernet.generate_key(), Fernet.generate_key()
LARGE = "y" * 12_000  # about 16,000 bytes encrypted: PostgreSQL's payloads table carries it

#: channel_for(serializer) -> a Channel on one layer (a private prefix or namespace).
ChannelFor = Callable[..., Channel]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # both network layers are asyncio-only


@pytest.fixture
async def namespace(postgres_url: str) -> AsyncIterator[str]:
    """A namespace of this test alone on the shared server (its tables dropped after)."""
    name = f"enc{secrets.token_hex(6)}"
    yield name
    await drop_tables(postgres_url, ChannelNames(name))


@pytest.fixture
def prefix() -> str:
    return f"enc-{secrets.token_hex(6)}:"


@pytest.fixture
def nats_namespace(nats_url: str) -> Iterator[str]:
    """A NATS namespace of this test alone (its history stream, if any, deleted after)."""
    name = f"enc{secrets.token_hex(6)}"
    yield name
    delete_history(nats_url, name)


@pytest.fixture(params=["memory", "redis", "postgres", "nats"])
def channel_for(request: pytest.FixtureRequest, prefix: str) -> ChannelFor:
    hub = f"memory://enc-{secrets.token_hex(6)}"
    if request.param == "memory":
        url, namespace = hub, None
    elif request.param == "redis":
        url, namespace = request.getfixturevalue("redis_url"), prefix
    elif request.param == "postgres":
        url, namespace = (request.getfixturevalue(f) for f in ("postgres_url", "namespace"))
    else:
        url, namespace = (request.getfixturevalue(f) for f in ("nats_url", "nats_namespace"))

    def make(serializer: Any = "json", **options: Any) -> Channel:
        if namespace is not None:
            options["namespace"] = namespace
        return Channel.from_url(url, serializer=serializer, **options)

    return make


def tampered(token: bytes) -> bytes:
    """`token` with one character in the middle changed."""
    changed = bytearray(token)
    changed[40] = ord("A") if changed[40] != ord("A") else ord("B")
    return bytes(changed)


async def receive(subscriber: Subscriber) -> Any:
    with anyio.fail_after(10):
        return (await subscriber.receive()).message


async def test_round_trip_rotation_and_forgeries(channel_for: ChannelFor) -> None:
    """Two publishers mid-rotation ([k1] and [k2, k1]) on separate connections: a
    receiver with both keys reads both, one with k1 only reads the old publisher's
    and skips the rest, as it skips forged payloads; both subscriptions continue."""
    async with (
        channel_for(encrypted(keys=[K1])) as old,
        channel_for(encrypted(keys=[K2, K1])) as new,
        channel_for(encrypted(keys=[K2, K1])) as rotated,
        channel_for(encrypted(keys=[K1])) as stale,
        rotated.subscribe("room") as both,
        stale.subscribe("room") as only_old,
    ):
        await old.publish("room", {"from": "old"})
        await new.publish("room", {"from": "new", "large": LARGE})
        await new.layer.publish("room", b'{"forged": "in clear"}')
        await new.layer.publish("room", tampered(Fernet(K2).encrypt(b'"genuine"')))
        await old.publish("room", "old again")
        # In publish order per publisher (NATS does not order two publishers' messages).
        received = [await receive(both) for _ in range(3)]
        assert [message for message in received if message != {"from": "new", "large": LARGE}] == [
            {"from": "old"},
            "old again",
        ]
        assert {"from": "new", "large": LARGE} in received
        assert [await receive(only_old) for _ in range(2)] == [{"from": "old"}, "old again"]
        # NATS: the forgeries may follow "old again".
        await eventually(
            lambda: (rotated.stats().undecodable, stale.stats().undecodable) == (2, 3), 5
        )


async def test_history_and_replay_hold_ciphertext_and_read_back_decrypted(
    channel_for: ChannelFor,
) -> None:
    """The history keeps what crossed the wire, encrypted; `history()` and a `since=`
    replay decrypt it with the reader's keys, skipping and counting what they cannot
    authenticate, like live deliveries."""
    secret = f"plaintext-{secrets.token_hex(8)}"
    async with (
        channel_for(history_size=10) as clear,
        channel_for(encrypted(keys=[K1]), history_size=10) as old,
        channel_for(encrypted(keys=[K2, K1]), history_size=10) as new,
        channel_for(encrypted(keys=[K2, K1]), history_size=10) as reader,
        channel_for(encrypted(keys=[K1]), history_size=10) as stale,
    ):
        await clear.publish("clear", {"text": secret})
        await old.publish("log", {"text": secret})
        await new.publish("log", {"text": secret, "large": LARGE})
        await new.layer.publish("log", tampered(Fernet(K2).encrypt(b'"forged"')))
        stored = await new.layer.read_history("clear", None, None)
        assert secret.encode() in stored.events[0][1]  # the read below looks where it should
        stored = await new.layer.read_history("log", None, None)
        assert len(stored.events) == 3
        assert all(secret.encode() not in payload for _, payload in stored.events)
        first, second = await reader.history("log")
        assert (first.message, second.message) == (
            {"text": secret},
            {"text": secret, "large": LARGE},
        )
        assert reader.stats().undecodable == 1  # the forgery
        assert [event.message for event in await stale.history("log")] == [{"text": secret}]
        assert stale.stats().undecodable == 2  # the newer key's event, the forgery
        async with reader.subscribe("log", since=first.position) as replay:
            await new.publish("log", "live")
            assert [await receive(replay) for _ in range(2)] == [
                {"text": secret, "large": LARGE},
                "live",
            ]
        assert reader.stats().undecodable == 2  # the forgery again, replayed


async def test_postgres_refuses_what_is_too_large_once_encrypted(
    postgres_url: str, namespace: str
) -> None:
    """The limit applies to the encrypted payload: never a silent failure."""
    message = "z" * 16_000  # 16,002 bytes of JSON, about 21,400 encrypted
    options = {"namespace": namespace, "max_payload_bytes": 20_000}
    async with (
        Channel(PostgreSQLChannelLayer(postgres_url, **options)) as clear,
        Channel(
            PostgreSQLChannelLayer(postgres_url, **options), serializer=encrypted(keys=[K1])
        ) as channel,
        channel.subscribe("big") as subscriber,
    ):
        await clear.publish("unheard", message)  # fits in clear
        with pytest.raises(PayloadTooLargeError, match=r"21,\d{3} bytes"):
            await channel.publish("big", message)
        await channel.publish("big", "z" * 14_000)  # fits encrypted, via the payloads table
        assert await receive(subscriber) == "z" * 14_000
        assert channel.stats().published == 1


async def test_redis_monitor_sees_no_plaintext(redis_url: str, prefix: str) -> None:
    secret = f"plaintext-{secrets.token_hex(8)}"
    seen: list[str] = []
    both_published = anyio.Event()
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with admin.monitor() as monitor, anyio.create_task_group() as tasks:

            async def capture() -> None:
                async for command in monitor.listen():
                    if prefix in command["command"]:
                        seen.append(command["command"])
                    if len([c for c in seen if c.startswith("PUBLISH")]) == 2:
                        both_published.set()

            tasks.start_soon(capture)
            async with (
                Channel.from_url(redis_url, namespace=prefix) as clear,
                Channel.from_url(
                    redis_url, namespace=prefix, serializer=encrypted(keys=[K1])
                ) as channel,
                channel.subscribe("secret") as subscriber,
            ):
                await clear.publish("clear", {"text": secret})
                await channel.publish("secret", {"text": secret})
                assert await receive(subscriber) == {"text": secret}
                with anyio.fail_after(10):
                    await both_published.wait()
            tasks.cancel_scope.cancel()
    finally:
        await admin.aclose()
    clear_publish, encrypted_publish = (c for c in seen if c.startswith("PUBLISH"))
    assert clear_publish.startswith(f"PUBLISH {prefix}clear")
    assert secret in clear_publish
    assert encrypted_publish.startswith(f"PUBLISH {prefix}secret")
    assert all(secret not in command for command in seen if command is not clear_publish)


async def test_postgres_notify_and_payloads_table_hold_no_plaintext(
    postgres_url: str, namespace: str
) -> None:
    secret = f"plaintext-{secrets.token_hex(8)}"
    notified: list[str] = []
    all_notified = anyio.Event()

    def listen(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        notified.append(payload)
        if len(notified) == 4:
            all_notified.set()

    layer = PostgreSQLChannelLayer(postgres_url, namespace=namespace)
    table = ChannelNames(namespace).payloads_table
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.add_listener(layer.channel_name("secret"), listen)
        async with (
            Channel.from_url(postgres_url, namespace=namespace) as clear,
            Channel(layer, serializer=encrypted(keys=[K1])) as channel,
            channel.subscribe("secret") as subscriber,
        ):
            # In clear, first: the captures see the secret (they are looking in the right place).
            await clear.publish("secret", {"text": secret})
            await clear.publish("secret", {"text": secret, "large": LARGE})
            assert secret in (await admin.fetchval(f'SELECT body FROM "{table}"')).decode()
            await admin.execute(f'DELETE FROM "{table}"')
            for message in ({"text": secret}, {"text": secret, "large": LARGE}):
                await channel.publish("secret", message)
                assert await receive(subscriber) == message
            with anyio.fail_after(10):
                await all_notified.wait()
            bodies = [
                bytes(row["body"]) for row in await admin.fetch(f'SELECT body FROM "{table}"')
            ]
    finally:
        await admin.close()
    assert secret in notified[0]  # in clear, inline
    assert notified[1].startswith("chl1r")  # in clear, a reference to the table
    assert len(bodies) == 1
    assert secret.encode() not in bodies[0]
    assert LARGE[:100].encode() not in bodies[0]
    assert all(secret not in text for text in notified[2:])


async def test_postgres_publish_in_a_transaction_encrypted(
    postgres_url: str, namespace: str
) -> None:
    serializer = encrypted(keys=[K1])
    layer = PostgreSQLChannelLayer(postgres_url, namespace=namespace)
    app = await asyncpg.connect(postgres_url)
    try:
        async with Channel(layer, serializer=serializer) as channel:
            async with channel.subscribe("orders") as subscriber:
                for message in ({"order": 1}, {"order": 2, "large": LARGE}):
                    async with app.transaction():
                        await layer.publish_in(app, "orders", message)
                    assert await receive(subscriber) == message
            assert channel.stats().undecodable == 0
    finally:
        await app.close()
