"""Layer: store.py (Postgres): commit_batch semantics and the fallback reads, against a reference model."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from leaderboard.errors import Conflict, OutOfRange
from leaderboard.protocol import BoardCreate, Submission
from leaderboard.ranking import Position, TopSlice
from leaderboard.store import SEQ_SCALE, BatchResult, BoardInfo, Store, Write
from support.polling import eventually
from support.reference import MAX_VALUE, apply_op, ranked
from support.services import Services
from support.stores import pg_values, session_count

OPERATORS = ["incr", "best", "set"]
SORTS = ["desc", "asc"]
_boards = itertools.count()


async def make_board(store: Store, sort: str = "desc", operator: str = "incr") -> BoardInfo:
    """A new board of its own (ids never repeat within the session)."""
    info = await store.create_board(BoardCreate(id=f"st{next(_boards)}", sort=sort, operator=operator))  # type: ignore[arg-type]
    assert info is not None
    return info


def w(board: BoardInfo, user: str, score: int, sid: uuid.UUID | None = None, name: str | None = None) -> Write:
    sub = Submission(user_id=user, score=score, board=board.id, session_id=sid, display_name=name)
    return Write(sub, sid or uuid.uuid4(), board)


def key(value: int, sort: str) -> int:
    """The reference sort key: smaller is better on both sorts."""
    return -value if sort == "desc" else value


def listing(page: TopSlice, sort: str) -> list[tuple[int, str, int]]:
    """(rank, user_id, score) of a page, as a client would show it."""
    return [(r, m.user_id, key(m.key, sort)) for r, m in zip(page.ranks(), page.members, strict=True)]


def reference(values: dict[str, int], sort: str) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["user_id"], e["score"]) for e in ranked(values, sort)]


async def session_ids(pool: asyncpg.Pool) -> set[uuid.UUID]:
    return {r[0] for r in await pool.fetch("SELECT session_id FROM game_sessions")}


# ---------------------------------------------------------------------------------------------------------
# commit_batch


async def test_new_rows_are_committed_and_reported_written(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    assert board is not None and (board.sort, board.operator) == ("desc", "incr")
    batch = [w(board, "alice", 30, name="Alice"), w(board, "bob", -5), w(board, "carol", 0, name="C")]
    result = await store.commit_batch(batch)
    assert [(o.duplicate, o.value, o.error) for o in result.outcomes] == [(False, v, None) for v in (30, -5, 0)]
    rows = await pool.fetch("SELECT user_id, value, sort_key, version FROM leaderboard WHERE board_id = 'global'")
    committed = {r["user_id"]: (r["value"], r["sort_key"], r["version"]) for r in rows}
    assert {(x.user_id, x.value, x.sort_key, x.version) for x in result.written} == {
        (u, *committed[u]) for u in ("alice", "bob", "carol")
    }
    assert {x.user_id: x.display_name for x in result.written} == {"alice": "Alice", "bob": None, "carol": "C"}
    assert all(x.board == "global" for x in result.written)
    assert committed["bob"][:2] == (-5, 5)  # desc: sort key = -value
    assert await session_ids(pool) == {x.session_id for x in batch}
    users = {r[0]: r[1] for r in await pool.fetch("SELECT user_id, display_name FROM users")}
    assert users == {"alice": "Alice", "bob": None, "carol": "C"}


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("operator", OPERATORS)
async def test_operator_applies_to_the_committed_value(
    store: Store, pool: asyncpg.Pool, operator: str, sort: str
) -> None:
    board = await make_board(store, sort, operator)
    model: dict[str, int] = {}
    for batch in ([("a", 10), ("b", 5)], [("a", 7), ("b", 20), ("c", -4)], [("a", -3), ("c", -9)], [("a", 12)]):
        result = await store.commit_batch([w(board, u, s) for u, s in batch])
        for (user, score), outcome in zip(batch, result.outcomes, strict=True):
            model[user] = apply_op(operator, sort, model.get(user), score)
            assert (outcome.error, outcome.duplicate, outcome.value) == (None, False, model[user]), (user, score)
        assert await pg_values(pool, board.id) == model
        for x in result.written:
            assert (x.value, x.sort_key) == (model[x.user_id], key(model[x.user_id], sort))


@pytest.mark.parametrize("operator", OPERATORS)
async def test_a_players_submissions_in_one_batch_apply_in_order(
    store: Store, pool: asyncpg.Pool, operator: str
) -> None:
    board = await make_board(store, "desc", operator)
    await store.commit_batch([w(board, "a", 4)])
    scores = [1, 9, 3, -2]
    result = await store.commit_batch([w(board, "a", s) for s in scores] + [w(board, "b", 1)])
    expected, value = [], 4
    for s in scores:
        value = apply_op(operator, "desc", value, s)
        expected.append(value)
    assert [o.value for o in result.outcomes[:4]] == expected
    assert await pg_values(pool, board.id) == {"a": expected[-1], "b": 1}
    # one written row per player, with the value after the last submission
    assert sorted((x.user_id, x.value) for x in result.written) == [("a", expected[-1]), ("b", 1)]


async def test_a_retried_session_is_a_duplicate_answered_with_the_current_value(
    store: Store, pool: asyncpg.Pool
) -> None:
    board = await store.board("global")
    assert board is not None
    sid = uuid.uuid4()
    await store.commit_batch([w(board, "a", 10, sid)])
    await store.commit_batch([w(board, "a", 5)])
    result = await store.commit_batch([w(board, "a", 10, sid), w(board, "b", 1)])
    dup = result.outcomes[0]
    assert (dup.duplicate, dup.value, dup.error) == (True, 15, None)  # the board's value now, not 10
    assert [x.user_id for x in result.written if x.fresh] == ["b"]
    # the duplicate's current row goes to the cache again (a crash may have lost its first cache write)
    assert [(x.user_id, x.value) for x in result.written if not x.fresh] == [("a", 15)]
    assert await pg_values(pool) == {"a": 15, "b": 1}
    assert await session_count(pool) == 3


async def test_a_session_twice_in_one_batch_counts_once(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    assert board is not None
    sid = uuid.uuid4()
    result = await store.commit_batch([w(board, "a", 10, sid), w(board, "a", 10, sid), w(board, "a", 5)])
    assert [(o.duplicate, o.value, o.error) for o in result.outcomes] == [
        (False, 10, None),
        (True, 15, None),  # answered with the value after the batch
        (False, 15, None),
    ]
    assert await pg_values(pool) == {"a": 15}
    assert await session_count(pool) == 2


@pytest.mark.parametrize("change", ["user", "board", "score"])
async def test_idempotency_conflict_is_refused_and_writes_nothing(
    store: Store, pool: asyncpg.Pool, change: str
) -> None:
    board = await store.board("global")
    other = await make_board(store)
    assert board is not None
    sid = uuid.uuid4()
    await store.commit_batch([w(board, "a", 10, sid)])
    before = await pool.fetch("SELECT * FROM game_sessions")
    reuse = {
        "user": w(board, "zed", 10, sid),
        "board": w(other, "a", 10, sid),
        "score": w(board, "a", 11, sid),
    }[change]
    result = await store.commit_batch([w(board, "b", 2), reuse, w(board, "c", 3)])
    bad = result.outcomes[1]
    assert isinstance(bad.error, Conflict) and bad.error.code == "idempotency_conflict", bad
    assert not bad.duplicate
    assert [(o.error, o.value) for o in (result.outcomes[0], result.outcomes[2])] == [(None, 2), (None, 3)]
    assert sorted(x.user_id for x in result.written) == ["b", "c"]
    assert await pg_values(pool) == {"a": 10, "b": 2, "c": 3}
    assert await pg_values(pool, other.id) == {}
    after = await pool.fetch("SELECT * FROM game_sessions WHERE session_id = $1", sid)
    assert [dict(r) for r in after] == [dict(r) for r in before]  # the original log row, untouched
    assert await pool.fetchval("SELECT count(*) FROM users WHERE user_id = 'zed'") == 0


async def test_idempotency_conflict_within_one_batch(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    assert board is not None
    sid = uuid.uuid4()
    result = await store.commit_batch([w(board, "a", 10, sid), w(board, "b", 10, sid)])
    assert result.outcomes[0].error is None and result.outcomes[0].value == 10
    assert isinstance(result.outcomes[1].error, Conflict)
    assert await pg_values(pool) == {"a": 10}
    assert await pool.fetchval("SELECT user_id FROM game_sessions WHERE session_id = $1", sid) == "a"


async def test_out_of_range_is_refused_without_failing_its_neighbours(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    assert board is not None
    await store.commit_batch([w(board, "a", MAX_VALUE - 1), w(board, "low", -MAX_VALUE)])
    batch = [
        w(board, "a", 5),  # would leave the range: refused
        w(board, "b", 3),
        w(board, "a", 1),  # applies to the committed value: exactly MAX_VALUE
        w(board, "low", -1),  # below -MAX_VALUE: refused
    ]
    result = await store.commit_batch(batch)
    refused = [i for i, o in enumerate(result.outcomes) if o.error is not None]
    assert refused == [0, 3]
    for i in refused:
        error = result.outcomes[i].error
        assert isinstance(error, OutOfRange) and error.code == "out_of_range", error
    assert [result.outcomes[i].value for i in (1, 2)] == [3, MAX_VALUE]
    assert await pg_values(pool) == {"a": MAX_VALUE, "b": 3, "low": -MAX_VALUE}
    logged = await session_ids(pool)
    assert batch[1].session_id in logged and batch[2].session_id in logged
    assert batch[0].session_id not in logged and batch[3].session_id not in logged  # refused: no log row
    assert sorted(x.user_id for x in result.written) == ["a", "b"]


async def test_a_refused_session_repeated_in_its_batch_is_refused_too_and_may_be_retried(
    store: Store, pool: asyncpg.Pool
) -> None:
    board = await store.board("global")
    assert board is not None
    await store.commit_batch([w(board, "a", MAX_VALUE)])
    sid = uuid.uuid4()
    result = await store.commit_batch([w(board, "a", 1, sid), w(board, "a", 1, sid)])
    assert [type(o.error) for o in result.outcomes] == [OutOfRange, OutOfRange]
    assert not any(o.duplicate for o in result.outcomes)
    assert result.written == []
    assert sid not in await session_ids(pool)
    # nothing was logged, so the same session is new later (here, after the value went down)
    await store.commit_batch([w(board, "a", -10)])
    again = await store.commit_batch([w(board, "a", 1, sid)])
    assert (again.outcomes[0].error, again.outcomes[0].duplicate, again.outcomes[0].value) == (
        None,
        False,
        MAX_VALUE - 9,
    )


async def test_versions_strictly_increase_and_match_postgres(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    assert board is not None
    seen: list[int] = []
    for batch in ([("a", 1), ("b", 2)], [("a", 1)], [("c", 3), ("b", 1), ("a", 1)], [("b", 1)]):
        result = await store.commit_batch([w(board, u, s) for u, s in batch])
        versions = [x.version for x in result.written]
        assert len(set(versions)) == len(versions)
        assert not seen or min(versions) > max(seen), (seen, versions)
        seen += versions
        rows = await pool.fetch("SELECT user_id, version FROM leaderboard WHERE board_id = 'global'")
        committed = {r[0]: r[1] for r in rows}
        assert all(committed[x.user_id] == x.version for x in result.written)


async def test_an_unchanged_value_writes_no_row(store: Store, pool: asyncpg.Pool) -> None:
    board = await make_board(store, "desc", "best")
    first = await store.commit_batch([w(board, "a", 50)])
    result = await store.commit_batch([w(board, "a", 20)])  # not better: the row stays as it was
    assert (result.outcomes[0].error, result.outcomes[0].value) == (None, 50)
    assert result.written == []
    version = await pool.fetchval("SELECT version FROM leaderboard WHERE board_id = $1", board.id)
    assert version == first.written[0].version


async def test_names_travel_with_the_rows(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    laps = await make_board(store, "asc", "best")
    assert board is not None
    await store.commit_batch([w(board, "a", 1, name="Alice")])
    # a's first row on another board carries the name given earlier, and so does every later row
    result = await store.commit_batch([w(laps, "a", 60)])
    assert [(x.board, x.display_name) for x in result.written] == [(laps.id, "Alice")]
    result = await store.commit_batch([w(laps, "a", 55)])
    assert [(x.board, x.display_name) for x in result.written] == [(laps.id, "Alice")]
    # a new name in a batch: the last one given wins, for every row of the player in that batch
    result = await store.commit_batch([w(board, "a", 1, name="Al"), w(laps, "a", 50), w(laps, "a", 40, name="Ace")])
    assert sorted((x.board, x.display_name) for x in result.written) == sorted([("global", "Ace"), (laps.id, "Ace")])
    assert await pool.fetchval("SELECT display_name FROM users WHERE user_id = 'a'") == "Ace"
    # a submission without a name keeps the stored one
    await store.commit_batch([w(board, "a", 1)])
    assert await pool.fetchval("SELECT display_name FROM users WHERE user_id = 'a'") == "Ace"


async def test_concurrent_batches_on_overlapping_players_settle_exactly(store: Store, pool: asyncpg.Pool) -> None:
    board = await store.board("global")
    assert board is not None
    old = [f"old{i}" for i in range(6)]
    await store.commit_batch([w(board, u, 0) for u in old])
    rounds = 20

    async def worker(order: list[int]) -> None:
        for r in range(rounds):
            # the same new players in both tasks (their rows race to be inserted) and the same old ones
            players = [f"new{r}-{i}" for i in range(6)] + old
            result = await store.commit_batch([w(board, players[i], 1) for i in order])
            assert all(o.error is None and not o.duplicate for o in result.outcomes)

    orders = [list(range(12)), [*range(11, -1, -2), *range(10, -1, -2)]]
    await asyncio.wait_for(asyncio.gather(*(worker(o) for o in orders)), 90)
    expected = {u: rounds * 2 for u in old} | {f"new{r}-{i}": 2 for r in range(rounds) for i in range(6)}
    assert await pg_values(pool) == expected
    assert await session_count(pool) == len(old) + rounds * 2 * 12


async def waiting(pool: asyncpg.Pool, statement: str, count: int = 1) -> None:
    """Wait until `count` backends of this database wait for a lock in a statement containing `statement`."""

    async def check() -> None:
        n = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND strpos(query, $1) > 0",
            statement,
        )
        assert n >= count, (statement, n)

    await eventually(check, within=20, interval=0.01)


async def test_a_row_created_by_a_third_batch_does_not_deadlock_two_others(
    store: Store, pool: asyncpg.Pool, services: Services
) -> None:
    """Two batches of the same two players x and u, both new when the first (C) starts; a third (D) creates x
    in between, so the second (A) locks x in its step 1 while C finds x taken when it inserts. Two plain
    transactions, each holding one session id's lock and log row, pace C and A through that interleaving. (The Python
    write path this pinned took row locks in two passes and deadlocked here; lb_submit locks every player in
    one sorted pass: row locks in sql/004-008, one advisory lock per player since sql/009.)"""
    board = await store.board("global")
    assert board is not None
    sid_c, sid_a = uuid.uuid4(), uuid.uuid4()
    pacers = [await asyncpg.connect(services.dsn) for _ in range(2)]
    holds = [con.transaction() for con in pacers]
    tasks: list[asyncio.Task[BatchResult]] = []
    try:
        for con, hold, sid in zip(pacers, holds, (sid_c, sid_a), strict=True):
            await hold.start()
            await con.execute("SELECT lb_lock_sessions($1::uuid[])", [sid])  # as lb_submit does (sql/006)
            await con.execute(
                "INSERT INTO game_sessions (session_id, board_id, user_id, score, season)"
                " VALUES ($1, 'global', 'x', 1, 1)",
                sid,
            )
        # C: step 1 finds neither x nor u, then waits to log its session
        tasks.append(asyncio.create_task(store.commit_batch([w(board, "x", 1, sid_c), w(board, "u", 1)])))
        await waiting(pool, "lb_submit")
        # D creates x
        await store.commit_batch([w(board, "x", 1)])
        # A: step 1 locks x, then waits to log its session
        tasks.append(asyncio.create_task(store.commit_batch([w(board, "x", 1, sid_a), w(board, "u", 1)])))
        await waiting(pool, "lb_submit", 2)
        # C goes on (x is taken now), then A
        await holds[0].rollback()
        await holds[1].rollback()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for con in pacers:
            await con.close()
    assert all(o.error is None for r in results for o in r.outcomes)
    assert await pg_values(pool) == {"x": 3, "u": 2}


# ---------------------------------------------------------------------------------------------------------
# reads (the fallback when Redis is not ready)

VALUES = {"a": 5, "B": 7, "b": 7, "c.d": -3, "e@x": 7, "Z-9": 0, "u_1": 5, "u:2": 12}  # ties; mixed-case ids
NAMED = {"a": "Ann", "b": "Bo", "u:2": "Ute"}


@pytest.fixture(params=SORTS)
async def seeded(request: Any, store: Store) -> tuple[BoardInfo, str]:
    board = await make_board(store, request.param, "set")
    await store.commit_batch([w(board, u, v, name=NAMED.get(u)) for u, v in VALUES.items()])
    return board, request.param


async def test_top_pages_equal_the_reference(store: Store, seeded: tuple[BoardInfo, str]) -> None:
    board, sort = seeded
    want = reference(VALUES, sort)
    for limit in (1, 3, 8, 20):
        got: list[tuple[int, str, int]] = []
        for offset in range(0, len(VALUES), limit):
            page = await store.top(board, offset, limit, 77)
            assert (page.seq, page.total, page.offset) == (77, len(VALUES), offset)
            got += listing(page, sort)
        assert got == want, limit
    page = await store.top(board, 0, 20, 1)
    assert {m.user_id: m.display_name for m in page.members} == {u: NAMED.get(u) for u in VALUES}
    past = await store.top(board, 8, 5, 1)
    assert (past.total, past.members, past.first_rank) == (8, [], 0)


async def test_standing_equals_the_reference(store: Store, seeded: tuple[BoardInfo, str]) -> None:
    board, sort = seeded
    want = reference(VALUES, sort)
    for i, (rank, user, _) in enumerate(want):
        for around in (0, 1, 3):
            found = await store.standing(board, user, around, 5)
            assert found is not None
            assert (found.seq, found.total, found.rank, found.user_id) == (5, len(VALUES), rank, user)
            start = max(i - around, 0)
            assert listing(found.page, sort) == want[start : i + around + 1], (user, around)
            if around:
                assert found.page.offset == start
    assert await store.standing(board, "nobody", 2, 0) is None


async def test_follow_and_ranks_equal_the_reference(store: Store, seeded: tuple[BoardInfo, str]) -> None:
    board, sort = seeded
    rank_of = {user: rank for rank, user, _ in reference(VALUES, sort)}
    users = ["u:2", "nobody", "b", "Z-9"]
    assert await store.follow(board.id, users) == {
        u: (Position(key(VALUES[u], sort), rank_of[u]) if u in VALUES else None) for u in users
    }

    def would_rank(value: int) -> int:
        return 1 + sum(1 for v in VALUES.values() if key(v, sort) < key(value, sort))

    asked = [(board.id, "a", key(5, sort), 1), (board.id, "x", key(100, sort), 1), (board.id, "y", key(-100, sort), 1)]
    assert await store.ranks(asked) == {
        (board.id, "a"): rank_of["a"],
        (board.id, "x"): would_rank(100),
        (board.id, "y"): would_rank(-100),
    }
    assert await store.ranks([]) == {}


def resp_pairs(body: bytes) -> list[tuple[str, str]]:
    """The (field, value) pairs of a page's RESP bulk strings."""
    parts, pos = [], 0
    while pos < len(body):
        size_end = body.index(b"\r\n", pos)
        size = int(body[pos + 1 : size_end])
        parts.append(body[size_end + 2 : size_end + 2 + size].decode())
        pos = size_end + 2 + size + 2
    return list(zip(parts[::2], parts[1::2], strict=True))


