"""Sentinel mode (``redis+sentinel://``): discovery, auth, and following a failover.

Runs against a private `SentinelSetup` (a master, a replica, three
Sentinels) from the machine's ``redis-server`` (fixtures: conftest.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
import pytest
import redis

from channels_core import BrokerUnavailableError, Channel
from channels_core.discovery import layer_for_url
from channels_core.reconnect import Backoff
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import SentinelSetup

FAST = Backoff(initial=0.02, maximum=0.2)


@pytest.mark.anyio
async def test_the_master_is_found_through_the_sentinels_with_their_password(
    sentinels: SentinelSetup, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    layer = RedisPubSubChannelLayer.from_url(sentinels.url, namespace=namespace)
    async with Channel(layer) as channel, channel.subscribe("room") as subscriber:
        await channel.publish("room", "hello")
        with anyio.fail_after(5):
            assert (await subscriber.receive()).message == "hello"
        shown = [repr(layer), str(channel), repr(layer.stats())]
        # The layer asks the Sentinels in RESP2, which every Sentinel speaks.
        protocols = set()
        for index in range(len(sentinels.sentinel_ports)):
            with sentinels.sentinel(index) as client:
                own = client.client_id()
                protocols |= {c["resp"] for c in client.client_list() if int(c["id"]) != own}
        assert protocols == {"2"}
    shown += [record.getMessage() for record in caplog.records]
    assert "sentinel_password=***" in repr(layer)
    assert not [text for text in shown if "sentinel-pw" in text or "master-pw" in text]


@pytest.mark.anyio
async def test_rediss_sentinel_reaches_sentinels_and_master_over_tls(
    tls_sentinels: SentinelSetup, namespace: str
) -> None:
    setup = tls_sentinels
    assert setup.url.startswith("rediss+sentinel://")
    async with (
        Channel.from_url(setup.url, namespace=namespace) as channel,
        channel.subscribe("room") as subscriber,
    ):
        await channel.publish("room", "over TLS")
        with anyio.fail_after(5):
            assert (await subscriber.receive()).message == "over TLS"
    # Without the CA the certificate is refused: TLS is really in use.
    no_ca = setup.url.replace(f"ssl_ca_certs={setup.ca_file}&", "")
    with pytest.raises(BrokerUnavailableError):
        async with Channel.from_url(no_ca, connect_timeout=1):
            pass


@pytest.mark.anyio
async def test_a_wrong_sentinel_password_is_a_clear_error_without_the_password(
    sentinels: SentinelSetup,
) -> None:
    url = sentinels.url.replace("sentinel-pw", "wrong-secret")
    layer = RedisPubSubChannelLayer.from_url(url, connect_timeout=1)
    with pytest.raises(BrokerUnavailableError) as raised:
        async with Channel(layer):
            pass
    text = f"{raised.value} {raised.value.__cause__}"
    assert "wrong-secret" not in text
    assert "master-pw" not in text
    assert "127.0.0.1" in text


async def _publish_through_failover(
    setup: SentinelSetup, fail: str, through_fault: Callable[..., Awaitable[list[str]]]
) -> None:
    """4 publishers run while the master fails; check what subscribers get."""
    layer = RedisPubSubChannelLayer.from_url(setup.url, reconnect_backoff=FAST, publish_timeout=15)
    groups = [f"room-{n}" for n in range(4)]

    async def fail_master() -> None:
        before = await anyio.to_thread.run_sync(setup.master_address)
        if fail == "failover":
            await anyio.to_thread.run_sync(setup.failover)
        else:
            setup.master().stop()  # SIGKILL
            await anyio.to_thread.run_sync(setup.wait_for_new_master, before)

    async with Channel(layer) as channel, channel.subscribe(*groups) as subscriber:
        losses = await through_fault(channel, subscriber, groups, fail_master)
    assert losses == ["reconnect"]
    assert layer.stats().reconnects >= 1
    assert await anyio.to_thread.run_sync(_clients_left, setup) == []


def _clients_left(setup: SentinelSetup) -> list[str]:
    """Client connections (publishing or pub/sub) still open on any server of `setup`.

    The Sentinels' own connections (named ``sentinel-...``) are not counted.
    """
    left: list[str] = []
    for server in setup.servers:
        if server.running:
            client = redis.Redis.from_url(server.url)
            try:
                for kind in ("normal", "pubsub"):
                    own = client.client_id()
                    left += [
                        f"{server.port}: {info['addr']} {info['cmd']}"
                        for info in client.client_list(_type=kind)
                        if int(info["id"]) != own and not info["name"].startswith("sentinel-")
                    ]
            finally:
                client.close()
    return left


@pytest.mark.anyio
async def test_sentinel_failover_is_followed_by_publishers_and_subscribers(
    failing_over: SentinelSetup, through_fault: Callable[..., Awaitable[list[str]]]
) -> None:
    await _publish_through_failover(failing_over, "failover", through_fault)


@pytest.mark.anyio
async def test_a_killed_master_is_replaced_and_followed(
    failing_over: SentinelSetup, through_fault: Callable[..., Awaitable[list[str]]]
) -> None:
    await _publish_through_failover(failing_over, "kill", through_fault)


@pytest.mark.parametrize("scheme", ["redis+sentinel", "rediss+sentinel"])
def test_both_sentinel_schemes_are_entry_points(scheme: str) -> None:
    assert layer_for_url(f"{scheme}://127.0.0.1:26379/svc") is RedisPubSubChannelLayer


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names no service"),
        ("redis+sentinel://127.0.0.1:26379/", "names no service"),
        ("redis+sentinel://127.0.0.1:x/svc", "port"),
        ("redis+sentinel://127.0.0.1:26379,/svc", "empty Sentinel address"),
        ("redis+sentinel://127.0.0.1:26379/svc/zero", "database"),
    ],
)
def test_a_malformed_sentinel_url_is_a_clear_value_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisPubSubChannelLayer.from_url(url)


def test_sentinel_options_are_for_sentinel_urls_only() -> None:
    with pytest.raises(TypeError, match="sentinel_password"):
        RedisPubSubChannelLayer.from_url("redis://127.0.0.1:6379", sentinel_password="x")
    layer = RedisPubSubChannelLayer.from_url(
        "redis+sentinel://127.0.0.1:26379/svc", sentinel_password="s3cret"
    )
    assert "s3cret" not in repr(layer)
