"""`Channel.health` and `BlockingChannel.health`: what the report says, and within what time."""

from __future__ import annotations

import dataclasses
import json
import time

import anyio
import pytest

from channels_core import (
    BlockingChannel,
    BrokerUnavailableError,
    Channel,
    ChannelHealth,
    ChannelInUseError,
    LayerStats,
)
from channels_core.layers.local_memory import InMemoryChannelLayer

pytestmark = pytest.mark.anyio


class BrokerLikeLayer(InMemoryChannelLayer):
    """An in-memory layer whose broker check the test drives: it answers, fails or hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Exception | None = None
        self.hang = False
        self.losses = 0
        self.reconnects = 0
        self.down = False

    async def check(self, timeout: float) -> None:
        if self.hang:
            await anyio.sleep_forever()
        if self.failure is not None:
            raise self.failure

    def stats(self) -> LayerStats:
        shared = super().stats()
        return dataclasses.replace(
            shared,
            connected=shared.connected and not self.down,
            connection_losses=self.losses,
            reconnects=self.reconnects,
        )


async def test_an_open_channel_on_memory_is_healthy_and_the_report_is_json() -> None:
    async with Channel.from_url("memory://") as channel:
        before = time.time()
        report = await channel.health()
    assert isinstance(report, ChannelHealth)
    assert report.healthy
    assert report.reason is None
    assert report.connected
    assert report.subscriptions_live
    assert not report.reconnect_pending
    assert report.round_trip is not None
    assert report.round_trip >= 0
    assert report.last_round_trip_at is not None
    assert report.last_round_trip_at >= before
    assert report.since_last_loss is None
    assert json.loads(json.dumps(report.as_dict()))["healthy"] is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.healthy = False  # type: ignore[misc]


async def test_a_channel_not_open_is_unhealthy_without_raising() -> None:
    channel = Channel.from_url("memory://")
    report = await channel.health()
    assert not report.healthy
    assert report.reason == "the channel is not entered yet"
    async with channel:
        pass
    report = await channel.health()
    assert not report.healthy
    assert report.reason == "the channel is closed"
    assert not report.connected


async def test_a_broker_that_does_not_answer_is_unhealthy_within_the_timeout() -> None:
    layer = BrokerLikeLayer()
    async with Channel(layer) as channel:
        assert (await channel.health()).healthy
        layer.hang = True
        started = anyio.current_time()
        report = await channel.health(timeout=0.2)
        took = anyio.current_time() - started
        assert 0.15 <= took < 1.0
        assert not report.healthy
        assert report.reason == "the broker did not answer within 0.2 s"
        assert report.since_last_loss is not None
        assert report.since_last_loss < 1.0
        assert report.round_trip is None
        last_answer = report.last_round_trip_at
        assert last_answer is not None  # the earlier check's, kept
        layer.hang = False
        report = await channel.health(timeout=0.2)
        assert report.healthy
        assert report.last_round_trip_at is not None
        assert report.last_round_trip_at >= last_answer
        assert report.since_last_loss is not None  # the loss is remembered


async def test_a_broker_error_is_the_reason() -> None:
    layer = BrokerLikeLayer()
    async with Channel(layer) as channel:
        layer.failure = BrokerUnavailableError("could not check memory://: refused")
        report = await channel.health()
    assert not report.healthy
    assert report.reason == "BrokerUnavailableError: could not check memory://: refused"


async def test_a_reconnecting_layer_is_unhealthy_without_asking_the_broker() -> None:
    layer = BrokerLikeLayer()
    async with Channel(layer) as channel:
        layer.down, layer.losses, layer.hang = True, 1, True  # asking would hang
        with anyio.fail_after(1):
            report = await channel.health(timeout=30)
        assert not report.healthy
        assert report.reconnect_pending
        assert not report.connected
        assert not report.subscriptions_live
        assert report.reason == "the layer lost its broker connection and is reconnecting"
        layer.down, layer.reconnects, layer.hang = False, 1, False
        report = await channel.health()
        assert report.healthy
        assert not report.reconnect_pending
        assert report.since_last_loss is not None


async def test_a_loss_between_two_checks_is_seen_by_the_next() -> None:
    layer = BrokerLikeLayer()
    async with Channel(layer) as channel:
        assert (await channel.health()).since_last_loss is None
        layer.losses = layer.reconnects = 1  # lost and restored between the two checks
        report = await channel.health()
    assert report.healthy
    assert report.since_last_loss is not None
    assert report.since_last_loss < 1.0


async def test_a_bad_timeout_is_refused_naming_it() -> None:
    async with Channel.from_url("memory://") as channel:
        with pytest.raises(ValueError, match="timeout"):
            await channel.health(timeout=0)
        with pytest.raises(TypeError, match="timeout"):
            await channel.health(timeout="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_another_event_loop_is_refused() -> None:
    async with Channel.from_url("memory://") as channel:

        def elsewhere() -> None:
            anyio.run(channel.health)

        with pytest.raises(ChannelInUseError):
            await anyio.to_thread.run_sync(elsewhere)


def test_blocking_channel_health() -> None:
    layer = BrokerLikeLayer()
    channel = BlockingChannel(layer)
    assert channel.health().reason == "the channel is not opened yet"
    with channel:
        assert channel.health().healthy
        layer.hang = True
        started = time.monotonic()
        report = channel.health(timeout=0.2)
        assert time.monotonic() - started < 2.0
        assert not report.healthy
        assert "did not answer" in (report.reason or "")
    assert channel.health().reason == "the channel is closed"
