"""Threads and event loops: cross-loop memory hubs, loud misuse, re-entry, core options."""

from __future__ import annotations

import re
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from channels_core import (
    Channel,
    ChannelClosedError,
    ChannelInUseError,
    ChannelsError,
    Event,
    MessagesLost,
)
from channels_core.layers import local_memory
from channels_core.layers.local_memory import InMemoryChannelLayer

BACKENDS = ("asyncio", "trio")
#: Seconds any one wait in these tests may take before the test fails (never hangs).
PATIENCE = 10.0


def in_thread(
    function: Callable[[], Awaitable[Any]], backend: str
) -> tuple[threading.Thread, list[BaseException]]:
    """Run `function` in a new thread under its own event loop; collect what it raises."""
    errors: list[BaseException] = []

    def main() -> None:
        try:
            anyio.run(function, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name=f"{backend}-loop")
    thread.start()
    return thread, errors


def join(thread: threading.Thread, errors: list[BaseException]) -> None:
    thread.join(PATIENCE)
    assert not thread.is_alive(), "the other loop's thread did not finish"
    if errors:
        raise errors[0]


# -- memory://NAME across threads and event loops -------------------------------------


@pytest.mark.parametrize(
    ("publisher_backend", "subscriber_backend"),
    [(p, s) for p in BACKENDS for s in BACKENDS],
)
def test_a_publish_in_one_loop_wakes_a_subscriber_in_another_at_once(
    publisher_backend: str, subscriber_backend: str
) -> None:
    """Measured before the cross-loop hub: 100 messages took 10.06 s (a silent stall)."""
    url = f"memory://two-loops-{publisher_backend}-{subscriber_backend}"
    subscribed = threading.Event()
    received: list[Any] = []
    finished_at: list[float] = []

    async def subscribe() -> None:
        async with Channel.from_url(url) as channel, channel.subscribe("news") as subscriber:
            subscribed.set()
            with anyio.fail_after(PATIENCE):
                async for event in subscriber:
                    received.append(event.message)
                    if len(received) == 100:
                        break
            finished_at.append(time.perf_counter())

    async def publish() -> float:
        async with Channel.from_url(url) as channel:
            assert await anyio.to_thread.run_sync(subscribed.wait, PATIENCE)
            started = time.perf_counter()
            for number in range(100):
                await channel.publish("news", number)
            return started

    thread, errors = in_thread(subscribe, subscriber_backend)
    try:
        started = anyio.run(publish, backend=publisher_backend)
    finally:
        join(thread, errors)
    assert received == list(range(100))
    assert finished_at[0] - started < 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_patterns_and_many_groups_cross_loops(backend: str) -> None:
    url = f"memory://cross-patterns-{backend}"
    subscribed = threading.Event()
    events: list[Event] = []

    async def subscribe() -> None:
        async with Channel.from_url(url) as channel:
            async with (
                channel.subscribe_pattern("room.*") as by_pattern,
                channel.subscribe("room.a", "room.b") as by_name,
            ):
                subscribed.set()
                with anyio.fail_after(PATIENCE):
                    events.extend([await by_pattern.receive() for _ in range(2)])
                    events.extend([await by_name.receive() for _ in range(2)])

    async def publish() -> None:
        async with Channel.from_url(url) as channel:
            assert await anyio.to_thread.run_sync(subscribed.wait, PATIENCE)
            await channel.publish("room.a", 1)
            await channel.publish("other", 0)
            await channel.publish("room.b", 2)

    thread, errors = in_thread(subscribe, backend)
    try:
        anyio.run(publish, backend="asyncio")
    finally:
        join(thread, errors)
    assert events == [
        Event("room.a", 1, "room.*"),
        Event("room.b", 2, "room.*"),
        Event("room.a", 1, None),
        Event("room.b", 2, None),
    ]


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [
        ("drop_oldest", [("lost", 90), *range(90, 100)]),
        ("drop_newest", [*range(10), ("lost", 90)]),
    ],
)
def test_overflow_across_loops_is_reported_as_in_one_loop(
    overflow: str, expected: list[Any]
) -> None:
    """A subscriber that does not read while another loop publishes keeps its buffer's worth."""
    url = f"memory://cross-overflow-{overflow}"
    subscribed = threading.Event()
    seen: list[Any] = []

    async def subscribe() -> None:
        async with (
            Channel.from_url(url, buffer_size=10, overflow=overflow) as channel,
            channel.subscribe("g") as subscriber,
            channel.subscribe("done") as done,
        ):
            subscribed.set()
            with anyio.fail_after(PATIENCE):
                await done.receive()  # handed over after all of "g", in publish order
                assert subscriber.dropped == 90
                while len(seen) < len(expected):
                    try:
                        seen.append((await subscriber.receive()).message)
                    except MessagesLost as lost:
                        seen.append(("lost", lost.count))

    async def publish() -> None:
        async with Channel.from_url(url) as channel:
            assert await anyio.to_thread.run_sync(subscribed.wait, PATIENCE)
            for number in range(100):
                await channel.publish("g", number)
            await channel.publish("done", True)

    thread, errors = in_thread(subscribe, "trio")
    try:
        anyio.run(publish, backend="asyncio")
    finally:
        join(thread, errors)
    assert seen == expected


