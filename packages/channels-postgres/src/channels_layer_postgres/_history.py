"""History in PostgreSQL: a counter row per group, and a log table; what a read proves.

Each group has a row in ``<namespace>_history_heads``: its epoch (random,
chosen when the row is created) and ``n``, the number of its newest event.
A publish increments ``n`` (``INSERT ... ON CONFLICT DO UPDATE``) and logs
the event under that number in ``<namespace>_history``, in the statement
that sends the NOTIFY. The row lock taken by the increment is held until
the transaction commits, so the numbers of one group are dense (a rolled
back publish rolls its number back too) and in commit order, which is also
the order its notifications arrive in. A plain sequence would not do: two
transactions may commit in the other order than they drew their numbers.

Density is what makes a read provable: after position ``e-k`` the log must
hold exactly ``k+1, k+2, ...`` of epoch ``e``; a missing number is an event
trimmed away, and another epoch is a log that was reset (a truncated or
recreated table, or a crash: the tables are unlogged). Groups are keyed by
the SHA-256 of their name, so a name of any length or content fits.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Sequence
from typing import Any

from channels_core.exceptions import LossReason
from channels_core.history import HistoryRead, Position, format_position
from channels_core.layer import Inbox

__all__ = ["EPOCH_CHARS", "UnloggedWatch", "group_key", "new_epoch", "read_result"]

#: Hex digits of an epoch (48 random bits).
EPOCH_CHARS = 12


def group_key(group: str) -> bytes:
    """The key of `group` in the history tables: the SHA-256 of its UTF-8 name.

    In SQL: ``sha256(convert_to('chatroom', 'UTF8'))``.
    """
    return hashlib.sha256(group.encode("utf-8", "surrogatepass")).digest()


def new_epoch() -> str:
    """A fresh epoch, stored with a group's counter row when the row is created."""
    return secrets.token_hex(EPOCH_CHARS // 2)


def read_result(
    rows: Sequence[Any], since: Position | None, limit: int | None, fetched_limit: int | None
) -> HistoryRead:
    """The `HistoryRead` of one read statement's `rows` (see `_sql.Statements.read_after`).

    `rows` hold ``epoch`` and ``head`` (the group's counter row) and ``n``,
    ``body`` (a log row, NULL when none matched), ascending by ``n``; at
    least one row. `fetched_limit` is the LIMIT the statement used.

    A read after `since` is complete only when it proves that nothing after
    `since` is missing: the same epoch, `since` not ahead of the head, and
    the events found are exactly the next numbers, up to the head or to the
    limit. Anything else (a trimmed number, another epoch, a hole whatever
    caused it) reads as incomplete: never a claim of completeness that is
    not true.
    """
    epoch, head = rows[0]["epoch"], rows[0]["head"]
    found = [(row["n"], bytes(row["body"])) for row in rows if row["n"] is not None]
    events = [(format_position(epoch, n), body) for n, body in found[:limit]]
    if since is None:
        return HistoryRead(events, True, format_position(epoch, head))
    mine = since.epoch == epoch and len(since.offset) == 1 and since.offset[0] <= head
    start = since.offset[0] if mine else 0
    dense = all(n == start + 1 + index for index, (n, _) in enumerate(found))
    if not found:
        reaches_head = start == head
    else:
        reaches_head = len(found) == fetched_limit or found[-1][0] == head
    return HistoryRead(events, mine and dense and reaches_head, format_position(epoch, head))


class UnloggedWatch:
    """The channel's inbox, noting the groups a message reached without a position.

    Such a message comes from a publisher with history off (or another
    client): the log misses it, so no read of that group's log after a
    position can prove itself complete while the layer listens to the group.
    """

    __slots__ = ("_inbox", "unlogged")

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        #: Groups that received a message without a position since subscribed.
        self.unlogged: set[str] = set()

    def deliver(
        self, group: str, payload: bytes, pattern: str | None = None, position: str | None = None
    ) -> bool:
        if position is None and pattern is None:
            self.unlogged.add(group)
        return self._inbox.deliver(group, payload, pattern, position)

    def messages_lost(
        self,
        reason: LossReason = "reconnect",
        count: int | None = None,
        groups: Collection[str] | None = None,
    ) -> None:
        self._inbox.messages_lost(reason, count, groups)

    def encode(self, group: str, message: Any) -> bytes:
        return self._inbox.encode(group, message)
