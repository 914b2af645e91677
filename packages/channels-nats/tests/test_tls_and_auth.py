"""nats+tls:// with a private CA, and token authentication, on private servers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from channels_core import BrokerRefusedError, Channel
from channels_layer_nats.testing import NatsServer

pytestmark = pytest.mark.anyio


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed (openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key", "other")}
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*arguments: str) -> None:
        subprocess.run([openssl, *arguments], check=True, capture_output=True)

    new_key = ("-newkey", "rsa:2048", "-nodes", "-days", "1")
    run("req", "-x509", *new_key, "-keyout", str(paths["ca-key"]), "-out", str(paths["ca"]),
        "-subj", "/CN=channels test CA")  # fmt: skip
    run("req", "-x509", *new_key, "-keyout", str(directory / "other-key.pem"),
        "-out", str(paths["other"]), "-subj", "/CN=another CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths["key"]),
        "-out", str(directory / "server.csr"), "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(paths["ca"]),
        "-CAkey", str(paths["ca-key"]), "-CAcreateserial", "-out", str(paths["cert"]),
        "-days", "1", "-extfile", str(directory / "san.cnf"))  # fmt: skip
    return paths


async def test_tls_with_a_ca_file_and_never_with_another_ca(tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    config = f'tls {{ cert_file: "{files["cert"]}", key_file: "{files["key"]}" }}'
    with NatsServer(config=config) as server:
        url = server.url.replace("nats://", "nats+tls://")
        async with (
            Channel.from_url(f"{url}?tls_ca_file={files['ca']}") as channel,
            channel.subscribe("secure") as subscriber,
        ):
            await channel.publish("secure", "over TLS")
            assert (await subscriber.receive()).message == "over TLS"
        started = anyio.current_time()
        with pytest.raises(BrokerRefusedError, match="CERTIFICATE_VERIFY_FAILED"):
            async with Channel.from_url(url, tls_ca_file=str(files["other"])):
                pass
        assert anyio.current_time() - started < 3  # refused at once, not after connect_timeout


async def test_token_authentication() -> None:
    with NatsServer(config='authorization { token: "s3cret-token" }') as server:
        layer_url = f"{server.url}?token=s3cret-token"
        async with Channel.from_url(layer_url) as channel, channel.subscribe("t") as subscriber:
            assert "s3cret-token" not in repr(channel.layer)
            await channel.publish("t", 1)
            assert (await subscriber.receive()).message == 1
        with pytest.raises(BrokerRefusedError) as refused:
            async with Channel.from_url(server.url, token="wrong-token"):
                pass
        assert "wrong-token" not in str(refused.value)


PERMISSIONS = """
authorization {
  users = [{
    user: limited, password: pw,
    permissions: {
      publish: ["perm.>", "_INBOX.>"],
      subscribe: {allow: ["perm.open.>", "perm.open", "_INBOX.>"]}
    }
  }]
}
"""


async def test_a_refused_subscription_raises_and_the_channel_stays_usable() -> None:
    with NatsServer(config=PERMISSIONS) as server:
        url = server.url.replace("nats://", "nats://limited:pw@") + "?namespace=perm"
        async with Channel.from_url(url) as channel:
            with pytest.raises(BrokerRefusedError, match=r"perm\.closed.*permissions"):
                async with channel.subscribe("closed"):
                    pass
            with pytest.raises(BrokerRefusedError, match="permissions"):
                async with channel.subscribe_pattern("*"):  # needs <namespace>.>
                    pass
            async with channel.subscribe("open.room", "open") as subscriber:
                await channel.publish("open.room", "allowed")
                assert (await subscriber.receive()).message == "allowed"
            assert channel.stats().groups == 0
