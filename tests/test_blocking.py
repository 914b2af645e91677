"""`BlockingChannel` from many threads, on the in-memory, Redis and PostgreSQL layers."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis

from channels_core import (
    BlockingChannel,
    BrokerUnavailableError,
    Channel,
    ChannelClosedError,
    ChannelInUseError,
    Inbox,
    MessagesLost,
    NotSupportedError,
    SerializationError,
    layer_capabilities,
)
from channels_core.discovery import layer_for_url
from channels_core.layers.local_memory import InMemoryChannelLayer

#: Seconds any one wait may take before the test fails (never hangs).
PATIENCE = 20.0
#: Messages per publisher thread, and channels a thread pool opens one after another.
PER_THREAD = 1000


@pytest.fixture(params=["memory", "redis", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://blocking-{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{request.param}_url"))


def unique(prefix: str) -> str:
    """A group name no other test (or test run on the shared servers) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run each target in a thread; re-raise the first failure; fail if one hangs."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + PATIENCE * 3
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_sixteen_publisher_threads_to_four_subscriber_threads(url: str) -> None:
    """Every message reaches every subscriber once, in each publisher's order.

    `PER_THREAD` messages per publisher on every layer (on the network layers
    each is a broker round trip: 5-6 s on a loaded 2-core host):
    16 publishers interleave as long as one another run; a duplicate, a loss or
    a reordering of any publisher's sequence fails the comparison.
    """
    publishers, subscribers = 16, 4
    per_publisher = PER_THREAD
    total = publishers * per_publisher
    group = unique("fan")
    ready = threading.Barrier(subscribers + publishers, timeout=PATIENCE)
    received: list[dict[int, list[int]]] = [{} for _ in range(subscribers)]

    with BlockingChannel.from_url(url, buffer_size=total) as channel:

        def subscriber(index: int) -> Callable[[], None]:
            def run() -> None:
                with channel.subscribe(group) as events:
                    ready.wait()
                    mine = received[index]
                    for _ in range(total):
                        publisher, number = events.receive(timeout=PATIENCE).message
                        mine.setdefault(publisher, []).append(number)

            return run

        def publisher(index: int) -> Callable[[], None]:
            def run() -> None:
                ready.wait()
                for number in range(per_publisher):
                    channel.publish(group, [index, number])

            return run

        started = time.perf_counter()
        run_threads(
            [subscriber(n) for n in range(subscribers)] + [publisher(n) for n in range(publishers)]
        )
        elapsed = time.perf_counter() - started
        stats = channel.stats()
    expected = {n: list(range(per_publisher)) for n in range(publishers)}
    assert received == [expected] * subscribers
    assert stats.published == total
    print(f"{url.split(':')[0]}: {total:,} messages to {subscribers} threads in {elapsed:.2f} s")


def test_receive_times_out_and_the_subscription_goes_on(url: str) -> None:
    group = unique("timeout")
    with BlockingChannel.from_url(url) as channel, channel.subscribe(group) as subscriber:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            subscriber.receive(timeout=0.2)
        assert 0.15 < time.perf_counter() - started < PATIENCE
        channel.publish(group, "after the timeout")
        assert subscriber.receive(timeout=PATIENCE).message == "after the timeout"


def test_closing_wakes_every_blocked_receiver_with_a_clear_error(url: str) -> None:
    group = unique("close")
    channel = BlockingChannel.from_url(url).open()
    outcomes: list[str] = []
    waiting = threading.Barrier(5, timeout=PATIENCE)

    def receiver() -> None:
        with channel.subscribe(group) as subscriber:
            waiting.wait()
            try:
                subscriber.receive()
            except ChannelClosedError as closed:
                outcomes.append(str(closed))

    def iterator() -> None:
        with channel.subscribe(group) as subscriber:
            waiting.wait()
            outcomes.extend(str(event) for event in subscriber)  # ends, like the async one
            outcomes.append("iteration ended")

    def closer() -> None:
        waiting.wait()
        time.sleep(0.1)  # let the receivers block (the outcome is the same if not)
        channel.close()

    run_threads([receiver, receiver, receiver, iterator, closer])
    assert len(outcomes) == 4
    assert outcomes.count("iteration ended") == 1
    errors = [text for text in outcomes if text != "iteration ended"]
    assert all("BlockingChannel was closed" in text for text in errors)
    with pytest.raises(ChannelClosedError, match="not open"):
        channel.publish(group, "after close")


