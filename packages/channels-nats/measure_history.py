"""What history costs on NATS: the figures of the README's "History" section.

    hatch run python packages/channels-nats/measure_history.py [nats://127.0.0.1:4222]

Each figure is measured in its own namespace (its stream deleted after):
publishes per second with history off and on (one task, sixteen tasks),
messages per second delivered 1->1, the bytes a live message and a stored
one carry, how fast a history is read back, for comparison what an
unacknowledged publish into the stream would do (the design not taken),
and a recovery scenario on a private server: the subscriber's connection
cut every second under load (`Relay`), messages lost and recovery times.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import nats
from nats.aio.msg import Msg

from channels_core import Backoff, Channel, MessagesLost
from channels_layer_nats import NatsChannelLayer
from channels_layer_nats.testing import NatsServer, Relay, delete_history

COUNT = 10_000


@asynccontextmanager
async def channels(url: str, **options: object) -> AsyncIterator[tuple[Channel, Channel]]:
    namespace = f"measure-{uuid.uuid4().hex[:8]}"
    try:
        async with (
            Channel(NatsChannelLayer(url, namespace=namespace, **options)) as sender,
            Channel(NatsChannelLayer(url, namespace=namespace, **options)) as receiver,
        ):
            yield sender, receiver
    finally:
        delete_history(url, namespace)


async def rate(count: int, publish: Callable[[int], Awaitable[None]], tasks: int = 1) -> float:
    started = time.perf_counter()

    async def run(first: int) -> None:
        for number in range(first, count, tasks):
            await publish(number)

    async with anyio.create_task_group() as group:
        for first in range(tasks):
            group.start_soon(run, first)
    return count / (time.perf_counter() - started)


async def delivered(url: str, **options: object) -> float:
    """Messages per second, 1->1, a publisher and a subscriber in one process."""
    async with channels(url, **options) as (sender, receiver):
        async with receiver.subscribe("m", buffer_size=COUNT) as subscriber:
            started = time.perf_counter()
            async with anyio.create_task_group() as group:

                async def receive() -> None:
                    for _ in range(COUNT):
                        await subscriber.receive()

                group.start_soon(receive)
                for number in range(COUNT):
                    await sender.publish("m", number)
            return COUNT / (time.perf_counter() - started)


async def main(url: str) -> None:
    history = {"history_size": COUNT}
    for label, options in (("history off", {}), ("history_size=10000", history)):
        async with channels(url, **options) as (sender, _):
            one = await rate(COUNT, lambda n: sender.publish("p", n))
            many = await rate(COUNT, lambda n: sender.publish("p", n), tasks=16)
        print(f"{label}: publish {one:,.0f}/s (1 task), {many:,.0f}/s (16 tasks)")
        print(f"{label}: 1->1 delivered {await delivered(url, **options):,.0f}/s")

    async with channels(url, **history) as (sender, receiver):
        layer = sender.layer
        assert isinstance(layer, NatsChannelLayer)
        client = await nats.connect(url)
        sizes: list[int] = []

        async def note(message: Msg) -> None:
            sizes.append(_header_bytes(message))

        await client.subscribe(layer.subject("b"), cb=note)
        await client.flush()
        for number in range(100):
            await sender.publish("b", number)
        for number in range(COUNT):
            await sender.publish("r", number)
        await anyio.sleep(0.5)
        assert layer.history_stream is not None
        state = (await client.jetstream().stream_info(layer.history_stream)).state
        await client.close()
        print(
            f"live message headers: {sum(sizes) / len(sizes):.0f} bytes each; stored: "
            f"{state.bytes / state.messages:.0f} bytes per message of 1-4 payload bytes "
            f"({state.messages:,} messages)"
        )
        started = time.perf_counter()
        events = await receiver.history("r")
        took = time.perf_counter() - started
        print(f"history('r') read {len(events):,} events in {took * 1000:.0f} ms")
        started = time.perf_counter()
        await receiver.history("r", since=events[-2].position)
        print(f"history(since=newest but one): {(time.perf_counter() - started) * 1000:.1f} ms")

        # The design not taken: a core publish into the stream, no acknowledgement.
        raw = await nats.connect(url)
        subject = f"_chlog.{layer.options.namespace}.~.u"
        started = time.perf_counter()
        for number in range(COUNT):
            await raw.publish(subject, str(number).encode())
        await raw.flush()
        unacked = COUNT / (time.perf_counter() - started)
        await raw.close()
        print(f"unacknowledged core publish into the stream: {unacked:,.0f}/s (1 task)")


def _header_bytes(message: Msg) -> int:
    """The size of the header block the server added (NATS/1.0 line, lines, blank line)."""
    headers = message.headers or {}
    return len(b"NATS/1.0\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in headers.items()) + 2


async def recovery(cuts: int = 10, rate: float = 1_000.0) -> None:
    """Cut the subscriber's connection every second while ~`rate` messages/s are published.

    Recovery time: from a cut until the subscriber receives the first
    message published after it (reconnect, epoch re-read, log read, handover).
    """
    options: dict[str, object] = {
        "history_size": 100_000,
        "reconnect_backoff": Backoff(initial=0.05, maximum=0.2),
    }
    with NatsServer(jetstream=True) as server, Relay(server.port) as relay:
        async with (
            Channel(NatsChannelLayer(server.url, **options)) as sender,
            Channel(NatsChannelLayer(relay.url, **options)) as receiver,
            receiver.subscribe("load", buffer_size=100_000) as subscriber,
        ):
            published, received, lost = 0, -1, 0
            cut_at: list[tuple[float, int]] = []  # (when, first number after it)
            times: list[float] = []
            finished = anyio.Event()

            async def publish() -> None:
                nonlocal published
                while not finished.is_set():
                    await sender.publish("load", published)
                    published += 1
                    await anyio.sleep(1 / rate)

            async def cut() -> None:
                for _ in range(cuts):
                    await anyio.sleep(1)
                    cut_at.append((time.perf_counter(), published))
                    relay.cut()
                await anyio.sleep(1)
                finished.set()

            async with anyio.create_task_group() as group:
                group.start_soon(publish)
                group.start_soon(cut)
                while not finished.is_set() or received < published - 1:
                    try:
                        with anyio.fail_after(10):
                            number = (await subscriber.receive()).message
                    except MessagesLost:
                        lost += 1
                        continue
                    if number != received + 1:
                        lost += 1
                    received = number
                    while cut_at and number >= cut_at[0][1]:
                        times.append(time.perf_counter() - cut_at.pop(0)[0])
        times.sort()
        p50, worst = times[len(times) // 2] * 1000, times[-1] * 1000
        print(
            f"recovery: {cuts} cuts, one a second, {published:,} messages published; "
            f"{lost} lost or out of order; recovery time p50 {p50:.0f} ms, max {worst:.0f} ms"
        )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222")
    anyio.run(recovery)
