"""The client setup every contender of a run shares: redis-py's parser and the event loop.

* **hiredis**: redis-py picks its reply parser once, at import, from
  whether ``hiredis`` (>= 3.2) imports (`redis.utils.HIREDIS_AVAILABLE`),
  and every asyncio connection takes it as the default of its keyword-only
  ``parser_class`` argument. Setting that default switches every
  connection opened afterwards, whoever opens it (raw redis-py, broadcaster,
  channels_redis, our layer): hiredis's C parser (`_AsyncHiredisParser`) or
  redis-py's pure-Python one (`_AsyncRESP3Parser`, which redis-py swaps for
  its RESP2 parser on a RESP2 connection).
* **uvloop**: anyio's ``backend_options={"use_uvloop": True}`` runs the
  whole run on uvloop's event loop instead of asyncio's.

asyncpg has no such switch (its protocol is always compiled), so on
PostgreSQL only uvloop changes anything.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser
from redis.asyncio.connection import AbstractConnection, Connection
from redis.utils import HIREDIS_AVAILABLE

__all__ = ["ClientSetup", "apply", "client_setups"]

CHOICES = ("off", "on", "both")


@dataclass(frozen=True, slots=True)
class ClientSetup:
    hiredis: bool
    uvloop: bool

    @property
    def label(self) -> str:
        return f"hiredis {'on' if self.hiredis else 'off'}, uvloop {'on' if self.uvloop else 'off'}"

    @property
    def backend_options(self) -> dict[str, Any]:
        return {"use_uvloop": True} if self.uvloop else {}


def _values(choice: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[choice]


def client_setups(hiredis: str, uvloop: str) -> list[ClientSetup]:
    """The setups to run, in order; raises SystemExit if one cannot be had here."""
    if hiredis != "off" and not HIREDIS_AVAILABLE:
        raise SystemExit("--hiredis on needs hiredis >= 3.2 installed (the bench env has it)")
    if uvloop != "off" and importlib.util.find_spec("uvloop") is None:
        raise SystemExit("--uvloop on needs uvloop installed (the bench env has it)")
    return [ClientSetup(h, u) for h in _values(hiredis) for u in _values(uvloop)]


def apply(setup: ClientSetup) -> str:
    """Make every redis-py asyncio connection opened from now on use `setup`'s parser.

    Returns the name of the parser class a new connection gets, checked on a
    real (unconnected) `Connection`.
    """
    parser = _AsyncHiredisParser if setup.hiredis else _AsyncRESP3Parser
    # The constructor is wrapped by a deprecation decorator: the defaults live on the original.
    defaults = inspect.unwrap(AbstractConnection.__init__).__kwdefaults__
    if not defaults or "parser_class" not in defaults:
        raise RuntimeError("redis-py's connections no longer take a parser_class default")
    defaults["parser_class"] = parser
    used = type(Connection()._parser).__name__
    if (used == _AsyncHiredisParser.__name__) != setup.hiredis:
        raise RuntimeError(f"redis-py connections use {used}, not what {setup.label} asks")
    return used
