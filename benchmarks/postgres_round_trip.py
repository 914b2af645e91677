"""The floor of a sequential PostgreSQL publisher in Python: one bare round trip per message.

    hatch run bench:python -m benchmarks.postgres_round_trip [--url URL] [--size BYTES]
        [--messages N] [--repeat R] [--uvloop] [--spin N]

A sequential publisher's ``await publish`` returns once the server has
answered, so its rate is bounded by one round trip per message. Each
repetition measures, one after the other in one process and event loop:

* ``bare loop``: the statement every contender sends (``SELECT
  pg_notify($1, $2)``, prepared) written over one connection and its answer
  awaited, `messages` times, by an ``asyncio.Protocol`` whose
  ``data_received`` resolves one future per round and does nothing else:
  what any client on this event loop waits for before it does anything of
  its own;
* ``blocking socket``: the same over a blocking socket (``send`` then
  ``recv``), no event loop: the kernel's and the server's share alone;
  then, the same way, a simple-query ``NOTIFY`` of the same payload and a
  bare ``SELECT 1``, and for each of the three the CPU the server's
  backend spent per round (its ``/proc`` times: only for a server on this
  machine): what the statement's form changes for the server;
* ``our lane``: the same through the PostgreSQL layer's own connection
  (`channels_layer_postgres._lane.Lane`), LISTENing to the channel it
  notifies, as the layer's listening connection does: the statement's own
  notification comes back with each answer and is handed on;
* the suite's ``1to1`` for ``broadcaster postgres`` and ``channels
  postgres`` (one publisher, one subscriber in the same process, as
  ``python -m benchmarks`` measures it).

With ``--spin N``, N other processes keep CPUs busy meanwhile: on a
virtual machine a CPU that has gone idle takes long to wake, and every
round wakes one on each side (the round's own cost shows without it).

Prints microseconds of wall time per message (of the server backend's CPU
for the ``server CPU`` rows): the median (min-max) of the repetitions, and
the ratio a zero-cost client would reach against
broadcaster (broadcaster's time over the bare loop's). The difference
between a contender and the bare loop is what that client spends on the
critical path of a round; between ``channels postgres`` and ``our lane``,
what the channel and the layer do per publish above their connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from channels_layer_postgres._connection import take_transport
from channels_layer_postgres._lane import Lane
from channels_layer_postgres._pgwire import bind_execute, parse, simple_query

from .contenders import all_contenders
from .measure import measure_delivery
from .run import POSTGRES_URL, REDIS_URL

__all__ = ["main"]

_STATEMENT = "SELECT pg_notify($1, $2)"
_CHANNEL = "bench_round_trip"
#: The end of every answer: ReadyForQuery, outside a transaction.
_READY = b"Z\x00\x00\x00\x05I"
_CONTENDERS = ("broadcaster postgres", "channels postgres")


class _Answers(asyncio.Protocol):
    """Resolves `waiter` when an answer's ReadyForQuery has arrived."""

    def __init__(self) -> None:
        self.transport: Any = None  # asyncio's or uvloop's
        self.waiter: asyncio.Future[None] | None = None
        self.received = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.received.endswith(_READY) and self.waiter is not None:
            self.received = b""
            self.waiter.set_result(None)


def _backend_cpu(pid: int) -> float | None:
    """Seconds of CPU (user + system) backend `pid` has used; None if not on this machine."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _blocking_rounds(sock: socket.socket, message: bytes, messages: int) -> float:
    """Seconds for `messages` rounds of `message` over the blocking `sock`."""
    started = time.perf_counter()
    for _ in range(messages):
        sock.sendall(message)
        received = sock.recv(65536)
        while not received.endswith(_READY):
            received += sock.recv(65536)
    return time.perf_counter() - started


async def _bare_loop(url: str, payload: str, messages: int) -> dict[str, float]:
    """Seconds for `messages` rounds on the event loop, then over a blocking socket
    (three statements), and the server backend's CPU seconds for each of those three."""
    connection = await asyncpg.connect(url)
    pid = await connection.fetchval("SELECT pg_backend_pid()")
    answers = _Answers()
    take_transport(connection, answers)
    transport = answers.transport
    try:
        loop = asyncio.get_running_loop()

        async def round_trip(message: bytes) -> None:
            waiter = answers.waiter = loop.create_future()
            transport.write(message)
            await waiter

        message = bind_execute(b"round_trip", (_CHANNEL, payload))
        await round_trip(parse(b"round_trip", _STATEMENT) + message)  # prepares it
        started = time.perf_counter()
        for _ in range(messages):
            await round_trip(message)
        on_loop = time.perf_counter() - started

        seconds = {"bare loop": on_loop}
        forms = {  # statement: its message, and the name of its blocking-socket row
            "pg_notify": (message, "blocking socket"),
            "simple NOTIFY": (
                simple_query(f"NOTIFY {_CHANNEL}, '{payload}'"),
                "blocking, simple NOTIFY",
            ),
            "SELECT 1": (simple_query("SELECT 1"), "blocking, SELECT 1"),
        }
        transport.pause_reading()
        with socket.socket(fileno=socket.dup(transport.get_extra_info("socket").fileno())) as sock:
            sock.setblocking(True)
            for statement, (form, row) in forms.items():
                cpu_before = _backend_cpu(pid)
                seconds[row] = _blocking_rounds(sock, form, messages)
                cpu_after = _backend_cpu(pid)
                if cpu_before is not None and cpu_after is not None:
                    seconds[f"server CPU, {statement}"] = cpu_after - cpu_before
        return seconds
    finally:
        transport.abort()


