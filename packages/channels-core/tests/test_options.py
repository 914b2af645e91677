"""The shared option builder: one set of checks, TypeError vs ValueError, naming the option."""

from __future__ import annotations

import dataclasses
import math
import ssl
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from channels_core import Backoff, LayerOptions, options


@dataclass(frozen=True, slots=True)
class DemoOptions(LayerOptions):
    renamed: ClassVar[dict[str, str]] = {"pool_size": "max_connections", "namespace": "prefix"}

    prefix: str = options.text("")
    connect_timeout: float = options.seconds(5.0)
    linger: float = options.seconds(0.0, allow_zero=True)
    pool_timeout: float | None = options.seconds(None, allow_none=True)
    max_connections: int = options.count(10)
    retries: int = options.count(3, minimum=0)
    verbose: bool = options.flag(False)
    sslmode: str = options.choice("prefer", "disable", "prefer", "require")
    reconnect_backoff: Backoff = options.instance(Backoff, default_factory=Backoff)
    ssl: ssl.SSLContext | str | None = options.instance(
        (ssl.SSLContext, str), default=None, allow_none=True
    )


def test_defaults_and_keywords() -> None:
    built = DemoOptions.from_options({"connect_timeout": 2, "verbose": True})
    assert built.connect_timeout == 2.0
    assert isinstance(built.connect_timeout, float)
    assert built.verbose is True
    assert built.max_connections == 10
    assert built.reconnect_backoff == Backoff()
    assert built.ssl is None
    assert DemoOptions.from_options({"ssl": "require"}).ssl == "require"
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.prefix = "x"  # type: ignore[misc]


def test_url_query_text_is_converted_and_keywords_win() -> None:
    built = DemoOptions.from_options(
        {"max_connections": 4},
        query="connect_timeout=2.5&max_connections=7&verbose=YES&linger=0&pool_timeout=none"
        "&prefix=app:&sslmode=require&retries=0",
    )
    assert built == DemoOptions(
        prefix="app:",
        connect_timeout=2.5,
        linger=0.0,
        pool_timeout=None,
        max_connections=4,
        retries=0,
        verbose=True,
        sslmode="require",
    )
    assert DemoOptions.from_options(query=[("verbose", "off")]).verbose is False


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"connect_timeout": "5"}, TypeError, "connect_timeout must be a number of seconds"),
        ({"connect_timeout": True}, TypeError, "connect_timeout"),
        ({"connect_timeout": 0}, ValueError, r"connect_timeout must be .* > 0, got 0"),
        ({"connect_timeout": -1.0}, ValueError, "connect_timeout"),
        ({"connect_timeout": math.inf}, ValueError, "connect_timeout"),
        ({"connect_timeout": math.nan}, ValueError, "connect_timeout"),
        ({"linger": -0.1}, ValueError, r"linger must be .* >= 0"),
        ({"pool_timeout": "none"}, TypeError, "pool_timeout"),
        ({"max_connections": 2.0}, TypeError, "max_connections must be an int"),
        ({"max_connections": False}, TypeError, "max_connections"),
        ({"max_connections": 0}, ValueError, "max_connections must be an int >= 1, got 0"),
        ({"retries": -1}, ValueError, "retries must be an int >= 0"),
        ({"verbose": 1}, TypeError, "verbose must be a bool"),
        ({"verbose": "yes"}, TypeError, "verbose must be a bool"),
        ({"prefix": b"app"}, TypeError, "prefix must be a str"),
        ({"sslmode": "maybe"}, ValueError, "sslmode must be one of disable, prefer, require"),
        ({"reconnect_backoff": 1.0}, TypeError, "reconnect_backoff must be a Backoff"),
        ({"ssl": True}, TypeError, "ssl must be a SSLContext or str, got bool"),
        ({"no_such": 1, "other": 2}, TypeError, "unknown option.*: no_such, other; valid"),
    ],
)
def test_bad_keywords(given: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        DemoOptions.from_options(given)


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ("connect_timeout=soon", ValueError, "number of seconds, got 'soon' in the URL"),
        ("connect_timeout=-1", ValueError, "connect_timeout"),
        ("max_connections=1.5", ValueError, "max_connections must be an int, got '1.5'"),
        ("max_connections=0", ValueError, "max_connections must be an int >= 1"),
        ("verbose=maybe", ValueError, "verbose must be a flag"),
        ("reconnect_backoff=fast", ValueError, "reconnect_backoff cannot be given in a URL"),
        ("colour=blue", TypeError, "unknown option.*colour"),
    ],
)  # fmt: skip
def test_bad_url_values_are_value_errors(query: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        DemoOptions.from_options(query=query)


def test_old_names_keep_working_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="pool_size is deprecated: use max_connections"):
        built = DemoOptions.from_options({"pool_size": 3})
    assert built.max_connections == 3
    with pytest.warns(DeprecationWarning, match="namespace is deprecated: use prefix"):
        assert DemoOptions.from_options(query="namespace=app").prefix == "app"
    with pytest.raises(TypeError, match="give only max_connections"):
        DemoOptions.from_options({"pool_size": 3, "max_connections": 4})
    assert "pool_size" in DemoOptions.names()
    assert "connect_timeout" in DemoOptions.names()


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        DemoOptions(max_connections=0)


def test_the_checks_alone_for_values_outside_an_options_class() -> None:
    assert options.check_seconds("timeout", 2) == 2.0
    assert options.check_seconds("linger", 0, allow_zero=True) == 0.0
    assert options.check_count("max_connections", 3) == 3
    assert options.check_flag("verbose", False) is False
    assert options.check_text("prefix", "") == ""
    with pytest.raises(ValueError, match="max_connections must be an int >= 1, got 0"):
        options.check_count("max_connections", 0)
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        options.check_seconds("timeout", None)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        options.check_text("name", "", allow_empty=False)


@dataclass(frozen=True, slots=True)
class LimitOptions(LayerOptions):
    max_payload_bytes: int | None = options.count(None, allow_none=True)


def test_a_count_that_may_be_unset() -> None:
    assert LimitOptions().max_payload_bytes is None
    assert LimitOptions.from_options(query="max_payload_bytes=100").max_payload_bytes == 100
    assert LimitOptions.from_options(query="max_payload_bytes=none").max_payload_bytes is None
    with pytest.raises(TypeError, match="max_payload_bytes must be an int"):
        LimitOptions(max_payload_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_payload_bytes must be an int >= 1"):
        LimitOptions(max_payload_bytes=0)
