"""Validation of group names and patterns, shared by publish and subscribe."""

from __future__ import annotations

from collections.abc import Iterable


def check_name(name: object, kind: str) -> str:
    """Return `name` if it is a usable group name or pattern, else raise a clear error."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a str, got {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError(f"{kind} must be a non-empty string")
    if not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"{kind} {name!r} is not valid Unicode text (it holds a lone surrogate)"
            ) from None
    return name


def check_names(names: Iterable[object], kind: str) -> tuple[str, ...]:
    """Validate every name; drop repeats, keeping the first occurrence's order."""
    return tuple(dict.fromkeys(check_name(name, kind) for name in names))
