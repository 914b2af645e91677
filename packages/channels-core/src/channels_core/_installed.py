"""A cheap token that changes when the set of installed distributions may have.

`importlib.metadata` finds distributions by scanning every `sys.path`
entry (through the finders on `sys.meta_path`), and itself caches a
directory's listing by the directory's modification time. A token made of
the same things, `sys.path`, each entry's identity and modification time,
and the finders, lets a cache of what the distributions say (their entry
points) stay valid until one of those changes: installing or removing a
distribution adds or removes a ``*.dist-info`` folder in an entry, which
changes that entry's modification time. A few `os.stat` calls cost
microseconds; reading the metadata again costs milliseconds.

A modification time is coarse (a clock tick, or a second or two on some
file systems), so an entry changed again within that time of the last
change may keep its time: as git does with its index, a state with an entry
modified less than `SETTLE_NS` before it was taken is not `settled`, and a
cache must not be reused under it. A distribution's metadata edited in
place (not reinstalled) changes no entry, and is seen once one changes.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

__all__ = ["SETTLE_NS", "InstallationState", "installation_state"]

#: How long (ns) after an entry's last change its modification time is trusted
#: to change again: FAT's 2 s, above any clock tick or one-second file system.
SETTLE_NS = 2_000_000_000

_EntryState = tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class InstallationState:
    """What decides which distributions `importlib.metadata` finds, at one moment.

    Two states are equal if nothing they record changed; `settled` is
    False if an entry changed too recently for its next change to be seen.
    """

    path: tuple[str, ...]
    entries: tuple[_EntryState, ...]
    finders: tuple[object, ...]
    settled: bool = field(compare=False)


def installation_state() -> InstallationState:
    """The state now: `sys.path`, each entry's device, inode and mtime, `sys.meta_path`."""
    path = tuple(sys.path)
    entries = tuple(_entry_state(entry) for entry in path)
    recent = time.time_ns() - SETTLE_NS
    settled = all(entry is None or entry[2] < recent for entry in entries)
    return InstallationState(path, entries, tuple(sys.meta_path), settled)


def _entry_state(entry: str) -> _EntryState:
    """The device, inode and modification time of a `sys.path` entry (None if absent).

    ``""`` is the current directory, so its device and inode follow a ``chdir``.
    """
    try:
        stat = os.stat(entry or ".")
    except (OSError, TypeError, ValueError):
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns
