"""Postgres, the source of truth: SQL as module constants, one transaction per batch of submissions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from . import ranking
from .errors import Conflict, OutOfRange, Refused
from .protocol import Board, BoardCreate, BoardDetail, Format, Submission
from .ranking import Member, Operator, Position, Sort, Standing, TopSlice


@dataclass(frozen=True, slots=True)
class BoardInfo:
    id: str
    title: str
    sort: Sort
    operator: Operator
    format: Format
    created_at: datetime

    def public(self) -> Board:
        return Board(self.id, self.title, self.sort, self.operator, self.format, self.created_at.isoformat())

    def detail(self, total: int) -> BoardDetail:
        return BoardDetail(
            self.id, self.title, self.sort, self.operator, self.format, self.created_at.isoformat(), total
        )


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
    value: int = 0
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


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]
    written: list[Written] = field(default_factory=list)  # rows changed, and the current rows of duplicates
    intents: dict[str, int] = field(default_factory=dict)  # board -> its cache_intents row (sql/003)


Con = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# What "Postgres did not answer" looks like: the connection, the server going away, a standby after a failover.
# Any other Postgres error is about the statement, and so about the data of some submission (writer.py).
DB_DOWN = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)  # fmt: skip

BOARD_COLUMNS = "id, title, sort_order, operator, format, created_at"
SQL_BOARDS = f"SELECT {BOARD_COLUMNS} FROM leaderboards ORDER BY created_at, id"
SQL_BOARD = f"SELECT {BOARD_COLUMNS} FROM leaderboards WHERE id = $1"
SQL_CREATE_BOARD = f"""
INSERT INTO leaderboards (id, title, sort_order, operator, format) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO NOTHING
RETURNING {BOARD_COLUMNS}
"""
SQL_LOCK_ROWS = """
SELECT l.board_id, l.user_id, l.value
FROM leaderboard l JOIN unnest($1::text[], $2::text[]) AS t(b, u) ON l.board_id = t.b AND l.user_id = t.u
ORDER BY l.board_id, l.user_id
FOR UPDATE OF l
"""
SQL_INSERT_SESSIONS = """
INSERT INTO game_sessions (session_id, board_id, user_id, score)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[]) ORDER BY 1
ON CONFLICT (session_id) DO NOTHING
RETURNING session_id
"""
SQL_EXISTING_SESSIONS = (
    "SELECT session_id, board_id, user_id, score FROM game_sessions WHERE session_id = ANY($1::uuid[])"
)
SQL_DELETE_SESSIONS = "DELETE FROM game_sessions WHERE session_id = ANY($1::uuid[])"
SQL_UPSERT_USERS = """
INSERT INTO users (user_id, display_name)
SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1
ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name
WHERE EXCLUDED.display_name IS NOT NULL AND users.display_name IS DISTINCT FROM EXCLUDED.display_name
"""
SQL_UPDATE_ROWS = """
UPDATE leaderboard l
SET value = t.v, sort_key = t.k, version = nextval('leaderboard_version_seq'), updated_at = now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS t(b, u, v, k)
WHERE l.board_id = t.b AND l.user_id = t.u
RETURNING l.board_id, l.user_id, l.version
"""
SQL_INSERT_ROWS = """
INSERT INTO leaderboard (board_id, user_id, value, sort_key, version)
SELECT b, u, v, k, nextval('leaderboard_version_seq')
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS t(b, u, v, k) ORDER BY b, u
ON CONFLICT (board_id, user_id) DO NOTHING
RETURNING board_id, user_id, version
"""
SQL_CURRENT = """
SELECT l.board_id, l.user_id, l.value, l.sort_key, l.version, u.display_name
FROM leaderboard l JOIN unnest($1::text[], $2::text[]) AS t(b, u) ON l.board_id = t.b AND l.user_id = t.u
JOIN users u ON u.user_id = l.user_id
"""
SQL_INTENTS = """
INSERT INTO cache_intents (board_id, users)
SELECT b, array_agg(u) FROM unnest($1::text[], $2::text[]) AS t(b, u) GROUP BY b
RETURNING board_id, id
"""
SQL_DELETE_INTENTS = "DELETE FROM cache_intents WHERE id = ANY($1::bigint[])"
SQL_OLD_INTENTS = """
SELECT id, board_id, users FROM cache_intents WHERE at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2
"""
SQL_INVARIANTS = """
SELECT count(*) AS members, coalesce(max(version), 0) AS version,
       (SELECT count(*) FROM cache_intents WHERE board_id = $1) AS owed