def test_iteration_reports_lost_messages_and_goes_on() -> None:
    with (
        BlockingChannel.from_url("memory://", buffer_size=5) as channel,
        channel.subscribe("g") as subscriber,
    ):
        for number in range(20):
            channel.publish("g", number)
        with pytest.raises(MessagesLost) as lost:
            next(subscriber)
        assert (lost.value.reason, lost.value.count) == ("overflow", 15)
        assert [next(subscriber).message for _ in range(5)] == [15, 16, 17, 18, 19]
        assert subscriber.dropped == 15


def test_patterns_and_stats() -> None:
    with BlockingChannel.from_url("memory://") as channel:
        with channel.subscribe_pattern("room.*") as subscriber:
            channel.publish("room.1", "hi")
            event = subscriber.receive(timeout=PATIENCE)
            assert (event.group, event.message, event.pattern) == ("room.1", "hi", "room.*")
            stats = channel.stats()
            assert (stats.subscribers, stats.patterns, stats.published) == (1, 1, 1)
        assert channel.stats().subscribers == 0


def test_open_twice_is_refused_and_closed_can_reopen() -> None:
    channel = BlockingChannel.from_url("memory://", buffer_size=7)
    for _ in range(3):
        with channel:
            with pytest.raises(ChannelInUseError, match="already open"):
                channel.open()
            with channel.subscribe("g") as subscriber:
                channel.publish("g", 1)
                assert subscriber.receive(timeout=PATIENCE).message == 1
        assert blocking_threads() == 0  # closing ended the loop thread
    with pytest.raises(ChannelClosedError):
        channel.publish("g", 1)


def test_a_blocking_channel_reaches_async_subscribers_on_the_same_hub() -> None:
    """A sync view publishing to the rooms an async app subscribes to (memory://NAME)."""
    subscribed = threading.Event()

    async def app() -> list[Any]:
        async with Channel.from_url("memory://shared-app") as channel:
            async with channel.subscribe("room") as subscriber:
                subscribed.set()
                with anyio.fail_after(PATIENCE):
                    return [(await subscriber.receive()).message for _ in range(3)]

    def view() -> None:
        assert subscribed.wait(PATIENCE)
        with BlockingChannel.from_url("memory://shared-app") as channel:
            for number in range(3):
                channel.publish("room", number)

    thread = threading.Thread(target=view)
    thread.start()
    try:
        assert anyio.run(app) == [0, 1, 2]
    finally:
        thread.join(PATIENCE)


# -- re-entry and concurrent entry on the network layers --------------------------------


def test_concurrent_enters_raise_channel_in_use_never_a_layer_error(url: str) -> None:
    """On asyncio (the network layers' backend); trio: packages/channels-core/tests."""

    async def main() -> None:
        channel = Channel.from_url(url)
        refused: list[ChannelInUseError] = []
        entered = anyio.Event()

        async def enter() -> None:
            try:
                async with channel:
                    entered.set()
                    await anyio.sleep(0.05)
            except ChannelInUseError as error:
                refused.append(error)

        with anyio.fail_after(PATIENCE):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(enter)
                tasks.start_soon(enter)
        assert entered.is_set()
        assert len(refused) == 1
        assert "already open" in str(refused[0])
        group = unique("again")
        async with channel, channel.subscribe(group) as subscriber:  # usable again
            await channel.publish(group, "again")
            with anyio.fail_after(PATIENCE):
                assert (await subscriber.receive()).message == "again"

    anyio.run(main, backend="asyncio")