async def test_scan_reads_ranks_and_names_from_one_snapshot(store: Store) -> None:
    """Store.scan (a rebuild) reads the ranks and the names on two connections at once: the second one imports
    the first one's snapshot, so a rename or a new player committed once the scan has begun is in no page."""
    board = await store.board("global")
    assert board is not None
    names = {f"p{i:02}": f"Name {i}" for i in range(25)}
    await store.commit_batch([w(board, u, i + 1, name=n) for i, (u, n) in enumerate(names.items())])
    pages = store.scan("global", 10)
    assert (await anext(pages))[0] == b"SEASON"
    await store.commit_batch([w(board, "p03", 100, name="Renamed"), w(board, "late", 7, name="Late")])
    got: dict[bytes, list[tuple[str, str]]] = {}
    async for what, pairs, body in pages:
        got.setdefault(what, []).extend(resp_pairs(body))
        assert len(resp_pairs(body)) == pairs
    assert dict(got[b"HSET-N"]) == names
    assert [m for _, m in got[b"ZADD"]] == [f"p{i:02}" for i in reversed(range(25))]  # rank order, as of the start
    assert {m for m, _ in got[b"HSET-V"]} == set(names)


async def test_seq_floor_covers_every_version_issued(store: Store) -> None:
    board = await store.board("global")
    assert board is not None
    floors = []
    for _ in range(3):
        result = await store.commit_batch([w(board, "a", 1)])
        floor = await store.seq_floor()
        assert floor == (result.written[0].version + 1) * SEQ_SCALE - 1
        floors.append(floor)
    assert floors == sorted(set(floors))


