"""Encrypted payloads on the memory layer: round trip, rotation, forgeries, keys never shown."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from cryptography.fernet import Fernet

from channels_core import Channel, PayloadTooLargeError, SerializationError, Subscriber, encrypted
from channels_core.layers.local_memory import InMemoryChannelLayer, MemoryHub
from channels_core.serializers import Serializer

pytestmark = pytest.mark.anyio

K1, K2, FOREIGN = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()


class RawBytes:
    """What a broker holds: the payload bytes, undecoded."""

    name = "raw"

    def dumps(self, message: bytes) -> bytes:
        return message

    def loads(self, payload: bytes) -> bytes:
        return payload


@asynccontextmanager
async def on_hub(hub: MemoryHub, serializer: str | Serializer) -> AsyncIterator[Channel]:
    async with Channel(InMemoryChannelLayer(hub), serializer=serializer) as channel:
        yield channel


async def receive(subscriber: Subscriber) -> Any:
    with anyio.fail_after(5):
        return (await subscriber.receive()).message


def shown(error: BaseException) -> str:
    """Everything a traceback of `error` shows, causes and contexts included."""
    return "".join(traceback.format_exception(error))


def assert_no_key_in(text: str, *keys: bytes) -> None:
    for key in keys:
        assert key.decode() not in text
        assert key[:12].decode() not in text  # not even a prefix


async def test_round_trip_and_the_broker_sees_ciphertext_only() -> None:
    hub = MemoryHub()
    message = {"text": "the plaintext secret", "n": [1, 2.5, None], "é": True}
    async with (
        on_hub(hub, encrypted(keys=[K1])) as channel,
        on_hub(hub, RawBytes()) as broker,
        channel.subscribe("room") as subscriber,
        broker.subscribe("room") as raw,
    ):
        await channel.publish("room", message)
        assert await receive(subscriber) == message
        payload = await receive(raw)
    assert b"plaintext" not in payload
    assert (
        Fernet(K1).decrypt(payload)
        == b'{"text":"the plaintext secret","n":[1,2.5,null],"\xc3\xa9":true}'
    )


async def test_any_serializer_inside() -> None:
    hub = MemoryHub()
    message = {"blob": b"\x00\xff", "n": 1}
    async with (
        on_hub(hub, encrypted("msgpack", keys=[K1])) as channel,
        channel.subscribe("room") as subscriber,
    ):
        await channel.publish("room", message)
        assert await receive(subscriber) == message


async def test_key_rotation_across_publishers_with_different_key_lists() -> None:
    """Old publishers encrypt with k1, new ones with k2; a receiver with both reads both,
    one with k1 only reads the old and counts the new as undecodable."""
    hub = MemoryHub()
    async with (
        on_hub(hub, encrypted(keys=[K1])) as old,
        on_hub(hub, encrypted(keys=[K2, K1])) as new,
        on_hub(hub, encrypted(keys=[K2, K1])) as rotated,
        on_hub(hub, encrypted(keys=[K1])) as stale,
        rotated.subscribe("room") as both,
        stale.subscribe("room") as only_old,
    ):
        await old.publish("room", "from old")
        await new.publish("room", "from new")
        await old.publish("room", "old again")
        assert [await receive(both) for _ in range(3)] == ["from old", "from new", "old again"]
        assert [await receive(only_old) for _ in range(2)] == ["from old", "old again"]
        assert (rotated.stats().undecodable, stale.stats().undecodable) == (0, 1)
        assert stale.stats().received == 3


async def test_forged_payloads_are_counted_skipped_and_the_subscription_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hub = MemoryHub()
    token = Fernet(K1).encrypt(b'"genuine"')
    tampered = bytearray(token)
    tampered[40] = ord("A") if tampered[40] != ord("A") else ord("B")
    forgeries = {
        "tampered": bytes(tampered),
        "truncated": token[:-4],
        "foreign key": Fernet(FOREIGN).encrypt(b'"foreign"'),
        "not encrypted": b'"plain json"',
        "empty": b"",
        "binary junk": bytes(range(256)),
    }
    async with (
        on_hub(hub, encrypted(keys=[K1])) as channel,
        channel.subscribe("room") as subscriber,
    ):
        for payload in forgeries.values():
            await channel.layer.publish("room", payload)
        await channel.publish("room", "after the forgeries")
        assert await receive(subscriber) == "after the forgeries"
        assert channel.stats().undecodable == len(forgeries)
        await channel.layer.publish("room", token)  # the genuine token still decrypts
        assert await receive(subscriber) == "genuine"
    skipped = [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(skipped) == len(forgeries)
    assert all("failed authentication" in r.getMessage() for r in skipped)
    assert_no_key_in(caplog.text, K1, FOREIGN)


async def test_decrypted_but_not_the_inner_format_is_undecodable() -> None:
    """Same key, another inner serializer: authenticated, yet never half-decoded."""
    hub = MemoryHub()
    async with (
        on_hub(hub, encrypted("msgpack", keys=[K1])) as msgpack_publisher,
        on_hub(hub, encrypted("json", keys=[K1])) as channel,
        channel.subscribe("room") as subscriber,
    ):
        await msgpack_publisher.publish("room", {"a": 1})
        await channel.publish("room", "next")
        assert await receive(subscriber) == "next"
        assert channel.stats().undecodable == 1


async def test_what_the_inner_serializer_refuses_is_a_serialization_error() -> None:
    async with on_hub(MemoryHub(), encrypted(keys=[K1])) as channel:
        with pytest.raises(SerializationError) as error:
            await channel.publish("room", {"a set": {1, 2}})
        assert str(error.value).startswith("cannot serialize a dict with the json serializer")
        assert str(error.value).count("nothing was sent") == 1  # said once, not nested
        assert_no_key_in(shown(error.value), K1)
        assert channel.stats().published == 0
        async with channel.subscribe("room") as subscriber:
            await channel.publish("room", "still usable")
            assert await receive(subscriber) == "still usable"


class SmallLayer(InMemoryChannelLayer):
    max_payload_bytes = 1_000


async def test_the_size_limit_applies_to_the_encrypted_payload() -> None:
    """Encryption grows a payload by about 4/3: what fits in clear may not fit encrypted."""
    message = "x" * 700  # 702 bytes of JSON, about 1,000 encrypted
    async with Channel(SmallLayer()) as clear:
        await clear.publish("room", message)
    async with Channel(SmallLayer(), serializer=encrypted(keys=[K1])) as channel:
        with pytest.raises(PayloadTooLargeError, match=r"1,0\d\d bytes"):
            await channel.publish("room", message)
        await channel.publish("room", "x" * 600)
        assert channel.stats().published == 1


def test_repr_names_the_serializer_and_counts_the_keys() -> None:
    for serializer, shown_as in [
        (encrypted(keys=[K1]), "<encrypted json, 1 key>"),
        (encrypted("msgpack", keys=[K2, K1.decode()]), "<encrypted msgpack, 2 keys>"),
    ]:
        assert repr(serializer) == str(serializer) == shown_as


@pytest.mark.parametrize(
    ("keys", "error", "match"),
    [
        ([], ValueError, "keys is empty"),
        (K1, TypeError, "keys must be a list of Fernet keys, newest first, got bytes"),
        (K1.decode(), TypeError, "wrap a single key in a list"),
        ([K1, 42], TypeError, r"keys\[1\] must be a Fernet key as str or bytes, got int"),
        ([K1, K2[:-4]], ValueError, r"keys\[1\] is not a Fernet key"),
        ([base64.urlsafe_b64encode(bytes(48)), K2], ValueError, r"keys\[0\] is not a Fernet key"),
        ([K1, "é" * 44], ValueError, r"keys\[1\] is not a Fernet key"),
    ],
    ids=["empty", "one bytes key", "one str key", "not a key", "short", "long", "non-ascii"],
)
def test_bad_keys_are_refused_by_position_never_by_value(
    keys: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as refused:
        encrypted(keys=keys)
    assert_no_key_in(shown(refused.value), K1, K2)


def test_without_cryptography_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)
    with pytest.raises(ImportError, match=r"pip install channels-core\[crypto\]"):
        encrypted(keys=[K1])


def test_channels_core_imports_without_loading_cryptography() -> None:
    """The dependency is optional: only `encrypted(...)` loads it."""
    code = "import sys, channels_core; print('cryptography' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout.strip() == b"False"
