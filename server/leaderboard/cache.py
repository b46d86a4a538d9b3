"""Redis, the rank cache: every key name, the Lua scripts, rank/top reads, and the rebuild from Postgres.

Per board (all keys share the `{board}` hash tag, so a board lives in one Redis Cluster slot):
    lb:{b}:z      sorted set  user_id -> sort key (smaller is better; see ranking.py)
    lb:{b}:v      hash        user_id -> version of the committed row the member reflects (or of its removal:
                              a tombstone, for a user_id no longer in z)
    lb:{b}:n      hash        user_id -> display name
    lb:{b}:m      hash        user_id -> the entry's metadata (JSON text), for the entries that have some
    lb:{b}:seq    counter     the board's change counter (the `seq` of pushes); only grows. Each change sets
                              it to max(seq + 1, highest version written * 1024), so it stays below
                              (last version issued + 1) * 1024 and Postgres can vouch for a floor
                              (Store.seq_floor) when Redis is lost or unreachable.
    lb:{b}:vmax   number      the highest version stored in the board (for the integrity check in ranks.py)
    lb:{b}:season number      the season z / v / n hold: Redis holds a board's live season only. A write of a
                              newer season (or the switch that follows a reset) drops the old keys first; a
                              write of an older one is ignored
    lb:{b}:ready  flag        present only while the sorted set is complete; absent = read Postgres
    lb:{b}:verify lease       held by the process checking the board against Postgres this interval
    lb:{b}:lock   lock        held by the process rebuilding the board
    lb:{b}:z~ v~ n~ m~        the next z / v / n / m while a rebuild loads them
    lb:{b}:rate:<user>        the player's submission rate (GCRA: when its next submission is due, µs of Redis
                              TIME); expires once the player is within its burst again (limits.py)
    lb:{b}:ev     channel     change events: {"s": seq, "t": commit time, "c": [[user, old_key, new_key], ...]},
                              {"s": seq, "reset": true} after a rebuild, {"s": seq, "season": n, "ended": n - 1}
Global: lb:boards (channel) announces created boards; nothing else lives outside a board's slot.

Redis Cluster (redisconn.py): the same scripts and calls, routed by the board's slot. Events go out with
SPUBLISH (sharded pub/sub: only the board's shard carries them) instead of PUBLISH, and lb:boards too (its
own slot: board creation is rare). `identities()` and `shard()` tell the read model which boards a restarted
or failed-over primary serves.

The cache holds only absolute committed values with their version: a write with an older version than the
stored one is ignored, so a delayed or retried write can never overwrite a newer one, and the whole board can
be rebuilt from Postgres at any time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from . import observability as obs
from .pipe import Pipe
from .ranking import Member, Players, Position, Standing, TopSlice
from .redisconn import Client, owner
from .store import Page, Written

log = logging.getLogger(__name__)

BOARDS_CHANNEL = "lb:boards"  # a board was created (or changed): processes forget what they cached about it


class Keys:
    """Key names of one board."""

    __slots__ = (
        "ev", "lock", "m", "m_new", "n", "n_new", "ready", "season", "seq", "v", "v_new", "verify", "vmax", "z",
        "z_new",
    )  # fmt: skip

    @staticmethod
    def rate(board: str, user: str) -> str:
        """The key of a player's submission rate on the board (in the board's slot)."""
        return f"lb:{{{board}}}:rate:{user}"

    def __init__(self, board: str) -> None:
        p = f"lb:{{{board}}}:"
        self.z, self.v, self.n, self.seq, self.vmax = p + "z", p + "v", p + "n", p + "seq", p + "vmax"
        self.season = p + "season"
        self.ready, self.lock, self.ev, self.verify = p + "ready", p + "lock", p + "ev", p + "verify"
        self.z_new, self.v_new, self.n_new = p + "z~", p + "v~", p + "n~"  # built by a rebuild, then swapped in
        self.m, self.m_new = p + "m", p + "m~"


def board_of_channel(channel: str) -> str:
    return channel[channel.index("{") + 1 : channel.rindex("}")]


def channel_of(board: str) -> str:
    """The channel of the board's change events (the inverse of board_of_channel)."""
    return Keys(board).ev