# ---------------------------------------------------------------------------------------------------------
# property: any sequence of batches, on any board, does what a pure model of the contract says

USERS = ["a", "B", "b", "u:2"]
SCORES = st.one_of(
    st.integers(min_value=-50, max_value=50),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([MAX_VALUE, -MAX_VALUE]),  # so that incr can leave the range
)
# each submission: (user, score, what it is, which earlier submission a retry or conflict reuses)
SUBMISSION = st.tuples(
    st.sampled_from(USERS), SCORES, st.sampled_from(["new", "new", "new", "retry", "conflict"]), st.integers(0, 99)
)
workloads = st.tuples(
    st.sampled_from(OPERATORS),
    st.sampled_from(SORTS),
    st.lists(st.lists(SUBMISSION, min_size=1, max_size=6), min_size=1, max_size=5),
)


@dataclass
class Model:
    """The contract of commit_batch, written from docs/protocol.md, not from store.py."""

    operator: str
    sort: str
    values: dict[str, int] = field(default_factory=dict)
    logged: dict[uuid.UUID, tuple[str, int]] = field(default_factory=dict)

    def batch(self, subs: list[tuple[uuid.UUID, str, int]]) -> tuple[list[tuple[str, Any]], dict[str, int]]:
        """Expected (kind, value) per submission and the rows written (user -> value)."""
        before = dict(self.values)
        first: dict[uuid.UUID, int] = {}
        out: list[tuple[str, Any]] = []
        accepted: set[str] = set()
        for i, (sid, user, score) in enumerate(subs):
            if sid in self.logged:
                out.append(("duplicate", user) if self.logged[sid] == (user, score) else ("idempotency_conflict", None))
            elif sid in first:
                j = first[sid]
                if subs[j][1:] != (user, score):
                    out.append(("idempotency_conflict", None))
                else:
                    out.append(out[j] if out[j][0] == "out_of_range" else ("duplicate", user))
            else:
                first[sid] = i
                new = apply_op(self.operator, self.sort, self.values.get(user), score)
                if abs(new) > MAX_VALUE:
                    out.append(("out_of_range", None))
                else:
                    self.values[user] = new
                    accepted.add(user)
                    out.append(("ok", new))
        for sid, i in first.items():
            if out[i][0] == "ok":
                self.logged[sid] = subs[i][1:]
        out = [(k, self.values[v]) if k == "duplicate" else (k, v) for k, v in out]
        written = {u: self.values[u] for u in accepted if before.get(u) != self.values[u] or u not in before}
        return out, written


