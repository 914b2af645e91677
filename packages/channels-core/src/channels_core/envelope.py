"""The envelope: named text fields (trace context, send time) carried in front of a payload.

A channel instrumented to send them (``channels_core.telemetry.instrument(channel,
traces=True)`` or ``delivery_latency=True``) puts them in front of the bytes its
serializer produced, before the size check; every layer carries the result as
any other payload and knows nothing of it. A channel instrumented at all reads
enveloped and plain payloads alike; one that is not skips an enveloped payload
as undecodable (counted, never handed to a subscriber half-decoded).

Wire format: `MAGIC` (4 bytes), then ``name=value`` fields in UTF-8, each
ended by a newline, then one more newline, then the serializer's payload
unchanged::

    b"\\xc1ch\\x01" b"traceparent=00-...-01\\n" b"channels-sent-ns=1764147600123456789\\n"
    b"\\n" payload

``0xC1`` starts no payload of the built-in serializers: it is not UTF-8 (so
no JSON), a byte msgpack never uses, no pickle opcode, and Fernet tokens
(``encrypted``) are base64 text. The envelope is not encrypted: with
``encrypted()`` the trace context and send time cross the broker in clear
(never the message).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MAGIC", "SENT_FIELD", "unwrap", "wrap"]

#: The first bytes of an enveloped payload: 0xC1, "ch", format version 1.
MAGIC = b"\xc1ch\x01"

#: The field with the publisher's wall-clock time, in integer nanoseconds since the epoch.
SENT_FIELD = "channels-sent-ns"

_END = b"\n\n"


def wrap(fields: Mapping[str, str], payload: bytes) -> bytes:
    """`payload` with `fields` in front; `payload` itself if there are none.

    Names hold no ``=`` and no newline (those of the W3C trace context,
    baggage and `SENT_FIELD` do not); a field whose value holds a newline
    cannot be carried and is left out.
    """
    if not fields:
        return payload
    header = "".join([f"{name}={value}\n" for name, value in fields.items()])
    if header.count("\n") != len(fields):  # a newline in a value: leave that field out
        header = "".join(
            [f"{name}={value}\n" for name, value in fields.items() if "\n" not in value]
        )
        if not header:
            return payload
    return b"".join((MAGIC, header.encode(), b"\n", payload))


def unwrap(enveloped: bytes) -> tuple[dict[str, str], bytes]:
    """The fields and the payload of `enveloped` (which starts with `MAGIC`).

    `ValueError` if the envelope is malformed: the channel then counts the
    payload as undecodable and skips it.
    """
    end = enveloped.find(_END, len(MAGIC))
    if end < 0:
        raise ValueError("an envelope without the end of its fields (a truncated payload?)")
    try:
        header = enveloped[len(MAGIC) : end].decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"an envelope whose fields are not UTF-8 ({exc})") from None
    fields: dict[str, str] = {}
    for line in header.split("\n"):
        name, equals, value = line.partition("=")
        if not equals:
            raise ValueError(f"an envelope field that is not name=value: {line[:64]!r}")
        fields[name] = value
    return fields, enveloped[end + len(_END) :]
