"""`NatsChannelLayer`: channels-core's layer protocol over NATS core pub/sub (nats-py).

Pieces: `_subjects` maps groups to subjects, `_options` reads the URL and
options, `_client` routes messages in wire order, `_history` keeps the
JetStream log (history on). This module ties them to the core's protocol:
connecting, publishing, subscribing, reconnect signals, positions and
counters.
"""

from __future__ import annotations

import itertools
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self

import anyio
import nats.errors
import nats.js.errors
from anyio.abc import TaskGroup
from nats.aio.client import Server
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from channels_core import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ChannelClosedError,
    ChannelLayer,
    ChannelsError,
    ErrorMapping,
    Inbox,
    LayerStats,
    PayloadTooLargeError,
    background_tasks,
    call_with_deadline,
    redact_url,
    translate_errors,
    url_secrets,
)
from channels_core.history import HistoryRead, format_position
from channels_core.patterns import compile_pattern

from ._client import Handler, RoutingClient
from ._history import JetStreamLog, live_sequences
from ._options import SCHEMES, NatsLayerOptions, parse_url
from ._subjects import Subjects

__all__ = ["NatsChannelLayer", "NatsLayerStats"]

logger = logging.getLogger("channels_layer_nats")

#: nats-py's exceptions -> what the application sees (`from` the original).
NATS_ERRORS: ErrorMapping = {
    nats.errors.ConnectionClosedError: BrokerUnavailableError,
    nats.errors.StaleConnectionError: BrokerUnavailableError,
    nats.errors.NoServersError: BrokerUnavailableError,
    nats.errors.OutboundBufferLimitError: BrokerUnavailableError,
    nats.errors.TimeoutError: BrokerUnavailableError,
    nats.errors.AuthorizationError: BrokerRefusedError,
    nats.errors.MaxPayloadError: PayloadTooLargeError,
    nats.js.errors.ServiceUnavailableError: BrokerUnavailableError,
    nats.js.errors.NoStreamResponseError: BrokerUnavailableError,
    nats.errors.Error: ChannelsError,
    OSError: BrokerUnavailableError,
}

_REFUSALS = ("authorization violation", "authentication", "user authentication")
_REFUSED_SUBSCRIPTION = re.compile(r'permissions violation for subscription to "([^"]+)"', re.I)

#: Bytes of live messages held while the log's epoch is re-read (history on):
#: beyond it they are dropped, and recovered from the log like a reconnect's gap.
HOLD_BYTES = 8 * 1024 * 1024