# -- interpreter exit, and many short-lived channels -----------------------------------


def test_interpreter_exit_without_close_does_not_hang(url: str) -> None:
    group = unique("exit")
    script = textwrap.dedent(
        f"""
        import sys, threading
        from channels_core import BlockingChannel, ChannelClosedError

        channel = BlockingChannel.from_url({url!r}).open()
        subscription = channel.subscribe({group!r})
        subscriber = subscription.__enter__()
        channel.publish({group!r}, "hello")
        print(subscriber.receive(timeout=10).message, flush=True)
        def wait_forever():
            try:
                subscriber.receive()
            except ChannelClosedError as closed:  # woken at exit
                print("woken:", closed, flush=True)

        threading.Thread(target=wait_forever, daemon=True).start()
        sys.exit(0)  # no close, no leaving the subscription
        """
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=PATIENCE * 2
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "hello"
    assert "Traceback" not in done.stderr, done.stderr
    assert time.perf_counter() - started < PATIENCE


def open_file_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def blocking_threads() -> int:
    return sum(thread.name == "channels-blocking" for thread in threading.enumerate())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("layer", ["memory", "redis"])
def test_a_thread_pool_opening_a_channel_per_task_leaks_nothing(
    layer: str, request: pytest.FixtureRequest
) -> None:
    """Celery-like: each task opens, publishes through, and closes its own channel."""
    name = unique("celery")
    url = str(request.getfixturevalue("redis_url")) if layer == "redis" else f"memory://{name}"
    threads_before, fds_before = threading.active_count(), open_file_descriptors()

    def task(number: int) -> None:
        options = {"client_name": name} if layer == "redis" else {}
        with BlockingChannel.from_url(url, **options) as channel:
            channel.publish(name, number)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(task, range(PER_THREAD)))
    assert blocking_threads() == 0
    assert threading.active_count() == threads_before
    assert open_file_descriptors() <= fds_before + 2  # slack for the runner's own files
    if layer == "redis":
        admin = redis.Redis.from_url(url)
        try:
            assert [c for c in admin.client_list() if c["name"] == name] == []
        finally:
            admin.close()


def test_a_forgotten_channel_is_closed_when_collected() -> None:
    channel = BlockingChannel.from_url("memory://").open()
    assert blocking_threads() == 1
    del channel
    gc.collect()
    assert blocking_threads() == 0


def test_an_open_that_fails_raises_and_leaves_no_thread() -> None:
    class Unreachable(InMemoryChannelLayer):
        @asynccontextmanager
        async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
            raise BrokerUnavailableError("the broker is down")
            yield  # pragma: no cover - an async generator that never yields

    channel = BlockingChannel(Unreachable())
    with pytest.raises(BrokerUnavailableError, match="down"):
        channel.open()
    assert channel.closed
    assert blocking_threads() == 0


def test_the_event_loop_thread_can_run_trio() -> None:
    with (
        BlockingChannel.from_url("memory://", backend="trio") as channel,
        channel.subscribe("g") as subscriber,
    ):
        channel.publish("g", "on trio")
        assert subscriber.receive(timeout=PATIENCE).message == "on trio"


def test_publish_many_from_a_thread_checks_everything_first(url: str) -> None:
    groups = [unique("many") for _ in range(3)]
    with BlockingChannel.from_url(url) as channel, channel.subscribe(*groups) as subscriber:
        with pytest.raises(SerializationError, match="item 1"):
            channel.publish_many([(groups[0], "never sent"), (groups[1], object())])
        channel.publish_many((group, index) for index, group in enumerate(groups))
        received = [subscriber.receive(timeout=PATIENCE) for _ in groups]
        assert channel.stats().published == len(groups)
    assert [(event.group, event.message) for event in received] == list(
        zip(groups, range(3), strict=True)
    )


# -- history (layers declaring the "history" capability) ---------------------------------


