"""The NATS layer's own behaviour on the shared server: URLs, limits, foreign messages, errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import nats
import pytest

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Channel,
    MessagesLost,
    NotSupportedError,
    PayloadTooLargeError,
)
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats._options import parse_url
from channels_layer_nats.testing import NatsServer

LayerMaker = Callable[..., NatsChannelLayer]


def test_seed_lists_and_credentials_are_read_from_the_url() -> None:
    target = parse_url("nats+tls://app:p%40ss@h1:4222,[::1]:4223,h3?namespace=x")
    assert target.servers == ("tls://h1:4222", "tls://[::1]:4223", "tls://h3:4222")
    assert (target.user, target.password, target.tls, target.query) == (
        "app",
        "p@ss",
        True,
        "namespace=x",
    )
    assert parse_url("nats://").servers == ("nats://127.0.0.1:4222",)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1",
        "nats:/127.0.0.1",
        "nats://token-in-user-info@127.0.0.1:4222",
        "nats://127.0.0.1:99999",
        "nats://127.0.0.1:4222/path",
    ],
)
def test_bad_urls_are_refused_without_showing_secrets(url: str) -> None:
    with pytest.raises(ValueError, match=r"NATS URL|user info|host:port") as refused:
        NatsChannelLayer.from_url(url)
    assert "token-in-user-info" not in str(refused.value)


def test_trio_is_refused_before_connecting(nats_url: str) -> None:
    async def main() -> None:
        async with Channel(NatsChannelLayer.from_url(nats_url)):
            pass

    with pytest.raises(NotSupportedError, match="asyncio"):
        anyio.run(main, backend="trio")


@pytest.mark.anyio
async def test_payloads_up_to_max_payload_and_not_one_byte_more(
    make_nats_layer: LayerMaker,
) -> None:
    layer = make_nats_layer()
    async with Channel(layer, serializer=_RAW) as channel:
        limit = layer.max_payload_bytes
        assert limit == 1024 * 1024  # the server's INFO (its default)
        long_group = "g" * 400  # a hashed subject: the frame carries the name
        async with channel.subscribe("big", long_group) as subscriber:
            with pytest.raises(PayloadTooLargeError):
                await channel.publish("big", b"x" * (limit + 1))
            await channel.publish("big", b"y" * limit)
            assert (await subscriber.receive()).message == b"y" * limit
            frame_overhead = 4 + len(long_group)
            with pytest.raises(PayloadTooLargeError, match="Nothing was sent"):
                await channel.publish(long_group, b"x" * (limit - frame_overhead + 1))
            await channel.publish(long_group, b"z" * (limit - frame_overhead))
            event = await subscriber.receive()
            assert (event.group, event.message) == (long_group, b"z" * (limit - frame_overhead))
        assert layer.stats().published == 2


@pytest.mark.anyio
async def test_the_limit_is_the_servers_own_max_payload() -> None:
    """A server configured below the default: its INFO, not 1 MiB, sets the limit."""
    limit = 4096
    with NatsServer(config=f"max_payload: {limit}\n") as server:
        layer = NatsChannelLayer.from_url(server.url)
        async with Channel(layer, serializer=_RAW) as channel:
            assert layer.max_payload_bytes == limit
            async with channel.subscribe("small", "next") as subscriber:
                with pytest.raises(PayloadTooLargeError, match="4,096"):
                    await channel.publish("small", b"x" * (limit + 1))
                await channel.publish("small", b"y" * limit)
                await channel.publish("next", b"after")
                with anyio.fail_after(10):
                    received = [(await subscriber.receive()).message for _ in range(2)]
                assert received == [b"y" * limit, b"after"]  # the refused one never sent
            assert layer.stats().published == 2


def server_counts(server: NatsServer, client: str, messages: str) -> tuple[int, int]:
    """The server's count `messages` (``in_msgs``: sent by the client, ``out_msgs``: sent
    to it) for the connection named `client`, and the subscriptions it holds."""
    connection = server.connection(client)
    return int(connection[messages]), len(connection.get("subscriptions_list", []))


@pytest.mark.anyio
async def test_many_groups_are_subscribed_in_one_round_trip() -> None:
    """50 groups in one call: 50 SUBs and one confirmation message, seen by the server."""
    with NatsServer() as server:
        layer = NatsChannelLayer.from_url(server.url, client_name="multi-group")
        async with Channel(layer) as channel, channel.subscribe("first"):
            # The first subscribe's confirmation proved the inbox's SUB.
            sent, held = server_counts(server, "multi-group", "in_msgs")
            groups = [f"room {n}" for n in range(50)]
            async with channel.subscribe(*groups) as subscriber:
                assert server_counts(server, "multi-group", "in_msgs") == (sent + 1, held + 50)
                await channel.publish(groups[-1], "last")
                with anyio.fail_after(10):
                    assert (await subscriber.receive()).message == "last"


@pytest.mark.anyio
async def test_fan_out_is_one_server_delivery_per_process() -> None:
    """100 subscribers of a group in one process: one SUB, one message out per publish."""
    with NatsServer() as server:
        layer = NatsChannelLayer.from_url(server.url, client_name="fan-out")
        async with Channel(layer) as channel, AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(channel.subscribe("room")) for _ in range(100)
            ]
            sent, held = server_counts(server, "fan-out", "out_msgs")
            for number in range(10):
                await channel.publish("room", number)
            with anyio.fail_after(10):
                for subscriber in subscribers:
                    assert [(await subscriber.receive()).message for _ in range(10)] == list(
                        range(10)
                    )
            assert server_counts(server, "fan-out", "out_msgs") == (sent + 10, held)
            assert held == 2  # the group's subject and the layer's confirmation inbox


@pytest.mark.anyio
async def test_namespaces_on_one_server_do_not_hear_each_other(
    nats_url: str, namespace: str
) -> None:
    """Even a pattern with no literal prefix (`<namespace>.>`) stays in its namespace."""
    ours = NatsChannelLayer.from_url(nats_url, namespace=namespace)
    theirs = NatsChannelLayer.from_url(nats_url, namespace=f"{namespace}-other")
    async with Channel(ours) as channel, Channel(theirs) as other:
        async with (
            channel.subscribe_pattern("*") as everything,
            channel.subscribe("room") as room,
            other.subscribe("room") as their_room,
        ):
            await other.publish("room", "theirs")
            with anyio.fail_after(10):  # the server has routed it to every subscription
                assert (await their_room.receive()).message == "theirs"
            await channel.publish("room", "ours")  # so anything leaked would come first
            with anyio.fail_after(10):
                assert (await everything.receive()).message == "ours"
                assert (await room.receive()).message == "ours"
        assert ours.stats().misrouted == 0


@pytest.mark.anyio
async def test_foreign_messages_are_skipped_and_counted(
    make_nats_layer: LayerMaker, nats_url: str, namespace: str
) -> None:
    layer = make_nats_layer()
    long_group = "h" * 400
    async with Channel(layer) as channel:
        async with (
            channel.subscribe(long_group) as by_name,
            channel.subscribe_pattern("*") as by_pattern,
        ):
            foreign = await nats.connect(nats_url)
            try:
                subject = layer.subject(long_group)
                await foreign.publish(subject, b"no frame")  # forged: skipped twice
                await foreign.publish(f"{namespace}.bad~escape", b"1")  # not our encoding
                await foreign.publish(f"{namespace}.plain", b'"from outside"')  # readable
                await foreign.flush()
            finally:
                await foreign.close()
            with anyio.fail_after(10):
                foreign_event = await by_pattern.receive()  # the last foreign message
            assert (foreign_event.group, foreign_event.message) == ("plain", "from outside")
            assert layer.stats().misrouted == 3  # the forged one twice, the bad escape once
            await channel.publish(long_group, "real")
            assert (await by_name.receive()).message == "real"
            event = await by_pattern.receive()
            assert (event.group, event.message) == (long_group, "real")
        assert layer.stats().misrouted == 3


@pytest.mark.anyio
async def test_patterns_share_wildcards_and_count_what_matched_nothing(
    make_nats_layer: LayerMaker,
) -> None:
    layer = make_nats_layer()
    async with Channel(layer) as channel:
        async with channel.subscribe_pattern("*.errors", "[ab]*", "chat.*") as subscriber:
            assert layer.stats().subscriptions == 2  # <namespace>.> shared, and chat.>
            for group in ("web.errors", "nothing", "b.x", "chat.1"):
                await channel.publish(group, group)
            received = [await subscriber.receive() for _ in range(3)]
            assert [(e.group, e.pattern) for e in received] == [
                ("web.errors", "*.errors"),
                ("b.x", "[ab]*"),
                ("chat.1", "chat.*"),
            ]
            assert layer.stats().unmatched >= 1  # "nothing" came in on <namespace>.>
        assert layer.stats().subscriptions == 0


@pytest.mark.anyio
async def test_wrong_credentials_fail_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with NatsServer(config='authorization { user: app, password: "right-one" }') as server:
        url = server.url.replace("nats://", "nats://app:wrong-one@")
        started = anyio.current_time()
        with pytest.raises(BrokerRefusedError, match="refused") as refused:
            async with Channel.from_url(url, connect_timeout=10):
                pass
        assert anyio.current_time() - started < 5
        assert "wrong-one" not in str(refused.value)
        right = server.url.replace("nats://", "nats://app:right-one@")
        async with Channel.from_url(right) as channel, channel.subscribe("in") as subscriber:
            await channel.publish("in", 1)
            assert (await subscriber.receive()).message == 1
        token_server_url = server.url + "?token=wrong-token"
        with pytest.raises(BrokerRefusedError):
            async with Channel.from_url(token_server_url):
                pass
    assert not [r for r in caplog.records if "wrong-one" in r.getMessage()]


@pytest.mark.anyio
async def test_unreachable_server_fails_after_connect_timeout() -> None:
    started = anyio.current_time()
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1"):
        async with Channel.from_url("nats://127.0.0.1:1", connect_timeout=0.5):
            pass
    assert anyio.current_time() - started < 3


@pytest.mark.anyio
async def test_tls_url_refuses_a_server_without_tls(nats_url: str) -> None:
    with pytest.raises(BrokerRefusedError, match="TLS"):
        async with Channel.from_url(nats_url.replace("nats://", "nats+tls://")):
            pass


class _Raw:
    """Messages are bytes, sent as they are (exact sizes on the wire)."""

    dumps: Callable[[bytes], bytes] = staticmethod(bytes)
    loads: Callable[[bytes], bytes] = staticmethod(bytes)


_RAW = _Raw()


@pytest.mark.anyio
async def test_a_subscriber_that_never_reads_holds_only_its_buffer(
    make_nats_layer: LayerMaker,
) -> None:
    """No nats-py queue in between: what the buffer cannot keep is dropped and counted."""
    layer = make_nats_layer()
    count = 20_000
    async with Channel(layer) as channel:
        async with (
            channel.subscribe("firehose", buffer_size=10) as idle,
            channel.subscribe("firehose", "done", buffer_size=count + 1) as reader,
        ):
            for number in range(count):
                await channel.publish("firehose", number)
            await channel.publish("done", "end")
            with anyio.fail_after(20):
                received = [(await reader.receive()).message for _ in range(count + 1)]
            assert received == [*range(count), "end"]
            nats_subscription = layer._groups["firehose"]  # what nats-py holds for it
            assert (nats_subscription.pending_msgs, nats_subscription.pending_bytes) == (0, 0)
            assert idle.dropped == count - 10
            with pytest.raises(MessagesLost) as gap:
                await idle.receive()
            assert (gap.value.reason, gap.value.count) == ("overflow", count - 10)
            assert [(await idle.receive()).message for _ in range(10)] == list(
                range(count - 10, count)
            )
