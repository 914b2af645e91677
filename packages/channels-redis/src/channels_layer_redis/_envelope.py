"""The wire envelope that makes a retried PUBLISH harmless: publisher id, sequence, watermark.

A PUBLISH whose connection dies before its reply is read may or may not
have run; the layer sends it again, so it can arrive twice. Every message
therefore travels as::

    MAGIC <publisher id: 8 bytes> <sequence: u64> <watermark: u64> <payload>

The publisher id is random per layer instance; a retry re-sends the same
bytes. The watermark is the publisher's lowest sequence still in flight
(not yet answered by Redis or abandoned): no message below it will ever be
sent again. A receiver remembers, per publisher and per route (a name or
a pattern subscription), the sequences it delivered at or above the
latest watermark, and drops a message it has already delivered. This is
bounded: a publisher's record is pruned as its watermark rises, holds at
most `MAX_REMEMBERED` sequences (past that, a too-old message is dropped
and reported as a possible loss, never delivered twice), and only the
`MAX_PUBLISHERS` most recently heard publishers are remembered.

With history on, the publish script appends the message's position in
its group's log (`channels_layer_redis._history`) behind the header::

    MAGIC_LOGGED <publisher id> <sequence> <watermark> <length: u8> <position> <payload>

A message without a magic prefix and a whole header (from another
client) is passed on as it is, for the channel's codec to decode or count
as undecodable.
"""

from __future__ import annotations

import secrets
import struct
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = [
    "HEADER_BYTES",
    "MAX_PUBLISHERS",
    "MAX_REMEMBERED",
    "DuplicateFilter",
    "Outbox",
]

_MAGIC = b"\x00chr1"
_MAGIC_LOGGED = b"\x00chr2"  # same length: the fields sit at the same offset
_FIELDS = struct.Struct(">8sQQ")
_MAGIC_SIZE = len(_MAGIC)
HEADER_BYTES = _MAGIC_SIZE + _FIELDS.size

#: Sequences remembered per publisher and route above its watermark.
MAX_REMEMBERED = 10_000
#: Publishers remembered per route (least recently heard forgotten first).
MAX_PUBLISHERS = 4096


class Outbox:
    """The publishing side: numbers messages and knows which are still in flight."""

    def __init__(self) -> None:
        self._id = secrets.token_bytes(8)
        self._next = 0
        self._in_flight: dict[int, None] = {}  # insertion order = sequence order

    def seal(self, payload: bytes) -> tuple[int, bytes]:
        """A new sequence number and the bytes to PUBLISH (the same for every retry)."""
        sequence = self._next
        self._next += 1
        watermark = next(iter(self._in_flight), sequence)
        self._in_flight[sequence] = None
        return sequence, _MAGIC + _FIELDS.pack(self._id, sequence, watermark) + payload

    def seal_logged(self) -> tuple[int, bytes]:
        """Like `seal`, for the history script: the header alone, position and payload to follow.

        Its bytes 5-20 (publisher id and sequence) identify the publish, whichever
        try sent it: the history script's retry check reads them there.
        """
        sequence, header = self.seal(b"")
        return sequence, _MAGIC_LOGGED + header[len(_MAGIC) :]

    def settle(self, sequence: int) -> None:
        """`sequence` will never be sent again (answered, or given up)."""
        del self._in_flight[sequence]


class _Publisher:
    __slots__ = ("delivered", "floor", "order", "watermark")

    def __init__(self, watermark: int) -> None:
        self.watermark = watermark  # every sequence below: settled before we heard of it
        self.floor = 0  # every sequence below: forgotten (MAX_REMEMBERED), so unknown
        self.delivered: set[int] = set()
        self.order: deque[int] = deque()