FROM leaderboard WHERE board_id = $1
"""
SQL_NAMES = "SELECT user_id, display_name FROM users WHERE user_id = ANY($1::text[])"

SQL_TOTAL = "SELECT count(*) FROM leaderboard WHERE board_id = $1"
SQL_BETTER = "SELECT count(*) FROM leaderboard WHERE board_id = $1 AND sort_key < $2"
SQL_PAGE = """
SELECT l.user_id, u.display_name, l.value, l.sort_key
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 ORDER BY l.sort_key, l.user_id LIMIT $2 OFFSET $3
"""
SQL_ENTRY = """
SELECT l.user_id, u.display_name, l.value, l.sort_key
FROM leaderboard l JOIN users u ON u.user_id = l.user_id WHERE l.board_id = $1 AND l.user_id = $2
"""
SQL_POSITION = "SELECT count(*) FROM leaderboard WHERE board_id = $1 AND (sort_key, user_id) < ($2, $3)"
SQL_ABOVE = """
SELECT l.user_id, u.display_name, l.value, l.sort_key
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND (l.sort_key, l.user_id) < ($2, $3)
ORDER BY l.sort_key DESC, l.user_id DESC LIMIT $4
"""
SQL_BELOW = """
SELECT l.user_id, u.display_name, l.value, l.sort_key
FROM leaderboard l JOIN users u ON u.user_id = l.user_id
WHERE l.board_id = $1 AND (l.sort_key, l.user_id) > ($2, $3)
ORDER BY l.sort_key, l.user_id LIMIT $4
"""
SQL_RANKS = """
SELECT t.u, (SELECT count(*) FROM leaderboard l WHERE l.board_id = t.b AND l.sort_key < t.k) + 1
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(b, u, k)
"""
SQL_FOLLOW = """
SELECT l.user_id, l.sort_key,
       (SELECT count(*) FROM leaderboard b WHERE b.board_id = l.board_id AND b.sort_key < l.sort_key) + 1
FROM leaderboard l WHERE l.board_id = $1 AND l.user_id = ANY($2::text[])
"""
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
    WHERE board_id = $1 AND (sort_key, user_id) > ($2, $3)
    ORDER BY sort_key, user_id LIMIT $4
) page
"""
SQL_SCAN_NAMES = r"""
SELECT count(n) AS named, max(m) AS last_user,
       convert_to(string_agg(
           '$' || octet_length(m) || E'\r\n' || m || E'\r\n$' || octet_length(n) || E'\r\n' || n || E'\r\n', ''
       ) FILTER (WHERE n IS NOT NULL), 'UTF8') AS names
FROM (
    -- a lookup per row, in user_id order (neighbouring index pages): no plan can turn it into a scan of users
    SELECT l.user_id AS m, (SELECT u.display_name FROM users u WHERE u.user_id = l.user_id) AS n
    FROM leaderboard l
    WHERE l.board_id = $1 AND l.user_id > $2
    ORDER BY l.user_id LIMIT $3
) page
"""
SQL_LAST_VERSION = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM leaderboard_version_seq"
MISSING_TTL_S, MISSING_MAX = 5.0, 10_000
SEQ_SCALE = 1024  # push seq = version * SEQ_SCALE + changes applied out of version order (cache.py _WRITE)


def _board(row: asyncpg.Record) -> BoardInfo:
    return BoardInfo(row["id"], row["title"], row["sort_order"], row["operator"], row["format"], row["created_at"])


def _member(row: asyncpg.Record) -> Member:
    return Member(row["user_id"], row["display_name"], row["sort_key"])