async def _lane_loop(url: str, payload: str, messages: int) -> float:
    """Seconds for `messages` rounds through a listening `Lane` hearing its own notifications."""
    heard: list[str] = []
    lane = Lane(on_notification=lambda channel, payload: heard.append(payload))
    take_transport(await asyncpg.connect(url), lane)
    try:
        await lane.query(f'LISTEN "{_CHANNEL}"')
        message = bind_execute(b"round_trip", (_CHANNEL, payload))
        lane.parsing = (_STATEMENT, b"round_trip")  # what `PublishingConnections.call` sets
        await lane.start(parse(b"round_trip", _STATEMENT) + message)
        lane.parsing = None
        started = time.perf_counter()
        for _ in range(messages):
            if await lane.start(message) is not None:
                raise RuntimeError("the server refused the statement")
        elapsed = time.perf_counter() - started
        if len(heard) < messages:
            raise RuntimeError(f"{len(heard)} of {messages} notifications heard")
        return elapsed
    finally:
        lane.abort()


async def _suite_1to1(name: str, size: int, messages: int) -> float:
    """Seconds the suite's 1to1 takes for `messages` through contender `name`."""
    contender = next(c for c in all_contenders(REDIS_URL, POSTGRES_URL) if c.name == name)
    async with contender.open() as session:
        for count in (200, messages):  # a warm-up, then the measured run
            delivery = await measure_delivery(
                session,
                "round_trip",
                publishers=1,
                subscribers=1,
                messages=count,
                size=size,
                timeout=120,
            )
        return delivery.seconds


async def _repetition(args: argparse.Namespace) -> dict[str, float]:
    """One repetition: microseconds per message for each way of publishing."""
    payload = "x" * args.size
    per_message = await _bare_loop(args.url, payload, args.messages)
    per_message["our lane"] = await _lane_loop(args.url, payload, args.messages)
    for name in _CONTENDERS:
        per_message[name] = await _suite_1to1(name, args.size, args.messages)
    return {key: seconds / args.messages * 1e6 for key, seconds in per_message.items()}


@contextlib.contextmanager
def _spinning(count: int) -> Iterator[None]:
    """`count` processes busy on the CPU for the duration (none with 0)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres_round_trip")
    parser.add_argument("--url", default=POSTGRES_URL)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument(
        "--spin",
        type=int,
        default=0,
        metavar="N",
        help="keep N other processes spinning on the CPU meanwhile (an idle CPU wakes slowly)",
    )
    args = parser.parse_args(argv)
    options = {"use_uvloop": True} if args.uvloop else {}
    with _spinning(args.spin):
        runs = [anyio.run(_repetition, args, backend_options=options) for _ in range(args.repeat)]
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(
        f"{args.size} B, {args.messages:,} messages, {args.repeat} repetitions, {loop_name}, "
        f"{args.spin} spinning process(es)"
    )
    print("us per message, of wall time (server CPU: of the backend's CPU): median (min-max)")
    for key in sorted(runs[0], key=lambda key: key.startswith("server CPU")):
        values = [run[key] for run in runs]
        print(f"  {key:26} {statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})")
    best = [run["broadcaster postgres"] / run["bare loop"] for run in runs]
    ours = [run["broadcaster postgres"] / run["channels postgres"] for run in runs]
    print(
        f"broadcaster / bare loop (a zero-cost client's lead): {statistics.median(best):.2f}x "
        f"({min(best):.2f}-{max(best):.2f}); broadcaster / channels postgres: "
        f"{statistics.median(ours):.2f}x ({min(ours):.2f}-{max(ours):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