def kind(outcome: Any) -> tuple[str, Any]:
    if outcome.error is not None:
        return outcome.error.code, None
    return ("duplicate" if outcome.duplicate else "ok"), outcome.value


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=workloads)
async def test_any_batches_follow_the_model(
    workload: tuple[str, str, list[list[tuple[str, int, str, int]]]], store: Store, pool: asyncpg.Pool
) -> None:
    operator, sort, batches = workload
    board = await make_board(store, sort, operator)  # a fresh board per example: fixtures are per test
    model = Model(operator, sort)
    history: list[tuple[uuid.UUID, str, int]] = []
    last_version = 0
    for spec in batches:
        subs: list[tuple[uuid.UUID, str, int]] = []
        for user, score, what, pick in spec:
            earlier = history + subs
            if what == "new" or not earlier:
                subs.append((uuid.uuid4(), user, score))
            elif what == "retry":
                subs.append(earlier[pick % len(earlier)])
            else:
                sid, u, s = earlier[pick % len(earlier)]
                subs.append(
                    (sid, u, s - 1 if s > 0 else s + 1) if pick % 2 else (sid, "other" if u != "other" else "a", s)
                )
        history += subs
        want, written = model.batch(subs)
        result: BatchResult = await store.commit_batch([w(board, u, s, sid) for sid, u, s in subs])
        assert [kind(o) for o in result.outcomes] == want, subs
        for k, _ in want:
            event(k)  # shown by --hypothesis-show-statistics: every kind of outcome is exercised
        assert {x.user_id: x.value for x in result.written if x.fresh} == written
        assert all(model.values[x.user_id] == x.value for x in result.written)  # duplicates' rows: current
        assert all(x.sort_key == key(x.value, sort) for x in result.written)
        versions = [x.version for x in result.written if x.fresh]
        assert all(v > last_version for v in versions)
        last_version = max([last_version, *versions])
        assert await pg_values(pool, board.id) == model.values
    page = await store.top(board, 0, 100, 0)
    assert listing(page, sort) == reference(model.values, sort)
    assert await pool.fetchval("SELECT count(*) FROM game_sessions WHERE board_id = $1", board.id) == len(model.logged)