def test_a_loop_that_does_not_run_gets_a_bounded_backlog_and_is_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cross-thread deliveries wait for a blocked loop up to a bound, then the gap is reported."""
    monkeypatch.setattr(local_memory, "CROSS_THREAD_BACKLOG", 50)
    url = "memory://cross-backlog"
    subscribed, published = threading.Event(), threading.Event()
    seen: list[Any] = []

    async def subscribe() -> None:
        async with (
            Channel.from_url(url) as channel,
            channel.subscribe("g") as subscriber,
            channel.subscribe("done") as done,
        ):
            subscribed.set()
            assert published.wait(PATIENCE)  # blocks this event loop on purpose
            with anyio.fail_after(PATIENCE):
                with pytest.raises(MessagesLost) as lost:  # every subscription is told
                    await done.receive()
                assert (lost.value.reason, lost.value.count) == ("overflow", None)
                await done.receive()
                while len(seen) < 21:
                    try:
                        seen.append((await subscriber.receive()).message)
                    except MessagesLost as lost:
                        seen.append(lost.reason)

    async def publish() -> None:
        async with Channel.from_url(url) as channel:
            assert await anyio.to_thread.run_sync(subscribed.wait, PATIENCE)
            for number in range(120):
                await channel.publish("g", number)
            await channel.publish("done", True)
        published.set()

    thread, errors = in_thread(subscribe, "asyncio")
    try:
        anyio.run(publish, backend="trio")
    finally:
        published.set()
        join(thread, errors)
    assert seen == ["overflow", *range(100, 120)]  # the hub's own bound, not a broker loss


def test_many_loops_publish_to_one_subscriber_each_in_order() -> None:
    url = "memory://cross-many"
    publishers, per_publisher = 4, 500
    subscribed = threading.Event()
    received: dict[int, list[int]] = {n: [] for n in range(publishers)}

    async def subscribe() -> None:
        async with (
            Channel.from_url(url, buffer_size=publishers * per_publisher) as channel,
            channel.subscribe("g") as subscriber,
        ):
            subscribed.set()
            with anyio.fail_after(PATIENCE):
                for _ in range(publishers * per_publisher):
                    publisher, number = (await subscriber.receive()).message
                    received[publisher].append(number)

    def publish(publisher: int, backend: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with Channel.from_url(url) as channel:
                assert await anyio.to_thread.run_sync(subscribed.wait, PATIENCE)
                for number in range(per_publisher):
                    await channel.publish("g", [publisher, number])

        return run

    threads = [in_thread(subscribe, "asyncio")]
    threads += [in_thread(publish(n, BACKENDS[n % 2]), BACKENDS[n % 2]) for n in range(publishers)]
    for thread, errors in threads:
        join(thread, errors)
    assert received == {n: list(range(per_publisher)) for n in range(publishers)}


# -- a Channel belongs to the loop that entered it ------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_channel_used_from_another_thread_refuses_at_once(backend: str) -> None:
    """Publish and subscribe from a foreign loop raise before anything is sent."""

    async def main() -> None:
        async with Channel.from_url("memory://") as channel, channel.subscribe("g") as subscriber:

            async def foreign() -> None:
                with pytest.raises(ChannelInUseError, match="BlockingChannel") as refused:
                    await channel.publish("g", "from elsewhere")
                assert "another thread" in str(refused.value)
                with pytest.raises(ChannelInUseError):
                    async with channel.subscribe("other"):
                        pass  # pragma: no cover - refused on entry
                with pytest.raises(ChannelInUseError):
                    async with channel:
                        pass  # pragma: no cover - refused on entry

            started = time.perf_counter()
            thread, errors = in_thread(foreign, backend)
            await anyio.to_thread.run_sync(join, thread, errors)
            assert time.perf_counter() - started < PATIENCE / 2
            # Nothing was sent, nothing broke: the channel still works here.
            await channel.publish("g", "from here")
            with anyio.fail_after(PATIENCE):
                assert (await subscriber.receive()).message == "from here"
            assert channel.stats().published == 1
            assert channel.stats().groups == 1

    anyio.run(main, backend="asyncio")


def test_a_channel_carried_over_to_a_later_event_loop_refuses_to_subscribe() -> None:
    channel = Channel.from_url("memory://")

    async def enter_and_abandon() -> None:
        await channel.__aenter__()  # never left: the loop ends with the channel open

    async def use_in_a_new_loop() -> None:
        with pytest.raises(ChannelInUseError, match="another event loop of that thread"):
            async with channel.subscribe("g"):
                pass  # pragma: no cover - refused on entry
        with pytest.raises(ChannelInUseError):
            await channel.__aexit__(None, None, None)

    anyio.run(enter_and_abandon, backend="asyncio")
    anyio.run(use_in_a_new_loop, backend="trio")


# -- re-entry ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_enters_give_one_channel_in_use_error(backend: str) -> None:
    async def main() -> None:
        channel = Channel.from_url("memory://")
        outcomes: list[str] = []
        release = anyio.Event()

        async def enter() -> None:
            try:
                async with channel:
                    outcomes.append("entered")
                    await release.wait()
            except ChannelInUseError as refused:
                outcomes.append(f"refused: {refused}")
                release.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(enter)
            tasks.start_soon(enter)
        assert outcomes[0] == "entered"
        assert re.match(r"refused: this channel is already open(ing)? ", outcomes[1])
        async with channel:  # and it is usable again afterwards
            await channel.publish("g", 1)

    anyio.run(main, backend=backend)


def test_a_failed_enter_leaves_the_channel_enterable() -> None:
    class FailingOnce(InMemoryChannelLayer):
        failures = 1

        def connect(self, inbox: Any) -> Any:
            if FailingOnce.failures:
                FailingOnce.failures -= 1
                raise ConnectionError("broker down")
            return super().connect(inbox)

    async def main() -> None:
        channel = Channel(FailingOnce())
        with pytest.raises(ConnectionError):
            async with channel:
                pass  # pragma: no cover - the enter fails
        async with channel, channel.subscribe("g") as subscriber:
            await channel.publish("g", "back")
            assert (await subscriber.receive()).message == "back"
        with pytest.raises(ChannelClosedError):
            await channel.publish("g", "closed")

    anyio.run(main, backend="asyncio")


# -- options and URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (0, ValueError),
        (float("nan"), ValueError),
        ("5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_bad_unsubscribe_timeouts_are_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="unsubscribe_timeout"):
        Channel.from_url("memory://", unsubscribe_timeout=value)


def test_good_unsubscribe_timeouts_are_kept() -> None:
    assert Channel.from_url("memory://", unsubscribe_timeout=0.5)._unsubscribe_timeout == 0.5
    assert Channel.from_url("memory://", unsubscribe_timeout=2)._unsubscribe_timeout == 2.0


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("memory://hub?bogus=1", "bogus"),
        ("memory://?serializer=pickle", "serializer"),
        ("memory://hub?serializer=pickle&x=1", "serializer, x"),
    ],
)
def test_memory_urls_take_no_parameters(url: str, named: str) -> None:
    """A URL (often from the environment) can neither misconfigure nor turn pickle on."""
    only = "no URL parameters other than history_size and history_ttl"
    with pytest.raises(ValueError, match=f"{only}, got {named}"):
        Channel.from_url(url)


def test_other_schemes_are_refused_by_the_memory_layer() -> None:
    with pytest.raises(ValueError, match="not a memory:// URL"):
        InMemoryChannelLayer.from_url("redis://localhost")


@pytest.fixture
def subclass_registered_as_myname(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution whose entry point ``myname`` is a memory-layer subclass."""
    (tmp_path / "my_memory_layer.py").write_text(
        textwrap.dedent(
            """
            from channels_core.layers.local_memory import InMemoryChannelLayer

            class MyLayer(InMemoryChannelLayer):
                pass
            """
        )
    )
    dist_info = tmp_path / "my_memory_layer-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-memory-layer\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[channels.layers]\nmyname = my_memory_layer:MyLayer\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myname"
    sys.modules.pop("my_memory_layer", None)


def test_a_subclass_registered_under_its_own_name_builds_from_its_url(
    subclass_registered_as_myname: str,
) -> None:
    async def main() -> None:
        async with (
            Channel.from_url(f"{subclass_registered_as_myname}://shared") as listener,
            Channel.from_url(f"{subclass_registered_as_myname}://shared") as sender,
            listener.subscribe("g") as subscriber,
        ):
            assert type(listener.layer).__name__ == "MyLayer"
            await sender.publish("g", "hello")
            assert (await subscriber.receive()).message == "hello"

    anyio.run(main, backend="asyncio")


def test_channel_in_use_error_is_a_channels_error() -> None:
    assert issubclass(ChannelInUseError, ChannelsError)
