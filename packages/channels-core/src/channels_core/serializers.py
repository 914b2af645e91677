"""Codecs between messages and the bytes a layer carries.

The codec belongs to the channel, so every layer gets the same behaviour:
JSON by default, msgpack on request, any object with ``dumps``/``loads``
(the `json` module itself, orjson, ...), and pickle only when asked for by
name, since unpickling data from a broker runs arbitrary code.
"""

from __future__ import annotations

import json
import json.encoder
import pickle
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast, runtime_checkable

from .exceptions import SerializationError

__all__ = [
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "resolve_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns a message into bytes and back. `dumps` may also return ``str`` (UTF-8)."""

    def dumps(self, message: Any, /) -> bytes | str: ...

    def loads(self, payload: bytes, /) -> Any: ...


#: Deepest nesting of lists and dicts the JSON serializer accepts. Python's
#: decoder recurses once per level, so a message nested nearly as deep as the
#: publisher's stack allows could not be decoded on a receiver's deeper stack.
MAX_JSON_DEPTH = 256

_CONTAINERS = (dict, list, tuple)

#: Types of dict values that need no structure check (nothing nested in them).
_SCALARS = frozenset({str, int, float, bool, type(None)})

#: Length from which a str value of a flat dict is spliced into the JSON text
#: (`JSONSerializer._spliced`) rather than escaped by the C encoder.
SPLICE_FROM = 256

#: Maps the UTF-8 bytes JSON escapes (``"``, ``\\``, U+0000 to U+001F) to 0xFF and
#: every other byte to itself: ``data.translate(_ESCAPED) is data`` if none occurs.
_ESCAPED = bytes(0xFF if byte < 0x20 or byte in b'"\\' else byte for byte in range(256))

#: What `_spliced` puts in place of the long string, and that text encoded: an
#: unescaped ``"`` only delimits strings, so only a string equal to it encodes the same.
_MARK = "\x00"
_MARK_JSON_BYTES = b'"\\u0000"'


class JSONSerializer:
    """Compact UTF-8 JSON; what it accepts comes back equal (tuples come back as lists).

    Refused, so that nothing is silently changed or lost on the way: NaN and
    infinities (not JSON; other languages reading the broker would choke),
    dict keys that are not strings (JSON would turn ``{1: "a"}`` into
    ``{"1": "a"}``), and nesting deeper than `MAX_JSON_DEPTH`. Decoding is as
    strict: a foreign payload with ``NaN`` or ``Infinity`` is not JSON either.

    It runs on every message, so both directions skip what `json` does for
    generality (issue #15): a flat dict of str keys and scalar values (the
    usual message) is checked in one pass over its keys, encoding calls the C
    encoder made once (`json.JSONEncoder.encode` builds one per call), a long
    string value that needs no escaping is copied in rather than escaped, and
    decoding scans the document directly, going through
    `json.JSONDecoder.decode` only for what the scan does not take whole
    (surrounding whitespace, or an error to report). And a layer that
    carries the very bytes object `dumps` made (the in-memory layer) gets
    the last flat dict back as a copy of it, taken when it was encoded,
    instead of decoding it: the same dict decoding would build (its values
    are immutable scalars of exact types), at a fraction of the cost.
    """

    name = "json"

    def __init__(self) -> None:
        encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._chunks = _chunk_encoder(encoder)
        decoder = json.JSONDecoder(parse_constant=_refuse_constant)
        self._decode = decoder.decode
        self._scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
        #: The last flat dict encoded, as ``(its bytes, a copy of it)``: one
        #: attribute, so that a channel in another thread sharing this
        #: serializer reads a consistent pair.
        self._recent: tuple[bytes, dict[str, Any]] | None = None

    def dumps(self, message: Any) -> bytes:
        if type(message) is dict:
            long_key = None
            # (a loop costs less than two C-level map() passes up to ~15 keys)
            for key in message:
                value = message[key]
                if type(value) is str and type(key) is str:
                    if len(value) >= SPLICE_FROM:
                        long_key = key
                elif type(key) is not str or type(value) not in _SCALARS:
                    _check_structure(message)
                    break
            else:
                payload = None
                if long_key is not None:
                    payload = self._spliced(message, long_key)
                if payload is None:
                    payload = "".join(self._chunks(message, 0)).encode()
                self._recent = (payload, message.copy())
                return payload
        elif isinstance(message, _CONTAINERS):
            _check_structure(message)
        return "".join(self._chunks(message, 0)).encode()

    def _spliced(self, message: dict[str, Any], key: str) -> bytes | None:
        """`message` encoded with ``message[key]`` copied in rather than escaped, or None.

        The C encoder escapes a string at some 30 instructions a character;
        checking that one needs no escape (`_ESCAPED`) costs a third of it.
        Then the rest is encoded around a marker that the string replaces.
        None when it needs escaping after all, or the marker is not unique;
        the commonest escapes are looked for first, at memchr's speed, so
        that text which has them costs little more than before.
        """
        value = message[key]
        if "\n" in value or '"' in value or "\\" in value:
            return None
        try:
            data = value.encode()
        except UnicodeEncodeError:  # a lone surrogate: the usual way reports it
            return None
        if data.translate(_ESCAPED) is not data:
            return None
        try:
            text = "".join(self._chunks({**message, key: _MARK}, 0)).encode()
        except UnicodeEncodeError:  # elsewhere: the usual way reports it, at its position
            return None
        before, marker, after = text.partition(_MARK_JSON_BYTES)
        if not marker or _MARK_JSON_BYTES in after:  # another string is the marker
            return None
        return b'"'.join((before, data, after))

    def loads(self, payload: bytes) -> Any:
        recent = self._recent
        if recent is not None and recent[0] is payload:  # see the class docstring
            return recent[1].copy()
        text = payload.decode()
        try:
            message, end = self._scan(text, 0)
        except StopIteration:  # nothing at 0: leading whitespace, or not JSON
            return self._decode(text)
        if end != len(text):  # trailing whitespace, or extra data
            return self._decode(text)
        return message


def _chunk_encoder(encoder: json.JSONEncoder) -> Callable[[Any, int], Iterable[str]]:
    """``chunks(message, 0)``: `encoder`'s output in pieces, from its C encoder made once.

    The C encoder is built without circular-reference tracking: `dumps`
    refuses nesting beyond `MAX_JSON_DEPTH` first, which also catches a
    container that holds itself. It is checked against `encoder` on a
    sample, so a Python without it, or whose private signature differs,
    gets `encoder`'s own (slower) way.
    """

    def chunks_of(message: Any, _level: int) -> Iterable[str]:
        return encoder.iterencode(message, _one_shot=True)

    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return chunks_of
    try:
        chunks = make(
            None,
            encoder.default,
            json.encoder.encode_basestring,
            None,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
        sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "b": {"c": -0.0}}
        if "".join(chunks(sample, 0)) != encoder.encode(sample):
            return chunks_of
    except Exception:
        return chunks_of
    return cast(Callable[[Any, int], Iterable[str]], chunks)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_structure(message: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> None:
    """Refuse non-string dict keys and nesting beyond `MAX_JSON_DEPTH` (iteratively)."""
    pending: list[tuple[Any, int]] = [(message, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise TypeError(
                        f"dict keys must be str for JSON, got {type(key).__name__} {key!r}"
                    )
            items = value.values()
        else:
            items = value
        pending.extend((item, depth + 1) for item in items if isinstance(item, _CONTAINERS))


class MsgpackSerializer:
    """msgpack (install ``channels-core[msgpack]``): smaller and faster than JSON, binary-safe.

    Each payload is decoded once before it is sent, exactly as receivers
    will, and refused if that fails: msgpack packs ``{1: "a"}``, but
    receivers unpack with ``strict_map_key`` (dict keys str or bytes only:
    msgpack's defence against hash flooding, since integer keys collide at
    will), so no one could read it.
    """

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ImportError(
                "the msgpack serializer needs the msgpack package: "
                "pip install channels-core[msgpack]"
            ) from exc
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def dumps(self, message: Any) -> bytes:
        payload: bytes = self._packb(message, use_bin_type=True)
        try:
            self.loads(payload)
        except Exception as exc:
            raise ValueError(
                f"receivers could not decode it ({type(exc).__name__}: {exc}); "
                "dict keys must be str or bytes"
            ) from exc
        return payload

    def loads(self, payload: bytes) -> Any:
        return self._unpackb(payload, raw=False)


class PickleSerializer:
    """pickle: any picklable object. Only for brokers nobody untrusted can publish to."""

    name = "pickle"

    def dumps(self, message: Any) -> bytes:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, payload: bytes) -> Any:
        return pickle.loads(payload)  # noqa: S301 - opt-in by name only


_BY_NAME: dict[str, type[JSONSerializer | MsgpackSerializer | PickleSerializer]] = {
    "json": JSONSerializer,
    "msgpack": MsgpackSerializer,
    "pickle": PickleSerializer,
}


class Codec:
    """A serializer wrapped so that failures become `SerializationError` and output is bytes."""

    __slots__ = ("_dumps", "bytes_dumps", "loads", "name")

    def __init__(self, serializer: Serializer) -> None:
        self.name: str = getattr(serializer, "name", type(serializer).__name__)
        self._dumps = serializer.dumps
        self.loads = serializer.loads
        #: The serializer's own ``dumps`` if it always returns bytes (the built-in
        #: ones), else None: a caller on every message's path (`Channel.publish`)
        #: calls it and turns its errors with `refused`, one call instead of two.
        self.bytes_dumps: Callable[[Any], bytes] | None = (
            serializer.dumps if type(serializer) in _BY_NAME.values() else None  # type: ignore[assignment]
        )

    def refused(self, message: Any, exc: Exception) -> SerializationError:
        """The error for `message`, which the serializer refused with `exc`."""
        return SerializationError(
            f"cannot serialize a {type(message).__name__} with the {self.name} "
            f"serializer ({type(exc).__name__}: {exc}); nothing was sent. "
            "Send data that serializer can encode, or choose another serializer."
        )

    def dumps(self, message: Any) -> bytes:
        try:
            payload = self._dumps(message)
            if type(payload) is bytes:  # the usual case, first
                return payload
        except SerializationError:
            raise  # from a wrapped codec (an encrypted serializer): already says it all
        except Exception as exc:
            raise self.refused(message, exc) from exc
        if isinstance(payload, str):
            try:
                return payload.encode()
            except UnicodeEncodeError as exc:
                raise SerializationError(
                    f"the {self.name} serializer produced text that is not valid "
                    f"UTF-8 ({exc}); nothing was sent"
                ) from exc
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise SerializationError(
                f"the {self.name} serializer returned {type(payload).__name__}, "
                "expected bytes or str; nothing was sent"
            )
        return bytes(payload)


def resolve_serializer(spec: str | Serializer) -> Codec:
    """Turn ``"json"``, ``"msgpack"``, ``"pickle"`` or a dumps/loads object into a `Codec`."""
    if isinstance(spec, str):
        try:
            factory = _BY_NAME[spec]
        except KeyError:
            known = ", ".join(sorted(_BY_NAME))
            raise ValueError(
                f"unknown serializer {spec!r}; use one of {known}, "
                "or pass an object with dumps() and loads()"
            ) from None
        return Codec(factory())
    if not (callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None))):
        raise TypeError(
            f"serializer must be a name or an object with dumps() and loads(), "
            f"got {type(spec).__name__}"
        )
    return Codec(spec)
