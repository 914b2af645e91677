"""Helpers shared by the reliability tests (imported as ``tests.reliability.support``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from channels_core import MessagesLost, Subscriber

# -- recording what subscribers receive ------------------------------------------

GAP = "gap"


@dataclass
class Recorder:
    """Reads one subscriber until cancelled, recording events and gaps in order.

    Events are recorded as ``(group, message)``; a `MessagesLost` as
    ``("gap", reason, count)``.
    """

    name: str
    subscriber: Subscriber
    items: list[tuple[Any, ...]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        while True:
            try:
                event = await self.subscriber.receive()
            except MessagesLost as lost:
                self.items.append((GAP, lost.reason, lost.count))
            else:
                self.items.append((event.group, event.message))
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[list[tuple[Any, ...]]], bool]) -> None:
        """Return once `predicate(items)` holds (checked on every new item)."""
        while not predicate(self.items):
            await self._changed.wait()

    def gaps(self, reason: str | None = None) -> list[tuple[Any, ...]]:
        return [item for item in self.items if item[0] == GAP and reason in (None, item[1])]

    def messages(self) -> list[tuple[str, Any]]:
        return [(item[0], item[1]) for item in self.items if item[0] != GAP]


# -- pausing a PostgreSQL server ---------------------------------------------------


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def postgres_processes(backend_pid: int) -> list[int]:
    """The postmaster of `backend_pid` first, then every process it has forked."""
    postmaster = _parent_pid(backend_pid)
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _parent_pid(int(entry.name)) == postmaster:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return [postmaster, *children]


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


# -- memory -------------------------------------------------------------------------


def rss_bytes() -> int:
    """The resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
