"""Postgres, the source of truth: SQL as module constants, one transaction per batch of submissions."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from . import ranking, seasons
from .errors import Conflict, Forbidden, OutOfRange, Refused
from .protocol import Board, BoardCreate, BoardDetail, EndedSummary, Entry, Format, SeasonInfo, Submission
from .ranking import Member, Operator, Players, Position, Sort, Standing, TopSlice


@dataclass(frozen=True, slots=True)
class BoardInfo:
    id: str
    title: str
    sort: Sort
    operator: Operator
    format: Format
    created_at: datetime
    reset: str | None = None  # null, daily, weekly, monthly or a cron expression (seasons.py)
    season: int = 1  # the live season when this was read (a reset announces itself: see Store.forget)
    season_started_at: datetime | None = None
    next_reset_at: datetime | None = None

    def public(self) -> Board:
        return Board(
            self.id, self.title, self.sort, self.operator, self.format, self.created_at.isoformat(), self.reset,
            self.season, iso(self.season_started_at or self.created_at) or "", iso(self.next_reset_at),
        )  # fmt: skip

    def detail(self, total: int) -> BoardDetail:
        return BoardDetail(**dataclasses.asdict(self.public()), total=total)


@dataclass(frozen=True, slots=True)
class EndedSeason:
    """A season that has ended, and (from a reset) the one that started."""

    board: str
    season: int
    started_at: datetime
    ended_at: datetime
    total: int
    winners: list[dict[str, Any]]  # the top 3 entries as the API shows them
    next_season: int = 0
    debt: int = 0  # the cache_intents row that switches Redis to the next season (paid by Ranks.switch)

    def public(self) -> SeasonInfo:
        winners = [Entry(**w) for w in self.winners]
        return SeasonInfo(self.season, iso(self.started_at) or "", iso(self.ended_at), self.total, winners)

    def summary(self) -> EndedSummary:
        return EndedSummary(self.season, iso(self.started_at) or "", iso(self.ended_at) or "", self.total)


@dataclass(slots=True)
class Write:
    """One submission on its way to Postgres."""

    sub: Submission
    session_id: uuid.UUID
    board: BoardInfo


@dataclass(slots=True)
class Outcome:
    """What the batch did with one submission. `error` set means it was refused and wrote nothing."""

    duplicate: bool = False
    value: int | None = 0  # None: a duplicate of a submission whose player no longer has an entry (moderation)
    season: int = 1
    error: Refused | None = None


@dataclass(slots=True)
class Written:
    """A board row the batch changed: the committed absolute value and its version, for the cache."""

    board: str
    user_id: str
    value: int
    sort_key: int
    version: int
    display_name: str | None
    fresh: bool = True  # written by this batch (False: a duplicate's current row, written to Redis again)
    season: int = 1
    removed: bool = False  # the row is gone (moderation): `version` is its tombstone's, value and key mean nothing
    metadata: str | None = None  # the entry's metadata (JSON text), if any


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]
    written: list[Written] = field(default_factory=list)  # rows changed, and the current rows of duplicates
    intents: dict[tuple[str, int], int] = field(default_factory=dict)  # (board, season) -> its cache debt


# What "Postgres did not answer" looks like: the connection, the server going away, a standby after a failover.
# Any other Postgres error is about the statement, and so about the data of some submission (writer.py).
DB_DOWN = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)  # fmt: skip

BOARD_COLUMNS = "id, title, sort_order, operator, format, created_at, reset, season, season_started_at, next_reset_at"
SQL_BOARDS = f"SELECT {BOARD_COLUMNS} FROM leaderboards ORDER BY created_at, id"
SQL_BOARD = f"SELECT {BOARD_COLUMNS} FROM leaderboards WHERE id = $1"
SQL_CREATE_BOARD = f"""
INSERT INTO leaderboards (id, title, sort_order, operator, format, reset, next_reset_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO NOTHING
RETURNING {BOARD_COLUMNS}
"""
SQL_SUBMIT = """
SELECT * FROM lb_submit($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::interval, $7::jsonb[])
"""
# The season a read is about: $2 when given, else the board's live season (so a read from Postgres, say while
# Redis is away, never depends on a process's cached view of the live season).
S = "coalesce($2::int, (SELECT lb.season FROM leaderboards lb WHERE lb.id = $1))"
SQL_CURRENT = """
SELECT l.board_id, l.user_id, l.value, l.sort_key, l.version, u.display_name, l.season, l.metadata::text AS meta
FROM unnest($1::text[], $2::text[]) AS t(b, u)
JOIN leaderboards lb ON lb.id = t.b
JOIN leaderboard l ON (l.board_id, l.season, l.user_id) = (t.b, lb.season, t.u)
JOIN users u ON u.user_id = l.user_id
"""
SQL_DELETE_INTENTS = "DELETE FROM cache_intents WHERE id = ANY($1::bigint[])"
SQL_OLD_INTENTS = """
SELECT i.id, i.board_id, i.users FROM cache_intents i JOIN leaderboards lb ON lb.id = i.board_id
WHERE i.at < now() - make_interval(secs => $1) ORDER BY i.id LIMIT $2
"""
SQL_INVARIANTS = f"""
SELECT count(*) AS members,
       greatest(coalesce(max(version), 0), (SELECT removed_version FROM leaderboards WHERE id = $1)) AS version,
       (SELECT count(*) FROM cache_intents WHERE board_id = $1) AS owed, {S} AS season
FROM leaderboard WHERE board_id = $1 AND season = {S}
"""
SQL_TOTAL = f"SELECT count(*) FROM leaderboard WHERE board_id = $1 AND season = {S}"
SQL_BETTER = f"SELECT count(*) FROM leaderboard WHERE board_id = $1 AND season = {S} AND sort_key < $3"
SQL_PAGE = f"""
SELECT l.user_id, u.display_name, l.value, l.sort_key, l.metadata::text AS meta
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND l.season = {S} ORDER BY l.sort_key, l.user_id LIMIT $3 OFFSET $4
"""
SQL_ENTRY = f"""
SELECT l.user_id, u.display_name, l.value, l.sort_key, l.metadata::text AS meta
FROM leaderboard l JOIN users u ON u.user_id = l.user_id WHERE l.board_id = $1 AND l.season = {S} AND l.user_id = $3
"""
SQL_POSITION = f"""
SELECT count(*) FROM leaderboard WHERE board_id = $1 AND season = {S} AND (sort_key, user_id) < ($3, $4)
"""
SQL_ABOVE = f"""
SELECT l.user_id, u.display_name, l.value, l.sort_key, l.metadata::text AS meta
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND l.season = {S} AND (l.sort_key, l.user_id) < ($3, $4)
ORDER BY l.sort_key DESC, l.user_id DESC LIMIT $5
"""
SQL_BELOW = f"""
SELECT l.user_id, u.display_name, l.value, l.sort_key, l.metadata::text AS meta
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND l.season = {S} AND (l.sort_key, l.user_id) > ($3, $4)
ORDER BY l.sort_key, l.user_id LIMIT $5
"""
SQL_RANKS = """
SELECT t.u, (SELECT count(*) FROM leaderboard l WHERE l.board_id = t.b AND l.season = t.s AND l.sort_key < t.k) + 1
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[]) AS t(b, u, k, s)
"""
SQL_FOLLOW = f"""
SELECT l.user_id, l.sort_key,
       (SELECT count(*) FROM leaderboard b WHERE b.board_id = l.board_id AND b.season = l.season
        AND b.sort_key < l.sort_key) + 1
