"""History on Redis: a bounded stream per group, written in the same script as the live PUBLISH.

Each group with history has two keys (`WireNames.history_keys`, in the
channel's hash slot): a stream, the log, and a hash, its meta: ``e`` the
epoch (random, made when the meta is missing), ``n`` the events ever logged
in this epoch and ``t`` the milliseconds of the newest one. A publish runs
`APPEND` (EVALSHA): it adds the event under the stream ID ``<ms>-<n>``
(server time, never going back; ``n`` counts from 1), trims the stream to
`history_size` (MAXLEN) and `history_ttl` (MINID), and PUBLISHes the live
message with its position ``<epoch>-<ms>-<n>`` inside the envelope, all
atomically: subscribers see a group's events in log order, and the log has
every event they saw. A batch (`publish_many`, coalesced publishes) is one
run of the script for all its messages, in order: one round trip.

Completeness is provable because ``n`` has no holes: after a position
``(ms, n)`` of this epoch, nothing was missed iff the next event in the
stream is ``n + 1`` and the position itself is still there (or older than
everything retained), or the position is the head. A Redis that lost its
data (restart without persistence, FLUSHALL) has no meta, so a new epoch:
positions of the old one never match. A promoted replica that missed the
last writes has a head behind positions subscribers saw, or a different
event where theirs was: both read as incomplete.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from channels_core.history import HistoryRead, format_position, parse_position

from ._options import RedisLayerOptions
from ._wire import WireNames

__all__ = ["APPEND", "META_TTL_FLOOR", "READ", "Execute", "LogBatch", "StreamLog"]

#: Runs one command and returns its reply: a redis-py client's ``execute_command``
#: (the cluster client routes a script by its keys), or the layer's own
#: publishing connections (`PublishingConnections.execute`, with its deadline).
Execute = Callable[..., Awaitable[Any]]

#: Seconds the meta of a group with `history_ttl` outlives its last publish
#: or read, at least: a meta that expires starts a new epoch, so subscribers
#: of a group quiet for longer get ``MessagesLost`` after a reconnect.
META_TTL_FLOOR = 86_400.0

# The meta of a log: epoch, newest ms, count; made (and the stale stream dropped) when missing.
_META = """
local function open_meta(log, meta, new_epoch)
  local state = redis.call('HMGET', meta, 'e', 't', 'n')
  if not state[1] then
    redis.call('DEL', log)
    redis.call('HSET', meta, 'e', new_epoch, 't', '0', 'n', '0')
    return new_epoch, '0', '0'
  end
  return state[1], state[2], state[3]
end
local ttl = tonumber(ARGV[2])
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
"""

#: KEYS: log and meta of each message, in publish order. ARGV: new epoch, ttl
#: ms (0: none), meta ttl ms, size, publish command, "1" on a retry, then
#: channel, envelope header and payload of each message. A header's bytes
#: 6-21 (`_envelope`: publisher id and sequence) identify its publish.
#: Returns the number of messages logged (a retry skips those logged before).
APPEND = (
    _META
    + """