class DuplicateFilter:
    """The receiving side: unwraps envelopes, dropping what was delivered already.

    `on_unknown` is called when a message is dropped because it is too old
    to tell whether it was delivered (a possible loss, never a duplicate).
    """

    def __init__(self, on_unknown: Callable[[], None]) -> None:
        self._routes: dict[bytes | None, OrderedDict[bytes, _Publisher]] = {}
        self._on_unknown = on_unknown
        self.duplicates = 0
        #: The route, publisher id and record of the last message: a burst
        #: from one publisher skips the lookups (it is the most recent already).
        self._last: tuple[bytes | None, bytes, _Publisher] | None = None

    def accept(self, data: bytes, route: bytes | None) -> bytes | None:
        """The payload to deliver, or None if it must be dropped."""
        if data.startswith(_MAGIC_LOGGED):  # from a publisher with history on
            accepted = self.accept_logged(data, route)
            return None if accepted is None else accepted[0]
        if len(data) < HEADER_BYTES or not data.startswith(_MAGIC):
            # Not an envelope (another client's message): nothing to deduplicate;
            # the channel's codec decides whether it can be read.
            return data
        if not self._first_time(data, route):
            return None
        return data[HEADER_BYTES:]

    def accept_logged(self, data: bytes, route: bytes | None) -> tuple[bytes, str | None] | None:
        """``(payload, position)`` to deliver (position None if it has none), or None to drop."""
        if not data.startswith(_MAGIC_LOGGED):  # a plain envelope, or not one at all
            payload = self.accept(data, route)
            return None if payload is None else (payload, None)
        if len(data) <= HEADER_BYTES:
            return data, None  # not a whole envelope: the codec decides
        end = HEADER_BYTES + 1 + data[HEADER_BYTES]
        if len(data) < end:
            return data, None  # not a whole envelope: the codec decides
        if not self._first_time(data, route):
            return None
        return data[end:], data[HEADER_BYTES + 1 : end].decode("ascii", "replace")

    def clear(self) -> None:
        """Forget every publisher (the layer disconnected)."""
        self._routes.clear()
        self._last = None

    def forget(self, route: bytes) -> None:
        """A pattern subscription ended: its records are no longer needed."""
        self._routes.pop(route, None)
        self._last = None

    def _first_time(self, data: bytes, route: bytes | None) -> bool:
        """Whether the envelope `data` is a message not delivered before on `route`."""
        publisher_id, sequence, watermark = _FIELDS.unpack_from(data, _MAGIC_SIZE)
        last = self._last
        if last is not None and last[1] == publisher_id and last[0] == route:
            publisher = last[2]
        else:
            publisher = self._publisher(route, publisher_id, watermark)
            self._last = (route, publisher_id, publisher)
        if sequence in publisher.delivered or sequence < publisher.watermark:
            # Below the watermark: the publisher had its answer for it before
            # sending a message we already have, so a copy arrived before.
            self.duplicates += 1
            return False
        if sequence < publisher.floor:
            self._on_unknown()
            return False
        publisher.delivered.add(sequence)
        publisher.order.append(sequence)
        if watermark > publisher.watermark:
            publisher.watermark = watermark
        order, delivered = publisher.order, publisher.delivered
        while order and (order[0] < publisher.watermark or len(order) > MAX_REMEMBERED):
            forgotten = order.popleft()
            delivered.discard(forgotten)
            if forgotten >= publisher.watermark:
                publisher.floor = max(publisher.floor, forgotten + 1)
        return True

    def _publisher(self, route: bytes | None, publisher_id: bytes, watermark: int) -> _Publisher:
        """`publisher_id`'s record on `route` (new if unknown), now its most recently heard."""
        publishers = self._routes.get(route)
        if publishers is None:
            publishers = self._routes[route] = OrderedDict()
        publisher = publishers.get(publisher_id)
        if publisher is None:
            publisher = publishers[publisher_id] = _Publisher(watermark)
            if len(publishers) > MAX_PUBLISHERS:
                publishers.popitem(last=False)
        else:
            publishers.move_to_end(publisher_id)
        return publisher
