"""History on JetStream: one stream per namespace, read back for ``since=`` and recovery.

How a publish is logged and delivered live in one step
    With history on, a publish goes to the group's *log subject*
    (``_chlog.<namespace>.~.<group tokens>``) as a JetStream publish, acked
    once stored. The namespace's stream captures every log subject, keeps
    ``history_size`` messages per subject (``max_msgs_per_subject``) for at
    most ``history_ttl`` seconds (``max_age``), and *republishes* each
    stored message to the group's ordinary subject (``<namespace>.<group
    tokens>``), with headers the server adds: ``Nats-Sequence`` (its
    sequence in the stream) and ``Nats-Last-Sequence`` (the sequence of the
    previous message on the same subject). Live subscribers keep their plain
    core subscriptions, so fan-out stays one server delivery per process, and
    every live message carries its position: the republish happens in stream
    order, so a group's messages arrive in log order.

    The other ways a live subscriber could learn a message's position cost
    more: a JetStream consumer per group and process (server state, a round
    trip to create each, flow control), or a second message per publish with
    a header (two publishes, not atomic, possibly out of order between
    publishers). The costs of this one (figures in the README, from
    ``measure_history.py``): an acknowledged publish, a round trip where a
    core publish has none (one publishing task: 10-50x slower, about
    2,800/s on the test machine), and 147 bytes of headers on each live
    message.

Why a position is provably complete
    Stream sequences are global: a group's messages are not contiguous, so
    "the oldest retained sequence is S+1" proves nothing about one subject.
    What the stream's limits guarantee is that they only ever remove the
    *oldest* messages: ``max_age`` from the front of the whole stream,
    ``max_msgs_per_subject`` from the front of one subject (the layer never
    deletes single messages). So, once group G has been read after sequence
    S (checked *after* the read: a message removed while it ran is caught):

    * if message S is still in the stream, on G's subject, nothing after it
      was removed (the usual case: S is the last event delivered);
    * else (S was the head of an empty log, or is gone), if the stream's
      first sequence is at most S+1, nothing after S expired, and if G's
      subject holds fewer than ``max_msgs_per_subject`` messages, none was
      pushed out by the size limit (that leaves the subject full).

    Either: complete. Otherwise ``complete=False``, even if in fact nothing
    was lost (exactly `history_size` messages after S, say): a recovery is
    never claimed without proof. A purge, or a limit lowered by hand, is not
    covered by the proof: do not purge a stream that recovery relies on.

The epoch
    A position is ``<epoch>-<stream sequence>``; the epoch is the stream's
    creation time (microseconds, hex). A stream deleted and made again (by
    hand, or because the server lost its store and the layer recreated it)
    has a new creation time, so older positions never pass for this log's.
    The layer re-reads it after every reconnect, and whenever a live
    message's ``Nats-Last-Sequence`` does not follow what it last saw of
    the group (a reset log restarts its sequences).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DEFAULT_PREFIX,
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RePublish,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from channels_core.history import HistoryRead, format_position, parse_position

from ._subjects import Subjects

__all__ = ["LOG_ROOT", "JetStreamLog", "live_sequences", "stream_name"]

logger = logging.getLogger("channels_layer_nats")

#: First token of every log subject; never the first token of a namespace's
#: live subjects, so the stream never captures its own republished messages.
LOG_ROOT = "_chlog"
#: Seconds an abandoned read's consumer outlives its reader on the server.
_CONSUMER_IDLE = 30.0
#: Bytes a history read asks for per round trip (well below a server's
#: ``max_pending``, 64 MiB by default), and the largest batch.
READ_BATCH_BYTES = 128 * 1024
_MAX_BATCH = 1024
_SEQUENCE = b"\r\nNats-Sequence: "
_LAST = b"\r\nNats-Last-Sequence: "
_STREAM_EXISTS = 10058  # JetStream's "stream name already in use" (other settings)


def stream_name(namespace: str) -> str:
    """The stream holding `namespace`'s history (a stream name has no dots)."""
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:8]
    return f"CHANNELS_{namespace.replace('.', '_')}_{digest}"