class Store:
    """All SQL the service runs. The pool is owned by the app's lifespan."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._boards: dict[str, BoardInfo] = {}
        self._missing: dict[str, float] = {}  # board id -> until when "no such board" is believed

    # ---- boards -------------------------------------------------------------------------------------------

    async def board(self, board_id: str) -> BoardInfo | None:
        """Boards never change once created, so a hit in the process cache is final. A miss is remembered
        for a few seconds (a client asking for junk boards costs no query each), and forgotten at once when
        a board is created anywhere (`forget_missing`, via Redis pub/sub)."""
        found = self._boards.get(board_id)
        if found is None:
            now = time.monotonic()
            if self._missing.get(board_id, 0.0) > now:
                return None
            row = await self.pool.fetchrow(SQL_BOARD, board_id)
            if row is not None:
                found = self._boards[board_id] = _board(row)
            else:
                if len(self._missing) >= MISSING_MAX:
                    self._missing.clear()
                self._missing[board_id] = now + MISSING_TTL_S
        return found

    def forget_missing(self, board_id: str | None = None) -> None:
        if board_id is None:
            self._missing.clear()
        else:
            self._missing.pop(board_id, None)

    async def boards(self) -> list[BoardInfo]:
        rows = await self.pool.fetch(SQL_BOARDS)
        self._boards.update((r["id"], _board(r)) for r in rows)
        return [_board(r) for r in rows]

    async def create_board(self, spec: BoardCreate) -> BoardInfo | None:
        """The new board, or None if the id exists."""
        title = spec.title or spec.id
        row = await self.pool.fetchrow(SQL_CREATE_BOARD, spec.id, title, spec.sort, spec.operator, spec.format)
        return None if row is None else _board(row)

    # ---- the write path -----------------------------------------------------------------------------------

    async def commit_batch(self, batch: Sequence[Write]) -> BatchResult:
        """Apply a batch of submissions in one transaction; a refused row never fails the others."""
        async with self.pool.acquire() as con, con.transaction():
            return await _apply(con, batch)

    # ---- reads (the fallback when the cache is not ready) -------------------------------------------------

    async def top(self, board: BoardInfo, offset: int, limit: int, seq: int) -> TopSlice:
        """One page of the board, from one snapshot."""
        async with self.pool.acquire() as con, con.transaction(readonly=True, isolation="repeatable_read"):
            total = await con.fetchval(SQL_TOTAL, board.id)
            members = [_member(r) for r in await con.fetch(SQL_PAGE, board.id, limit, offset)]
            first = 1 + await con.fetchval(SQL_BETTER, board.id, members[0].key) if members else 0
        return TopSlice(seq, total, offset, first, members)

    async def standing(self, board: BoardInfo, user_id: str, around: int, seq: int) -> Standing | None:
        """The player's rank and the `around` members above and below, from one snapshot; None if absent."""
        async with self.pool.acquire() as con, con.transaction(readonly=True, isolation="repeatable_read"):
            row = await con.fetchrow(SQL_ENTRY, board.id, user_id)
            if row is None:
                return None
            me = _member(row)
            total = await con.fetchval(SQL_TOTAL, board.id)
            rank = 1 + await con.fetchval(SQL_BETTER, board.id, me.key)
            members, start, first = [me], rank - 1, rank  # (a one-member page needs no exact start)
            if around:
                above = [_member(r) for r in await con.fetch(SQL_ABOVE, board.id, me.key, user_id, around)]
                below = [_member(r) for r in await con.fetch(SQL_BELOW, board.id, me.key, user_id, around)]
                members = [*reversed(above), me, *below]
                head = members[0]
                first = 1 + await con.fetchval(SQL_BETTER, board.id, head.key)
                start = await con.fetchval(SQL_POSITION, board.id, head.key, head.user_id)
        return Standing(seq, total, rank, user_id, TopSlice(seq, total, start, first, members))

    async def ranks(self, keys: Sequence[tuple[str, str, int]]) -> dict[tuple[str, str], int]:
        """Ranks for (board, user_id, sort_key) triples, answered by Postgres."""
        if not keys:
            return {}
        boards, users, sks = zip(*keys, strict=True)
        rows = await self.pool.fetch(SQL_RANKS, list(boards), list(users), list(sks))
        return {(b, r[0]): r[1] for b, r in zip(boards, rows, strict=True)}

    async def follow(self, board_id: str, users: Sequence[str]) -> dict[str, Position | None]:
        """{user: position or None}, answered by Postgres."""
        found = {r[0]: Position(r[1], r[2]) for r in await self.pool.fetch(SQL_FOLLOW, board_id, list(users))}
        return {u: found.get(u) for u in users}

    async def scan(self, board_id: str, batch: int) -> AsyncGenerator[tuple[bytes, int, bytes], None]:
        """A whole board as RESP pages `(command, pairs, body)`: command b"ZADD" (sort key, member), b"HSET-V"
        (member, version) or b"HSET-N" (member, name). All pages come from one snapshot (REPEATABLE READ): a
        row committed after the scan began is not in it, so that row's own cache write (which follows its
        commit) lands after the rebuild emptied the board, and nothing falls between the two."""
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
            key, user = -ranking.MAX_VALUE - 1, ""
            while True:
                page = await con.fetchrow(SQL_SCAN_RANKS, board_id, key, user, batch)
                if page is None or not page["members"]:
                    break
                yield b"ZADD", page["members"], page["scores"]
                yield b"HSET-V", page["members"], page["versions"]
                key, user = page["last_key"], page["last_user"]
            user = ""
            while True:
                page = await con.fetchrow(SQL_SCAN_NAMES, board_id, user, batch)
                if page is None or page["last_user"] is None:
                    return
                if page["named"]:
                    yield b"HSET-N", page["named"], page["names"]
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

    async def invariants(self, board_id: str) -> tuple[int, int, int]:
        """(members, highest version, cache debts not yet paid) of a board, from one snapshot."""
        r = await self.pool.fetchrow(SQL_INVARIANTS, board_id)
        assert r is not None
        return r["members"], r["version"], r["owed"]

    async def seq_floor(self) -> int:
        """A push `seq` at least as high as any the cache has issued: see the seq notes in cache.py."""
        last: int = await self.pool.fetchval(SQL_LAST_VERSION)
        return (last + 1) * SEQ_SCALE - 1


