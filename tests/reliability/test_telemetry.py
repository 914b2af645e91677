"""Metrics of a network layer's outage: one lost connection, one reconnect, one gap.

Redis: its subscribing connection killed; PostgreSQL and NATS: a private
server stopped and restarted under the channel.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from channels_core import Backoff, Channel, ChannelLayer, MessagesLost
from channels_core.telemetry import instrument
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_postgres.testing import PostgresServer
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.05, maximum=0.25)


def metric_values(reader: InMemoryMetricReader) -> dict[str, float]:
    """``{metric name: value}`` of the counters; ``channels.gaps`` by ``name/reason``."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if hasattr(point, "value"):
                        reason = (point.attributes or {}).get("channels.gap.reason")
                        name = metric.name if reason is None else f"{metric.name}/{reason}"
                        found[name] = point.value
    return found


async def test_redis_connection_killed(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    layer = RedisPubSubChannelLayer.from_url(server.url, reconnect_backoff=QUICK)
    admin = redis.asyncio.Redis.from_url(server.url)
    try:
        async with Channel(layer) as channel, channel.subscribe("metrics") as subscriber:
            instrument(channel, meter_provider=provider)
            await channel.publish("metrics", "before")
            assert (await subscriber.receive()).message == "before"
            client_id = layer.stats().pubsub_client_id
            assert await admin.client_kill_filter(_id=str(client_id)) == 1
            with anyio.fail_after(10), pytest.raises(MessagesLost):
                await subscriber.receive()
            found = metric_values(reader)
    finally:
        await admin.aclose()
        provider.shutdown()
    assert_one_outage(found)


async def counted_across_an_outage(
    layer: ChannelLayer, stop: Callable[[], None], start: Callable[[], None]
) -> dict[str, float]:
    """The counters after one publish and delivery, then the server stopped and restarted."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        async with Channel(layer) as channel, channel.subscribe("metrics") as subscriber:
            instrument(channel, meter_provider=provider)
            await channel.publish("metrics", "before")
            assert (await subscriber.receive()).message == "before"
            await anyio.to_thread.run_sync(stop)
            await anyio.to_thread.run_sync(start)
            with anyio.fail_after(15), pytest.raises(MessagesLost) as lost:
                await subscriber.receive()
            assert lost.value.reason == "reconnect"
            return metric_values(reader)
    finally:
        provider.shutdown()


def assert_one_outage(found: dict[str, float]) -> None:
    assert found["channels.layer.connection_losses"] == 1
    assert found["channels.layer.reconnects"] == 1
    assert found["channels.gaps/reconnect"] == 1
    assert found["channels.gaps/overflow"] == found["channels.gaps/expired"] == 0
    assert found["channels.messages.published"] == 1
    assert found["channels.messages.delivered"] == 1
    assert found["channels.messages.undecodable"] == 0
    assert found["channels.subscribers"] == 1
    assert found["channels.groups"] == 1


async def test_postgres_server_restarted(
    private_postgres: PostgresServer, private_postgres_url: str
) -> None:
    layer = PostgreSQLChannelLayer.from_url(
        private_postgres_url, namespace="metrics", reconnect_backoff=QUICK
    )
    assert_one_outage(
        await counted_across_an_outage(layer, private_postgres.stop, private_postgres.start)
    )


async def test_nats_server_restarted(nats_server: NatsServer) -> None:
    layer = NatsChannelLayer.from_url(nats_server.url, reconnect_backoff=QUICK)
    assert_one_outage(await counted_across_an_outage(layer, nats_server.stop, nats_server.start))
