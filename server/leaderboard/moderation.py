"""Moderation in Postgres: void a submission, remove an entry, ban and unban a player. Each action is one
transaction that recomputes the player's value from the log (game_sessions), writes a new version of the row
(or deletes it, with a tombstone version) and an audit row, and leaves a cache debt like a batch does; the
service then writes the result to Redis (ranks.record), which pushes it like any other change.

Only the live season changes: an ended season's standings are final (a void of one of its submissions is a
409). Locks: the boards concerned FOR UPDATE in id order (a batch holds them FOR SHARE, so a batch sees an
action wholly before or wholly after it, and the two never deadlock), then the player's rows.

Recompute from the non-voided submissions of the live season: incr their sum, decr minus their sum, best the
best, set the latest (submitted_at, then position in its batch). Submissions refused (out of range, banned)
were never logged, so they never come back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from . import ranking
from .errors import Conflict, NotFound
from .protocol import AuditEntry, AuditPage, LoggedSubmission, PlayerSubmissions
from .store import BOARD_COLUMNS, BoardInfo, Written, board_from_row, iso

SQL_SESSION = "SELECT board_id, user_id, season, voided_at FROM game_sessions WHERE session_id = $1"
SQL_LOCK = f"SELECT {BOARD_COLUMNS} FROM leaderboards WHERE id = $1 FOR UPDATE"
SQL_LOCK_ALL = f"SELECT {BOARD_COLUMNS} FROM leaderboards ORDER BY id FOR UPDATE"
SQL_VOID = "UPDATE game_sessions SET voided_at = now() WHERE session_id = $1"
SQL_RESTORE = "UPDATE game_sessions SET voided_at = NULL WHERE session_id = $1"
SQL_VOID_ALL = """
UPDATE game_sessions SET voided_at = now()
WHERE user_id = $1 AND board_id = $2 AND season = $3 AND voided_at IS NULL
"""
SQL_RECOMPUTE = """
SELECT count(*) AS n, sum(score) AS total, max(score) AS hi, min(score) AS lo,
       (array_agg(score ORDER BY submitted_at DESC, ord DESC))[1] AS latest,
       (array_agg(metadata::text ORDER BY submitted_at DESC, ord DESC))[1] AS latest_meta,
       (array_agg(metadata::text ORDER BY score DESC, submitted_at, ord))[1] AS hi_meta,
       (array_agg(metadata::text ORDER BY score, submitted_at, ord))[1] AS lo_meta
FROM game_sessions WHERE user_id = $1 AND board_id = $2 AND season = $3 AND voided_at IS NULL
"""
SQL_ROW = """
SELECT l.value, l.sort_key, l.version, u.display_name, l.metadata::text AS meta
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND l.season = $2 AND l.user_id = $3 FOR UPDATE OF l
"""
SQL_UPSERT = """
INSERT INTO leaderboard AS l (board_id, season, user_id, value, sort_key, version, metadata)
VALUES ($1, $2, $3, $4, $5, nextval('leaderboard_version_seq'), $6::jsonb)
ON CONFLICT (board_id, season, user_id) DO UPDATE
SET value = EXCLUDED.value, sort_key = EXCLUDED.sort_key, version = EXCLUDED.version, updated_at = now(),
    metadata = EXCLUDED.metadata