IDEMPOTENCY_CONFLICT = "session_id was already used for another submission"


async def _apply(con: Con, batch: Sequence[Write]) -> BatchResult:
    outcomes = [Outcome() for _ in batch]
    keys = sorted({(w.board.id, w.sub.user_id) for w in batch})

    # 1. Lock the rows this batch touches and read their committed values (a consistent order avoids deadlocks).
    old: dict[tuple[str, str], int | None] = dict.fromkeys(keys)
    for r in await con.fetch(SQL_LOCK_ROWS, [k[0] for k in keys], [k[1] for k in keys]):
        old[(r["board_id"], r["user_id"])] = r["value"]

    # 2. Log the sessions; a session_id already there (a retry), or twice in this batch, is a duplicate.
    first_of: dict[uuid.UUID, int] = {}
    for i, w in enumerate(batch):
        first_of.setdefault(w.session_id, i)
    unique = sorted((batch[i] for i in first_of.values()), key=lambda w: w.session_id)
    inserted = {
        r[0]
        for r in await con.fetch(
            SQL_INSERT_SESSIONS,
            [w.session_id for w in unique], [w.board.id for w in unique],
            [w.sub.user_id for w in unique], [w.sub.score for w in unique],
        )
    }  # fmt: skip
    earlier = [w.session_id for w in unique if w.session_id not in inserted]
    logged = {r["session_id"]: r for r in await con.fetch(SQL_EXISTING_SESSIONS, earlier)} if earlier else {}
    fresh: list[int] = []
    for i, w in enumerate(batch):
        if first_of[w.session_id] == i and w.session_id in inserted:
            fresh.append(i)
            continue
        orig = logged.get(w.session_id)
        if orig is not None:
            seen = (orig["board_id"], orig["user_id"], orig["score"])
        else:
            first = batch[first_of[w.session_id]]
            seen = (first.board.id, first.sub.user_id, first.sub.score)
        if seen == (w.board.id, w.sub.user_id, w.sub.score):
            outcomes[i].duplicate = True
        else:
            outcomes[i].error = Conflict(IDEMPOTENCY_CONFLICT, code="idempotency_conflict")

    # 3. Apply each board's operator in arrival order, refusing a row that would overflow.
    final = _compute(batch, fresh, old, outcomes)

    # 4. Users (display names) of the accepted rows, then the board rows that changed.
    names: dict[str, str | None] = {}  # users to upsert: new on a board (the row needs them) or renamed
    for i in fresh:
        w = batch[i]
        if outcomes[i].error is None and (w.sub.display_name is not None or old[(w.board.id, w.sub.user_id)] is None):
            if w.sub.display_name is not None or w.sub.user_id not in names:
                names[w.sub.user_id] = w.sub.display_name
    if names:
        await con.execute(SQL_UPSERT_USERS, list(names), list(names.values()))
    # A player's first row on a board carries their display name into the cache, even when this submission
    # did not repeat it.
    unnamed = sorted({k[1] for k in final if old[k] is None and names.get(k[1]) is None})
    known = {r[0]: r[1] for r in await con.fetch(SQL_NAMES, unnamed)} if unnamed else {}
    cache_names = {**known, **{u: n for u, n in names.items() if n}}
    written = await _write_rows(con, batch, fresh, old, outcomes, final, cache_names)
    refused = [batch[i].session_id for i in fresh if outcomes[i].error]
    if refused:
        await con.execute(SQL_DELETE_SESSIONS, refused)

    # 5. Duplicates answer with the board's current value (after this batch).
    for i, o in enumerate(outcomes):  # a repeat, in this batch, of a new submission this batch refused
        sid = batch[i].session_id
        first_outcome = outcomes[first_of[sid]]
        if o.duplicate and sid not in logged and first_outcome.error is not None:
            o.duplicate, o.error = False, first_outcome.error
    dups = sorted({(batch[i].board.id, batch[i].sub.user_id) for i, o in enumerate(outcomes) if o.duplicate})
    if dups:
        rows = {(r[0], r[1]): r for r in await con.fetch(SQL_CURRENT, [d[0] for d in dups], [d[1] for d in dups])}
        for i, o in enumerate(outcomes):
            if o.duplicate:
                o.value = rows[(batch[i].board.id, batch[i].sub.user_id)]["value"]
        # A retry may follow a crash between an earlier COMMIT and its cache write: write the committed row
        # again (the cache's version check makes this a no-op when Redis already has it).
        have = {(w.board, w.user_id) for w in written}
        written += [_written(r) for k, r in rows.items() if k not in have]

    # 6. What this batch owes Redis, committed with it: the cache write deletes it, a sweeper repairs it.
    owed = [w for w in written if w.fresh]
    intents = {}
    if owed:
        found = await con.fetch(SQL_INTENTS, [w.board for w in owed], [w.user_id for w in owed])
        intents = {r[0]: r[1] for r in found}
    return BatchResult(outcomes, written, intents)