async def test_submit_probes_player_rows_by_primary_key_with_plans_made_on_an_empty_database(scratch_db: str) -> None:
    """sql/008: lb_submit's plans are made once per connection, here while the tables are empty and have no
    statistics; the board then grows to 20,000 players, and a batch still probes its players' rows by the
    primary key: not one row of the table is read by a sequential scan (sql/007 hash-joined over one)."""
    from leaderboard import migrations

    await migrations.apply_migrations(scratch_db)
    con = await asyncpg.connect(scratch_db)

    async def batch(users: list[str]) -> None:
        await con.fetch(
            "SELECT * FROM lb_submit($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])",
            [uuid.uuid4() for _ in users], ["global"] * len(users), users, [1] * len(users), [None] * len(users),
        )  # fmt: skip

    try:
        for n in range(8):  # PL/pgSQL settles on a generic plan after five calls
            await batch([f"early{n}-{i}" for i in range(3)])
        await con.execute(
            "INSERT INTO users (user_id) SELECT 'p' || g FROM generate_series(1, 20000) g;"
            "INSERT INTO leaderboard (board_id, season, user_id, value, sort_key, version)"
            " SELECT 'global', 1, 'p' || g, g, -g, 0 FROM generate_series(1, 20000) g"
        )
        async with con.transaction():
            await batch([f"p{i}" for i in range(1, 20001, 400)] + ["newcomer"])
            scanned = await con.fetch(
                "SELECT relname, seq_tup_read FROM pg_stat_xact_user_tables WHERE seq_tup_read > 0"
                " AND (relname IN ('leaderboard', 'users') OR relname LIKE 'game_sessions%')"
            )
            idx = await con.fetchval("SELECT idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'leaderboard'")
        assert [tuple(r) for r in scanned] == [], "rows read by sequential scans"
        assert idx > 0
        assert await con.fetchval("SELECT value FROM leaderboard WHERE user_id = 'p401'") == 402
    finally:
        await con.close()


