"""Entering and leaving: no connection, LISTEN or task outlives the channel."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from channels_core import Channel
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio

APP = "channels-lifecycle-test"


async def _backends(pg: asyncpg.Connection) -> int:
    """Backends of the layers under test, once the server has let closed ones go."""
    count = 0
    for _ in range(100):
        count = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP
        )
        if count == 0:
            break
        await anyio.sleep(0.02)
    return int(count)


async def test_leaving_closes_every_connection(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer(application_name=APP)
    async with Channel(layer) as channel, channel.subscribe("a", "b"):
        await channel.publish("a", 1)
        assert (
            await pg.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP
            )
            == 2
        )  # one LISTEN connection, one pooled publishing connection
    assert await _backends(pg) == 0


async def test_cancelling_leaves_nothing_behind(
    make_layer: LayerMaker, pg: asyncpg.Connection, postgres_url: str
) -> None:
    # asyncpg leaves an unretrieved future when a connect is cancelled during
    # its SSL negotiation (MagicStack/asyncpg#1310), which fails any anyio
    # test; the server does not do SSL here, so skip the negotiation.
    url = postgres_url
    if "sslmode=" not in url:
        url += ("&" if "?" in url else "?") + "sslmode=disable"
    for delay in (0.0, 0.005, 0.01, 0.02, 0.05, 0.1):
        with anyio.move_on_after(delay):
            async with Channel(make_layer(url, application_name=APP)) as channel:
                async with channel.subscribe("cancelled"), channel.subscribe_pattern("c*"):
                    await anyio.sleep_forever()
    assert await _backends(pg) == 0


async def test_the_body_error_comes_out_unwrapped(make_layer: LayerMaker) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with Channel(make_layer()) as channel, channel.subscribe("x"):
            raise KeyError("mine")


async def test_a_layer_serves_one_channel_at_a_time(make_layer: LayerMaker) -> None:
    layer = make_layer()
    async with Channel(layer):
        with pytest.raises(RuntimeError, match="already connected"):
            async with Channel(layer):
                pass
