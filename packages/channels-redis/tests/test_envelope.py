"""The wire envelope on its own: what receivers drop, keep, and report (no server needed)."""

from __future__ import annotations

from channels_layer_redis._envelope import (
    HEADER_BYTES,
    MAX_REMEMBERED,
    DuplicateFilter,
    Outbox,
)


class Receiver:
    def __init__(self) -> None:
        self.unknown = 0
        self.filter = DuplicateFilter(self._on_unknown)

    def _on_unknown(self) -> None:
        self.unknown += 1

    def deliver(self, data: bytes, route: bytes | None = None) -> bytes | None:
        return self.filter.accept(data, route)


def test_a_retried_publish_is_delivered_once() -> None:
    outbox, receiver = Outbox(), Receiver()
    sequence, message = outbox.seal(b"hello")
    assert receiver.deliver(message) == b"hello"
    assert receiver.deliver(message) is None  # the retry: same bytes
    outbox.settle(sequence)
    assert receiver.filter.duplicates == 1


def test_concurrent_publishes_arriving_out_of_order_are_all_delivered() -> None:
    outbox, receiver = Outbox(), Receiver()
    sealed = [outbox.seal(b"%d" % number) for number in range(5)]
    for _, message in reversed(sealed):
        assert receiver.deliver(message) is not None
    assert receiver.filter.duplicates == 0


def test_each_route_delivers_its_own_copy() -> None:
    outbox, receiver = Outbox(), Receiver()
    _, message = outbox.seal(b"x")
    assert receiver.deliver(message, None) == b"x"  # by name
    assert receiver.deliver(message, b"pattern") == b"x"  # and by a pattern
    assert receiver.deliver(message, b"pattern") is None


def test_retries_interleaved_across_publishers_and_routes_are_each_dropped_once() -> None:
    """Bursts from one publisher alternate with others: each record stays its own."""
    first, second, receiver = Outbox(), Outbox(), Receiver()
    a = [first.seal(b"a%d" % number)[1] for number in range(3)]
    b = [second.seal(b"b%d" % number)[1] for number in range(3)]
    arrivals = [a[0], a[1], b[0], a[2], b[1], b[2]]
    delivered = [receiver.deliver(message) for message in arrivals]
    assert delivered == [b"a0", b"a1", b"b0", b"a2", b"b1", b"b2"]
    assert receiver.deliver(a[1], b"pattern") == b"a1"  # another route: its own copy
    # Retries of each, arriving after the other publisher's and route's messages:
    for message in (a[0], b[2], a[2], b[0]):
        assert receiver.deliver(message) is None
    assert receiver.deliver(a[1], b"pattern") is None
    receiver.filter.forget(b"pattern")  # the pattern subscription ended, then came back
    assert receiver.deliver(a[1], b"pattern") == b"a1"
    assert receiver.deliver(a[1]) is None
    assert receiver.filter.duplicates == 6


def test_foreign_messages_and_envelopes_too_short_to_be_one_pass_as_they_are() -> None:
    # Both are another client's bytes: the channel's codec decodes them or counts
    # them undecodable (tests/reliability/test_hostile_input.py).
    receiver = Receiver()
    assert receiver.deliver(b'{"from": "another client"}') == b'{"from": "another client"}'
    _, message = Outbox().seal(b"payload")
    assert receiver.deliver(message[: HEADER_BYTES - 1]) == message[: HEADER_BYTES - 1]
    assert (receiver.filter.duplicates, receiver.unknown) == (0, 0)


def test_a_copy_of_a_settled_message_is_dropped() -> None:
    outbox, receiver = Outbox(), Receiver()
    first, late_copy = outbox.seal(b"first")
    assert receiver.deliver(late_copy) == b"first"
    outbox.settle(first)
    _, later = outbox.seal(b"later")  # carries a watermark past `first`
    assert receiver.deliver(later) == b"later"
    assert receiver.deliver(late_copy) is None


def test_a_retry_older_than_the_record_is_dropped_and_reported_never_delivered_twice() -> None:
    outbox, receiver = Outbox(), Receiver()
    _, retried = outbox.seal(b"stuck")  # in flight all along: the watermark stays
    assert receiver.deliver(retried) == b"stuck"
    for number in range(MAX_REMEMBERED):
        sequence, message = outbox.seal(b"%d" % number)
        assert receiver.deliver(message) is not None
        outbox.settle(sequence)
    assert receiver.deliver(retried) is None
    assert receiver.unknown == 1


def test_the_record_shrinks_as_the_watermark_rises() -> None:
    outbox, receiver = Outbox(), Receiver()
    for number in range(50_000):
        sequence, message = outbox.seal(b"%d" % number)
        assert receiver.deliver(message) is not None
        outbox.settle(sequence)
    publishers = receiver.filter._routes[None]
    (publisher,) = publishers.values()
    assert len(publisher.delivered) <= 2


def _logged(outbox: Outbox, position: bytes, payload: bytes) -> tuple[int, bytes]:
    """What the history script publishes: header, position length and text, payload."""
    sequence, header = outbox.seal_logged()
    return sequence, header + bytes([len(position)]) + position + payload


def test_a_logged_message_carries_its_position_and_is_delivered_once() -> None:
    outbox, receiver = Outbox(), Receiver()
    _, message = _logged(outbox, b"e1-1700000000000-7", b"hello")
    assert receiver.filter.accept_logged(message, None) == (b"hello", "e1-1700000000000-7")
    assert receiver.filter.accept_logged(message, None) is None
    # A receiver with history off takes the payload alone (a publisher with it on).
    assert Receiver().deliver(message) == b"hello"
    # One with history on takes a plain envelope, without a position.
    _, plain = outbox.seal(b"plain")
    assert receiver.filter.accept_logged(plain, None) == (b"plain", None)
    assert receiver.filter.accept_logged(b"foreign", None) == (b"foreign", None)


def test_logged_and_plain_messages_of_one_publisher_share_its_sequence() -> None:
    outbox, receiver = Outbox(), Receiver()
    _, first = outbox.seal(b"plain")
    _, second = _logged(outbox, b"e-1-1", b"logged")
    assert receiver.deliver(second) == b"logged"
    assert receiver.deliver(first) == b"plain"
    assert receiver.deliver(second) is None


def test_a_truncated_logged_envelope_passes_as_foreign_bytes() -> None:
    receiver = Receiver()
    _, message = _logged(Outbox(), b"e-1-1", b"x")
    cut = message[: HEADER_BYTES + 3]  # the position is longer than what is left
    assert receiver.filter.accept_logged(cut, None) == (cut, None)
    assert (receiver.filter.duplicates, receiver.unknown) == (0, 0)