# Moving a board's keys to a newer season (keys z v n seq season vmax m, channel, season, seq floor): the ended
# season's standings leave Redis (UNLINK: freed in the background), seq moves on, and the change goes out as a
# season event. Shared by _WRITE (the first write of a new season) and _SWITCH (right after a reset commits).
_NEW_SEASON = """
local function new_season(z, v, n, seqk, seasonk, vmaxk, channel, s, floor, m)
  local live = tonumber(redis.call('GET', seasonk) or '0')
  if live == 0 then redis.call('SET', seasonk, s) return live end  -- a cold or pre-season board: adopt
  if s <= live then return live end
  redis.call('UNLINK', z, v, n, m)
  redis.call('DEL', vmaxk)  -- the highest version stored is of the season held
  redis.call('SET', seasonk, s)
  local seq = math.max(tonumber(redis.call('GET', seqk) or '0') + 1, floor)
  redis.call('SET', seqk, string.format('%.0f', seq))
  redis.call('PUBLISH', channel, cjson.encode({s = seq, season = s, ended = live}))
  return live
end
"""

# KEYS z v n seq ready vmax season m; ARGV channel, commit_time, season, count, count * (member, key, version,
# name, metadata), rank-only members. A write of an ended season is ignored (its ranks then come from Postgres). A key
# '' is a removal (moderation): the member leaves, its version stays as a tombstone (an older write of it is
# then ignored like any other), and the event says "reset" (subscribers re-read the board: removals are rare).
_WRITE = (
    _NEW_SEASON
    + """
local z, v, n, seqk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local season = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local live = tonumber(redis.call('GET', KEYS[7]) or '0')
if live > 0 and season < live then
  local zeros = {}
  for _ = 1, count + #ARGV - 4 - 5 * count do zeros[#zeros + 1] = 0 end
  return {0, tonumber(redis.call('GET', seqk) or '0'), zeros}
end
new_season(z, v, n, seqk, KEYS[7], KEYS[6], ARGV[1], season, 0, KEYS[8])
local changes, members = {}, {}
local vmax, removed = 0, false
local i = 5
for _ = 1, count do
  local m, key, ver, name, meta = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  members[#members + 1] = m
  local cur = redis.call('HGET', v, m)
  if (not cur) or tonumber(cur) < ver then
    local old = redis.call('ZSCORE', z, m)
    if key == '' then
      if old then redis.call('ZREM', z, m) removed = true end
      redis.call('HDEL', n, m)
      redis.call('HDEL', KEYS[8], m)
    else
      redis.call('ZADD', z, key, m)
      if name ~= '' then redis.call('HSET', n, m, name) end
      if meta ~= '' then redis.call('HSET', KEYS[8], m, meta) else redis.call('HDEL', KEYS[8], m) end
      if (not old) or tonumber(old) ~= tonumber(key) then changes[#changes + 1] = {m, old or false, key} end
    end
    redis.call('HSET', v, m, ver)
    if ver > vmax then vmax = ver end
  end
end
for j = i, #ARGV do members[#members + 1] = ARGV[j] end
local ranks = {}
for _, m in ipairs(members) do
  local s = redis.call('ZSCORE', z, m)
  if s then ranks[#ranks + 1] = redis.call('ZCOUNT', z, '-inf', '(' .. s) + 1 else ranks[#ranks + 1] = 0 end
end
local seq = tonumber(redis.call('GET', seqk) or '0')
if vmax > tonumber(redis.call('GET', KEYS[6]) or '0') then redis.call('SET', KEYS[6], string.format('%.0f', vmax)) end
if #changes > 0 or removed then
  seq = math.max(seq + 1, vmax * 1024)
  redis.call('SET', seqk, string.format('%.0f', seq))
  if removed then
    redis.call('PUBLISH', ARGV[1], cjson.encode({s = seq, reset = true}))
  else
    redis.call('PUBLISH', ARGV[1], cjson.encode({s = seq, t = ARGV[2], c = changes}))
  end
end
return {redis.call('EXISTS', KEYS[5]), seq, ranks}
"""
)

