"""What history costs a PostgreSQL publish: time, CPU, rows and statements, bytes kept.

    hatch run python packages/channels-postgres/benchmarks/history_cost.py \\
        [--url postgresql://...] [--messages 2000] [--rounds 5]

Publishes `messages` messages of 100 bytes back to back through one channel
(no subscriber: the publish alone), with history off and with
``history_size=1000``, alternating `rounds` times on a fresh group each, so
that a busy machine slows both alike; prints the best and the median round
of each. Then, from the server's statistics, what one publish did with
history on (transactions, rows inserted, updated, deleted) and the bytes
the log keeps per event (table and index, 10,000 events retained). Runs on
a throwaway server of its own (`PostgresServer`: no other client skews its
statistics), or on `--url`, in a namespace of its own dropped at the end.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from typing import Any

import anyio
import asyncpg

from channels_core import Channel
from channels_layer_postgres import ChannelNames, PostgreSQLChannelLayer
from channels_layer_postgres.testing import PostgresServer, drop_tables

MESSAGE = "x" * 90  # 100 bytes as JSON, with the quotes and a little more


async def publish_round(
    url: str, namespace: str, messages: int, **options: Any
) -> tuple[float, float]:
    """Microseconds per publish: (wall clock, process CPU), for one round."""
    group = f"cost-{secrets.token_hex(4)}"
    async with Channel(PostgreSQLChannelLayer(url, namespace=namespace, **options)) as channel:
        await channel.publish(group, MESSAGE)  # statements prepared, connection warm
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(messages):
            await channel.publish(group, MESSAGE)
        return (
            (time.perf_counter() - wall) / messages * 1e6,
            (time.process_time() - cpu) / messages * 1e6,
        )


async def database_counters(conn: asyncpg.Connection) -> dict[str, int]:
    """The database's transactions and rows written so far (every client's)."""
    row = await conn.fetchrow(
        "SELECT xact_commit AS transactions, tup_inserted AS inserted,"
        " tup_updated AS updated, tup_deleted AS deleted"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    return {key: int(value) for key, value in row.items()}


async def flushed_publish(channel: Channel, group: str) -> None:
    """One more publish, over a second after the last: the backend then reports
    its statistics (PostgreSQL 15 flushes them at most once a second)."""
    await anyio.sleep(1.1)
    await channel.publish(group, MESSAGE)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server to use instead of a throwaway one")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    if arguments.url:
        await measure(arguments.url, arguments.messages, arguments.rounds)
        return
    with PostgresServer() as server:
        await measure(server.url, arguments.messages, arguments.rounds)


async def measure(url: str, messages: int, rounds: int) -> None:
    namespace = f"cost{secrets.token_hex(4)}"
    names = ChannelNames(namespace)
    modes = {"off": {}, "on": {"history_size": 1000}}
    try:
        runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, options in modes.items():
                runs[mode].append(await publish_round(url, namespace, messages, **options))
        for mode, values in runs.items():
            walls, cpus = [wall for wall, _ in values], [cpu for _, cpu in values]
            print(
                f"history {mode:>3}: {min(walls):7.1f} us per publish best, "
                f"{statistics.median(walls):7.1f} median; client CPU {min(cpus):5.1f} us best "
                f"({messages} publishes x {rounds} rounds)"
            )

        conn = await asyncpg.connect(url)
        try:
            # What one publish does with history on (the log full, so it trims too).
            async with Channel(
                PostgreSQLChannelLayer(url, namespace=namespace, history_size=1000)
            ) as channel:
                group = f"counted-{secrets.token_hex(4)}"
                for _ in range(1000):
                    await channel.publish(group, MESSAGE)
                await flushed_publish(channel, group)
                before = await database_counters(conn)
                for _ in range(1000):
                    await channel.publish(group, MESSAGE)
                await flushed_publish(channel, group)
                after = await database_counters(conn)
            # Less the two statistics reads of this connection (one transaction each).
            after["transactions"] -= 1
            per = {key: (after[key] - before[key]) / 1001 for key in after}
            print(
                "per publish, history on (the database's counters, all clients): "
                + ", ".join(f"{value:.2f} {key}" for key, value in per.items())
            )
            # Bytes the log keeps per event: 10 groups of 1,000 events of 100 B.
            fresh = f"{namespace}b"
            fresh_names = ChannelNames(fresh)
            try:
                async with Channel(
                    PostgreSQLChannelLayer(url, namespace=fresh, history_size=1000)
                ) as channel:
                    for group in range(10):
                        for _ in range(1000):
                            await channel.publish(f"g{group}", MESSAGE)
                size = await conn.fetchval(
                    "SELECT pg_total_relation_size($1::regclass)",
                    f'"{fresh_names.history_table}"',
                )
                heads = await conn.fetchval(
                    "SELECT pg_total_relation_size($1::regclass)", f'"{fresh_names.heads_table}"'
                )
                print(
                    f"kept: {size / 10_000:.0f} bytes per event of 100 B (table and index, "
                    f"10,000 events), {heads:,} bytes for the counter rows of 10 groups"
                )
            finally:
                await drop_tables(url, fresh_names)
        finally:
            await conn.close()
    finally:
        await drop_tables(url, names)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