local now = now_ms()
local retry = ARGV[6] == '1'
local seen = {}  -- on a retry: per log, the publish ids it holds
local logged = 0
for item = 1, #KEYS / 2 do
  local log, meta = KEYS[2 * item - 1], KEYS[2 * item]
  local base = 3 * item + 4
  local channel, header, payload = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local publish_id = string.sub(header, 6, 21)
  local skip = false
  if retry then
    -- The first try may have run; if it did, its events are in the logs.
    local ids = seen[log]
    if not ids then
      ids = {}
      for _, entry in ipairs(redis.call('XREVRANGE', log, '+', '-', 'COUNT', ARGV[4])) do
        ids[entry[2][2]] = true
      end
      seen[log] = ids
    end
    skip = ids[publish_id]
  end
  if not skip then
    local epoch, last, count = open_meta(log, meta, ARGV[1])
    local ms = math.max(now, tonumber(last))
    count = tonumber(count) + 1
    local id = string.format('%d-%d', ms, count)
    redis.call('XADD', log, 'MAXLEN', ARGV[4], id, 'p', publish_id, 'd', payload)
    redis.call('HSET', meta, 't', string.format('%d', ms), 'n', string.format('%d', count))
    if ttl > 0 then
      redis.call('XTRIM', log, 'MINID', string.format('%d', ms - ttl))
      redis.call('PEXPIRE', log, ttl)
      redis.call('PEXPIRE', meta, ARGV[3])
    end
    local position = epoch .. '-' .. id
    redis.call(ARGV[5], channel, header .. string.char(#position) .. position .. payload)
    logged = logged + 1
  end
end
return logged
"""
)

#: KEYS: log, meta. ARGV: new epoch, ttl ms, meta ttl ms, limit ('' for all),
#: then either 'newest', or 'after' and the position's epoch, ID and n.
#: Returns {epoch, t, n, complete, id1, payload1, id2, payload2, ...}, oldest first.
READ = (
    _META
    + """
local epoch, last, count = open_meta(KEYS[1], KEYS[2], ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', now_ms() - ttl))
end
local result = {epoch, last, count, 1}
local limit = ARGV[4]
local entries
if ARGV[5] == 'newest' then
  if limit == '0' then return result end
  if limit == '' then
    entries = redis.call('XRANGE', KEYS[1], '-', '+')
  else
    entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
    local oldest_first = {}
    for index = #entries, 1, -1 do oldest_first[#oldest_first + 1] = entries[index] end
    entries = oldest_first
  end
else
  local start = '-'
  result[4] = 0
  if ARGV[6] == epoch then
    local id, n = ARGV[7], tonumber(ARGV[8])
    start = '(' .. id
    if id == last .. '-' .. count then
      result[4] = 1
    elseif n < tonumber(count) then
      local following = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1)[1]
      if following and tonumber(string.match(following[1], '%-(%d+)$')) == n + 1 then
        local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
        if oldest[1] == following[1] or redis.call('XRANGE', KEYS[1], id, id)[1] then
          result[4] = 1
        end
      end
    end
  end
  if limit == '' then
    entries = redis.call('XRANGE', KEYS[1], start, '+')
  else
    entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', limit)
  end
end
for _, entry in ipairs(entries) do
  result[#result + 1] = entry[1]
  result[#result + 1] = entry[2][4]
end
return result
"""
)


class _Script:
    """A Lua script run with EVALSHA, sent whole (EVAL) whenever the server forgot it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, execute: Execute, keys: Sequence[bytes], *args: Any) -> Any:
        try:
            return await execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a new server (restart, failover), or SCRIPT FLUSH
            # EVAL goes where EVALSHA went (the keys' node) and caches the
            # script there. Not SCRIPT LOAD: on a cluster, redis-py sends it to
            # the masters it knows, which may not yet include a promoted replica.
            return await execute("EVAL", self.text, len(keys), *keys, *args)


#: Stream ID parts are 64-bit; a position beyond is no stream's (and n stays exact in Lua).
_MAX_ID_PART = 2**53

_APPEND = _Script(APPEND)
_READ = _Script(READ)


@dataclass(frozen=True, slots=True)
class LogBatch:
    """The keys and per-message arguments of one `APPEND` call (see `StreamLog.batch`)."""

    #: Log and meta of each message.
    keys: list[bytes]
    #: Channel, header and payload of each message.
    arguments: list[bytes]


class StreamLog:
    """One layer's history: appends with the live publish, reads for the channel."""

    def __init__(self, options: RedisLayerOptions, wire: WireNames, publish_command: str) -> None:
        self._wire = wire
        #: The command that publishes live: PUBLISH, or SPUBLISH on a cluster.
        self.publish_command = publish_command
        self._size = options.history_size
        ttl = options.history_ttl
        self._ttl_ms = 0 if ttl is None else max(1, math.ceil(ttl * 1000))
        self._meta_ttl_ms = 0 if ttl is None else math.ceil(max(ttl, META_TTL_FLOOR) * 1000)
        #: Groups a message arrived on without a position (a publisher with
        #: history off, another client): their log misses messages, so no
        #: read after a position is complete while the layer listens to them.
        self.unlogged: set[str] = set()

    def _common(self) -> tuple[str, int, int]:
        """The first ARGVs of both scripts: an epoch for a new log, the TTLs."""
        return secrets.token_hex(6), self._ttl_ms, self._meta_ttl_ms

    def batch(self, messages: Sequence[tuple[str, bytes, bytes]]) -> LogBatch:
        """`messages` (group, envelope header from `Outbox.seal_logged`, payload) ready to append.

        Made once per publish: every try sends the same keys and arguments.
        """
        keys: list[bytes] = []
        arguments: list[bytes] = []
        for group, header, payload in messages:
            keys += self._wire.history_keys(group)
            arguments += (self._wire.channel(group), header, payload)
        return LogBatch(keys, arguments)

    async def append(self, execute: Execute, batch: LogBatch, *, retry: bool) -> None:
        """Log every message of `batch` and publish each live with its position, in order.

        One script, so one round trip and one atomic step whatever the batch
        holds (on one server: a cluster sends batches of one). A `retry` of a
        batch whose first try may have run checks the logs for each message
        first (by its publish id), so a retried message is logged and
        delivered once.
        """
        await _APPEND(
            execute,
            batch.keys,
            *self._common(),
            self._size,
            self.publish_command,
            b"1" if retry else b"0",
            *batch.arguments,
        )

    async def read(
        self, execute: Execute, group: str, after: str | None, limit: int | None
    ) -> HistoryRead:
        """`group`'s log as `ChannelLayer.read_history` describes it, in one atomic script."""
        wanted = "" if limit is None else str(limit)
        if after is None:
            where: tuple[str, ...] = ("newest",)
        else:
            since = parse_position(after, "after")
            if len(since.offset) == 2 and max(since.offset) < _MAX_ID_PART:
                ms, n = since.offset
                where = ("after", since.epoch, f"{ms}-{n}", str(n))
            else:  # not a position of a Redis stream: another log
                where = ("after", "", "", "0")
        keys = self._wire.history_keys(group)
        reply = await _READ(execute, keys, *self._common(), wanted, *where)
        epoch, last, count, complete = (_text(value) for value in reply[:4])
        prefix = epoch + "-"
        events = [
            (prefix + _text(reply[index]), _bytes(reply[index + 1]))
            for index in range(4, len(reply), 2)
        ]
        complete_read = complete == "1" and group not in self.unlogged
        return HistoryRead(events, complete_read, format_position(epoch, int(last), int(count)))


def _text(value: bytes | str | int) -> str:
    """A script's reply value as text (redis-py may decode replies, or Lua an int)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _bytes(value: bytes | str) -> bytes:
    """A payload from a script's reply (encoded again if the client decodes replies)."""
    return value if isinstance(value, bytes) else value.encode()
