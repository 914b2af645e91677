"""`BlockingChannel`: the channel API for synchronous code and for any thread.

Django and Flask views, Celery tasks, scripts: code without an event loop
(or with one it cannot share) publishes and subscribes through a
`BlockingChannel`. It runs an ordinary async `Channel` on an event loop of
its own, in a daemon thread, and hands every call over through anyio's
blocking portal; so one instance is safe to share between threads.

Closing it ends every subscription (threads blocked in ``receive`` get
`ChannelClosedError`), the channel's connections and the thread. One left
open is closed when it is garbage collected or when the interpreter exits,
within `CLOSE_TIMEOUT` seconds: the exit never hangs on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal

from .channel import Channel, ChannelStats, Since
from .event import Event
from .exceptions import ChannelClosedError, ChannelInUseError, MessagesLost
from .health import DEFAULT_HEALTH_TIMEOUT, ChannelHealth
from .layer import ChannelLayer
from .subscriber import OverflowPolicy, Subscriber

__all__ = ["BlockingChannel", "BlockingSubscriber"]

logger = logging.getLogger("channels_core")

#: Seconds closing (explicit, at garbage collection or at exit) waits for the
#: channel to disconnect before cancelling it, and then for its thread to end.
CLOSE_TIMEOUT = 10.0

#: Most events one hand-over from the event loop brings to a waiting thread.
BATCH = 256

T = TypeVar("T")
_CLOSED_MESSAGE = (
    "the BlockingChannel is closed (close() was called or its with block was left); "
    "open it again, or create a new one"
)


class _Runtime:
    """One opening of a `BlockingChannel`: the loop thread, its portal and the open channel.

    Holds no reference to the `BlockingChannel`, so that a forgotten channel
    can be garbage collected and closed by its finalizer.
    """

    def __init__(self, channel: Channel, backend: str) -> None:
        self.channel = channel
        self.closed = False
        self._started: Future[BlockingPortal] = Future()
        self._closing: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self.thread = threading.Thread(
            target=self._run, args=(backend,), name="channels-blocking", daemon=True
        )
        self.thread.start()
        try:
            self.portal = self._started.result()
        except BaseException:
            self.thread.join(CLOSE_TIMEOUT)
            raise

    # -- in the loop thread ---------------------------------------------------

    def _run(self, backend: str) -> None:
        try:
            anyio.run(self._serve, backend=backend)
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)  # raised by open()
            else:
                logger.warning("a BlockingChannel failed while closing", exc_info=True)

    async def _serve(self) -> None:
        self._closing = anyio.Event()
        async with BlockingPortal() as portal:
            try:
                with anyio.CancelScope() as self._scope:
                    try:
                        async with self.channel:
                            self._started.set_result(portal)
                            await self._closing.wait()
                    except Exception as exc:
                        if self._started.done():
                            raise  # while closing: logged by _run
                        self._started.set_exception(exc)  # open() raises it, unwrapped
            finally:
                # Subscriptions still held by threads end with the channel.
                await portal.stop(cancel_remaining=True)

    def _begin_close(self) -> None:
        assert self._closing is not None
        self._closing.set()

    def _cancel(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    # -- from any thread ------------------------------------------------------

    @overload
    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T: ...

    @overload
    def call(self, function: Callable[..., T], *args: Any) -> T: ...

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function` in the loop and wait for it; `ChannelClosedError` once closed."""
        if self.closed:
            raise ChannelClosedError(_CLOSED_MESSAGE)
        try:
            return self.portal.call(function, *args)
        except CancelledError:
            raise ChannelClosedError(_CLOSED_MESSAGE) from None
        except RuntimeError:
            if self.closed or not self.thread.is_alive():
                raise ChannelClosedError(_CLOSED_MESSAGE) from None
            raise

    def start_task(
        self, function: Callable[..., Awaitable[Any]], *args: Any
    ) -> tuple[Future[Any], Any]:
        if self.closed:
            raise ChannelClosedError(_CLOSED_MESSAGE)
        try:
            return self.portal.start_task(function, *args)
        except (CancelledError, RuntimeError):
            if self.closed or not self.thread.is_alive():
                raise ChannelClosedError(_CLOSED_MESSAGE) from None
            raise

    def close(self) -> None:
        """Leave the channel and end the thread; bounded by `CLOSE_TIMEOUT` (idempotent)."""
        self.closed = True
        if threading.current_thread() is self.thread:
            self._begin_close()  # e.g. garbage collected in the loop: it winds down alone
            return
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has already stopped
                self.portal.call(self._begin_close)
            self.thread.join(CLOSE_TIMEOUT)
        if self.thread.is_alive():  # the channel did not disconnect in time
            with contextlib.suppress(RuntimeError):
                self.portal.call(self._cancel)
            self.thread.join(CLOSE_TIMEOUT)