def live_sequences(headers: bytes | None) -> tuple[int, int] | None:
    """``(Nats-Sequence, Nats-Last-Sequence)`` of a republished message; None if absent."""
    if headers is None:
        return None
    start = headers.find(_SEQUENCE)
    before = headers.find(_LAST)
    if start < 0 or before < 0:
        return None
    start += len(_SEQUENCE)
    before += len(_LAST)
    try:
        return (
            int(headers[start : headers.index(b"\r", start)]),
            int(headers[before : headers.index(b"\r", before)]),
        )
    except ValueError:
        return None


def _epoch(info: StreamInfo) -> str:
    created: Any = info.created
    if hasattr(created, "timestamp"):
        return format(int(created.timestamp() * 1_000_000), "x")
    return hashlib.sha256(str(created).encode()).hexdigest()[:12]


class JetStreamLog:
    """The namespace's stream: made or adjusted on connect, read for history."""

    def __init__(self, subjects: Subjects, size: int, ttl: float | None) -> None:
        if subjects.namespace.partition(".")[0] == LOG_ROOT:
            raise ValueError(
                f"with history on, the namespace cannot start with {LOG_ROOT!r}: the "
                "history's own subjects start with it"
            )
        self.subjects = subjects
        self.size = size
        self.ttl = ttl
        self.stream = stream_name(subjects.namespace)
        self._live_root = subjects.namespace
        self._log_prefix = f"{LOG_ROOT}.{subjects.namespace}.~."
        #: The stream's current epoch (None until `refresh` first ran).
        self.epoch: str | None = None

    def log_subject(self, live_subject: str) -> str:
        """The subject a publish goes to so that the stream logs and republishes it."""
        return self._log_prefix + live_subject[len(self._live_root) + 1 :]

    def config(self) -> StreamConfig:
        captured = self._log_prefix + ">"
        return StreamConfig(
            name=self.stream,
            description=f"channels history of namespace {self.subjects.namespace}",
            subjects=[captured],
            max_msgs_per_subject=self.size,
            max_age=self.ttl or 0,
            storage=StorageType.FILE,
            allow_direct=True,
            republish=RePublish(src=captured, dest=f"{self._live_root}.>"),
        )

    async def refresh(self, js: JetStreamContext, adjust: bool = False) -> StreamInfo:
        """The stream's info (and epoch), making the stream first if it is gone.

        With `adjust` (on connect), our limits are set on a stream that has
        others: two layers of one namespace with other history settings,
        the last to connect sets them, with a warning (a rolling change of
        settings then works; positions stay valid).
        """
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await self._create(js)
        if adjust:
            info = await self._adjust(js, info)
        self.epoch = _epoch(info)
        return info

    async def _adjust(self, js: JetStreamContext, info: StreamInfo) -> StreamInfo:
        config = info.config
        wanted = self.config()
        if (
            config.max_msgs_per_subject != wanted.max_msgs_per_subject
            or (config.max_age or 0) != (wanted.max_age or 0)
            or config.subjects != wanted.subjects
            or config.republish is None
        ):
            logger.warning(
                "the history stream %s keeps %s message(s) per group for %s s; this layer "
                "sets history_size=%d, history_ttl=%s (the last layer to connect decides)",
                self.stream,
                config.max_msgs_per_subject,
                config.max_age or "unlimited",
                self.size,
                self.ttl,
            )
            info = await js.update_stream(wanted)
        return info

    async def _create(self, js: JetStreamContext) -> StreamInfo:
        try:
            return await js.add_stream(self.config())
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_EXISTS:  # made meanwhile by another layer
                raise
            return await js.stream_info(self.stream)

    async def read(
        self,
        client: Client,
        js: JetStreamContext,
        group: str,
        after: str | None,
        limit: int | None,
        timeout: float,
    ) -> HistoryRead:
        """`group`'s log as `ChannelLayer.read_history` documents it (see the module doc).

        One round trip for the stream's state (and epoch), then a
        short-lived consumer filtered on the group's log subject (`_consume`).
        Without `after`, the whole retained log is read and the newest
        `limit` kept: a group's messages are not contiguous in the stream,
        so "the last N" has no sequence to start from.
        """
        info = await self.refresh(js)
        assert self.epoch is not None
        epoch, newest = self.epoch, info.state.last_seq
        head = format_position(epoch, newest)
        start: int | None = None  # the first sequence to read (None: the oldest retained)
        if after is not None:
            since = parse_position(after, "after")
            if since.epoch == epoch and len(since.offset) == 1:
                if since.offset[0] >= newest:  # nothing after it yet: live delivery has the rest
                    return HistoryRead([], True, head)
                start = since.offset[0] + 1
        elif limit == 0:
            return HistoryRead([], True, head)
        events = await self._consume(
            client, js, group, start, newest, limit if after is not None else None, timeout
        )
        if after is None:
            return HistoryRead(events[len(events) - limit :] if limit else events, True, head)
        complete = start is not None and await self._proven(js, group, start - 1)
        return HistoryRead(events, complete, head)

    async def _proven(self, js: JetStreamContext, group: str, since: int) -> bool:
        """Whether nothing of `group` after sequence `since` was removed (see the module doc)."""
        subject = self.log_subject(self.subjects.subject(group))
        try:
            kept = await js.get_msg(self.stream, seq=since) if since else None
        except nats.js.errors.NotFoundError:
            kept = None
        if kept is not None and kept.subject == subject:
            return True
        info = await js.stream_info(self.stream, subjects_filter=subject)
        size = info.config.max_msgs_per_subject or -1
        retained = (info.state.subjects or {}).get(subject, 0)
        return info.state.first_seq <= since + 1 and (size <= 0 or retained < size)

    async def _consume(
        self,
        client: Client,
        js: JetStreamContext,
        group: str,
        start: int | None,
        newest: int,
        limit: int | None,
        timeout: float,
    ) -> list[tuple[str, bytes]]:
        """The first `limit` events of `group` from `start` (None: the oldest) up to `newest`.

        A pull consumer, read in batches of about `READ_BATCH_BYTES`: a
        consumer pushing a long history at full speed would overrun the
        server's per-client ``max_pending``, and the server would cut the
        connection as a slow consumer (the recovery then starting again,
        forever). Each batch is one round trip.
        """
        assert self.epoch is not None
        live_subject = self.subjects.subject(group)
        hashed = self.subjects.is_hashed(live_subject)
        inbox = client.new_inbox()
        subscription = await client.subscribe(inbox)
        name = None
        try:
            consumer = await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    filter_subject=self.log_subject(live_subject),
                    ack_policy=AckPolicy.NONE,
                    deliver_policy=(
                        DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_SEQUENCE
                    ),
                    opt_start_seq=start,
                    inactive_threshold=_CONSUMER_IDLE,
                    mem_storage=True,
                ),
                timeout=timeout,
            )
            name = consumer.name
            pending = consumer.num_pending or 0
            wanted = pending if limit is None else min(pending, limit)
            next_batch = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{name}"
            events: list[tuple[str, bytes]] = []
            # Sized for the largest message the server takes, then for those seen.
            read, done = 0, False
            batch = max(1, min(_MAX_BATCH, READ_BATCH_BYTES // max(client.max_payload, 1)))
            while read < wanted and not done:
                batch = min(batch, wanted - read)
                request = json.dumps({"batch": batch, "no_wait": True}).encode()
                await client.publish(next_batch, request, reply=inbox)
                largest = 1
                with anyio.fail_after(timeout):
                    for _ in range(batch):
                        message = await subscription.next_msg(timeout=None)
                        if not message.reply:  # a status: no more messages (expired meanwhile)
                            done = True
                            break
                        sequence = message.metadata.sequence.stream
                        if sequence > newest:  # logged after the read began: live has it
                            done = True
                            break
                        read += 1
                        data = message.data
                        largest = max(largest, len(data))
                        if message.metadata.num_pending == 0:
                            done = True
                        if hashed:
                            framed = self.subjects.unframe(live_subject, data)
                            if framed is None or framed[0] != group:
                                continue
                            data = framed[1]
                        events.append((format_position(self.epoch, sequence), data))
                batch = max(1, min(_MAX_BATCH, READ_BATCH_BYTES // largest))
            return events
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await subscription.unsubscribe()
                    if name is not None:
                        await js.delete_consumer(self.stream, name)
                except (nats.errors.Error, nats.js.errors.Error) as exc:  # it expires anyway
                    logger.debug("deleting the history consumer %s: %s", name, exc)
