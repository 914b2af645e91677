"""The ``channels`` command line, run as a user would run it: as a separate process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest
import redis

from channels_core import BrokerRefusedError, Channel
from channels_core.cli import main
from channels_core.cli._bench import BenchSettings, run_bench

COMMAND = [sys.executable, "-m", "channels_core.cli"]


def run(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def background(*arguments: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [*COMMAND, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 20) -> None:
    """Wait until the process writes `needle` to stderr (its readiness line)."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if needle in line:
            return
        if not line and process.poll() is not None:
            pytest.fail(f"process exited early with {process.returncode}")
    pytest.fail(f"no {needle!r} within {timeout} s")


@pytest.mark.parametrize("command", [[], ["layers"], ["publish"], ["subscribe"], ["bench"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "usage: channels" in result.stdout


def test_layers_lists_installed_layers_with_capabilities(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    memory = next(line for line in lines if line.startswith("memory "))
    assert "channels-core" in memory
    assert "InMemoryChannelLayer" in memory
    assert "multi-group, patterns" in memory
    example = next(line for line in lines if line.startswith("example "))
    assert example.rstrip().endswith(" multi-group")  # declared by a class attribute


def test_layers_shows_a_broken_plugin_with_its_error(
    capsys: pytest.CaptureFixture[str], fake_distribution: Callable[..., None]
) -> None:
    fake_distribution(
        "fake-broken-cli",
        "brokencli = fake_cli_mod:X",
        fake_cli_mod="raise ImportError('needs libfoo')\n",
    )
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "BROKEN" in out
    assert "needs libfoo" in out
    assert "multi-group, patterns" in out  # the other layers are still listed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["publish", "localhost:6379", "g", "1"], "scheme"),
        (["publish", "mqtt://127.0.0.1:1883", "g", "1"], "pip install"),
        (["subscribe", "amqp://127.0.0.1", "g"], "no channel layer named 'amqp'"),
        (["bench", "nope://x"], "no channel layer named 'nope'"),
        (["publish", "redis://127.0.0.1:6379/notadb", "g", "1"], "must be a number"),
    ],
)
def test_bad_url_or_missing_layer_is_a_usage_error(arguments: list[str], message: str) -> None:
    result = run(*arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--subscribers", "0"], "argument --subscribers: must be at least 1, got 0"),
        (["--messages", "many"], "argument --messages: expected a whole number, got 'many'"),
        (["--timeout", "0"], "argument --timeout: must be a positive number of seconds"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments: list[str], message: str) -> None:
    result = run("bench", "memory://", *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "_positive" not in result.stderr  # no internal function names


def test_publish_on_memory_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "memory://", "room", '{"text": "hi"}']) == 0


def test_bench_on_memory_prints_a_summary_table() -> None:
    result = run(
        "bench",
        "memory://",
        "--messages",
        "2000",
        "--subscribers",
        "3",
        "--latency-messages",
        "200",
        "--rate",
        "5000",
    )
    assert result.returncode == 0, result.stderr
    summary = dict(line.split("  ", 1) for line in result.stdout.splitlines() if "  " in line)
    assert summary["subscribers"].strip() == "3"
    assert "6,000 events" in summary["delivered"]
    assert summary["lost"].strip() == "0"
    assert "200 samples" in summary["latency p50"]
    assert "100.0%" in result.stderr  # the progress display


def test_subscribe_stops_cleanly_on_interrupt() -> None:
    with background("subscribe", "memory://", "room") as process:
        wait_for_line(process, "subscribed to room")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0
        assert "Traceback" not in stderr


@pytest.fixture(params=["redis_url", "postgres_url", "nats_url"], ids=["redis", "postgres", "nats"])
def url(request: pytest.FixtureRequest) -> str:
    """The URL of each network layer's test server (see conftest)."""
    return str(request.getfixturevalue(request.param))


def test_publish_in_one_process_reaches_subscribe_in_another(url: str) -> None:
    with background("subscribe", url, "cli.room", "cli.other", "--count", "2") as listener:
        wait_for_line(listener, "subscribed to")
        assert run("publish", url, "cli.room", '{"text": "hi", "n": [1, 2]}').returncode == 0
        assert run("publish", url, "cli.other", "plain words, not JSON").returncode == 0
        stdout, stderr = listener.communicate(timeout=20)
    assert listener.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events == [
        {"group": "cli.room", "message": {"text": "hi", "n": [1, 2]}, "pattern": None},
        {"group": "cli.other", "message": "plain words, not JSON", "pattern": None},
    ]


def test_pattern_subscribe_across_processes(url: str) -> None:
    with background("subscribe", url, "cli.p.*", "--pattern", "--count", "1") as listener:
        wait_for_line(listener, "subscribed to")
        assert run("publish", url, "cli.x", "no").returncode == 0
        assert run("publish", url, "cli.p.1", "yes").returncode == 0
        stdout, _ = listener.communicate(timeout=20)
    assert json.loads(stdout) == {"group": "cli.p.1", "message": "yes", "pattern": "cli.p.*"}


#: Nothing listens on port 1; the connect is refused and retried until connect_timeout
#: (5-10 s by default), which the error path does not need.
UNREACHABLE_QUERY = "connect_timeout=0.5"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://127.0.0.1:1/0?{UNREACHABLE_QUERY}",
        f"postgresql://postgres@127.0.0.1:1/test?{UNREACHABLE_QUERY}",
        f"nats://127.0.0.1:1?{UNREACHABLE_QUERY}",
    ],
    ids=["redis", "postgres", "nats"],
)
def test_unreachable_server_is_a_runtime_error(url: str) -> None:
    result = run("publish", url, "g", "1")
    assert result.returncode == 1
    assert "127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def _with(url: str, *, user: str | None = None, path: str | None = None, query: str = "") -> str:
    """`url` with another user (and the password "s3cret"), database or query."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}:s3cret@{netloc.rpartition('@')[2]}"
    return parts._replace(netloc=netloc, path=path or parts.path, query=query).geturl()


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"path": "/no_such_db"}, 1, 'database "no_such_db" does not exist; create that database'),
        ({"user": "no_such_role"}, 1, 'role "no_such_role" does not exist; check the user name'),
        ({"user": "postgres", "query": "bogus=1"}, 2, 'parameter "bogus"; remove it'),
        ({"user": "postgres", "query": "sslmode=sometimes"}, 2, "sslmode must be one of"),
    ],
    ids=["database", "role", "parameter", "sslmode"],
)
def test_postgres_refusals_are_one_line_errors(
    postgres_url: str, change: dict[str, str], code: int, message: str
) -> None:
    result = run("publish", _with(postgres_url, **change), "g", "1")
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith("channels: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert "s3cret" not in result.stderr


def test_postgres_refusals_are_channels_errors_chained_to_asyncpg(postgres_url: str) -> None:
    """What the command line prints is what an application catches."""

    async def enter(url: str) -> None:
        async with Channel.from_url(url):
            pass  # pragma: no cover - never entered

    with pytest.raises(BrokerRefusedError) as refused:
        anyio.run(enter, _with(postgres_url, path="/no_such_db"))
    assert isinstance(refused.value.__cause__, asyncpg.exceptions.InvalidCatalogNameError)
    with pytest.raises(ValueError, match='parameter "bogus"') as bad:
        anyio.run(enter, _with(postgres_url, query="bogus=1"))
    assert isinstance(bad.value.__cause__, asyncpg.exceptions.UndefinedObjectError)


def test_redis_connection_error_reads_as_one_sentence() -> None:
    result = run("publish", f"redis://:s3cret@127.0.0.1:1/0?{UNREACHABLE_QUERY}", "g", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("channels: error: could not connect to redis://:***@")
    assert ".." not in result.stderr
    assert "s3cret" not in result.stderr


def test_bench_timeout_bounds_the_whole_command_connecting_included() -> None:
    """A server that accepts the connection and never answers: --timeout still ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run("bench", f"redis://127.0.0.1:{port}/0", "--timeout", "0.5")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "did not finish within 0.5 s (--timeout)" in result.stderr
    assert elapsed < 4  # the Redis layer alone would wait its 5 s connect_timeout