class BlockingChannel:
    """A `Channel` for synchronous code: same options, same semantics, blocking calls.

    ``with BlockingChannel.from_url(url) as channel:`` (or `open` and
    `close`) connects; ``channel.publish(group, message)`` returns once the
    message is sent; ``with channel.subscribe(group) as subscriber:`` yields
    a `BlockingSubscriber` (``for event in subscriber``, or
    ``subscriber.receive(timeout=...)``). Safe to share between threads:
    publish from many at once, subscribe in several.
    """

    def __init__(self, layer: ChannelLayer, *, backend: str = "asyncio", **options: Any) -> None:
        self._init(Channel(layer, **options), backend)

    @classmethod
    def from_url(cls, url: str, *, backend: str = "asyncio", **options: Any) -> Self:
        """Like `Channel.from_url`; `backend` is the event loop run in the channel's thread."""
        self = cls.__new__(cls)
        self._init(Channel.from_url(url, **options), backend)
        return self

    def _init(self, channel: Channel, backend: str) -> None:
        self._channel = channel
        self._backend = backend
        self._lock = threading.Lock()
        self._runtime: _Runtime | None = None
        self._finalizer: weakref.finalize[[], BlockingChannel] | None = None

    def __repr__(self) -> str:
        return f"<BlockingChannel {self._channel.layer!r} ({'closed' if self.closed else 'open'})>"

    @property
    def closed(self) -> bool:
        """True unless the channel is open (not opened yet, or closed)."""
        return self._open_runtime(raising=False) is None

    @property
    def layer(self) -> ChannelLayer:
        return self._channel.layer

    @property
    def capabilities(self) -> frozenset[str]:
        return self._channel.capabilities

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> Self:
        """Connect (in the channel's own event loop thread); raises what connecting raises."""
        with self._lock:
            if self._open_runtime(raising=False) is not None:
                raise ChannelInUseError(
                    "this BlockingChannel is already open; share it between threads "
                    "instead of opening it again, or create another one"
                )
            runtime = _Runtime(self._channel, self._backend)
            self._runtime = runtime
            self._finalizer = weakref.finalize(self, runtime.close)
        return self

    def close(self) -> None:
        """End every subscription, the connection and the thread (idempotent).

        Threads blocked in `BlockingSubscriber.receive` get `ChannelClosedError`.
        """
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_runtime(self, *, raising: bool = True) -> _Runtime | None:
        runtime = self._runtime
        if runtime is None or runtime.closed:
            if raising:
                raise ChannelClosedError(
                    "this BlockingChannel is not open: use it inside `with channel:`, "
                    "or call channel.open() first"
                )
            return None
        return runtime

    # -- publishing and subscribing ---------------------------------------------

    def publish(self, group: str, message: Any) -> None:
        """Send `message` to every current subscriber of `group`; returns once it is sent."""
        runtime = self._open_runtime()
        assert runtime is not None
        runtime.call(self._channel.publish, group, message)

    def publish_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """`Channel.publish_many`: every message checked first, then sent; returns once sent."""
        runtime = self._open_runtime()
        assert runtime is not None
        runtime.call(self._channel.publish_many, list(items))

    def stats(self) -> ChannelStats:
        runtime = self._runtime
        if runtime is None or runtime.closed:
            return self._channel.stats()
        return runtime.call(self._channel.stats)

    def health(self, timeout: float = DEFAULT_HEALTH_TIMEOUT) -> ChannelHealth:
        """Like `Channel.health`: checks the broker now, returns within about `timeout` s."""
        runtime = self._runtime
        if runtime is None or runtime.closed:
            return self._channel._health.closed("closed" if runtime else "not opened yet")
        try:
            return runtime.call(self._channel.health, timeout)
        except ChannelClosedError:
            return self._channel._health.closed("closed")

    def subscribe(
        self,
        group: str,
        *more_groups: str,
        buffer_size: int | None = None,
        overflow: OverflowPolicy | None = None,
        since: Since | None = None,
    ) -> AbstractContextManager[BlockingSubscriber]:
        """Subscribe for the duration of a ``with`` block (see `Channel.subscribe`).

        `since` (history on) replays the retained events after a position
        first, then hands over to live events with no gap and no duplicate.
        """
        return self._subscription(
            self._channel.subscribe(
                group, *more_groups, buffer_size=buffer_size, overflow=overflow, since=since
            )
        )

    def history(
        self, group: str, limit: int | None = None, since: str | None = None
    ) -> list[Event]:
        """Events retained in `group`'s history, oldest first (see `Channel.history`).

        Raises ``MessagesLost(reason="expired")`` if the history no longer
        reaches back to `since`, `NotSupportedError` if the layer keeps none.
        """
        runtime = self._open_runtime()
        assert runtime is not None
        return runtime.call(self._channel.history, group, limit, since)

    def subscribe_pattern(
        self,
        pattern: str,
        *more_patterns: str,
        buffer_size: int | None = None,
        overflow: OverflowPolicy | None = None,
    ) -> AbstractContextManager[BlockingSubscriber]:
        """Subscribe to groups matching glob patterns (see `Channel.subscribe_pattern`)."""
        return self._subscription(
            self._channel.subscribe_pattern(
                pattern, *more_patterns, buffer_size=buffer_size, overflow=overflow
            )
        )

    @contextmanager
    def _subscription(
        self, subscription: AbstractAsyncContextManager[Subscriber]
    ) -> Iterator[BlockingSubscriber]:
        runtime = self._open_runtime()
        assert runtime is not None
        held, (subscriber, leave) = runtime.start_task(_hold, subscription)
        try:
            yield BlockingSubscriber(runtime, subscriber)
        finally:
            # After the channel's closing has ended the subscription, nothing is left to do.
            if not held.done():
                with contextlib.suppress(ChannelClosedError):
                    runtime.call(leave.set)
            with contextlib.suppress(CancelledError):
                held.result(CLOSE_TIMEOUT)


