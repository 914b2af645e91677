"""Layer options: one builder and one set of checks for every layer.

A layer declares its options as a frozen dataclass deriving from
`LayerOptions`, each field made by one of the field functions here
(`seconds`, `count`, `flag`, `text`, `choice`, `instance`)::

    from channels_core import LayerOptions, options

    @dataclass(frozen=True, slots=True)
    class NatsLayerOptions(LayerOptions):
        prefix: str = options.text("")
        connect_timeout: float = options.seconds(5.0)
        max_connections: int = options.count(10)
        verbose: bool = options.flag(False)

    settings = NatsLayerOptions.from_options(keywords, query=urlsplit(url).query)

Every value is checked the same way in every layer: a value of the wrong
type raises `TypeError`, a value out of range `ValueError`, and both name
the option. Values from a URL query are text and are converted first
(``"2.5"`` seconds, ``"10"`` connections, ``"true"``/``"0"`` flags); text
that does not convert is a `ValueError`. Keyword arguments win over the
query. The ``check_*`` functions are the same checks, for values a layer
validates outside its options class.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar, cast
from urllib.parse import parse_qsl

__all__ = [
    "LayerOptions",
    "check_count",
    "check_flag",
    "check_seconds",
    "check_text",
    "choice",
    "count",
    "flag",
    "instance",
    "seconds",
    "text",
]

T = TypeVar("T")

_KIND = "channels_core.option"

_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


# -- checks -----------------------------------------------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite number of seconds, > 0 (>= 0 with `allow_zero`)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds (int or float), got {_type_name(value)}: {value!r}"
        )
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """An int >= `minimum` (a count, a size)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_type_name(value)}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_flag(name: str, value: object) -> bool:
    """A bool (``True``/``False``; text such as ``"yes"`` only through a URL query)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_type_name(value)}: {value!r}")
    return value


def check_text(name: str, value: object, *, allow_empty: bool = True) -> str:
    """A str (non-empty unless `allow_empty`)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {_type_name(value)}: {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must be a non-empty str")
    return value


# -- converting URL text ------------------------------------------------------------


def _parse_number(name: str, raw: str, kind: Callable[[str], T], what: str) -> T:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r} in the URL") from None


def _parse_flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(
        f"{name} must be a flag (true/false, yes/no, on/off, 1/0), got {raw!r} in the URL"
    )