def test_bench_stops_at_the_first_ctrl_c_while_publishing_to_redis(redis_url: str) -> None:
    """One SIGINT ends it, although redis-py's wait_for may swallow one task cancellation."""
    prefix = f"cli-interrupt-{uuid.uuid4().hex}."
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}namespace={prefix}"
    admin = redis.Redis.from_url(redis_url)
    with background("bench", url, "--messages", "10000000") as bench:
        deadline = time.monotonic() + 20
        while not dict(admin.pubsub_numsub(f"{prefix}channels.bench")).get(
            f"{prefix}channels.bench".encode()
        ):
            assert bench.poll() is None, "bench ended before it subscribed"
            assert time.monotonic() < deadline, "bench never subscribed"
            time.sleep(0.01)
        bench.send_signal(signal.SIGINT)  # it is publishing now: the subscriber is live
        _, stderr = bench.communicate(timeout=10)
    admin.close()
    assert bench.returncode == 130, stderr
    assert stderr.strip().endswith("channels: interrupted")
    assert "Traceback" not in stderr


def test_subscribe_readiness_line_shows_no_password(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    if parts.username or parts.password:
        pytest.skip("the test server has credentials of its own")
    # Redis accepts any password for its passwordless default user
    url = _with(redis_url, user="default")
    with background("subscribe", url, "cli.secret") as process:
        # the URL as typed, less "default:s3cret@"
        wait_for_line(process, f"subscribed to cli.secret on redis://{parts.netloc}{parts.path}")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "s3cret" not in stderr


def test_bench_runs_against_a_network_layer(redis_url: str) -> None:
    result = run(
        "bench", redis_url, "--messages", "500", "--latency-messages", "100", "--rate", "2000"
    )
    assert result.returncode == 0, result.stderr
    assert "latency p99" in result.stdout


@pytest.mark.timeout(90)  # a spinning event loop never reaches the deadline below
def test_bench_runs_fifty_times_in_a_row_without_hanging(url: str) -> None:
    """The latency phase's last message may still be in flight when publishing ends."""
    settings = BenchSettings(url, size=64, messages=50, latency_messages=20, rate=0, timeout=10)

    async def fifty_runs() -> None:
        with anyio.fail_after(60):
            for _ in range(50):
                result = await run_bench(settings)
                assert (result.delivered, result.lost) == (50, 0)
                assert len(result.latencies) == 20

    started = time.monotonic()
    anyio.run(fifty_runs)
    print(f"50 bench runs on {url.split(':')[0]}: {time.monotonic() - started:.1f} s")