def _written(r: asyncpg.Record) -> Written:
    return Written(r["board_id"], r["user_id"], r["value"], r["sort_key"], r["version"], r["display_name"], False)


def _compute(
    batch: Sequence[Write], fresh: Sequence[int], old: dict[tuple[str, str], int | None], outcomes: list[Outcome]
) -> dict[tuple[str, str], int]:
    """New value per row key; each outcome gets the value after its own submission."""
    final: dict[tuple[str, str], int] = {}
    for i in fresh:
        w = batch[i]
        key = (w.board.id, w.sub.user_id)
        current = final.get(key, old[key])
        try:
            final[key] = outcomes[i].value = ranking.apply(w.board.operator, w.board.sort, current, w.sub.score)
            outcomes[i].error = None
        except ranking.OutOfRange as exc:
            outcomes[i].error = OutOfRange(str(exc))
    return final


async def _write_rows(
    con: Con,
    batch: Sequence[Write],
    fresh: Sequence[int],
    old: dict[tuple[str, str], int | None],
    outcomes: list[Outcome],
    final: dict[tuple[str, str], int],
    names: dict[str, str | None],
) -> list[Written]:
    """Write the rows whose value changed. A row that another transaction created after step 1 is locked,
    and its submissions are recomputed from the value that transaction committed."""
    sorts = {w.board.id: w.board.sort for w in batch}
    written: list[Written] = []

    async def write(sql: str, items: list[tuple[tuple[str, str], int]]) -> set[tuple[str, str]]:
        if not items:
            return set()
        rows = await con.fetch(
            sql, [k[0] for k, _ in items], [k[1] for k, _ in items], [v for _, v in items],
            [ranking.sort_key(v, sorts[k[0]]) for k, v in items],
        )  # fmt: skip
        done = set()
        for r in rows:
            k = (r["board_id"], r["user_id"])
            done.add(k)
            v = final[k]
            written.append(Written(k[0], k[1], v, ranking.sort_key(v, sorts[k[0]]), r["version"], names.get(k[1])))
        return done

    for _attempt in range(3):
        await write(SQL_UPDATE_ROWS, [(k, v) for k, v in final.items() if old[k] is not None and v != old[k]])
        ins = [(k, v) for k, v in final.items() if old[k] is None]
        lost = sorted({k for k, _ in ins} - await write(SQL_INSERT_ROWS, ins))
        if not lost:
            return written
        for r in await con.fetch(SQL_LOCK_ROWS, [k[0] for k in lost], [k[1] for k in lost]):
            old[(r["board_id"], r["user_id"])] = r["value"]
        redo = [i for i in fresh if (batch[i].board.id, batch[i].sub.user_id) in set(lost)]
        final = _compute(batch, redo, old, outcomes)
    raise RuntimeError("could not settle concurrent inserts of new leaderboard rows")
