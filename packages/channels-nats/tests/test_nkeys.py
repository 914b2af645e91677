"""NKEY seed and ``.creds`` file authentication against private servers (needs ``nkeys``).

The keys and the JWTs of a ``.creds`` file are made here with ``nkeys``
(what the ``nsc`` tool does): an operator signs an account, the account
signs a user; the server trusts the operator and preloads the account.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from channels_core import BrokerRefusedError, Channel
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer

nkeys = pytest.importorskip(
    "nkeys", reason="the nkeys extra: pip install channels-layer-nats[nkeys]"
)

pytestmark = pytest.mark.anyio


def new_key(prefix: int) -> tuple[str, Any]:
    """A new seed (text) and its key pair, for the role `prefix` names."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed.decode(), nkeys.from_seed(bytearray(seed))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Any, subject: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (ed25519-nkey) for `subject`, signed by the `issuer` key pair."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {
        "jti": _b64(os.urandom(24)),
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": subject[:8],
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


async def test_nkey_seed_and_seed_file(tmp_path: Path) -> None:
    seed, user = new_key(nkeys.PREFIX_BYTE_USER)
    config = f'authorization {{ users = [ {{ nkey: "{user.public_key.decode()}" }} ] }}'
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(seed)
    with NatsServer(config=config) as server:
        for option, value in (("nkey_seed", seed), ("nkey_seed_file", str(seed_file))):
            layer = NatsChannelLayer(server.url, **{option: value})
            async with Channel(layer) as channel, channel.subscribe("signed") as subscriber:
                await channel.publish("signed", option)
                assert (await subscriber.receive()).message == option
                shown = [repr(layer), repr(layer.options), repr(layer.stats()), str(channel)]
                assert not [text for text in shown if seed in text]
        other_seed, _ = new_key(nkeys.PREFIX_BYTE_USER)  # a key the server does not know
        with pytest.raises(BrokerRefusedError) as refused:
            async with Channel(NatsChannelLayer(server.url, nkey_seed=other_seed)):
                pass
        assert other_seed not in str(refused.value)
        assert other_seed not in repr(refused.value.__cause__)
        with pytest.raises(ValueError, match="not a valid NKEY seed") as malformed:
            NatsChannelLayer(server.url, nkey_seed="SU" + seed[2:20])
        assert seed[2:20] not in str(malformed.value)
        seed_file.write_text("SUnot-a-seed")
        with pytest.raises(BrokerRefusedError, match="not valid"):
            async with Channel(NatsChannelLayer(server.url, nkey_seed_file=str(seed_file))):
                pass
        with pytest.raises(BrokerRefusedError):  # no key at all
            async with Channel(NatsChannelLayer(server.url, connect_timeout=2)):
                pass


async def test_a_creds_file(tmp_path: Path) -> None:
    _, operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user = new_key(nkeys.PREFIX_BYTE_USER)
    operator_pub, account_pub = operator.public_key.decode(), account.public_key.decode()
    unlimited = {"subs": -1, "data": -1, "payload": -1, "conn": -1, "imports": -1,
                 "exports": -1, "leaf": -1, "wildcards": True}  # fmt: skip
    operator_jwt = jwt(operator, operator_pub, {"type": "operator"})
    account_jwt = jwt(operator, account_pub, {"type": "account", "limits": unlimited})
    user_jwt = jwt(account, user.public_key.decode(), {
        "type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
    })  # fmt: skip
    creds = tmp_path / "user.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
    )
    config = (
        f"operator: {operator_jwt}\nresolver: MEMORY\n"
        f"resolver_preload: {{ {account_pub}: {account_jwt} }}\n"
    )
    with NatsServer(config=config) as server:
        layer = NatsChannelLayer(server.url, credentials_file=str(creds))
        async with Channel(layer) as channel, channel.subscribe("creds") as subscriber:
            await channel.publish("creds", "from a .creds user")
            assert (await subscriber.receive()).message == "from a .creds user"
            assert user_seed not in repr(layer) + repr(layer.options)
        with pytest.raises(BrokerRefusedError):
            async with Channel(NatsChannelLayer(server.url, connect_timeout=2)):
                pass