FROM leaderboard l WHERE l.board_id = $1 AND l.season = {S} AND l.user_id = ANY($3::text[])
"""
# Some players (friends): their rows in listing order, each with its competition rank on the whole board.
SQL_PLAYERS = f"""
SELECT l.user_id, u.display_name, l.sort_key, l.metadata::text AS meta,
       (SELECT count(*) FROM leaderboard b WHERE b.board_id = l.board_id AND b.season = l.season
        AND b.sort_key < l.sort_key) + 1 AS rank
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND l.season = {S} AND l.user_id = ANY($3::text[])
ORDER BY l.sort_key, l.user_id
"""
SQL_LIVE_SEASON = "SELECT season FROM leaderboards WHERE id = $1"
SQL_LOCK_BOARD = f"SELECT {BOARD_COLUMNS} FROM leaderboards WHERE id = $1 FOR UPDATE"
SQL_END_SEASON = """
INSERT INTO seasons (board_id, season, started_at, ended_at, total, winners) VALUES ($1, $2, $3, now(), $4, $5)
RETURNING ended_at
"""
SQL_NEXT_SEASON = """
UPDATE leaderboards SET season = season + 1, season_started_at = now(), next_reset_at = $2, removed_version = 0
WHERE id = $1
RETURNING season
"""
SQL_SWITCH_DEBT = "INSERT INTO cache_intents (board_id, season, users) VALUES ($1, $2, '{}') RETURNING id"
SQL_DUE = "SELECT id, season FROM leaderboards WHERE next_reset_at <= now() ORDER BY next_reset_at"
SQL_SEASONS = """
SELECT season, started_at, ended_at, total, winners FROM seasons WHERE board_id = $1 AND season < $2
ORDER BY season DESC LIMIT $3
"""
SQL_SEASON = "SELECT season, started_at, ended_at, total, winners FROM seasons WHERE board_id = $1 AND season = $2"
# A rebuild reads a board twice from one snapshot, each page already in the Redis wire format (RESP bulk
# strings), so a million members go from Postgres to Redis without Python touching them one by one:
#   SQL_SCAN_RANKS: members, sort keys and versions in rank order (Redis inserts sorted-set members fastest in
#                   score order), from the rank index alone;
#   SQL_SCAN_NAMES: display names in user_id order.
SQL_SCAN_RANKS = r"""
SELECT count(*) AS members, max(kn) AS last_key, (array_agg(m ORDER BY kn DESC, m DESC))[1] AS last_user,
       convert_to(string_agg(
           '$' || octet_length(k) || E'\r\n' || k || E'\r\n$' || octet_length(m) || E'\r\n' || m || E'\r\n', ''
           ORDER BY kn, m
       ), 'UTF8') AS scores,
       convert_to(string_agg(
           '$' || octet_length(m) || E'\r\n' || m || E'\r\n$' || octet_length(v) || E'\r\n' || v || E'\r\n', ''
       ), 'UTF8') AS versions