RETURNING version, (SELECT display_name FROM users WHERE user_id = $3) AS display_name
"""
SQL_DELETE = "DELETE FROM leaderboard WHERE board_id = $1 AND season = $2 AND user_id = $3"
SQL_TOMBSTONE = """
UPDATE leaderboards SET removed_version = nextval('leaderboard_version_seq') WHERE id = $1 RETURNING removed_version
"""
SQL_INTENT = "INSERT INTO cache_intents (board_id, season, users) VALUES ($1, $2, $3) RETURNING id"
SQL_AUDIT = """
INSERT INTO audit (actor, action, board_id, user_id, session_id, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
SQL_BANNED = "SELECT 1 FROM bans WHERE user_id = $1"
SQL_BAN = "INSERT INTO bans (user_id, reason, actor) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING RETURNING 1"
SQL_UNBAN = "DELETE FROM bans WHERE user_id = $1 RETURNING 1"
SQL_ENTRIES_OF = """
SELECT l.board_id FROM leaderboard l JOIN leaderboards lb ON (lb.id, lb.season) = (l.board_id, l.season)
WHERE l.user_id = $1 ORDER BY l.board_id
"""
SQL_LOGGED_BOARDS = """
SELECT DISTINCT g.board_id FROM game_sessions g JOIN leaderboards lb ON (lb.id, lb.season) = (g.board_id, g.season)
WHERE g.user_id = $1 AND g.voided_at IS NULL ORDER BY g.board_id
"""
SQL_AUDIT_PAGE = """
SELECT id, at, actor, action, board_id, user_id, session_id, reason, detail FROM audit
WHERE id < $1 AND ($3::text IS NULL OR user_id = $3) ORDER BY id DESC LIMIT $2
"""
SQL_SUBMISSIONS = """
SELECT g.session_id, g.board_id, g.season, g.score, g.submitted_at, g.voided_at, g.season = lb.season AS live
FROM game_sessions g JOIN leaderboards lb ON lb.id = g.board_id
WHERE g.user_id = $1 AND ($2::text IS NULL OR g.board_id = $2) ORDER BY g.submitted_at DESC, g.ord DESC LIMIT $3
"""

ALREADY_VOIDED = "this submission is already voided"
NOT_VOIDED = "this submission is not voided"
Con = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(slots=True)
class Change:
    """A board row a moderation action changed (or removed), for the cache, and the debt it left."""

    board: BoardInfo
    row: Written
    intent: int


@dataclass(slots=True)
class Outcome:
    """What one action did: the player's value per board afterwards (None: no entry), and the row changes."""

    values: dict[str, int | None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    season: int = 0  # the live season of the board acted on (void, remove)
    voided: int = 0
    board: str = ""  # the board and player of a voided submission
    user: str = ""


def recomputed(operator: str, sort: str, r: asyncpg.Record) -> tuple[int, str | None] | None:
    """The value the log gives and the metadata of the submission that produced it (None: no submission
    left). incr, decr, set: the latest's metadata; best: the first that reached the best."""
    if not r["n"]:
        return None
    if operator == "incr":
        return int(r["total"]), r["latest_meta"]
    if operator == "decr":
        return -int(r["total"]), r["latest_meta"]
    if operator == "set":
        return int(r["latest"]), r["latest_meta"]
    if sort == "desc":
        return int(r["hi"]), r["hi_meta"]
    return int(r["lo"]), r["lo_meta"]


class Moderation:
    """The moderation transactions; the pool is the app's (or the CLI's)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def void(self, session_id: uuid.UUID, reason: str, actor: str) -> Outcome:
        """Void one submission and recompute its player's value. 404 unknown, 409 already voided or of an ended
        season, 409 out_of_range when the value without it would leave the board's range."""
        return await self._set_voided(session_id, True, reason, actor)

    async def restore(self, session_id: uuid.UUID, reason: str, actor: str) -> Outcome:
        """Undo a void (the submission counts again) and recompute. 404 unknown, 409 not voided or of an ended
        season, 409 out_of_range."""
        return await self._set_voided(session_id, False, reason, actor)

    async def _set_voided(self, session_id: uuid.UUID, voided: bool, reason: str, actor: str) -> Outcome:
        async with self.pool.acquire() as con, con.transaction():
            found = await con.fetchrow(SQL_SESSION, session_id)
            if found is None:
                raise NotFound(f"no submission has session_id {session_id}")
            board_row = await con.fetchrow(SQL_LOCK, found["board_id"])
            found = await con.fetchrow(SQL_SESSION, session_id)  # again, under the lock: a racing void is seen
            assert board_row is not None and found is not None
            board, user = board_from_row(board_row), found["user_id"]
            if voided and found["voided_at"] is not None:
                raise Conflict(ALREADY_VOIDED, code="already_voided")
            if not voided and found["voided_at"] is None:
                raise Conflict(NOT_VOIDED, code="not_voided")
            if found["season"] != board.season:
                raise Conflict(
                    f"this submission counted in season {found['season']} of board {board.id!r}, which has ended: "
                    "its standings are final", code="season_ended",
                )  # fmt: skip
            await con.execute(SQL_VOID if voided else SQL_RESTORE, session_id)
            out = Outcome(season=board.season, voided=1 if voided else 0, board=board.id, user=user)
            if await con.fetchval(SQL_BANNED, user) is None:  # a banned player has no entry to recompute
                await self._recompute(con, board, user, out)
            else:
                out.values[board.id] = None
            await self._audit(con, actor, "void" if voided else "restore", board.id, user, session_id, reason, out)
        return out

    async def remove(self, board_id: str, user_id: str, reason: str, actor: str) -> Outcome:
        """Remove the player's entry from the board's live season, voiding its submissions there. 404 if the
        board or the entry does not exist."""
        async with self.pool.acquire() as con, con.transaction():
            board_row = await con.fetchrow(SQL_LOCK, board_id)
            if board_row is None:
                raise NotFound(f"board {board_id!r} does not exist")
            board = board_from_row(board_row)
            if await con.fetchrow(SQL_ROW, board.id, board.season, user_id) is None:
                raise NotFound(f"{user_id!r} has no entry on board {board.id!r}")
            voided = await con.execute(SQL_VOID_ALL, user_id, board.id, board.season)
            out = Outcome(season=board.season, voided=int(voided.split()[-1]))
            await self._delete(con, board, user_id, out)
            await self._audit(con, actor, "remove", board.id, user_id, None, reason, out)
        return out

    async def ban(self, user_id: str, reason: str, actor: str) -> Outcome:
        """Ban the player and remove its entries from every board's live season (its log stays, not voided,
        for an unban). 409 if already banned."""
        async with self.pool.acquire() as con, con.transaction():
            boards = {r["id"]: board_from_row(r) for r in await con.fetch(SQL_LOCK_ALL)}
            if await con.fetchval(SQL_BAN, user_id, reason, actor) is None:
                raise Conflict(f"{user_id!r} is already banned", code="already_banned")
            out = Outcome()
            for board_id in [r[0] for r in await con.fetch(SQL_ENTRIES_OF, user_id)]:
                await self._delete(con, boards[board_id], user_id, out)
            await self._audit(con, actor, "ban", None, user_id, None, reason, out)
        return out

    async def unban(self, user_id: str, reason: str, actor: str) -> Outcome:
        """Lift the ban and restore the player's entries, recomputed from its non-voided log of each board's
        live season. 404 if not banned."""
        async with self.pool.acquire() as con, con.transaction():
            boards = {r["id"]: board_from_row(r) for r in await con.fetch(SQL_LOCK_ALL)}
            if await con.fetchval(SQL_UNBAN, user_id) is None:
                raise NotFound(f"{user_id!r} is not banned")
            out = Outcome()
            for board_id in [r[0] for r in await con.fetch(SQL_LOGGED_BOARDS, user_id)]:
                await self._recompute(con, boards[board_id], user_id, out)
            await self._audit(con, actor, "unban", None, user_id, None, reason, out)
        return out

    # ---- reads --------------------------------------------------------------------------------------------

    async def audit(self, limit: int, before: int | None, user_id: str | None = None) -> AuditPage:
        rows = await self.pool.fetch(SQL_AUDIT_PAGE, before or 2**63 - 1, limit + 1, user_id)
        page = [_audit_entry(r) for r in rows[:limit]]
        return AuditPage(page, page[-1].id if len(rows) > limit else None)

    async def submissions(self, user_id: str, board_id: str | None, limit: int) -> PlayerSubmissions:
        async with self.pool.acquire() as con:
            rows = await con.fetch(SQL_SUBMISSIONS, user_id, board_id, limit)
            banned = await con.fetchval(SQL_BANNED, user_id) is not None
        return PlayerSubmissions(user_id, banned, [_logged(r) for r in rows])

    # ---- inside a transaction -----------------------------------------------------------------------------

    async def _recompute(self, con: Con, board: BoardInfo, user: str, out: Outcome) -> None:
        """Write the value the log gives now (a new version), or delete the entry when nothing is left."""
        current = await con.fetchrow(SQL_ROW, board.id, board.season, user)
        log = await con.fetchrow(SQL_RECOMPUTE, user, board.id, board.season)
        assert log is not None  # (an aggregate: always one row)
        found = recomputed(board.operator, board.sort, log)
        if found is None:
            if current is not None:
                await self._delete(con, board, user, out)
            else:
                out.values[board.id] = None
            return
        value, meta = found
        if not -ranking.MAX_VALUE <= value <= ranking.MAX_VALUE:
            raise Conflict(
                f"{user!r} on board {board.id!r} would be {value} without it, outside ±{ranking.MAX_VALUE}",
                code="out_of_range",
            )
        out.values[board.id] = value
        if current is not None and (current["value"], current["meta"]) == (value, meta):
            return  # unchanged: no new version, nothing to push
        key = ranking.sort_key(value, board.sort)
        row = await con.fetchrow(SQL_UPSERT, board.id, board.season, user, value, key, meta)
        assert row is not None
        written = Written(board.id, user, value, key, row["version"], row["display_name"], True, board.season,
                          metadata=meta)  # fmt: skip
        out.changes.append(Change(board, written, await con.fetchval(SQL_INTENT, board.id, board.season, [user])))

    async def _delete(self, con: Con, board: BoardInfo, user: str, out: Outcome) -> None:
        await con.execute(SQL_DELETE, board.id, board.season, user)
        version = await con.fetchval(SQL_TOMBSTONE, board.id)
        gone = Written(board.id, user, 0, 0, version, None, True, board.season, removed=True)
        out.changes.append(Change(board, gone, await con.fetchval(SQL_INTENT, board.id, board.season, [user])))
        out.values[board.id] = None

    async def _audit(
        self, con: Con, actor: str, action: str, board: str | None, user: str,
        session_id: uuid.UUID | None, reason: str, out: Outcome,
    ) -> None:  # fmt: skip
        detail = orjson.dumps({"boards": out.values}).decode()
        await con.execute(SQL_AUDIT, actor, action, board, user, session_id, reason, detail)


def _audit_entry(r: asyncpg.Record) -> AuditEntry:
    detail: Any = r["detail"]
    return AuditEntry(
        r["id"], iso(r["at"]) or "", r["actor"], r["action"], r["board_id"], r["user_id"], _uuid(r["session_id"]),
        r["reason"], orjson.loads(detail) if isinstance(detail, str) else detail,
    )  # fmt: skip


def _uuid(value: uuid.UUID | None) -> uuid.UUID | None:
    """asyncpg's own UUID type, as the standard one (which orjson encodes)."""
    return None if value is None else uuid.UUID(bytes=value.bytes)


def _logged(r: asyncpg.Record) -> LoggedSubmission:
    return LoggedSubmission(
        uuid.UUID(bytes=r["session_id"].bytes),
        r["board_id"],
        r["season"],
        r["score"],
        iso(r["submitted_at"]) or "",
        iso(r["voided_at"]),
        r["live"],
    )