# KEYS z v n seq ready season vmax m; ARGV channel, season, seq floor -- after a reset committed: 1 if it moved
_SWITCH = (
    _NEW_SEASON
    + """
local before = tonumber(redis.call('GET', KEYS[6]) or '0')
new_season(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[7], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
           KEYS[8])
if before == 0 then redis.call('DEL', KEYS[5]) return 0 end  -- what it holds is of no known season: rebuild
return before < tonumber(ARGV[2]) and 1 or 0
"""
)

# KEYS z n seq ready m; ARGV offset limit -> {seq} alone when the board is not ready
_TOP = """
if redis.call('EXISTS', KEYS[4]) == 0 then return {tonumber(redis.call('GET', KEYS[3]) or '0')} end
local off, lim = tonumber(ARGV[1]), tonumber(ARGV[2])
local items = redis.call('ZRANGE', KEYS[1], off, off + lim - 1, 'WITHSCORES')
local first, names, metas = 0, {}, {}
if #items > 0 then
  first = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. items[2]) + 1
  local members = {}
  for i = 1, #items, 2 do members[#members + 1] = items[i] end
  names = redis.call('HMGET', KEYS[2], unpack(members))
  metas = redis.call('HMGET', KEYS[5], unpack(members))
end
return {tonumber(redis.call('GET', KEYS[3]) or '0'), redis.call('ZCARD', KEYS[1]), first, items, names, metas}
"""

# KEYS z n seq ready m; ARGV member around
_RANK = """
if redis.call('EXISTS', KEYS[4]) == 0 then return false end
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return {0} end
local pos = redis.call('ZRANK', KEYS[1], ARGV[1])
local around = tonumber(ARGV[2])
local start = math.max(pos - around, 0)
local items = redis.call('ZRANGE', KEYS[1], start, pos + around, 'WITHSCORES')
local members = {}
for i = 1, #items, 2 do members[#members + 1] = items[i] end
return {1, redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. s) + 1, start,
        redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. items[2]) + 1, items,
        redis.call('HMGET', KEYS[2], unpack(members)), tonumber(redis.call('GET', KEYS[3]) or '0'),
        redis.call('HMGET', KEYS[5], unpack(members))}
"""