async def test_the_submit_functions_never_jit_compile(scratch_db: str) -> None:
    """sql/010: lb_submit and lb_apply run with enable_nestloop off (sql/008), which prices each primary-key probe
    above 10^10, so a PostgreSQL that can JIT (built with LLVM, jit = on: Debian's, the Docker image) compiled
    every statement in them on every call, ~800 ms a batch. Every function that turns nested loops off turns
    JIT off too; where this PostgreSQL can JIT, a batch with JIT as eager as it gets compiles nothing, while a
    plain query beside it does (so the check can see JIT)."""
    from leaderboard import migrations

    await migrations.apply_migrations(scratch_db)
    con = await asyncpg.connect(scratch_db)
    try:
        configs = {r["proname"]: r["proconfig"] for r in await con.fetch(
            "SELECT proname, proconfig FROM pg_proc WHERE 'enable_nestloop=off' = ANY (proconfig)"
        )}  # fmt: skip
        assert {"lb_submit", "lb_apply"} <= set(configs)
        assert all("jit=off" in config for config in configs.values()), configs
        if not await con.fetchval("SELECT pg_jit_available()"):
            return  # built without LLVM (the embedded PostgreSQL): `make test-system` runs the rest
        submit = await con.prepare(  # (prepared first: asyncpg's own type lookups are not under test)
            "SELECT * FROM lb_submit($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])"
        )
        plans: list[str] = []
        con.add_log_listener(lambda _c, message: plans.append(message.message))
        await con.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
            " SET auto_explain.log_level = notice; SET jit = on; SET jit_above_cost = 0"
        )
        users = [f"p{i}" for i in range(20)]
        async with con.transaction():  # (the deferred foreign-key checks run at COMMIT, outside the function)
            await submit.fetch(
                [uuid.uuid4() for _ in users], ["global"] * len(users), users, [1] * len(users), [None] * len(users)
            )
            inside = [p for p in plans if "FROM lb_submit(" not in p]
        assert len(inside) > 5 and not [p for p in inside if "JIT:" in p], "statements of lb_submit JIT-compiled"
        plans.clear()
        await con.fetchval("SELECT count(*) FROM leaderboard")
        assert any("JIT:" in p for p in plans)
    finally:
        await con.close()


async def test_scan_raises_when_one_of_its_readers_fails(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure of the names' connection ends the scan with that error (the rebuild fails and is retried), not
    with a scan that waits forever for the reader that died."""
    board = await store.board("global")
    assert board is not None
    await store.commit_batch([w(board, f"p{i}", i, name=f"N{i}") for i in range(30)])

    async def failing(*_: Any) -> Any:
        yield b"HSET-N", 0, b""
        raise asyncpg.PostgresConnectionError("the connection was lost")

    monkeypatch.setattr(store, "_name_pages", failing)
    with pytest.raises(asyncpg.PostgresConnectionError):
        async with asyncio.timeout(10):
            async for _ in store.scan("global", 10):
                pass