def _not_in_urls(name: str, raw: str) -> Any:
    raise ValueError(f"{name} cannot be given in a URL; pass it as a keyword argument")


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one option is checked, and converted from URL text."""

    check: Callable[[str, object], object]
    parse: Callable[[str, str], object]


def _option(kind: _Kind, default: object = MISSING, factory: Any = MISSING) -> Any:
    return field(default=default, default_factory=factory, metadata={_KIND: kind})


# -- field functions ----------------------------------------------------------------


def seconds(default: float | None, *, allow_zero: bool = False, allow_none: bool = False) -> Any:
    """A duration option in seconds (see `check_seconds`); None too with `allow_none`."""
    return _option(
        _Kind(
            lambda name, value: (
                None
                if value is None and allow_none
                else check_seconds(name, value, allow_zero=allow_zero)
            ),
            lambda name, raw: (
                None
                if allow_none and raw.strip().lower() == "none"
                else _parse_number(name, raw, float, "a number of seconds")
            ),
        ),
        default,
    )


def count(default: int | None, *, minimum: int = 1, allow_none: bool = False) -> Any:
    """A count or size option, an int >= `minimum`; None too with `allow_none`."""
    return _option(
        _Kind(
            lambda name, value: (
                None if value is None and allow_none else check_count(name, value, minimum=minimum)
            ),
            lambda name, raw: (
                None
                if allow_none and raw.strip().lower() == "none"
                else _parse_number(name, raw, int, "an int")
            ),
        ),
        default,
    )


def flag(default: bool) -> Any:
    """A boolean option; in a URL: true/false, yes/no, on/off, 1/0 (any case)."""
    return _option(_Kind(check_flag, _parse_flag), default)


def text(default: str, *, allow_empty: bool = True) -> Any:
    """A text option (a prefix, a name)."""
    return _option(
        _Kind(
            lambda name, value: check_text(name, value, allow_empty=allow_empty),
            lambda name, raw: raw,
        ),
        default,
    )


def choice(default: str, *choices: str) -> Any:
    """One of a few words (e.g. ``choice("prefer", "disable", "prefer", "require")``)."""
    allowed = tuple(dict.fromkeys(choices or (default,)))

    def check(name: str, value: object) -> str:
        word = check_text(name, value)
        if word not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {word!r}")
        return word

    return _option(_Kind(check, lambda name, raw: raw), default)


def instance(
    cls: type[T] | tuple[type, ...],
    *,
    default: object = MISSING,
    default_factory: Callable[[], object] | Any = MISSING,
    allow_none: bool = False,
) -> Any:
    """An option holding an object of `cls` (a `Backoff`, an SSL context); not settable from a URL.

    With `allow_none`, None is accepted too (for "not set").
    """
    names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))

    def check(name: str, value: object) -> object:
        if value is None and allow_none:
            return None
        if not isinstance(value, cls):
            raise TypeError(f"{name} must be a {names}, got {_type_name(value)}: {value!r}")
        return value

    return _option(_Kind(check, _not_in_urls), default, default_factory)


# -- the builder --------------------------------------------------------------------


def _caller_outside(*packages: str) -> int:
    """The `stacklevel` (for a warning raised by the caller) of the first frame outside `packages`.

    A deprecated option is reported where the application passed it, however
    deep in the layer and the core the options were built.
    """
    level, frame = 1, sys._getframe(1)  # the caller: stacklevel 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
        packages
    ):
        level, frame = level + 1, frame.f_back
    return level


class LayerOptions:
    """Base of a layer's options dataclass: checks every field, builds from keywords and URLs.

    Derive a ``@dataclass(frozen=True, slots=True)`` from it whose fields
    come from the field functions of this module. `renamed` maps option
    names a layer used to accept to their new names: the old name keeps
    working (for one release) with a `DeprecationWarning`.
    """

    __slots__ = ()

    #: Old option name -> current name (accepted with a DeprecationWarning).
    renamed: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        for option in fields(cast(Any, self)):
            kind = option.metadata.get(_KIND)
            if kind is not None:
                checked = kind.check(option.name, getattr(self, option.name))
                object.__setattr__(self, option.name, checked)

    @classmethod
    def names(cls) -> frozenset[str]:
        """Every option name this class accepts (old names in `renamed` included)."""
        return frozenset(option.name for option in fields(cast(Any, cls))) | set(cls.renamed)

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, object] | None = None,
        *,
        query: str | Iterable[tuple[str, str]] = (),
    ) -> Self:
        """Build from keyword `options` and URL `query` text (keywords win).

        Raises `TypeError` for an unknown option (naming every valid one)
        or a value of the wrong type, `ValueError` for a bad value.
        """
        pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
        kinds = {option.name: option.metadata.get(_KIND) for option in fields(cast(Any, cls))}
        values: dict[str, object] = {}
        for name, raw in pairs:
            kind = kinds.get(cls.renamed.get(name, name))
            values[name] = raw if kind is None else kind.parse(name, raw)
        values.update(options or {})
        unknown = sorted(set(values) - cls.names())
        if unknown:
            raise TypeError(
                f"unknown option(s) for {cls.__qualname__}: {', '.join(unknown)}; "
                f"valid options are {', '.join(sorted(kinds))}"
            )
        for old, new in cls.renamed.items():
            if old not in values:
                continue
            if new in values:
                raise TypeError(f"{old} is the old name of {new}: give only {new}")
            warnings.warn(
                f"the option {old} is deprecated: use {new}",
                DeprecationWarning,
                stacklevel=_caller_outside("channels_core", cls.__module__.partition(".")[0]),
            )
            values[new] = values.pop(old)
        return cls(**values)
