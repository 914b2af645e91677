"""Encrypted payloads: a serializer wrapper, so every layer carries ciphertext only.

``Channel(layer, serializer=encrypted("json", keys=[new_key, old_key]))``
encodes each message with the inner serializer, then encrypts it with
Fernet (AES-128-CBC with an HMAC-SHA256 over the whole token, from the
``cryptography`` package: install ``channels-core[crypto]``). The first key
encrypts; every key decrypts, so keys rotate without downtime. A payload
that fails authentication (tampered with, not encrypted, or encrypted with
a key not in the list) raises `ValueError` from ``loads``, as any
undecodable payload does: the channel counts it as undecodable and skips
it. Nothing of a key appears in ``repr``, logs or errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .serializers import Serializer, resolve_serializer

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["EncryptedSerializer", "encrypted"]


def encrypted(
    serializer: str | Serializer = "json", *, keys: Sequence[str | bytes]
) -> EncryptedSerializer:
    """A serializer that encrypts what `serializer` encodes; pass it as ``serializer=``.

    `keys` are Fernet keys (``Fernet.generate_key()``: 32 bytes, URL-safe
    base64, as ``str`` or ``bytes``), newest first. Raises `TypeError` or
    `ValueError` naming the position of a bad key (never its value),
    `ValueError` for an empty list, and `ImportError` without the
    ``cryptography`` package.
    """
    return EncryptedSerializer(serializer, keys)


class EncryptedSerializer:
    """Fernet around another serializer; see `encrypted`."""

    __slots__ = ("_codec", "_decrypt", "_encrypt", "_invalid", "_key_count", "name")

    def __init__(self, serializer: str | Serializer, keys: Sequence[str | bytes]) -> None:
        fernet = _multi_fernet(keys)  # first: it says what to install if cryptography is missing
        from cryptography.fernet import InvalidToken

        self._codec = resolve_serializer(serializer)
        self._encrypt = fernet.encrypt
        self._decrypt = fernet.decrypt
        self._invalid = InvalidToken
        self._key_count = len(keys)
        self.name = f"encrypted {self._codec.name}"

    def dumps(self, message: Any) -> bytes:
        return self._encrypt(self._codec.dumps(message))

    def loads(self, payload: bytes) -> Any:
        """Decrypt, then decode; `ValueError` if `payload` fails authentication."""
        try:
            plaintext = self._decrypt(payload)
        except self._invalid:
            raise ValueError(
                f"the payload failed authentication ({len(payload):,} bytes): tampered "
                "with, not encrypted, or encrypted with a key this channel does not have"
            ) from None
        return self._codec.loads(plaintext)

    def __repr__(self) -> str:
        keys = "key" if self._key_count == 1 else "keys"
        return f"<{self.name}, {self._key_count} {keys}>"


def _multi_fernet(keys: Sequence[str | bytes]) -> MultiFernet:
    """Check `keys` one by one; errors name a key by its position only."""
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:
        raise ImportError(
            "encrypted payloads need the cryptography package: pip install channels-core[crypto]"
        ) from exc
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
        raise TypeError(
            f"keys must be a list of Fernet keys, newest first, got {type(keys).__name__}; "
            "wrap a single key in a list: keys=[key]"
        )
    if not keys:
        raise ValueError(
            "keys is empty: give at least one Fernet key (Fernet.generate_key()); "
            "the first encrypts, every one decrypts"
        )
    fernets = []
    for position, key in enumerate(keys):
        if not isinstance(key, str | bytes):
            raise TypeError(
                f"keys[{position}] must be a Fernet key as str or bytes, got {type(key).__name__}"
            )
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise ValueError(
                f"keys[{position}] is not a Fernet key (32 bytes, URL-safe base64, "
                "44 characters); generate one with Fernet.generate_key()"
            ) from None
    return MultiFernet(fernets)