# KEYS z seq ready; ARGV members -> seq, ready, then key and rank per member ('' and 0 when absent)
_FOLLOW = """
local out = {tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('EXISTS', KEYS[3])}
if out[2] == 0 then return out end
for _, m in ipairs(ARGV) do
  local s = redis.call('ZSCORE', KEYS[1], m)
  if s then
    out[#out + 1] = s
    out[#out + 1] = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. s) + 1
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS z n seq ready; ARGV members -> seq, ready, total, then key, rank and name per member (key '' when absent)
_PLAYERS = """
local out = {tonumber(redis.call('GET', KEYS[3]) or '0'), redis.call('EXISTS', KEYS[4])}
if out[2] == 0 then return out end
out[3] = redis.call('ZCARD', KEYS[1])
local names = #ARGV > 0 and redis.call('HMGET', KEYS[2], unpack(ARGV)) or {}
local metas = #ARGV > 0 and redis.call('HMGET', KEYS[5], unpack(ARGV)) or {}
for i, m in ipairs(ARGV) do
  local s = redis.call('ZSCORE', KEYS[1], m)
  if s then
    out[#out + 1] = s
    out[#out + 1] = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. s) + 1
    out[#out + 1] = names[i] or ''
    out[#out + 1] = metas[i] or ''
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
"""

# KEYS z v n z~ v~ n~ seq ready ev vmax season m m~; ARGV seq floor, version floor, loaded season -- finish a
# rebuild. The live keys hold only what writers stored since the rebuild emptied them: keep each of those unless
# the loaded copy is newer, swap the loaded keys in, mark the board ready, and never let seq or vmax go back
# (even when Redis lost them); a tombstone stored since (a removal) removes the member from what was loaded. If
# the board moved to a newer season while the rebuild loaded, what it loaded is of an ended season: drop it and
# leave the board not ready (the next read rebuilds the new season).
_SWAP = (
    _NEW_SEASON
    + """
local loaded_season = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[11]) or '0')
if loaded_season > 0 and current > loaded_season then  -- the season ended while we loaded
  redis.call('UNLINK', KEYS[4], KEYS[5], KEYS[6], KEYS[13])
  return tonumber(redis.call('GET', KEYS[7]) or '0')
end
new_season(KEYS[1], KEYS[2], KEYS[3], KEYS[7], KEYS[11], KEYS[10], KEYS[9], loaded_season, tonumber(ARGV[1]),
           KEYS[12])
local live = redis.call('HGETALL', KEYS[2])
for i = 1, #live, 2 do
  local m, ver = live[i], tonumber(live[i + 1])
  local loaded = redis.call('HGET', KEYS[5], m)
  if (not loaded) or tonumber(loaded) < ver then
    local key = redis.call('ZSCORE', KEYS[1], m)
    if key then
      redis.call('ZADD', KEYS[4], key, m)
      local name = redis.call('HGET', KEYS[3], m)
      if name then redis.call('HSET', KEYS[6], m, name) end
      local meta = redis.call('HGET', KEYS[12], m)
      if meta then redis.call('HSET', KEYS[13], m, meta) else redis.call('HDEL', KEYS[13], m) end
    else  -- a tombstone
      redis.call('ZREM', KEYS[4], m)
      redis.call('HDEL', KEYS[6], m)
      redis.call('HDEL', KEYS[13], m)
    end
    redis.call('HSET', KEYS[5], m, ver)
  end
end
for j = 1, 3 do
  if redis.call('EXISTS', KEYS[j + 3]) == 1 then redis.call('RENAME', KEYS[j + 3], KEYS[j]) end
end
redis.call('DEL', KEYS[12])  -- m~ holds every metadata there is now (loaded, or newer from the live keys)
if redis.call('EXISTS', KEYS[13]) == 1 then redis.call('RENAME', KEYS[13], KEYS[12]) end
local vmax = math.max(tonumber(redis.call('GET', KEYS[10]) or '0'), tonumber(ARGV[2]))
redis.call('SET', KEYS[10], string.format('%.0f', vmax))
local seq = math.max(tonumber(redis.call('GET', KEYS[7]) or '0') + 1, tonumber(ARGV[1]))
redis.call('SET', KEYS[7], string.format('%.0f', seq))
redis.call('SET', KEYS[8], '1')
redis.call('PUBLISH', KEYS[9], cjson.encode({s = seq, reset = true}))
return seq
"""
)

# KEYS one rate key per submission (a player may repeat); ARGV emission interval (µs), burst -> per submission 0
# (admitted: counted) or the µs to wait. GCRA: a player's key holds the time its next submission is due; up to
# `burst` may be early. Redis' clock, so every process shares one bucket per player.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local due, out = {}, {}
for i, key in ipairs(KEYS) do
  local tat = due[key] or tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local wait = tat + interval - tolerance - now
  if wait > 0 then
    out[i] = math.ceil(wait)
    due[key] = tat
  else
    out[i] = 0
    due[key] = tat + interval
  end
end
for key, tat in pairs(due) do
  if tat > now then redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000)) end
end
return out
"""

_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(slots=True)
class WriteResult:
    ready: bool
    seq: int
    ranks: dict[str, int]  # user_id -> rank (0: not in the set)


@dataclass(frozen=True, slots=True)
class State:
    ready: bool
    members: int
    vmax: int  # highest version stored
    seq: int
    season: int = 0  # the season the keys hold (0: unknown)


class NotReady(Exception):
    """The board is not marked ready in Redis (cold, lost or being rebuilt): ask Postgres."""

    def __init__(self, seq: int = 0) -> None:
        super().__init__("board not ready in Redis")
        self.seq = seq


def _command(name: bytes, key: str, pairs: int, body: bytes) -> bytes:
    """A RESP command `name key <body>` where body holds `pairs` pairs of bulk strings (PEXPIRE: one value)."""
    count = 2 + (2 * pairs if name != b"PEXPIRE" else pairs)
    k = key.encode()
    return b"*%d\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (count, len(name), name, len(k), k, body)


def _members(flat: Sequence[str], names: Sequence[str | None], metas: Sequence[str | None]) -> list[Member]:
    return [Member(flat[i], names[i // 2], int(float(flat[i + 1])), metas[i // 2]) for i in range(0, len(flat), 2)]


Pages = AsyncGenerator[Page, None]


class Cache:
    """The rank cache. Every method may raise RedisError; reads raise NotReady when the board is not ready.
    What to do then (ask Postgres, rebuild) is the read model's business (ranks.py)."""

    def __init__(self, client: Client, pipe: Pipe | None = None) -> None:
        self.r = client
        self.cluster = isinstance(client, RedisCluster)
        # The hot path's commands (writes, reads) go through `pipe` when given (single Redis): see pipe.py.
        self.pipe = None if self.cluster else pipe
        publish = "SPUBLISH" if self.cluster else "PUBLISH"  # sharded pub/sub in a cluster: see channels.py
        self._write = client.register_script(_WRITE.replace("'PUBLISH'", f"'{publish}'"))
        self._top = client.register_script(_TOP)
        self._rank = client.register_script(_RANK)
        self._follow = client.register_script(_FOLLOW)
        self._players = client.register_script(_PLAYERS)
        self._swap = client.register_script(_SWAP.replace("'PUBLISH'", f"'{publish}'"))
        self._switch = client.register_script(_SWITCH.replace("'PUBLISH'", f"'{publish}'"))
        self._unlock = client.register_script(_UNLOCK)
        self._rate = client.register_script(_RATE)

    # ---- writes -------------------------------------------------------------------------------------------

    async def write(
        self, board: str, rows: Sequence[Written], rank_of: Sequence[str], committed_at: float, season: int
    ) -> WriteResult:
        """Store committed values of `season` (version-checked), publish the change, return the ranks asked
        for. A write of an ended season is ignored (ready=False: ask Postgres for its ranks)."""
        k = Keys(board)
        args: list[Any] = [k.ev, f"{committed_at:.6f}", season, len(rows)]
        for w in rows:
            args += (w.user_id, "" if w.removed else w.sort_key, w.version, w.display_name or "", w.metadata or "")
        changed = {w.user_id for w in rows}
        others = [u for u in dict.fromkeys(rank_of) if u not in changed]
        args += others
        keys = [k.z, k.v, k.n, k.seq, k.ready, k.vmax, k.season, k.m]
        ready, seq, ranks = await self._eval(self._write, keys, args)
        members = [w.user_id for w in rows] + others
        return WriteResult(bool(ready), int(seq), dict(zip(members, ranks, strict=True)))

    # ---- reads --------------------------------------------------------------------------------------------

    async def top(self, board: str, offset: int, limit: int) -> TopSlice:
        k = Keys(board)
        res = await self._eval(self._top, [k.z, k.n, k.seq, k.ready, k.m], [offset, limit])
        if len(res) == 1:
            raise NotReady(int(res[0]))
        seq, total, first, flat, names, metas = res
        return TopSlice(int(seq), int(total), offset, int(first), _members(flat, names, metas))

    async def standing(self, board: str, user_id: str, around: int) -> Standing | None:
        """The player's standing, or None when they have no entry."""
        k = Keys(board)
        res = await self._eval(self._rank, [k.z, k.n, k.seq, k.ready, k.m], [user_id, around])
        if res is None:
            raise NotReady()
        if res[0] == 0:
            return None
        _, total, rank, start, first, flat, names, seq, metas = res
        page = TopSlice(int(seq), int(total), int(start), int(first), _members(flat, names, metas))
        return Standing(int(seq), int(total), int(rank), user_id, page)

    async def follow(self, board: str, users: Sequence[str]) -> tuple[int, dict[str, Position | None]]:
        """(seq, {user: position or None})."""
        k = Keys(board)
        res = await self._eval(self._follow, [k.z, k.seq, k.ready], list(users))
        if not res[1]:
            raise NotReady(int(res[0]))
        out: dict[str, Position | None] = {}
        for i, user in enumerate(users):
            key, rank = res[2 + 2 * i], res[3 + 2 * i]
            out[user] = Position(int(float(key)), int(rank)) if key != "" else None
        return int(res[0]), out

    async def players(self, board: str, users: Sequence[str]) -> Players:
        """Some players of the board (friends, a group) in listing order, with their competition ranks; those
        without an entry are left out. One round trip whatever the number of players."""
        k = Keys(board)
        res = await self._eval(self._players, [k.z, k.n, k.seq, k.ready, k.m], list(users))
        if not res[1]:
            raise NotReady(int(res[0]))
        found: list[tuple[int, str, int, str | None, str | None]] = []  # (key, user, rank, name, metadata)
        for i, user in enumerate(users):
            key, rank, name, meta = res[3 + 4 * i], res[4 + 4 * i], res[5 + 4 * i], res[6 + 4 * i]
            if key != "":
                found.append((int(float(key)), user, int(rank), name or None, meta or None))
        found.sort(key=lambda f: (f[0], f[1]))  # listing order: ties by user_id (ASCII: code point = byte order)
        return Players(int(res[0]), int(res[2]), [(Member(u, n, key, md), rank) for key, u, rank, n, md in found])

    async def take(self, board: str, users: Sequence[str], rate: float, burst: float) -> list[float]:
        """One submission of each of `users` (repeats allowed) against its player's rate on the board, in one
        round trip: per submission 0.0 (admitted and counted) or the seconds to wait (refused, not counted)."""
        keys = [Keys.rate(board, u) for u in users]
        waits = await self._eval(self._rate, keys, [f"{1e6 / rate:.3f}", f"{burst:g}"])
        return [int(w) / 1e6 for w in waits]

    async def announce(self, board: str) -> None:
        if self.cluster:
            await self.r.spublish(BOARDS_CHANNEL, board)
        else:
            await self.r.publish(BOARDS_CHANNEL, board)

    async def seq(self, board: str) -> int:
        key = Keys(board).seq
        return int((await self.pipe.call("GET", key) if self.pipe else await self.r.get(key)) or 0)

    async def _eval(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if self.pipe is None:
            return await script(keys=keys, args=args)
        try:
            return await self.pipe.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: load it once more
            await self.pipe.call("SCRIPT", "LOAD", script.script)
            return await self.pipe.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def state(self, board: str) -> State:
        """What the integrity check compares with Postgres, in one round trip."""
        k = Keys(board)
        async with self.r.pipeline(transaction=True) as p:
            p.exists(k.ready)
            p.zcard(k.z)
            p.get(k.vmax)
            p.get(k.seq)
            p.get(k.season)
            ready, members, vmax, seq, season = await p.execute()
        return State(bool(ready), int(members), int(vmax or 0), int(seq or 0), int(season or 0))

    async def switch(self, board: str, season: int, seq_floor: int) -> bool:
        """After a reset committed: drop the ended season's keys and hold `season` (idempotent). True when it
        moved the board on now (a season event went out)."""
        k = Keys(board)
        keys = [k.z, k.v, k.n, k.seq, k.ready, k.season, k.vmax, k.m]
        moved = await self._eval(self._switch, keys, [k.ev, season, seq_floor])
        return bool(moved)

    async def lease(self, board: str, seconds: float) -> bool:
        """Take the board's verification lease for this interval (one process checks each board)."""
        return bool(await self.r.set(Keys(board).verify, "1", nx=True, px=int(seconds * 1000)))

    async def identities(self) -> dict[str, str]:
        """{shard: run_id of its primary}; a shard is named by its primary's address ("" for a single Redis).
        A new name or run_id means that shard's Redis restarted or failed over (its data may be older)."""
        if isinstance(self.r, RedisCluster):
            for _ in range(2):
                infos = await self.r.execute_command(
                    "INFO", "server", "replication", target_nodes=RedisCluster.PRIMARIES
                )
                if all(info["role"] == "master" for info in infos.values()):
                    return {node: str(info["run_id"]) for node, info in infos.items()}
                await self.r.nodes_manager.initialize()  # a primary we knew was demoted: re-read the slot map
            raise RedisConnectionError("the cluster's primaries are changing")  # a RedisError: asked again later
        info = await self.r.info("server")
        return {"": str(info["run_id"])}

    def shard(self, board: str) -> str:
        """The shard that holds the board, as identities() names it (from the slot map it last read)."""
        if isinstance(self.r, RedisCluster):
            return owner(self.r, Keys(board).z).name
        return ""

    async def is_ready(self, board: str) -> bool:
        return bool(await self.r.exists(Keys(board).ready))

    # ---- rebuild ------------------------------------------------------------------------------------------

    async def rebuild(
        self, board: str, pages: Callable[[], Pages], floors: Callable[[], Awaitable[tuple[int, int]]],
        emptied: Callable[[], None],
    ) -> int | None:  # fmt: skip
        """Reload a board in full from `pages()` (Store.scan). Returns the member count, or None if another
        process holds the rebuild lock. Reads go to Postgres until the board is marked ready at the end;
        `emptied()` is called once the old contents are gone (every earlier miss is covered from then on);
        `floors()` gives what seq and vmax must at least be afterwards."""
        k = Keys(board)
        token = uuid.uuid4().hex
        if not await self.r.set(k.lock, token, nx=True, px=30_000):
            return None
        started = time.perf_counter()
        try:
            obs.gauge(obs.CACHE_READY, 0, board)
            # Not ready first, then empty. Writers go on storing committed values (version-checked) in the
            # live keys while we load a snapshot of Postgres into the z~/v~/n~ keys; the swap merges the two.
            async with self.r.pipeline(transaction=True) as p:
                p.delete(k.ready)
                p.delete(k.z, k.v, k.n, k.m, k.z_new, k.v_new, k.n_new, k.m_new)
                await p.execute()
            emptied()
            count, season = await self._load(k, pages())
            await self._swap(
                keys=[k.z, k.v, k.n, k.z_new, k.v_new, k.n_new, k.seq, k.ready, k.ev, k.vmax, k.season, k.m, k.m_new],
                args=[*await floors(), season],
            )
            obs.gauge(obs.CACHE_READY, 1, board)
            obs.count(obs.REBUILDS, 1, board, "ok")
            obs.observe(obs.REBUILD_SECONDS, time.perf_counter() - started, board)
            log.info("rebuilt board %s: %d members in %.2fs", board, count, time.perf_counter() - started)
            return count
        except BaseException:
            obs.count(obs.REBUILDS, 1, board, "error")
            obs.observe(obs.REBUILD_SECONDS, time.perf_counter() - started, board)
            raise
        finally:
            try:
                await self._unlock(keys=[k.lock], args=[token])
            except RedisError:
                pass

    async def _load(self, k: Keys, pages: Pages) -> tuple[int, int]:
        """Stream the pages Postgres encoded (store.scan) into the z~/v~/n~ keys as raw commands, reading the
        next page while Redis stores this one. Returns the member count and the season loaded."""
        targets = {
            b"ZADD": (b"ZADD", k.z_new), b"HSET-V": (b"HSET", k.v_new), b"HSET-N": (b"HSET", k.n_new),
            b"HSET-M": (b"HSET", k.m_new),
        }  # fmt: skip
        count = season = 0
        con, release = await self._connection(k.z_new)
        ahead = asyncio.ensure_future(anext(pages, None))
        try:
            while (page := await ahead) is not None:
                ahead = asyncio.ensure_future(anext(pages, None))
                what, pairs, body = page
                if what == b"SEASON":
                    season = pairs
                    continue
                name, key = targets[what]
                await con.send_packed_command(
                    [_command(name, key, pairs, body), _command(b"PEXPIRE", k.lock, 1, b"$5\r\n30000\r\n")]
                )
                await con.read_response()  # raises on an error reply
                await con.read_response()
                count += pairs if what == b"ZADD" else 0
            return count, season
        except BaseException:
            await con.disconnect()  # replies may be left unread on it (an error reply, a cancellation)
            raise
        finally:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
            await pages.aclose()
            await release()

    async def _connection(self, key: str) -> tuple[Connection, Callable[[], Awaitable[None]]]:
        """A connection of its own to the node that serves `key` (in a cluster, the primary of its slot), and
        how to give it back."""
        if isinstance(self.r, RedisCluster):
            node = owner(self.r, key)
            con = node.acquire_connection()

            async def release() -> None:
                node.release(con)

            return con, release
        pool = self.r.connection_pool
        con = await pool.get_connection()  # type: ignore[no-untyped-call]
        return con, lambda: pool.release(con)