FROM (
    SELECT user_id AS m, sort_key AS kn, sort_key::text AS k, version::text AS v FROM leaderboard
    WHERE board_id = $1 AND season = $5 AND (sort_key, user_id) > ($2, $3)
    ORDER BY sort_key, user_id LIMIT $4
) page
"""
SQL_SCAN_NAMES = r"""
SELECT count(n) AS named, max(m) AS last_user,
       convert_to(string_agg(
           '$' || octet_length(m) || E'\r\n' || m || E'\r\n$' || octet_length(n) || E'\r\n' || n || E'\r\n', ''
       ) FILTER (WHERE n IS NOT NULL), 'UTF8') AS names,
       count(d) AS described,
       convert_to(string_agg(
           '$' || octet_length(m) || E'\r\n' || m || E'\r\n$' || octet_length(d) || E'\r\n' || d || E'\r\n', ''
       ) FILTER (WHERE d IS NOT NULL), 'UTF8') AS metas
FROM (
    -- a lookup per row, in user_id order (neighbouring index pages): no plan can turn it into a scan of users
    SELECT l.user_id AS m, (SELECT u.display_name FROM users u WHERE u.user_id = l.user_id) AS n,
           l.metadata::text AS d
    FROM leaderboard l
    WHERE l.board_id = $1 AND l.season = $4 AND l.user_id > $2
    ORDER BY l.user_id LIMIT $3
) page
"""
Page = tuple[bytes, int, bytes]  # (command, pairs, RESP body): see Store.scan
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")  # what pg_export_snapshot() returns


async def _rank_pages(
    con: asyncpg.pool.PoolConnectionProxy, board_id: str, season: int, batch: int
) -> AsyncIterator[Page]:
    key, user = -ranking.MAX_VALUE - 1, ""
    while True:
        page = await con.fetchrow(SQL_SCAN_RANKS, board_id, key, user, batch, season)
        if page is None or not page["members"]:
            return
        yield b"ZADD", page["members"], page["scores"]
        yield b"HSET-V", page["members"], page["versions"]
        key, user = page["last_key"], page["last_user"]


SQL_LAST_VERSION = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM leaderboard_version_seq"
MISSING_TTL_S, MISSING_MAX = 5.0, 10_000
IDEMPOTENCY_WINDOW = timedelta(days=30)  # LEADERBOARD_IDEMPOTENCY_WINDOW_DAYS
SEQ_SCALE = 1024  # push seq = version * SEQ_SCALE + changes applied out of version order (cache.py _WRITE)


def board_from_row(row: asyncpg.Record) -> BoardInfo:
    return BoardInfo(
        row["id"], row["title"], row["sort_order"], row["operator"], row["format"], row["created_at"], row["reset"],
        row["season"], row["season_started_at"], row["next_reset_at"],
    )  # fmt: skip


def _ended(board_id: str, r: asyncpg.Record) -> EndedSeason:
    winners = r["winners"]
    return EndedSeason(
        board_id, r["season"], r["started_at"], r["ended_at"], r["total"],
        orjson.loads(winners) if isinstance(winners, str) else winners,
    )  # fmt: skip


def _winners(members: list[Member], sort: Sort) -> list[dict[str, Any]]:
    page = TopSlice(0, len(members), 0, 1, members)
    return [
        {"rank": r, "user_id": m.user_id, "display_name": m.display_name, "score": ranking.value_of(m.key, sort)}
        for r, m in zip(page.ranks(), members, strict=True)
    ]


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _member(row: asyncpg.Record) -> Member:
    return Member(row["user_id"], row["display_name"], row["sort_key"], row["meta"])


class Store:
    """All SQL the service runs. The pool is owned by the app's lifespan."""

    def __init__(self, pool: asyncpg.Pool, idempotency_window: timedelta = IDEMPOTENCY_WINDOW) -> None:
        self.pool = pool
        self.idempotency_window = idempotency_window  # a session id logged longer ago is not looked for
        self._boards: dict[str, BoardInfo] = {}
        self._missing: dict[str, float] = {}  # board id -> until when "no such board" is believed

    # ---- boards -------------------------------------------------------------------------------------------

    async def board(self, board_id: str) -> BoardInfo | None:
        """A board's settings never change once created, so a hit in the process cache is final for them (its
        live season is not: `forget` it, or ask Postgres, where the season matters). A miss is remembered
        for a few seconds (a client asking for junk boards costs no query each), and forgotten at once when
        a board is created anywhere (`forget`, via Redis pub/sub)."""
        found = self._boards.get(board_id)
        if found is None:
            now = time.monotonic()
            if self._missing.get(board_id, 0.0) > now:
                return None
            row = await self.pool.fetchrow(SQL_BOARD, board_id)
            if row is not None:
                found = self._boards[board_id] = board_from_row(row)
            else:
                if len(self._missing) >= MISSING_MAX:
                    self._missing.clear()
                self._missing[board_id] = now + MISSING_TTL_S
        return found

    def forget(self, board_id: str | None = None) -> None:
        """A board was created or changed (None: any may have): forget what this process knows of it."""
        if board_id is None:
            self._missing.clear()
            self._boards.clear()
        else:
            self._missing.pop(board_id, None)
            self._boards.pop(board_id, None)

    async def boards(self) -> list[BoardInfo]:
        rows = await self.pool.fetch(SQL_BOARDS)
        self._boards.update((r["id"], board_from_row(r)) for r in rows)
        return [board_from_row(r) for r in rows]

    async def create_board(self, spec: BoardCreate) -> BoardInfo | None:
        """The new board, or None if the id exists."""
        title = spec.title or spec.id
        next_at = seasons.next_reset(spec.reset, datetime.now(UTC))
        row = await self.pool.fetchrow(
            SQL_CREATE_BOARD, spec.id, title, spec.sort, spec.operator, spec.format, spec.reset, next_at
        )
        return None if row is None else board_from_row(row)

    # ---- seasons ------------------------------------------------------------------------------------------

    async def reset_board(self, board_id: str, expect: int | None = None) -> EndedSeason | None:
        """End the live season and start the next, in one transaction: exactly once per call even with many
        processes (with `expect`, only if that season is still the live one). The board row's lock waits for
        the batches in flight (they hold it FOR SHARE) and holds back new ones until COMMIT, so a submission
        counts in exactly one season. None when `expect` is no longer live or the board does not exist."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(SQL_LOCK_BOARD, board_id)
            if row is None or (expect is not None and row["season"] != expect):
                return None
            info = board_from_row(row)  # read on this connection: a racer waiting for the lock holds one of the pool's
            season, started = info.season, row["season_started_at"]
            total = await con.fetchval(SQL_TOTAL, board_id, season)
            top = [_member(r) for r in await con.fetch(SQL_PAGE, board_id, season, 3, 0)]
            winners = _winners(top, info.sort)
            ended_at = await con.fetchval(
                SQL_END_SEASON, board_id, season, started, total, orjson.dumps(winners).decode()
            )
            next_at = seasons.next_reset(info.reset, ended_at)
            new = await con.fetchval(SQL_NEXT_SEASON, board_id, next_at)
            debt = await con.fetchval(SQL_SWITCH_DEBT, board_id, new)
        self._boards.pop(board_id, None)
        return EndedSeason(board_id, season, started, ended_at, total, winners, new, debt)

    async def due_resets(self) -> list[tuple[str, int]]:
        """(board, live season) of the boards whose reset time has come."""
        return [(r[0], r[1]) for r in await self.pool.fetch(SQL_DUE)]

    async def seasons(self, board_id: str, limit: int = 1000, before: int = 2**31 - 1) -> list[EndedSeason]:
        """The ended seasons of a board numbered below `before`, newest first, at most `limit`."""
        return [_ended(board_id, r) for r in await self.pool.fetch(SQL_SEASONS, board_id, before, limit)]

    async def season(self, board_id: str, season: int) -> EndedSeason | None:
        """One ended season, or None (never ended, or never existed)."""
        row = await self.pool.fetchrow(SQL_SEASON, board_id, season)
        return None if row is None else _ended(board_id, row)

    # ---- the write path -----------------------------------------------------------------------------------

    async def commit_batch(self, batch: Sequence[Write]) -> BatchResult:
        """Apply a batch of submissions in one transaction and one round trip (lb_submit, sql/004 to 006); a
        refused row never fails the others."""
        rows = await self.pool.fetch(
            SQL_SUBMIT, [w.session_id for w in batch], [w.board.id for w in batch],
            [w.sub.user_id for w in batch], [w.sub.score for w in batch], [w.sub.display_name for w in batch],
            self.idempotency_window, [w.sub.metadata_json() for w in batch],
        )  # fmt: skip
        return _result(batch, rows)

    # ---- reads (the fallback when the cache is not ready) -------------------------------------------------

    async def top(
        self, board: BoardInfo, offset: int, limit: int, seq: int, season: int | None = None, total: int | None = None
    ) -> TopSlice:
        """One page of the board in `season` (None: the live one), from one snapshot; `total` when known (an
        ended season's is)."""
        b, s = board.id, season
        async with self.pool.acquire() as con, con.transaction(readonly=True, isolation="repeatable_read"):
            if total is None:
                total = await con.fetchval(SQL_TOTAL, b, s)
            members = [_member(r) for r in await con.fetch(SQL_PAGE, b, s, limit, offset)]
            first = 1 + await con.fetchval(SQL_BETTER, b, s, members[0].key) if members else 0
        return TopSlice(seq, total, offset, first, members)

    async def standing(
        self, board: BoardInfo, user_id: str, around: int, seq: int, season: int | None = None,
        total: int | None = None,
    ) -> Standing | None:  # fmt: skip
        """The player's rank and the `around` members above and below in `season` (None: the live one), from
        one snapshot; None if absent."""
        b, s = board.id, season
        async with self.pool.acquire() as con, con.transaction(readonly=True, isolation="repeatable_read"):
            row = await con.fetchrow(SQL_ENTRY, b, s, user_id)
            if row is None:
                return None
            me = _member(row)
            if total is None:
                total = await con.fetchval(SQL_TOTAL, b, s)
            rank = 1 + await con.fetchval(SQL_BETTER, b, s, me.key)
            members, start, first = [me], rank - 1, rank  # (a one-member page needs no exact start)
            if around:
                above = [_member(r) for r in await con.fetch(SQL_ABOVE, b, s, me.key, user_id, around)]
                below = [_member(r) for r in await con.fetch(SQL_BELOW, b, s, me.key, user_id, around)]
                members = [*reversed(above), me, *below]
                head = members[0]
                first = 1 + await con.fetchval(SQL_BETTER, b, s, head.key)
                start = await con.fetchval(SQL_POSITION, b, s, head.key, head.user_id)
        return Standing(seq, total, rank, user_id, TopSlice(seq, total, start, first, members))

    async def ranks(self, keys: Sequence[tuple[str, str, int, int]]) -> dict[tuple[str, str], int]:
        """Ranks for (board, user_id, sort_key, season) keys, answered by Postgres."""
        if not keys:
            return {}
        boards, users, sks, seasons = zip(*keys, strict=True)
        rows = await self.pool.fetch(SQL_RANKS, list(boards), list(users), list(sks), list(seasons))
        return {(b, r[0]): r[1] for b, r in zip(boards, rows, strict=True)}

    async def follow(self, board_id: str, users: Sequence[str]) -> dict[str, Position | None]:
        """{user: position or None} in the live season, answered by Postgres."""
        rows = await self.pool.fetch(SQL_FOLLOW, board_id, None, list(users))
        found = {r[0]: Position(r[1], r[2]) for r in rows}
        return {u: found.get(u) for u in users}

    async def players(
        self, board: BoardInfo, users: Sequence[str], seq: int, season: int | None = None, total: int | None = None
    ) -> Players:
        """These players in `season` (None: the live one) in listing order with their ranks, from one snapshot;
        `total` when known (an ended season's is)."""
        b, s = board.id, season
        async with self.pool.acquire() as con, con.transaction(readonly=True, isolation="repeatable_read"):
            if total is None:
                total = await con.fetchval(SQL_TOTAL, b, s)
            rows = await con.fetch(SQL_PLAYERS, b, s, list(users))
        return Players(seq, total, [(_member(r), r["rank"]) for r in rows])

    async def scan(self, board_id: str, batch: int) -> AsyncGenerator[Page, None]:
        """A whole board's live season as RESP pages `(command, pairs, body)`: first b"SEASON" (pairs = the season
        number), then b"ZADD" (sort key, member), b"HSET-V" (member, version), b"HSET-N" (member, name) and
        b"HSET-M" (member, metadata) pages. All pages come from one snapshot (REPEATABLE READ): a
        row committed after the scan began is not in it, so that row's own cache write (which follows its
        commit) lands after the rebuild emptied the board, and nothing falls between the two.
        The ranks and the names are read at once, on two connections that share that snapshot
        (pg_export_snapshot): on a board of a million players the names' lookups are half of the reading, and
        Postgres does them on another core while Redis stores the ranks. Pages of the two interleave."""
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
            season = await con.fetchval(SQL_LIVE_SEASON, board_id)
            snapshot = await con.fetchval("SELECT pg_export_snapshot()")
            yield b"SEASON", season, b""  # the season the pages are of (the live one in this snapshot)
            pages: asyncio.Queue[Page | Exception | None] = asyncio.Queue(maxsize=4)

            async def produce(source: AsyncIterator[Page]) -> None:
                try:
                    async for page in source:
                        await pages.put(page)
                    await pages.put(None)
                except Exception as exc:  # the consumer raises it
                    await pages.put(exc)

            producers = [
                asyncio.create_task(produce(_rank_pages(con, board_id, season, batch))),
                asyncio.create_task(produce(self._name_pages(snapshot, board_id, season, batch))),
            ]
            try:
                running = len(producers)
                while running:
                    page = await pages.get()
                    if page is None:
                        running -= 1
                    elif isinstance(page, Exception):
                        raise page
                    else:
                        yield page
            finally:
                for task in producers:
                    task.cancel()
                await asyncio.gather(*producers, return_exceptions=True)

    async def _name_pages(self, snapshot: str, board_id: str, season: int, batch: int) -> AsyncIterator[Page]:
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise ValueError(f"unexpected snapshot id {snapshot!r}")
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
            await con.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # the scan's own (no parameter here)
            user = ""
            while True:
                page = await con.fetchrow(SQL_SCAN_NAMES, board_id, user, batch, season)
                if page is None or page["last_user"] is None:
                    return
                if page["named"]:
                    yield b"HSET-N", page["named"], page["names"]
                if page["described"]:
                    yield b"HSET-M", page["described"], page["metas"]
                user = page["last_user"]

    # ---- what Redis is owed (cache_intents) and what it should hold --------------------------------------

    async def old_intents(self, age_s: float, limit: int = 100) -> list[tuple[int, str, list[str]]]:
        """(id, board, users) of cache debts older than `age_s` seconds."""
        return [(r[0], r[1], list(r[2])) for r in await self.pool.fetch(SQL_OLD_INTENTS, age_s, limit)]

    async def delete_intents(self, ids: Sequence[int]) -> None:
        await self.pool.execute(SQL_DELETE_INTENTS, list(ids))

    async def current(self, board_id: str, users: Sequence[str]) -> list[Written]:
        """The committed rows of these players on the board (players without a row are left out)."""
        rows = await self.pool.fetch(SQL_CURRENT, [board_id] * len(users), list(users))
        return [_written(r) for r in rows]

    async def invariants(self, board_id: str) -> tuple[int, int, int, int]:
        """(members, highest version, cache debts not yet paid, live season) of a board, from one snapshot."""
        r = await self.pool.fetchrow(SQL_INVARIANTS, board_id, None)
        assert r is not None
        return r["members"], r["version"], r["owed"], r["season"]

    async def live_season(self, board_id: str) -> int:
        season: int = await self.pool.fetchval(SQL_LIVE_SEASON, board_id)
        return season

    async def seq_floor(self) -> int:
        """A push `seq` at least as high as any the cache has issued: see the seq notes in cache.py."""
        last: int = await self.pool.fetchval(SQL_LAST_VERSION)
        return (last + 1) * SEQ_SCALE - 1


IDEMPOTENCY_CONFLICT = "session_id was already used for another submission"
OUT_OF_RANGE = f"the board value would leave ±{ranking.MAX_VALUE}"
BANNED = "this player is banned: its submissions are refused"
DUPLICATE, CONFLICT, REFUSED_RANGE, REFUSED_BAN = 1, 2, 3, 5  # lb_submit's status codes (sql/007); 0 is accepted


def _result(batch: Sequence[Write], rows: Sequence[asyncpg.Record]) -> BatchResult:
    """lb_submit's rows (one per submission, in order) as outcomes, the rows for the cache and the debts."""
    result = BatchResult([])
    rows_of: dict[tuple[str, str], Written] = {}
    for w, r in zip(batch, rows, strict=True):
        status = r["status"]
        if status == CONFLICT:
            result.outcomes.append(Outcome(error=Conflict(IDEMPOTENCY_CONFLICT, code="idempotency_conflict")))
            continue
        if status == REFUSED_RANGE:
            result.outcomes.append(Outcome(error=OutOfRange(OUT_OF_RANGE)))
            continue
        if status == REFUSED_BAN:
            result.outcomes.append(Outcome(error=Forbidden(BANNED, code="banned")))
            continue
        season = r["season"]
        result.outcomes.append(Outcome(duplicate=status == DUPLICATE, value=r["value"], season=season))
        # For the cache: the rows this batch changed, and (written again) the current rows of duplicates (a
        # duplicate whose player's entry was removed has none).
        if r["changed"] or (status == DUPLICATE and r["version"] is not None):
            key = (w.board.id, w.sub.user_id)
            written = Written(*key, r["key_value"], r["sort_key"], r["version"], r["name"], r["changed"], season,
                              metadata=r["meta"])  # fmt: skip
            rows_of.setdefault(key, written)
        if r["intent"] is not None:
            result.intents[(w.board.id, season)] = r["intent"]
    result.written = list(rows_of.values())
    return result


def _written(r: asyncpg.Record) -> Written:
    return Written(
        r["board_id"], r["user_id"], r["value"], r["sort_key"], r["version"], r["display_name"], False, r["season"],
        metadata=r["meta"],
    )  # fmt: skip