async def _hold(
    subscription: AbstractAsyncContextManager[Subscriber],
    *,
    task_status: TaskStatus[tuple[Subscriber, anyio.Event]],
) -> None:
    """Keep a subscription open, in the loop, until a thread sets the event it gets back."""
    leave = anyio.Event()
    async with subscription as subscriber:
        task_status.started((subscriber, leave))
        await leave.wait()


class BlockingSubscriber:
    """The iterator of `Event` that `BlockingChannel.subscribe` yields.

    ``for event in subscriber`` ends when the subscription or channel is
    left; it raises `MessagesLost` at a gap and can go on afterwards, as
    the async `Subscriber` does. Several threads may read one subscriber
    (each event goes to one of them).
    """

    def __init__(self, runtime: _Runtime, subscriber: Subscriber) -> None:
        self._runtime = runtime
        self._subscriber = subscriber
        self._lock = threading.Lock()
        # Events (and gaps) already handed over from the loop, in order.
        self._ready: deque[Event | MessagesLost] = deque()

    def __repr__(self) -> str:
        return f"<BlockingSubscriber {self._subscriber!r}>"

    @property
    def groups(self) -> tuple[str, ...]:
        return self._subscriber.groups

    @property
    def patterns(self) -> tuple[str, ...]:
        return self._subscriber.patterns

    @property
    def dropped(self) -> int:
        """Messages discarded because the buffer was full, since subscribing."""
        return self._subscriber.dropped

    @property
    def closed(self) -> bool:
        return self._subscriber.closed and not self._ready

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        item = self._next(None)
        if item is None:
            raise StopIteration
        return item

    def receive(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most `timeout` seconds (`TimeoutError` after that).

        Raises `ChannelClosedError` once the subscription or channel has ended,
        also in threads that were waiting when it was closed.
        """
        item = self._next(timeout)
        if item is None:
            raise ChannelClosedError(
                "this subscription has ended: its with block was left, or its "
                "BlockingChannel was closed"
            )
        return item

    def _next(self, timeout: float | None) -> Event | None:
        with self._lock:
            if self._ready:
                return _unpack(self._ready.popleft())
        try:
            batch = self._runtime.call(_fetch, self._subscriber, timeout)
        except ChannelClosedError:
            return None
        if not batch:
            return None
        with self._lock:
            self._ready.extend(batch[1:])
        return _unpack(batch[0])


def _unpack(item: Event | MessagesLost) -> Event:
    if isinstance(item, MessagesLost):
        raise item
    return item


async def _fetch(subscriber: Subscriber, timeout: float | None) -> list[Event | MessagesLost]:
    """Wait for the next event, then take what else is already buffered (up to `BATCH`).

    Empty once the subscription has ended. A gap comes back in its place in
    the list, as the `MessagesLost` to raise when a thread reaches it.
    """
    batch: list[Event | MessagesLost] = []
    try:
        with anyio.fail_after(timeout):
            batch.append(await subscriber.__anext__())
    except StopAsyncIteration:
        return batch
    except MessagesLost as lost:
        return [lost]
    while len(batch) < BATCH:
        # A buffered event comes back without a checkpoint, so the cancelled
        # scope only stops the wait once the buffer is empty.
        with anyio.CancelScope() as nothing_buffered:
            nothing_buffered.cancel()
            try:
                batch.append(await subscriber.__anext__())
            except StopAsyncIteration:
                break  # the next fetch finds it ended too
            except MessagesLost as lost:
                batch.append(lost)  # raised when the thread reaches it
                break
        if nothing_buffered.cancelled_caught:
            break
    return batch
