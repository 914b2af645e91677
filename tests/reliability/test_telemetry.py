"""Metrics of a network layer's outage: one lost connection, one reconnect, one gap."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from channels_core import Backoff, Channel, MessagesLost
from channels_core.telemetry import instrument
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer

pytestmark = pytest.mark.anyio


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
    layer = RedisPubSubChannelLayer.from_url(
        server.url, reconnect_backoff=Backoff(initial=0.05, maximum=0.25)
    )
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
    assert found["channels.layer.connection_losses"] == 1
    assert found["channels.layer.reconnects"] == 1
    assert found["channels.gaps/reconnect"] == 1
    assert found["channels.gaps/overflow"] == found["channels.gaps/expired"] == 0
    assert found["channels.messages.published"] == 1
    assert found["channels.messages.delivered"] == 1
    assert found["channels.subscribers"] == 1