#: A live message waiting for the epoch: group, data, pattern, sequence, previous.
_Held = tuple[str, bytes, str | None, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsLayerStats(LayerStats):
    """The shared counters, and the NATS layer's own."""

    #: Messages skipped: a subject or frame that is not the layer's encoding
    #: (a foreign publisher in the namespace, or a hash collision).
    misrouted: int
    #: Messages a pattern's NATS wildcard brought in that matched none of its
    #: patterns (the cost of patterns without a literal prefix).
    unmatched: int
    #: Bytes nats-py holds for sending right now (bounded by `pending_size`).
    pending_bytes: int
    #: Subscriptions the layer holds on the server: one per group, one per
    #: pattern wildcard (patterns sharing a wildcard share it).
    subscriptions: int
    #: History on: times a group's live sequence did not follow the last one
    #: seen (a message missed on this connection, or a reset log); each one
    #: re-reads the log's epoch and recovers from the log.
    sequence_breaks: int = 0
    #: History on: live messages dropped while waiting for the log's epoch
    #: (beyond `HOLD_BYTES`); the recovery that follows reads them back.
    held_dropped: int = 0


class _Disconnected(Exception):
    """The client is between connections (retried within the time budget)."""


class _Echo:
    """A message the layer sends itself: back means the server processed what came before."""

    __slots__ = ("arrived", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.arrived = False


class _PatternSet:
    """The patterns sharing one NATS wildcard subscription."""

    __slots__ = ("matchers", "subscription")

    def __init__(self) -> None:
        self.matchers: dict[str, Callable[[str], bool]] = {}
        self.subscription: Subscription | None = None


class NatsChannelLayer(ChannelLayer):
    """Cross-process publish/subscribe through a NATS server or cluster (asyncio only).

    `url` is ``nats://[user:password@]host:port[,host:port...]`` (a seed
    list: the client learns the rest of a cluster from the servers) or
    ``nats+tls://...``; `options` are `NatsLayerOptions` fields, as
    keywords or query parameters.
    """

    url_schemes = SCHEMES
    asyncio_only = True  # nats-py is asyncio-only
    supports_multi_group = True
    supports_patterns = True
    supports_history = True

    def __init__(self, url: str = "nats://127.0.0.1:4222", **options: Any) -> None:
        target = parse_url(url)
        self.options = NatsLayerOptions.from_options(options, query=target.query)
        self._target = target
        self._shown = redact_url(url)
        self._secrets = [*url_secrets(url), self.options.token, self.options.nkey_seed]
        self._subjects = Subjects(self.options.namespace)
        settings = self.options
        _check_nkeys(settings)
        if settings.history_ttl is not None and not settings.history_size:
            raise ValueError(
                "history_ttl needs history_size > 0 (the events kept per group); "
                "set both, or neither"
            )
        #: The JetStream log (history on), else None: nothing of it runs.
        self._log = (
            JetStreamLog(self._subjects, settings.history_size, settings.history_ttl)
            if settings.history_size
            else None
        )
        self._js: JetStreamContext | None = None
        self._tasks: TaskGroup | None = None
        #: History on: per group, the stream sequence of the last live message.
        self._last: dict[str, int] = {}
        #: History on: live messages held while the epoch is re-read (None: not holding).
        self._held: list[_Held] | None = None
        #: History off: an outage not yet reported to the channel (`_report_gap`).
        self._gap_unreported = False
        self._held_bytes = 0
        self._resync_round = 0
        self._resyncing = False
        self._report_loss = False
        self._sequence_breaks = self._held_dropped = 0
        self._client: RoutingClient | None = None
        self._inbox: Inbox | None = None
        self._up = anyio.Event()
        self._groups: dict[str, Subscription] = {}
        self._patterns: dict[str, _PatternSet] = {}
        self._pattern_subjects: dict[str, str] = {}
        self._echoes: dict[bytes, _Echo] = {}
        self._refused: set[str] = set()
        self._echo_subject = ""
        self._echo_numbers = itertools.count()
        self._closing = False
        self._lost_at = 0.0
        self._attempts = 0
        self._delays: Iterator[float] = self.options.reconnect_backoff.delays()
        self._published = self._received = self._losses = self._reconnects = 0
        self._misrouted = self._unmatched = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A layer for a ``nats://`` or ``nats+tls://`` URL; unknown options: TypeError."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"<NatsChannelLayer {self._shown} namespace={self.options.namespace!r}>"

    @property
    def url(self) -> str:
        """The URL with every secret masked."""
        return self._shown

    def subject(self, group: str) -> str:
        """The NATS subject that carries `group`."""
        return self._subjects.subject(group)

    def stats(self) -> NatsLayerStats:
        client = self._client
        return NatsLayerStats(
            connected=client is not None and client.is_connected and self._up.is_set(),
            published=self._published,
            received=self._received,
            connection_losses=self._losses,
            reconnects=self._reconnects,
            misrouted=self._misrouted,
            unmatched=self._unmatched,
            pending_bytes=0 if client is None else client.pending_data_size,
            subscriptions=len(self._groups) + len(self._patterns),
            sequence_breaks=self._sequence_breaks,
            held_dropped=self._held_dropped,
        )

    @property
    def keeps_history(self) -> bool:
        return self._log is not None

    @property
    def history_stream(self) -> str | None:
        """The JetStream stream holding this namespace's history (None: history off)."""
        return None if self._log is None else self._log.stream

    async def check(self, timeout: float) -> None:
        """A message to ourselves through the server (`_round_trip`), within `timeout`.

        Raises:
            BrokerUnavailableError: no answer within `timeout`, or the client
                is between connections (reconnecting).
            ChannelClosedError: the layer is not connected.
        """
        client = self._connected_client()
        try:
            with anyio.fail_after(timeout):
                if not (client.is_connected and self._up.is_set()):
                    raise _Disconnected("the NATS client is reconnecting")
                await self._round_trip(client)
        except (TimeoutError, _Disconnected) as exc:
            raise BrokerUnavailableError(
                f"could not check {self._shown} within {timeout:g} s: {self._masked(exc)}"
            ) from exc

    # -- connecting -----------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, inbox: Inbox) -> AsyncIterator[None]:
        """Connect to the first server that answers; nats-py keeps the connection alive."""
        client = RoutingClient()
        refusal: list[Exception] = []
        connecting = anyio.CancelScope()

        async def on_error(exc: Exception) -> None:
            if not self._up.is_set() and self._client is None and _is_refusal(exc):
                refusal.append(exc)
                connecting.cancel()
            self._log_error(exc)

        self._inbox, self._closing, self._up = inbox, False, anyio.Event()
        try:
            with anyio.move_on_after(self.options.connect_timeout), connecting:
                with translate_errors(
                    NATS_ERRORS, what=self._what("connect to"), secrets=self._secrets
                ):
                    try:
                        await client.connect(**self._client_options(on_error))
                    except Exception as exc:
                        if type(exc).__module__.partition(".")[0] != "nkeys":
                            raise
                        raise BrokerRefusedError(  # a bad seed in a seed or .creds file
                            f"could not sign in to {self._shown}: the NKEY seed in "
                            "nkey_seed_file or credentials_file is not valid"
                        ) from None
            if refusal:
                raise BrokerRefusedError(
                    f"{self._shown} refused the connection: {self._masked(refusal[-1])}. "
                    "Check the user, password, token or credentials"
                ) from refusal[-1]
            if not client.is_connected:
                cause = client.last_error
                raise BrokerUnavailableError(
                    f"could not connect to {self._shown} within {self.options.connect_timeout:g} s"
                    f"{': ' + self._masked(cause) if cause else ''}. "
                    "Check that the server is running and reachable"
                ) from cause
            self._check_tls(client)
            self._client = client
            self.max_payload_bytes = client.max_payload
            self._echo_subject = client.new_inbox()
            await client.subscribe_routed(self._echo_subject, self._on_echo)
            self._up.set()
            if self._log is not None:
                self._js = client.jetstream(timeout=self.options.subscribe_timeout)
                await self._refresh_log(self._js, adjust=True)
            async with background_tasks() as tasks:
                self._tasks = tasks
                if self._held is not None:  # a reconnect came before the task group
                    self._resync(report=True)
                yield
        finally:
            self._closing = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await client.close()
                except Exception as exc:  # a half-made connection: nothing more to close
                    logger.debug("closing the NATS client: %s", self._masked(exc))
            self._client = self._inbox = None
            self._up.set()  # wakes a publish or subscribe waiting out an outage: it ends
            self._up = anyio.Event()
            self._groups.clear()
            self._patterns.clear()
            self._pattern_subjects.clear()
            self._fail_echoes()
            self._js = self._tasks = self._held = None
            self._last.clear()
            self._resyncing = self._report_loss = False

    async def _refresh_log(self, js: JetStreamContext, adjust: bool = False) -> None:
        """Make (or with `adjust`, set our limits on) the history stream; read its epoch."""
        assert self._log is not None
        with translate_errors(
            NATS_ERRORS, what=self._what("set up the history stream on"), secrets=self._secrets
        ):
            try:
                await self._log.refresh(js, adjust)
            except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
                raise BrokerRefusedError(
                    f"{self._shown} has no JetStream, which history_size needs: start the "
                    "server with -js (or a jetstream {} block), or set history_size=0"
                ) from exc

    def _client_options(self, on_error: Callable[[Exception], Any]) -> dict[str, Any]:
        settings, target = self.options, self._target
        choose = self._next_server
        return {
            "servers": list(target.servers),
            "name": settings.client_name,
            "error_cb": on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": settings.reconnect_backoff.initial,
            "reconnect_to_server_handler": choose,
            "connect_timeout": min(settings.connect_timeout, 2.0),
            "ping_interval": settings.ping_interval,
            "max_outstanding_pings": 2,
            "pending_size": settings.pending_size,
            "user": target.user,
            "password": target.password,
            "token": settings.token or None,
            "user_credentials": settings.credentials_file or None,
            "nkeys_seed": settings.nkey_seed_file or None,
            "nkeys_seed_str": settings.nkey_seed or None,
            "tls": settings.tls_context(target.tls),
            "tls_hostname": settings.tls_hostname or None,
        }

    def _check_tls(self, client: RoutingClient) -> None:
        """``nats+tls://`` never falls back to plain text."""
        info: dict[str, Any] = getattr(client, "_server_info", {})
        if self._target.tls and not info.get("tls_required"):
            raise BrokerRefusedError(
                f"{self._shown} asks for TLS but the server does not offer it; "
                "enable TLS on the server, or use nats://"
            )

    def _next_server(self, servers: list[Server], info: dict[str, Any]) -> tuple[Server, float]:
        """nats-py's reconnect hook: the servers in turn, spaced by `reconnect_backoff`."""
        attempt = self._attempts
        self._attempts += 1
        return servers[attempt % len(servers)], 0.0 if attempt == 0 else next(self._delays)

    async def _on_disconnected(self) -> None:
        if self._closing or not self._up.is_set():
            return
        self._losses += 1
        self._up = anyio.Event()
        self._lost_at = anyio.current_time()
        self._attempts = 0
        self._delays = self.options.reconnect_backoff.delays()
        self._fail_echoes()
        if self._log is not None:
            self._hold()  # what the new connection brings waits for the epoch
        else:
            self._gap_unreported = True
        logger.warning("lost the connection to %s; reconnecting", self._shown)

    async def _on_reconnected(self) -> None:
        client = self._client
        if self._closing or client is None:
            return
        self._reconnects += 1
        self.max_payload_bytes = client.max_payload
        self._up.set()
        logger.warning(
            "reconnected to %s after %d attempt(s) in %.1f s; messages published meanwhile %s",
            self._shown,
            max(self._attempts, 1),
            anyio.current_time() - self._lost_at,
            "were missed" if self._log is None else "are read back from the history",
        )
        if self._log is not None:
            self._resync(report=True)
        else:
            self._report_gap()

    def _report_gap(self) -> None:
        """Tell the channel of the outage, once, before anything the new connection brings.

        Called by `_on_reconnected`, or earlier by the first message that
        arrives: nats-py delivers on the new connection (during its flush)
        before it calls reconnected_cb.
        """
        if self._gap_unreported:
            self._gap_unreported = False
            if self._inbox is not None:
                self._inbox.messages_lost()

    # -- history: positions of live messages -------------------------------------------

    async def read_history(self, group: str, after: str | None, limit: int | None) -> HistoryRead:
        """Read `group`'s log from the stream (see `channels_layer_nats._history`).

        Raises:
            BrokerUnavailableError: no answer within `subscribe_timeout`.
            ChannelClosedError: the layer is not connected.
            NotSupportedError: history is off.
        """
        if self._log is None:
            return await super().read_history(group, after, limit)
        log = self._log
        with translate_errors(
            NATS_ERRORS, what=self._what("read the history on"), secrets=self._secrets
        ):

            async def read(client: RoutingClient) -> HistoryRead:
                assert self._js is not None
                timeout = self.options.subscribe_timeout
                return await log.read(client, self._js, group, after, limit, timeout)

            async def first() -> HistoryRead:
                # Unbounded as a whole: a long log takes many batches, each
                # one bounded by `subscribe_timeout` in `JetStreamLog.read`.
                client = self._connected_client()
                if not (client.is_connected and self._up.is_set()):
                    raise _Disconnected("the NATS client is reconnecting")
                return await read(client)

            async def attempt() -> HistoryRead:
                return await read(await self._wait_until_up())

            return await call_with_deadline(
                attempt,
                timeout=self.options.subscribe_timeout,
                retry_on=(_Disconnected,),
                what=self._what("read the history on"),
                backoff=self.options.reconnect_backoff,
                first_attempt=first,
            )

    def _on_logged(
        self, group: str, data: bytes, pattern: str | None, sequence: int, previous: int
    ) -> None:
        """A live message with its stream sequences: check the group's chain, then deliver.

        Each message names the sequence of the one before it on its subject
        (``Nats-Last-Sequence``). When that is not the last one this layer
        saw of the group, a message was missed on this connection, or the
        log was reset (sequences start again): hold what arrives, re-read
        the epoch, and let the channel recover the group from the log.
        """
        if self._held is not None:
            self._hold_message((group, data, pattern, sequence, previous))
            return
        if pattern is None:
            last = self._last.get(group)
            if last is not None and previous != last:
                self._sequence_breaks += 1
                # Held with its chain taken as it says: released, it follows on.
                self._last[group] = previous
                self._resync(report=previous > last or sequence <= last)
                self._hold_message((group, data, pattern, sequence, previous))
                return
            self._last[group] = sequence
        self._deliver_logged(group, data, pattern, sequence)

    def _deliver_logged(self, group: str, data: bytes, pattern: str | None, sequence: int) -> None:
        inbox, log = self._inbox, self._log
        if inbox is not None and log is not None and log.epoch is not None:
            inbox.deliver(group, data, pattern, format_position(log.epoch, sequence))

    def _hold(self) -> None:
        if self._held is None:
            self._held, self._held_bytes = [], 0

    def _hold_message(self, held: _Held) -> None:
        assert self._held is not None
        size = len(held[1])
        if self._held_bytes + size > HOLD_BYTES:
            self._held_dropped += 1
            self._report_loss = True  # the recovery reads it back from the log
            return
        self._held.append(held)
        self._held_bytes += size

    def _resync(self, report: bool) -> None:
        """Hold live messages, re-read the epoch in a task, then report a gap and release them."""
        self._hold()
        self._report_loss = self._report_loss or report
        self._resync_round += 1
        if not self._resyncing and self._tasks is not None:
            self._resyncing = True
            self._tasks.start_soon(self._resynchronise)

    async def _resynchronise(self) -> None:
        """`_resync`'s task: until the stream answers, then `Inbox.messages_lost` if needed.

        The epoch must be known before a held message gets its position;
        the channel then reads each group's log after the last position it
        delivered, and drops the held messages that read already had.
        """
        assert self._log is not None
        delays = self.options.reconnect_backoff.delays()
        released = False
        try:
            while True:
                round_number, epoch = self._resync_round, self._log.epoch
                try:
                    with anyio.fail_after(self.options.subscribe_timeout):
                        await self._wait_until_up()
                        assert self._js is not None
                        await self._refresh_log(self._js)
                except (ChannelsError, TimeoutError, _Disconnected) as exc:
                    logger.warning("re-reading the history stream: %s", self._masked(exc))
                    await anyio.sleep(next(delays))
                    continue
                if self._log.epoch != epoch:
                    logger.warning("the history stream of %s was made anew", self._shown)
                    self._report_loss = True
                if round_number == self._resync_round:
                    break
            held, self._held = self._held or [], None
            report, self._report_loss = self._report_loss, False
            self._resyncing, released = False, True
            if report:
                self._last.clear()
                if self._inbox is not None:
                    self._inbox.messages_lost()
            for item in held:  # checked again: a break among them starts another round
                self._on_logged(*item)
        finally:
            if not released:
                self._resyncing = False

    def _log_error(self, exc: Exception) -> None:
        """nats-py's error callback: refusals and permission errors at WARNING.

        While reconnecting, the first failed attempt is a WARNING and later
        ones DEBUG (the outage is already reported), as channels-core logs.
        """
        reconnecting = self._client is not None and not self._up.is_set()
        refused = _REFUSED_SUBSCRIPTION.search(str(exc))
        if refused:
            self._refused.add(refused.group(1))
        important = _is_refusal(exc) or "permission" in str(exc).lower()
        level = (
            logging.WARNING
            if important or (reconnecting and self._attempts <= 1)
            else logging.DEBUG
        )
        logger.log(level, "NATS client (%s): %s", self._shown, self._masked(exc))

    def _masked(self, exc: BaseException | None) -> str:
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
        for secret in sorted(filter(None, self._secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _what(self, action: str) -> str:
        return f"{action} {self._shown}"

    def _connected_client(self) -> RoutingClient:
        if self._client is None:
            raise ChannelClosedError("the NATS layer is not connected")
        return self._client

    async def _wait_until_up(self) -> RoutingClient:
        client = self._connected_client()
        await self._up.wait()
        if not client.is_connected:
            raise _Disconnected("the NATS client is reconnecting")
        return client

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, group: str, payload: bytes) -> None:
        """Hand the message to the connected client; during an outage wait up to `publish_timeout`.

        Nothing is queued while disconnected: nats-py's reconnect buffer is
        never used, so a publish that times out was not sent, ever. With
        history on, the publish goes to the group's log subject through
        JetStream and returns once the stream stored it (one round trip); a
        timeout there may follow a message that was stored.
        """
        client = self._connected_client()
        subject, data = self._subjects.frame(group, payload)
        if len(data) > client.max_payload:
            raise PayloadTooLargeError(
                f"the message for group {group[:80]!r} is {len(data):,} bytes on the wire; "
                f"the NATS server takes at most {client.max_payload:,} (its max_payload). "
                "Nothing was sent: send a smaller message, or a reference to the data"
            )
        send: Callable[[RoutingClient, str, bytes], Awaitable[None]] = _publish_core
        if self._log is not None:
            subject, send = self._log.log_subject(subject), self._publish_logged
        with translate_errors(NATS_ERRORS, what=self._what("publish to"), secrets=self._secrets):
            if client.is_connected and self._up.is_set():
                await send(client, subject, data)  # nats-py checks the state before queueing
            else:

                async def attempt() -> None:
                    await send(await self._wait_until_up(), subject, data)

                await call_with_deadline(
                    attempt,
                    timeout=self.options.publish_timeout,
                    retry_on=(_Disconnected, nats.errors.OutboundBufferLimitError),
                    what=self._what("publish to"),
                    backoff=self.options.reconnect_backoff,
                )
        self._published += 1

    async def _publish_logged(self, client: RoutingClient, subject: str, data: bytes) -> None:
        """Publish through JetStream (history on): back once the stream stored the message.

        No stream answering (deleted, or a server that lost its store): the
        stream is made again, which starts a new epoch, and the publish sent
        once more (it cannot have been stored).
        """
        js = self._js
        if js is None:
            raise ChannelClosedError("the NATS layer is not connected")
        timeout = self.options.publish_timeout
        try:
            await js.publish(subject, data, timeout=timeout)
        except nats.js.errors.NoStreamResponseError:
            logger.warning("the history stream of %s is gone: making it again", self._shown)
            await self._refresh_log(js)
            await js.publish(subject, data, timeout=timeout)

    # -- subscribing --------------------------------------------------------------------

    async def subscribe_groups(self, groups: Sequence[str]) -> None:
        """SUBSCRIBE every group, then one round trip confirms them all."""
        await self._subscribing(self._add_groups, groups, [self.subject(g) for g in groups])

    async def unsubscribe_groups(self, groups: Sequence[str]) -> None:
        client = self._client
        for group in groups:
            subscription = self._groups.pop(group, None)
            self._last.pop(group, None)
            if subscription is not None and client is not None:
                await self._unsubscribe(client, subscription)

    async def subscribe_patterns(self, patterns: Sequence[str]) -> None:
        """SUBSCRIBE the narrowest wildcard covering each pattern; match exactly on arrival."""
        covering = [self._subjects.covering(pattern) for pattern in patterns]
        await self._subscribing(self._add_patterns, patterns, covering)

    async def unsubscribe_patterns(self, patterns: Sequence[str]) -> None:
        client = self._client
        for pattern in patterns:
            covering = self._pattern_subjects.pop(pattern, None)
            shared = self._patterns.get(covering or "")
            if covering is None or shared is None:
                continue
            shared.matchers.pop(pattern, None)
            if not shared.matchers:
                del self._patterns[covering]
                if shared.subscription is not None and client is not None:
                    await self._unsubscribe(client, shared.subscription)

    async def _subscribing(
        self,
        add: Callable[[RoutingClient, Sequence[str]], Any],
        names: Sequence[str],
        subjects: Sequence[str],
    ) -> None:
        """Wait for a connection, add the subscriptions, confirm them, in `subscribe_timeout`.

        The server answers a SUBSCRIBE it refuses (permissions) with an error
        before it echoes the confirmation: such subjects raise `BrokerRefusedError`.
        """
        budget = self.options.subscribe_timeout
        added = False
        watched = {subject.lower() for subject in subjects}  # nats-py lower-cases -ERR text
        self._refused -= watched

        async def attempt() -> None:
            nonlocal added
            client = await self._wait_until_up()
            if not added:
                with anyio.CancelScope(shield=True):  # never lose a half-made subscription
                    await add(client, names)
                added = True
            await self._round_trip(client)

        with translate_errors(NATS_ERRORS, what=self._what("subscribe on"), secrets=self._secrets):
            await call_with_deadline(
                attempt,
                timeout=budget,
                retry_on=(_Disconnected,),
                what=self._what("subscribe on"),
                backoff=self.options.reconnect_backoff,
            )
        refused = sorted(subject for subject in subjects if subject.lower() in self._refused)
        self._refused -= watched
        if refused:
            raise BrokerRefusedError(
                f"{self._shown} refused the subscription to {', '.join(refused)} (permissions "
                "violation): grant this user subscribe permission on the namespace's subjects"
            )

    async def _add_groups(self, client: RoutingClient, groups: Sequence[str]) -> None:
        for group in groups:
            if group not in self._groups:
                self._last.pop(group, None)  # a new subscription: no chain to continue
                handler = self._group_handler(group)
                self._groups[group] = await client.subscribe_routed(self.subject(group), handler)

    async def _add_patterns(self, client: RoutingClient, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            if pattern in self._pattern_subjects:
                continue
            covering = self._subjects.covering(pattern)
            self._pattern_subjects[pattern] = covering
            shared = self._patterns.get(covering)
            if shared is None:
                shared = self._patterns[covering] = _PatternSet()
                shared.subscription = await client.subscribe_routed(
                    covering, self._pattern_handler(shared)
                )
            shared.matchers[pattern] = compile_pattern(pattern)

    async def _unsubscribe(self, client: RoutingClient, subscription: Subscription) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await client.unsubscribe_routed(subscription)
            except nats.errors.Error as exc:  # closed meanwhile: nothing left to undo
                logger.debug("unsubscribe on %s: %s", self._shown, self._masked(exc))

    async def _round_trip(self, client: RoutingClient) -> None:
        """Send a message to ourselves and wait for it: the server has processed what preceded it.

        (nats-py's ``flush()`` writes its PING ahead of queued commands, so
        its PONG does not prove a queued SUBSCRIBE was processed.)
        """
        token = str(next(self._echo_numbers)).encode()
        echo = self._echoes[token] = _Echo()
        try:
            if not client.is_connected:
                raise _Disconnected("the NATS client is reconnecting")
            await client.publish(self._echo_subject, token)
            await echo.event.wait()
        finally:
            self._echoes.pop(token, None)
        if not echo.arrived:
            raise _Disconnected("the connection was lost before the server confirmed")

    def _on_echo(self, subject: bytes, data: bytes, headers: bytes | None) -> None:
        echo = self._echoes.pop(data, None)
        if echo is not None:
            echo.arrived = True
            echo.event.set()

    def _fail_echoes(self) -> None:
        for echo in self._echoes.values():
            echo.event.set()
        self._echoes.clear()

    # -- receiving ----------------------------------------------------------------------

    def _group_handler(self, group: str) -> Handler:
        subjects = self._subjects
        hashed = subjects.is_hashed(self.subject(group))
        logged = self._log is not None

        def on_message(subject: bytes, data: bytes, headers: bytes | None) -> None:
            inbox = self._inbox
            if inbox is None:
                return
            self._received += 1
            if hashed:
                framed = subjects.unframe(subject.decode(), data)
                if framed is None or framed[0] != group:
                    self._misrouted += 1
                    return
                data = framed[1]
            if headers is not None and logged:
                sequences = live_sequences(headers)
                if sequences is not None:
                    self._on_logged(group, data, None, *sequences)
                    return
            if self._gap_unreported:
                self._report_gap()
            inbox.deliver(group, data)

        return on_message

    def _pattern_handler(self, shared: _PatternSet) -> Handler:
        read = self._subjects.read
        logged = self._log is not None

        def on_message(subject: bytes, data: bytes, headers: bytes | None) -> None:
            inbox = self._inbox
            if inbox is None:
                return
            self._received += 1
            message = read(subject.decode(), data)
            if message is None:
                self._misrouted += 1
                return
            group, payload = message
            sequences = live_sequences(headers) if logged else None
            matched = False
            for pattern, matches in shared.matchers.items():
                if matches(group):
                    matched = True
                    if sequences is None:
                        if self._gap_unreported:
                            self._report_gap()
                        inbox.deliver(group, payload, pattern)
                    else:
                        self._on_logged(group, payload, pattern, *sequences)
            if not matched:
                self._unmatched += 1

        return on_message


def _check_nkeys(settings: NatsLayerOptions) -> None:
    """NKEY options need the ``nkeys`` package; a seed given as text must be one (never shown)."""
    if not (settings.nkey_seed or settings.nkey_seed_file or settings.credentials_file):
        return
    try:
        import nkeys  # type: ignore[import-untyped]
    except ImportError:
        raise ValueError(
            "nkey_seed, nkey_seed_file and credentials_file need the nkeys package: "
            "pip install 'channels-layer-nats[nkeys]'"
        ) from None
    if settings.nkey_seed:
        try:
            nkeys.from_seed(bytearray(settings.nkey_seed.encode()))
        except Exception:
            raise ValueError("nkey_seed is not a valid NKEY seed (SU...)") from None


async def _publish_core(client: RoutingClient, subject: str, data: bytes) -> None:
    await client.publish(subject, data)


def _is_refusal(exc: BaseException) -> bool:
    if isinstance(exc, nats.errors.AuthorizationError | ssl.SSLCertVerificationError):
        return True
    text = str(exc).lower()
    return any(word in text for word in _REFUSALS)
