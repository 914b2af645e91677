"""Argument parsing and the four subcommands of ``channels``.

Exit codes: 0 success (or interrupted subscribe), 1 runtime failure (server
unreachable, credentials or database refused, bench timed out), 2 bad usage
(bad URL or URL parameter, unknown layer, bad arguments), 130 publish or
bench interrupted by Ctrl-C. Every error is one line, ``channels: error:
...``, saying what happened and what to do, without passwords.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from ..background import background_tasks
from ..channel import Channel
from ..exceptions import ChannelsError, LayerImportError, LayerNotFoundError, MessagesLost
from ._bench import BenchSettings, format_result, run_bench
from ._layers import describe_layers, format_layers

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)

T = TypeVar("T")


class _UsageError(Exception):
    """Bad input detected after parsing (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="channels",
        description="Inspect channel layers, publish, subscribe and measure.",
        epilog="URLs pick the layer by scheme: memory://, redis://host:6379/0, "
        "postgresql://user@host/db. Exit codes: 0 ok, 1 runtime failure, 2 bad usage, "
        "130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "layers",
        help="list installed layers with distribution, class and capabilities",
        description="List installed layers; a broken plugin is shown with its error.",
    )

    publish = commands.add_parser(
        "publish",
        help="publish one message",
        description="Publish MESSAGE to GROUP. MESSAGE is parsed as JSON; if it is "
        "not valid JSON it is sent as a plain string.",
    )
    publish.add_argument("url", metavar="URL")
    publish.add_argument("group", metavar="GROUP")
    publish.add_argument("message", metavar="MESSAGE")

    subscribe = commands.add_parser(
        "subscribe",
        help="print events as JSON lines until interrupted",
        description="Subscribe to GROUPs (or glob patterns with --pattern) and print "
        'one JSON line per event: {"group": ..., "message": ..., "pattern": ...}. '
        "Runs until interrupted (Ctrl-C) or until --count events have arrived.",
    )
    subscribe.add_argument("url", metavar="URL")
    subscribe.add_argument("names", metavar="GROUP", nargs="+")
    subscribe.add_argument("--pattern", action="store_true", help="treat names as patterns")
    subscribe.add_argument("--count", type=_positive_int, help="exit after this many events")

    bench = commands.add_parser(
        "bench",
        help="measure throughput and publish-to-receive latency",
        description="Publish a burst of messages to N subscribers (throughput), then a "
        "paced run to one subscriber (latency p50/p99), through one channel.",
    )
    bench.add_argument("url", metavar="URL")
    bench.add_argument("--size", type=_positive_int, default=100, help="message bytes")
    bench.add_argument("--subscribers", type=_positive_int, default=1)
    bench.add_argument("--messages", type=_positive_int, default=10_000)
    bench.add_argument("--latency-messages", type=int, default=1_000)
    bench.add_argument("--rate", type=float, default=1_000.0, help="paced messages/s")
    bench.add_argument(
        "--timeout", type=_positive_seconds, default=120.0, help="seconds the whole run may take"
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "layers":
            print(format_layers(describe_layers()))
            return 0
        if arguments.command == "publish":
            _run(_publish, arguments.url, arguments.group, arguments.message)
            return 0
        if arguments.command == "subscribe":
            return _run_subscribe(arguments)
        return _run_bench(arguments)
    except (_UsageError, LayerNotFoundError, LayerImportError, ValueError, TypeError) as exc:
        return _fail(exc, EXIT_USAGE)
    except (ChannelsError, OSError) as exc:
        return _fail(exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        print("channels: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(function, *args)``, ended by Ctrl-C with `KeyboardInterrupt`.

    Ctrl-C cancels `function` through an anyio cancel scope, which keeps
    cancelling until the work has stopped: asyncio's own single
    ``task.cancel()`` can be lost (Python 3.11's ``asyncio.wait_for``, used
    by redis-py on every command, swallows a cancellation that arrives as
    its command completes), and the command would then run on.
    """
    if sys.platform == "win32":  # no signal receiver there; asyncio's handling it is
        return anyio.run(function, *args)
    return anyio.run(_interruptible, function, args)


async def _interruptible(function: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    async with background_tasks() as tasks:  # the work's own errors come out unwrapped

        async def cancel_on_interrupt() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    tasks.cancel_scope.cancel()
                    return

        tasks.start_soon(cancel_on_interrupt)
        return await function(*args)
    raise KeyboardInterrupt  # the work was cancelled, and only Ctrl-C cancels it


def _fail(exc: BaseException, code: int) -> int:
    print(f"channels: error: {exc}", file=sys.stderr)
    return code


def _without_secrets(url: str) -> str:
    """`url` without its user info and query, where passwords and tokens would be."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _parse_message(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _publish(url: str, group: str, text: str) -> None:
    async with Channel.from_url(url) as channel:
        await channel.publish(group, _parse_message(text))


def _run_subscribe(arguments: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way out
        _run(_subscribe, arguments.url, arguments.names, arguments.pattern, arguments.count)
    return 0


async def _subscribe(url: str, names: list[str], pattern: bool, count: int | None) -> None:
    async with Channel.from_url(url) as channel:
        first, *more = names
        subscription = (
            channel.subscribe_pattern(first, *more) if pattern else channel.subscribe(first, *more)
        )
        received = 0
        async with subscription as subscriber:
            where = _without_secrets(url)
            print(f"subscribed to {', '.join(names)} on {where}", file=sys.stderr, flush=True)
            while count is None or received < count:
                try:
                    event = await subscriber.receive()
                except MessagesLost as gap:
                    print(f"channels: warning: {gap}", file=sys.stderr, flush=True)
                    continue
                line = {"group": event.group, "message": event.message, "pattern": event.pattern}
                print(json.dumps(line, ensure_ascii=False, default=repr), flush=True)
                received += 1


def _run_bench(arguments: argparse.Namespace) -> int:
    settings = BenchSettings(
        url=arguments.url,
        size=arguments.size,
        subscribers=arguments.subscribers,
        messages=arguments.messages,
        latency_messages=arguments.latency_messages,
        rate=arguments.rate,
        timeout=arguments.timeout,
    )
    interactive = sys.stderr.isatty()

    def progress(phase: str, done: int, total: int) -> None:
        line = f"{phase:<10} {done:>9,}/{total:,} ({100 * done / total:5.1f}%)"
        if interactive:
            print(f"\r{line}", end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif done == total:
            print(line, file=sys.stderr, flush=True)

    result = _run(run_bench, settings, progress)
    print(format_result(result))
    return 0


def console_main() -> NoReturn:
    """Entry point of the ``channels`` console script; SIGPIPE-safe."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