def history_url(url: str) -> str:
    """`url` if its layer keeps history, else skip (the network layers add it later)."""
    if "history" not in layer_capabilities(layer_for_url(url)):
        pytest.skip(f"{url.split(':')[0]} does not declare the history capability")
    return url


def test_history_and_since_from_several_threads_while_one_publishes(url: str) -> None:
    """Each thread's since= replay hands over to live events with no gap, no duplicate.

    Four subscriber threads join at positions spread over the first 100
    messages while a publisher thread sends 500 more, and a fifth thread
    reads history() meanwhile: every window it gets is consecutive.
    """
    url = history_url(url)
    group, count, first = unique("since"), 600, 100
    with BlockingChannel.from_url(url, history_size=count, buffer_size=count) as channel:
        for number in range(first):
            channel.publish(group, number)
        stored = channel.history(group)
        assert [event.message for event in stored] == list(range(first))
        assert all(event.position is not None for event in stored)
        assert channel.history(group, limit=3) == stored[-3:]
        assert channel.history(group, limit=3, since=stored[9].position) == stored[10:13]
        joins = [0, 33, 66, first - 1]
        results: dict[int, list[int]] = {}
        windows: list[list[int]] = []
        ready = threading.Barrier(len(joins) + 2, timeout=PATIENCE)

        def subscriber(at: int) -> Callable[[], None]:
            def run() -> None:
                position = stored[at].position
                assert position is not None
                with channel.subscribe(group, since=position) as events:
                    ready.wait()
                    results[at] = [
                        events.receive(timeout=PATIENCE).message for _ in range(at + 1, count)
                    ]
                    with pytest.raises(TimeoutError):  # nothing twice
                        events.receive(timeout=0.1)

            return run

        def publisher() -> None:
            ready.wait()
            for number in range(first, count):
                channel.publish(group, number)

        def reader() -> None:
            ready.wait()
            for _ in range(20):
                windows.append([event.message for event in channel.history(group, limit=10)])

        run_threads([subscriber(at) for at in joins] + [publisher, reader])
    assert results == {at: list(range(at + 1, count)) for at in joins}
    assert len(windows) == 20
    for window in windows:
        assert window == list(range(window[0], window[0] + 10))


def test_a_position_the_history_no_longer_reaches_is_reported_in_the_thread(url: str) -> None:
    url = history_url(url)
    group = unique("expired")
    with BlockingChannel.from_url(url, history_size=5) as channel:
        channel.publish(group, 0)
        (oldest,) = channel.history(group)
        assert oldest.position is not None
        for number in range(1, 10):
            channel.publish(group, number)
        assert [event.message for event in channel.history(group)] == [5, 6, 7, 8, 9]
        with pytest.raises(MessagesLost) as lost:
            channel.history(group, since=oldest.position)
        assert lost.value.reason == "expired"
        with channel.subscribe(group, since=oldest.position) as subscriber:
            with pytest.raises(MessagesLost) as lost:
                next(subscriber)
            assert lost.value.reason == "expired"
            assert [next(subscriber).message for _ in range(5)] == [5, 6, 7, 8, 9]
            channel.publish(group, "live")
            assert subscriber.receive(timeout=PATIENCE).message == "live"


def test_history_is_refused_plainly_without_it() -> None:
    with BlockingChannel.from_url("memory://") as channel:  # history off
        with pytest.raises(NotSupportedError, match="history_size"):
            channel.history("g")
        with pytest.raises(NotSupportedError, match="history_size"):
            channel.subscribe("g", since="e-1")
    with BlockingChannel.from_url("memory://?history_size=10") as channel:
        with pytest.raises(ValueError, match="since"):
            channel.subscribe("g", since="not a position")
        with pytest.raises(ValueError, match="limit"):
            channel.history("g", limit=-1)
        with pytest.raises(ValueError, match="since"):
            channel.subscribe("a", "b", since="e-1")  # one position, two groups
        with channel.subscribe("g") as subscriber:  # the channel is still usable
            channel.publish("g", "still works")
            assert subscriber.receive(timeout=PATIENCE).message == "still works"
