"""The cheap publish path: the layer's publishing connections, bounded by one deadline timer.

A publish runs on a publishing connection (`_publishing`) without a timer
of its own; one shared timer cuts a statement still running at its
deadline. Here a lock held by another session holds the NOTIFY statement
up (it reads the pattern-listeners table), as a stuck server would.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg
import pytest

from channels_core import BrokerUnavailableError, Channel, Subscriber
from channels_layer_postgres import ChannelNames
from channels_layer_postgres._envelope import EnvelopeWriter, decode
from channels_layer_postgres._names import quote_ident
from channels_layer_postgres.testing import LayerMaker, PostgresServer

pytestmark = pytest.mark.anyio


#: Too large for a NOTIFY: its publish writes the payloads table (`_table_locked`).
DURING = "during" + "x" * 20_000


@asynccontextmanager
async def _table_locked(pg: asyncpg.Connection, namespace: str) -> AsyncIterator[None]:
    """Hold the payloads table locked: every publish of a large message waits until
    the block ends."""
    table = quote_ident(ChannelNames(namespace).payloads_table)
    async with pg.transaction():
        await pg.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield


async def _messages(subscriber: Subscriber, count: int) -> list[object]:
    with anyio.fail_after(5):
        return [(await subscriber.receive()).message for _ in range(count)]


async def _connections(pg: asyncpg.Connection, application_name: str) -> int:
    count: int = await pg.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return count


async def test_a_stuck_publish_ends_at_publish_timeout_and_the_next_one_works(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    layer = make_layer(publish_timeout=0.5)
    async with Channel(layer) as channel, channel.subscribe("stuck") as subscriber:
        await channel.publish("stuck", "before")  # the publisher now keeps a connection
        async with _table_locked(pg, layer.options.namespace):
            started = anyio.current_time()
            with pytest.raises(BrokerUnavailableError, match="TimeoutError") as error:
                await channel.publish("stuck", DURING)
            elapsed = anyio.current_time() - started
        assert 0.5 <= elapsed < 2.0
        assert "publish to" in str(error.value)
        for number in range(3):  # a new connection replaces the cut one
            await channel.publish("stuck", number)
        received = await _messages(subscriber, 4)
        if DURING in received:  # the server ran it once the lock was released
            received += await _messages(subscriber, 1)
        assert [m for m in received if m != DURING] == ["before", 0, 1, 2]


async def test_publishes_past_many_deadlines_are_not_cut(make_layer: LayerMaker) -> None:
    """The timer re-arms for the running statement: a stream of publishes longer
    than publish_timeout is never cut."""
    layer = make_layer(publish_timeout=0.2)
    async with Channel(layer) as channel, channel.subscribe("steady") as subscriber:
        with anyio.move_on_after(0.7):
            sent = 0
            while True:
                await channel.publish("steady", sent)
                sent += 1
                await anyio.sleep(0.01)
        assert sent > 10
        assert await _messages(subscriber, sent) == list(range(sent))


async def test_a_cancelled_stuck_publish_leaks_no_connection(
    make_layer: LayerMaker, pg: asyncpg.Connection
) -> None:
    name = f"pg-path-{secrets.token_hex(4)}"
    layer = make_layer(application_name=name, publish_timeout=10.0, pool_size=2)
    async with Channel(layer) as channel, channel.subscribe("cancelled") as subscriber:
        await channel.publish("cancelled", "before")
        async with _table_locked(pg, layer.options.namespace):
            with anyio.move_on_after(0.3) as scope:
                await channel.publish("cancelled", DURING)  # may be sent at commit
            assert scope.cancelled_caught
        for number in range(5):
            await channel.publish("cancelled", number)
        received = await _messages(subscriber, 6)
        if DURING in received:  # its statement ran once the lock was released
            received += await _messages(subscriber, 1)
        assert [m for m in received if m != DURING] == ["before", 0, 1, 2, 3, 4]
        # The listener, plus at most the pool's connections: the cut one was replaced.
        assert await _connections(pg, name) <= 1 + 2


def test_the_writer_quotes_each_group_for_the_server_it_learns_of() -> None:
    """The writer remembers each group's JSON string; learning that the server is
    not UTF-8 (at connect, after a first use) forgets them."""
    writer = EnvelopeWriter()
    assert decode(writer.inline("café", b"x") or "").group == "café"
    assert '"café"' in (writer.inline("café", b"x") or "")
    writer.ascii_only = True
    envelope = writer.inline("café", b"x") or ""
    assert '"caf\\u00e9"' in envelope
    assert decode(envelope).group == "café"
    assert decode(writer.inline("g", b"\x00\xff") or "").payload == b"\x00\xff"  # base64


@pytest.mark.parametrize("history", [False, True], ids=["history-off", "history-on"])
async def test_statement_statistics_count_publishes_under_their_statements_not_their_messages(
    make_layer: LayerMaker, private_server: PostgresServer, history: bool
) -> None:
    """Payloads travel as parameters, never in a statement's text: a server keeping
    statement statistics (pg_stat_statements, on by default on many hosted servers)
    counts a layer's publishes under a few statements, instead of keeping one entry
    per message with its payload in it."""
    if private_server.settings.get("shared_preload_libraries") != "pg_stat_statements":
        pytest.skip("pg_stat_statements is not installed with this PostgreSQL")
    admin = await asyncpg.connect(private_server.url)
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await admin.execute("SELECT pg_stat_statements_reset()")
        layer = make_layer(private_server.url, history_size=10 if history else 0)
        messages = [f"secret {number}" for number in range(50)] + ["secret" + "x" * 9_000]
        batch = [("stats", f"secret in a batch {number}") for number in range(5)]
        async with Channel(layer) as channel, channel.subscribe("stats") as subscriber:
            for message in messages:
                await channel.publish("stats", message)
            await channel.publish_many(batch)
            assert await _messages(subscriber, 56) == messages + [m for _, m in batch]
        rows = await admin.fetch("SELECT query, calls FROM pg_stat_statements")
    finally:
        await admin.close()
    assert [row["query"] for row in rows if "secret" in row["query"]] == []
    publishing = [row for row in rows if "pg_notify" in row["query"]]
    assert sum(row["calls"] for row in publishing) == 52  # every publish and the batch...
    assert len(publishing) == 3  # ...under three statements: one, large, batch
