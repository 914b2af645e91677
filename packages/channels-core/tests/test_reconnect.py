"""The retry policies against a real TCP listener that comes and goes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from channels_core import (
    Backoff,
    BrokerUnavailableError,
    call_with_deadline,
    reconnect_forever,
)
from channels_core.reconnect import retry_until
from channels_core.testing import free_port

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05)
logger = logging.getLogger("tests.reconnect")


@asynccontextmanager
async def listening(port: int) -> AsyncIterator[None]:
    """Accept (and close) connections on `port` for the duration of the block."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)

    async def close(stream: SocketStream) -> None:
        await stream.aclose()

    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, close)
        yield
        tasks.cancel_scope.cancel()


async def test_reconnect_forever_comes_back_and_logs_by_the_scheme(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    attempts = 0
    third_attempt = anyio.Event()

    def count() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 3:
            third_attempt.set()

    async def connect() -> SocketStream:
        return await anyio.connect_tcp("127.0.0.1", port)

    caplog.set_level(logging.DEBUG, logger=logger.name)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            result: list[SocketStream] = []
            reconnected = anyio.Event()

            async def reconnect() -> None:
                result.append(
                    await reconnect_forever(
                        connect,
                        what="the test connection to tcp://127.0.0.1",
                        logger=logger,
                        backoff=FAST,
                        retry_on=(OSError,),
                        cause=ConnectionResetError("reset by peer"),
                        on_attempt=count,
                    )
                )
                reconnected.set()

            tasks.start_soon(reconnect)
            await third_attempt.wait()
            async with listening(port):
                await reconnected.wait()
                await result[0].aclose()

    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert records[0] == (
        logging.WARNING,
        "lost the test connection to tcp://127.0.0.1 (ConnectionResetError: reset by peer); "
        "reconnecting",
    )
    failures = [level for level, message in records if "could not reconnect" in message]
    assert failures[0] == logging.WARNING
    assert set(failures[1:]) == {logging.DEBUG}
    assert len(failures) >= 2
    assert records[-1][0] == logging.WARNING
    assert records[-1][1].startswith(
        f"reconnected the test connection to tcp://127.0.0.1 after {attempts} attempt(s)"
    )


async def test_reconnect_forever_succeeds_at_once_without_sleeping() -> None:
    port = free_port()
    async with listening(port):
        started = anyio.current_time()
        stream = await reconnect_forever(
            lambda: anyio.connect_tcp("127.0.0.1", port),
            what="x",
            logger=logger,
            backoff=Backoff(initial=5, maximum=5),
        )
        await stream.aclose()
    assert anyio.current_time() - started < 2


@pytest.mark.parametrize(
    ("recovers", "says"),
    [(False, "were missed"), (True, "are read back from the history")],
)
async def test_the_reconnect_log_says_whether_history_reads_back_the_outage(
    caplog: pytest.LogCaptureFixture, recovers: bool, says: str
) -> None:
    async def connect() -> str:
        return "connected"

    caplog.set_level(logging.WARNING, logger=logger.name)
    await reconnect_forever(connect, what="x", logger=logger, recovers=recovers)
    [record] = [r for r in caplog.records if r.name == logger.name]
    assert record.getMessage().endswith(f"messages published meanwhile {says}")


async def test_reconnect_forever_lets_unexpected_errors_through() -> None:
    async def broken() -> None:
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await reconnect_forever(broken, what="x", logger=logger, retry_on=(OSError,))


async def test_call_with_deadline_gives_up_with_broker_unavailable() -> None:
    port = free_port()
    started = anyio.current_time()
    with pytest.raises(
        BrokerUnavailableError, match=r"could not publish to tcp://\S+ within 0.3 s"
    ):
        await call_with_deadline(
            lambda: anyio.connect_tcp("127.0.0.1", port),
            timeout=0.3,
            retry_on=(OSError,),
            what=f"publish to tcp://127.0.0.1:{port}",
            backoff=FAST,
        )
    assert 0.25 < anyio.current_time() - started < 3


async def test_call_with_deadline_bounds_a_frozen_attempt() -> None:
    started = anyio.current_time()
    with pytest.raises(BrokerUnavailableError) as caught:
        await call_with_deadline(
            anyio.sleep_forever, timeout=0.2, retry_on=(OSError,), what="publish", backoff=FAST
        )
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert anyio.current_time() - started < 3


async def test_call_with_deadline_counts_from_a_deadline_the_caller_set() -> None:
    port = free_port()  # nothing listens: every try is refused
    tries = 0

    async def connect() -> SocketStream:
        nonlocal tries
        tries += 1
        return await anyio.connect_tcp("127.0.0.1", port)

    with pytest.raises(BrokerUnavailableError, match="within 60 s"):
        await call_with_deadline(
            connect,
            timeout=60,
            retry_on=(OSError,),
            what="publish",
            backoff=FAST,
            deadline=anyio.current_time() - 1,  # the caller's time is already up
        )
    assert tries == 1


async def test_call_with_deadline_retries_until_the_server_is_back() -> None:
    port = free_port()
    tries = 0
    first_failed = anyio.Event()

    async def connect() -> SocketStream:
        nonlocal tries
        tries += 1
        try:
            return await anyio.connect_tcp("127.0.0.1", port)
        finally:
            first_failed.set()

    async with anyio.create_task_group() as tasks:

        async def come_back() -> None:
            await first_failed.wait()
            async with listening(port):
                await anyio.sleep(5)

        tasks.start_soon(come_back)
        stream = await call_with_deadline(
            connect, timeout=5, retry_on=(OSError,), what="publish", backoff=FAST
        )
        await stream.aclose()
        tasks.cancel_scope.cancel()
    assert tries >= 2


async def test_call_with_deadline_tries_once_and_passes_other_errors() -> None:
    tries = 0

    async def refused() -> None:
        nonlocal tries
        tries += 1
        raise PermissionError("NOPERM")

    async def cheap_first() -> None:
        pass

    with pytest.raises(PermissionError):
        await call_with_deadline(refused, timeout=5, retry_on=(ConnectionError,), what="publish")
    assert tries == 1
    await call_with_deadline(
        refused, timeout=5, retry_on=(OSError,), what="publish", first_attempt=cheap_first
    )
    assert tries == 1  # the first attempt succeeded: the operation never ran


@pytest.mark.parametrize(
    ("error", "reads"),
    [
        (ConnectionError("Connect call failed ('127.0.0.1', 1)."), "('127.0.0.1', 1). Check"),
        (TimeoutError(), "within 0.05 s: TimeoutError. Check"),
    ],
    ids=["own-period", "no-message"],
)
async def test_the_outage_error_reads_as_one_sentence(error: Exception, reads: str) -> None:
    async def attempt() -> None:
        raise error

    with pytest.raises(BrokerUnavailableError) as raised:
        await retry_until(
            attempt,
            timeout=0.05,
            retry_on=(OSError,),
            what="connect to redis://127.0.0.1:1/0",
            backoff=Backoff(initial=0.01, maximum=0.01),
        )
    message = str(raised.value)
    assert reads in message
    assert ".." not in message
    assert raised.value.__cause__ is error
