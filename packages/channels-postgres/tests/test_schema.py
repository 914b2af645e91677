"""The layer's tables: created when missing, brought up to date when older."""

from __future__ import annotations

import asyncpg
import pytest

from channels_core import Channel
from channels_layer_postgres import ChannelNames
from channels_layer_postgres.testing import LayerMaker

pytestmark = pytest.mark.anyio


async def test_a_payloads_table_without_the_group_column_is_upgraded(
    make_layer: LayerMaker, pg: asyncpg.Connection, namespace: str
) -> None:
    names = ChannelNames(f"{namespace}old")
    table = names.payloads_table
    await pg.execute(
        f'CREATE UNLOGGED TABLE "{table}" (id bigserial PRIMARY KEY,'
        " created timestamptz NOT NULL DEFAULT now(), body bytea NOT NULL)"
    )
    try:
        message = "x" * 20_000  # too large for a NOTIFY: goes through the table
        async with Channel(make_layer(namespace=names.namespace)) as channel:
            async with channel.subscribe("large") as subscriber:
                await channel.publish("large", message)
                assert (await subscriber.receive()).message == message
    finally:
        await pg.execute(f'DROP TABLE IF EXISTS "{table}"')
