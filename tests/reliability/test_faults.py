"""Broker faults with 20 live subscribers: restart, killed connection, paused server.

Every scenario runs the same script on each network layer, against a
private server of its own:

1. 20 subscribers (18 by name over four groups, six of them on two groups,
   and two by pattern) on one listening channel; a second channel publishes.
2. A round of messages: everyone gets exactly its share, in order.
3. The fault. Publishing meanwhile behaves as documented: during a restart
   or a pause, `BrokerUnavailableError` within `publish_timeout`; while only
   the listening connection is killed, publishing goes on.
4. Recovery is awaited through its signal, each subscriber's
   `MessagesLost(reason="reconnect")`, never a sleep.
5. A round after recovery: everyone gets all of it, in order, nothing twice;
   the layer's counters report exactly one lost-and-restored connection.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import anyio
import asyncpg
import pytest
import redis
import redis.asyncio

from channels_core import BrokerUnavailableError, Channel, ChannelLayer, MessagesLost
from channels_core.reconnect import Backoff
from channels_core.testing import eventually
from channels_layer_postgres import PostgreSQLChannelLayer
from channels_layer_postgres.testing import PostgresServer
from channels_layer_redis import RedisPubSubChannelLayer
from channels_layer_redis.testing import RedisServer
from tests.reliability.support import GAP, Recorder, postgres_processes, signal_all

pytestmark = pytest.mark.anyio

GROUPS = ("fault-a", "fault-b", "fault-c", "fault-d")
PATTERNS = ("fault-*", "fault-[ab]")
PUBLISH_TIMEOUT = 1.0
QUICK = Backoff(initial=0.02, maximum=0.2)
#: Messages per group in each round.
ROUND = 5


@dataclass(frozen=True)
class Spec:
    groups: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def wants(self, group: str) -> bool:
        return group in self.groups or any(fnmatchcase(group, p) for p in self.patterns)


def twenty_subscribers() -> list[Spec]:
    specs = []
    for number in range(18):
        groups: tuple[str, ...] = (GROUPS[number % 4],)
        if number % 3 == 0:
            groups += (GROUPS[(number + 1) % 4],)
        specs.append(Spec(groups=groups))
    specs += [Spec(patterns=(pattern,)) for pattern in PATTERNS]
    return specs


@dataclass
class Outage:
    """The publishing side of a scenario: numbered messages and what became of them."""

    publisher: Channel
    sequence: int = 0
    log: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)  # seq of publishes that raised
    refusal_seconds: list[float] = field(default_factory=list)

    async def publish(self, group: str, phase: str) -> None:
        self.sequence += 1
        message = {"seq": self.sequence, "phase": phase}
        self.log.setdefault(phase, []).append((group, message))
        await self.publisher.publish(group, message)

    async def publish_round(self, phase: str) -> None:
        for _ in range(ROUND):
            for group in GROUPS:
                await self.publish(group, phase)

    async def publish_refused(self) -> None:
        """One publish while the server is down or frozen: refused within the bound."""
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match="could not publish"):
            await self.publish(GROUPS[0], "outage")
        self.refusal_seconds.append(time.monotonic() - started)
        self.refused.append(self.sequence)

    def expected(self, spec: Spec, phase: str) -> list[tuple[str, Any]]:
        return [(group, message) for group, message in self.log[phase] if spec.wants(group)]


class Script:
    """Runs the scenario; `check` verifies what every subscriber received."""

    def __init__(self, listener: Channel, publisher: Channel) -> None:
        self.listener = listener
        self.specs = twenty_subscribers()
        self.recorders: list[Recorder] = []
        self.outage = Outage(publisher)

    @asynccontextmanager
    async def subscribed(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack, anyio.create_task_group() as tasks:
            for number, spec in enumerate(self.specs):
                if spec.groups:
                    subscription = self.listener.subscribe(*spec.groups)
                else:
                    subscription = self.listener.subscribe_pattern(*spec.patterns)
                subscriber = await stack.enter_async_context(subscription)
                recorder = Recorder(f"subscriber {number} {spec}", subscriber)
                self.recorders.append(recorder)
                tasks.start_soon(recorder.run)
            yield
            tasks.cancel_scope.cancel()

    async def all_received(self, phase: str) -> None:
        with anyio.fail_after(10):
            for recorder, spec in zip(self.recorders, self.specs, strict=True):
                await recorder.wait_for(_contains(self.outage.expected(spec, phase)[-1]))

    async def all_told_of_the_gap(self, timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            for recorder in self.recorders:
                await recorder.wait_for(lambda items: any(item[0] == GAP for item in items))

    async def keep_publishing_until_recovered(self) -> None:
        """Publish 'during' messages until every subscriber was told of the gap."""
        async with anyio.create_task_group() as tasks:

            async def publish_forever() -> None:
                number = 0
                while True:
                    await self.outage.publish(GROUPS[number % 4], "during")
                    number += 1
                    await anyio.sleep(0.002)

            tasks.start_soon(publish_forever)
            await self.all_told_of_the_gap()
            tasks.cancel_scope.cancel()

    def check(self, late_allowed: bool) -> None:
        """Before the gap: the first round, complete; after it: the last round, complete.

        In between only messages published during the fault, each at most
        once and in order; a refused publish is never delivered, except after
        a pause (`late_allowed`), where the server runs the command it had
        already read once it wakes up.
        """
        outage = self.outage
        for recorder, spec in zip(self.recorders, self.specs, strict=True):
            items, name = recorder.items, recorder.name
            gaps = [index for index, item in enumerate(items) if item[0] == GAP]
            assert [items[index][1] for index in gaps] == ["reconnect"], name
            before = [(item[0], item[1]) for item in items[: gaps[0]]]
            after = [(item[0], item[1]) for item in items[gaps[0] + 1 :]]
            first, last = outage.expected(spec, "before"), outage.expected(spec, "after")
            assert before[: len(first)] == first, name
            assert after[len(after) - len(last) :] == last, name
            middle = before[len(first) :] + after[: len(after) - len(last)]
            for group, message in middle:
                assert message["phase"] in ("during", "outage"), (name, message)
                assert spec.wants(group), (name, group)
            sequence = [message["seq"] for _, message in before + after]
            assert sequence == sorted(set(sequence)), f"{name}: out of order or duplicated"
            late = [m for _, m in middle if m["seq"] in outage.refused]
            if not late_allowed:
                assert not late, name


def _contains(item: tuple[str, Any]) -> Callable[[list[tuple[Any, ...]]], bool]:
    return lambda items: item in items


Fault = Callable[[Script], Awaitable[None]]


async def run_scenario(
    listener_layer: ChannelLayer,
    publisher_layer: ChannelLayer,
    fault: Fault,
    *,
    late_allowed: bool = False,
) -> Script:
    async with Channel(listener_layer) as listener, Channel(publisher_layer) as publisher:
        script = Script(listener, publisher)
        async with script.subscribed():
            await script.outage.publish_round("before")
            await script.all_received("before")
            fault_started = time.monotonic()
            await fault(script)
            await script.all_told_of_the_gap()
            recovered = time.monotonic() - fault_started
            await script.outage.publish_round("after")
            await script.all_received("after")
        script.check(late_allowed)
        assert listener.stats().gaps == 1
        assert listener.stats().subscribers == 0
    refusals = ", ".join(f"{seconds:.2f} s" for seconds in script.outage.refusal_seconds)
    print(
        f"{type(listener_layer).__name__}: all 20 subscribers told of the gap "
        f"{recovered:.2f} s after the fault began; refused publish took {refusals or '-'}; "
        f"{len(script.outage.log.get('during', []))} publishes during the gap"
    )
    for seconds in script.outage.refusal_seconds:
        assert PUBLISH_TIMEOUT * 0.9 <= seconds <= PUBLISH_TIMEOUT + 1.0
    return script


@asynccontextmanager
async def paused(processes: list[int]) -> AsyncIterator[None]:
    """SIGSTOP `processes` for the block (and at most a few seconds), then SIGCONT.

    The watchdog resumes them even if the block hangs (a publish that ignores
    its bound): the test then fails on the time the publish took, instead of
    waiting forever for a server that only the block's end would resume.
    """
    signal_all(processes, signal.SIGSTOP)
    try:
        async with anyio.create_task_group() as tasks:

            async def watchdog() -> None:
                await anyio.sleep(PUBLISH_TIMEOUT + 5)
                signal_all(processes[::-1], signal.SIGCONT)

            tasks.start_soon(watchdog)
            yield
            tasks.cancel_scope.cancel()
    finally:
        signal_all(processes[::-1], signal.SIGCONT)


# -- Redis -----------------------------------------------------------------------------


def redis_layer(server: RedisServer) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer.from_url(
        server.url,
        reconnect_backoff=QUICK,
        publish_timeout=PUBLISH_TIMEOUT,
        health_check_interval=0.25,
        connect_timeout=1.0,
    )


def check_one_outage(layer: ChannelLayer) -> None:
    """The shared counters (`LayerStats`) after one connection lost and restored."""
    stats = layer.stats()
    assert (stats.connection_losses, stats.reconnects) == (1, 1)


async def test_redis_server_restart(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    listener = redis_layer(server)

    async def restart(script: Script) -> None:
        server.stop()
        await eventually(lambda: listener.stats().connection_losses == 1)
        await script.outage.publish_refused()
        await anyio.to_thread.run_sync(server.start)

    script = await run_scenario(listener, redis_layer(server), restart)
    check_one_outage(listener)
    assert len(script.outage.refused) == 1


async def test_redis_client_kill(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    listener, publisher = redis_layer(server), redis_layer(server)
    admin = redis.asyncio.Redis.from_url(server.url)

    async def kill(script: Script) -> None:
        client_id = listener.stats().pubsub_client_id
        assert await admin.client_kill_filter(_id=str(client_id)) == 1
        await script.keep_publishing_until_recovered()

    try:
        script = await run_scenario(listener, publisher, kill)
    finally:
        await admin.aclose()
    check_one_outage(listener)
    assert script.outage.refused == []
    assert len(script.outage.log["during"]) > 0
    assert publisher.stats().connection_losses == 0


async def test_redis_server_paused(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    listener = redis_layer(server)

    async def pause(script: Script) -> None:
        pid = server.pid
        async with paused([pid]):
            await eventually(lambda: listener.stats().connection_losses == 1)
            await script.outage.publish_refused()

    await run_scenario(listener, redis_layer(server), pause, late_allowed=True)
    check_one_outage(listener)


# -- PostgreSQL ------------------------------------------------------------------------


def postgres_layer(url: str) -> PostgreSQLChannelLayer:
    # No TLS negotiation: asyncpg reports a connection attempt abandoned in the
    # middle of it (by connect_timeout, against the frozen server) later as an
    # unretrieved future exception, which fails the test run.
    return PostgreSQLChannelLayer(
        f"{url}?sslmode=disable",
        namespace="faults",
        reconnect_backoff=QUICK,
        publish_timeout=PUBLISH_TIMEOUT,
        health_check_interval=0.25,
        health_check_timeout=0.25,
        connect_timeout=1.0,
    )


async def test_postgres_server_restart(
    private_postgres: PostgresServer, private_postgres_url: str
) -> None:
    listener = postgres_layer(private_postgres_url)

    async def restart(script: Script) -> None:
        await anyio.to_thread.run_sync(private_postgres.stop)
        await script.outage.publish_refused()
        await anyio.to_thread.run_sync(private_postgres.start)

    await run_scenario(listener, postgres_layer(private_postgres_url), restart)
    stats = listener.stats()
    assert (stats.connection_losses, stats.reconnects) == (1, 1)


async def test_postgres_backend_terminated(private_postgres_url: str) -> None:
    listener, publisher = postgres_layer(private_postgres_url), postgres_layer(private_postgres_url)
    admin = await asyncpg.connect(private_postgres_url)

    async def kill(script: Script) -> None:
        pid = listener.stats().listener_pid
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await script.keep_publishing_until_recovered()

    try:
        script = await run_scenario(listener, publisher, kill)
    finally:
        await admin.close()
    stats = listener.stats()
    assert (stats.connection_losses, stats.reconnects) == (1, 1)
    assert publisher.stats().connection_losses == 0
    assert script.outage.refused == []
    assert len(script.outage.log["during"]) > 0


async def test_postgres_server_paused(private_postgres_url: str) -> None:
    listener = postgres_layer(private_postgres_url)

    async def pause(script: Script) -> None:
        pid = listener.stats().listener_pid
        assert pid is not None
        async with paused(postgres_processes(pid)):
            await eventually(lambda: listener.stats().connection_losses == 1)
            await script.outage.publish_refused()

    await run_scenario(listener, postgres_layer(private_postgres_url), pause, late_allowed=True)
    stats = listener.stats()
    assert (stats.connection_losses, stats.reconnects) == (1, 1)
    assert stats.health_check_failures == 1


async def test_redis_drops_a_stalled_layer_over_its_output_buffer_limit(
    start_redis: Callable[..., RedisServer],
) -> None:
    """A process that stops reading (a blocked event loop) while a flood arrives.

    Redis closes a pub/sub client whose output buffer passes
    ``client-output-buffer-limit pubsub``; the layer reconnects, and each
    subscriber hears of the gap and receives what follows it.
    """
    server = start_redis()
    admin = redis.Redis.from_url(server.url)
    admin.config_set("client-output-buffer-limit", "pubsub 65536 0 0")
    listener = redis_layer(server)
    chunk = "x" * 10_000

    def flood() -> None:  # 20 MB: more than the socket buffers and the 64 KB limit
        for number in range(2_000):
            admin.publish("flood", json.dumps([number, chunk]))

    try:
        async with Channel(listener) as channel, channel.subscribe("flood") as subscriber:
            flooding = threading.Thread(target=flood)
            flooding.start()
            flooding.join()  # blocks this process's event loop while the flood arrives
            received = 0
            with anyio.fail_after(10):
                while True:
                    try:
                        await subscriber.receive()
                        received += 1
                    except MessagesLost as lost:
                        if lost.reason == "reconnect":
                            break
            await channel.publish("flood", "after")
            with anyio.fail_after(5):
                while (await subscriber.receive()).message != "after":
                    received += 1
            check_one_outage(listener)
            # Redis cut the flood short: neither received nor dropped by the buffer.
            assert received + subscriber.dropped < 2_000
    finally:
        admin.close()


async def test_postgres_publish_waits_out_a_short_restart(
    private_postgres: PostgresServer, private_postgres_url: str
) -> None:
    """A publish started while the server is down goes through once it is back in time."""
    listener = postgres_layer(private_postgres_url)
    patient = PostgreSQLChannelLayer(
        f"{private_postgres_url}?sslmode=disable",
        namespace="faults",
        reconnect_backoff=QUICK,
        publish_timeout=20,
    )
    async with (
        Channel(listener) as channel,
        Channel(patient) as publisher,
        channel.subscribe("late") as subscriber,
    ):
        await anyio.to_thread.run_sync(private_postgres.stop)
        async with anyio.create_task_group() as tasks:

            async def start_soon() -> None:
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(private_postgres.start)

            tasks.start_soon(start_soon)
            started = time.monotonic()
            await publisher.publish("late", "waited")  # no error: the server came back
            waited = time.monotonic() - started
        assert 0.3 <= waited < 20
        with anyio.fail_after(20):
            while True:  # the gap signal; "waited" may come before or after it
                try:
                    await subscriber.receive()
                except MessagesLost as lost:
                    if lost.reason == "reconnect":
                        break
        await publisher.publish("late", "after")
        with anyio.fail_after(5):
            messages = [(await subscriber.receive()).message]
            if messages[0] == "waited":
                messages.append((await subscriber.receive()).message)
        assert messages[-1] == "after"
        assert messages.count("waited") <= 1
