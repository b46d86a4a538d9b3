"""The submission log partitioned by month (sql/006, partitions.py): the conversion of a populated database,
partitions ahead, the DEFAULT partition as a safety net, retention, idempotency across a month boundary and under
concurrency, and `leaderboard maintain`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from leaderboard import partitions
from leaderboard.errors import Conflict
from leaderboard.migrations import apply_migrations, available
from leaderboard.protocol import BoardCreate, Submission
from leaderboard.settings import ConfigError, load_settings
from leaderboard.store import BoardInfo, Store, Write
from support.clients import submit
from support.polling import eventually
from support.processes import cli_env
from support.services import ApiKeys, ServerURL, Services
from test_cli import run_cli

LOG_COLUMNS = "session_id, board_id, user_id, score, submitted_at, season"
WIDE = timedelta(days=45)  # a window that reaches into last month on every day of this one


def month_start(months: int = 0) -> datetime:
    """The first instant (UTC) of this month + `months`."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def name_of(at: datetime) -> str:
    return f"game_sessions_{at.astimezone(UTC):%Y_%m}"


async def partition_names(con: asyncpg.Connection | asyncpg.Pool) -> set[str]:
    rows = await con.fetch(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'game_sessions'::regclass"
    )
    return {r[0] for r in rows}


async def log_row(con: asyncpg.Connection | asyncpg.Pool, sid: uuid.UUID, user: str, score: int, at: datetime) -> None:
    await con.execute(
        f"INSERT INTO game_sessions ({LOG_COLUMNS}) VALUES ($1, 'global', $2, $3, $4, 1)", sid, user, score, at
    )


async def to_last_month(pool: asyncpg.Pool, sid: uuid.UUID) -> None:
    """Move a logged session to a minute before this month began, into last month's partition."""
    at = month_start() - timedelta(minutes=1)
    await pool.execute("UPDATE game_sessions SET submitted_at = $2 WHERE session_id = $1", sid, at)
    async with pool.acquire() as con:
        await partitions.ensure(con)  # creates last month's partition if needed (the row is moved into it)
    placed = await pool.fetchval("SELECT tableoid::regclass::text FROM game_sessions WHERE session_id = $1", sid)
    assert placed == name_of(at)


def w(board: BoardInfo, user: str, score: int, sid: uuid.UUID | None = None) -> Write:
    return Write(Submission(user_id=user, score=score, board=board.id, session_id=sid), sid or uuid.uuid4(), board)


@pytest.fixture
async def scratch(scratch_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new database with every migration applied."""
    await apply_migrations(scratch_db)
    con = await asyncpg.connect(scratch_db)
    yield con
    await con.close()


# ---------------------------------------------------------------------------------------------------------
# The conversion


async def test_006_converts_a_populated_log_with_every_row_and_column(scratch_db: str) -> None:
    """A database at 005 with rows over 14 months and two seasons: after 006 every row is there, in its month's
    partition, and the idempotency of the sessions logged before the migration still holds."""
    con = await asyncpg.connect(scratch_db)
    try:
        await con.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in available():
            if version <= 5:
                await con.execute(sql)
                await con.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
        await con.execute(
            f"INSERT INTO game_sessions ({LOG_COLUMNS}) "
            "SELECT gen_random_uuid(), 'global', 'p' || (i % 37), i, now() - make_interval(hours => i * 7), 1 + i % 2 "
            "FROM generate_series(0, 1500) AS i"
        )
        before = await con.fetch(f"SELECT {LOG_COLUMNS} FROM game_sessions ORDER BY session_id")
        oldest = min(r["submitted_at"] for r in before)

        applied = await apply_migrations(scratch_db)
        assert applied[0] == "006_partitioned_log"  # (and the later ones on top of it, on the populated log)

        assert await con.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'game_sessions'::regclass") == "p"
        after = await con.fetch(f"SELECT {LOG_COLUMNS} FROM game_sessions ORDER BY session_id")
        assert after == before
        cols = await con.fetch(
            "SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns "
            "WHERE table_name = 'game_sessions' ORDER BY ordinal_position"
        )
        assert [tuple(c) for c in cols] == [
            ("session_id", "uuid", "NO", None), ("board_id", "text", "NO", None), ("user_id", "text", "NO", "C"),
            ("score", "bigint", "NO", None), ("submitted_at", "timestamp with time zone", "NO", None),
            ("season", "integer", "NO", None),
            ("voided_at", "timestamp with time zone", "YES", None), ("ord", "integer", "NO", None),  # (007)
            ("metadata", "jsonb", "YES", None),  # (007)
        ]  # fmt: skip
        placed = await con.fetch("SELECT tableoid::regclass::text AS part, submitted_at FROM game_sessions")
        assert all(r["part"] == name_of(r["submitted_at"]) for r in placed)
        first = next(m for m in range(-20, 1) if month_start(m) > oldest) - 1  # the oldest row's month
        expected = {name_of(month_start(m)) for m in range(first, 4)} | {"game_sessions_default"}
        assert await partition_names(con) == expected
        assert await con.fetchval("SELECT count(*) FROM game_sessions_default") == 0
        pk = await con.fetchval(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'game_sessions'::regclass "
            "AND indisprimary"
        )
        assert "(session_id, submitted_at)" in pk
        assert await con.fetchval("SELECT to_regclass('game_sessions_unpartitioned')") is None

        # A retry of a session logged before the migration (within the window) is a duplicate in its season;
        # the same id for another score is a conflict.
        old = next(r for r in before if timedelta(days=1) < datetime.now(UTC) - r["submitted_at"] < timedelta(days=20))
        rows = await con.fetch(
            "SELECT status, season FROM lb_submit($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])",
            [old["session_id"], old["session_id"]], ["global", "global"], [old["user_id"], old["user_id"]],
            [old["score"], old["score"] + 1], [None, None],
        )  # fmt: skip
        assert [(r["status"], r["season"]) for r in rows] == [(1, old["season"]), (2, old["season"])]
        assert await con.fetchval("SELECT count(*) FROM game_sessions") == len(before)
    finally:
        await con.close()


# ---------------------------------------------------------------------------------------------------------
# Partitions ahead, and the DEFAULT partition


async def test_partitions_exist_ahead_and_ensure_is_idempotent(scratch: asyncpg.Connection) -> None:
    ahead = {name_of(month_start(i)) for i in range(partitions.MONTHS_AHEAD + 1)}
    assert ahead | {"game_sessions_default"} <= await partition_names(scratch)
    assert await partitions.ensure(scratch) == []
    await scratch.execute(f"DROP TABLE {name_of(month_start(3))}")
    assert await partitions.ensure(scratch) == [(name_of(month_start(3)), 0)]
    assert await partitions.ensure(scratch, ahead=5) == [(name_of(month_start(4)), 0), (name_of(month_start(5)), 0)]
    assert await partitions.ensure(scratch, ahead=5) == []


async def test_a_submission_without_its_month_goes_to_the_default_and_is_moved_later(
    scratch: asyncpg.Connection, scratch_db: str
) -> None:
    """The month's partition missing (nobody ran anything for months): the submission still commits, in the
    DEFAULT partition, a retry is still a duplicate, and the next `ensure` moves it into its new month."""
    current = name_of(month_start())
    await scratch.execute(f"DROP TABLE {current}")
    pool = await asyncpg.create_pool(scratch_db, min_size=1, max_size=2)
    try:
        store = Store(pool)
        board = await store.board("global")
        assert board is not None
        sid = uuid.uuid4()
        first = await store.commit_batch([w(board, "alice", 5, sid)])
        assert first.outcomes[0].error is None and not first.outcomes[0].duplicate
        assert await pool.fetchval("SELECT count(*) FROM game_sessions_default") == 1
        assert (await store.commit_batch([w(board, "alice", 5, sid)])).outcomes[0].duplicate

        assert await partitions.ensure(scratch) == [(current, 1)]
        assert await pool.fetchval("SELECT count(*) FROM game_sessions_default") == 0
        assert await pool.fetchval("SELECT tableoid::regclass::text FROM game_sessions WHERE session_id = $1", sid) == (
            current
        )
        again = await store.commit_batch([w(board, "alice", 5, sid)])
        assert again.outcomes[0].duplicate and again.outcomes[0].value == 5
        assert await pool.fetchval("SELECT value FROM leaderboard WHERE user_id = 'alice'") == 5
    finally:
        await pool.close()


async def test_the_service_creates_the_partitions_ahead_at_start_up(
    make_server: Any, pool: asyncpg.Pool, services: Services
) -> None:
    future = name_of(month_start(partitions.MONTHS_AHEAD))
    await pool.execute(f"DROP TABLE IF EXISTS {future}")
    await make_server()

    async def created() -> None:
        assert future in await partition_names(pool)

    await eventually(created, within=10)


# ---------------------------------------------------------------------------------------------------------
# Idempotency across a month boundary, beyond the window, and under concurrency


async def test_a_retry_across_a_month_boundary_is_a_duplicate_and_a_change_a_conflict(
    pool: asyncpg.Pool, clean: None
) -> None:
    store = Store(pool, WIDE)
    board = await store.board("global")
    assert board is not None
    sid = uuid.uuid4()
    assert not (await store.commit_batch([w(board, "alice", 7, sid)])).outcomes[0].duplicate
    await to_last_month(pool, sid)

    result = await store.commit_batch([w(board, "alice", 7, sid), w(board, "alice", 8, sid), w(board, "bob", 7, sid)])
    assert result.outcomes[0].duplicate and result.outcomes[0].season == 1
    assert [type(o.error) for o in result.outcomes[1:]] == [Conflict, Conflict]
    assert await pool.fetchval("SELECT count(*) FROM game_sessions WHERE session_id = $1", sid) == 1


async def test_a_conflict_across_a_month_boundary_is_a_409(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    server: ServerURL = await make_server(idempotency_window_days=WIDE.days)
    api: httpx.AsyncClient = make_client(server, keys.submit)
    sid = uuid.uuid4()
    await submit(api, "alice", 7, session_id=str(sid))
    await to_last_month(pool, sid)
    again = await submit(api, "alice", 7, session_id=str(sid))
    assert again["duplicate"] is True
    body = await submit(api, "alice", 9, session_id=str(sid), expect=409)
    assert body["code"] == "idempotency_conflict"


async def test_a_session_older_than_the_window_is_forgotten(pool: asyncpg.Pool, clean: None) -> None:
    """Documented: the same id sent again after the window counts as a new submission."""
    store = Store(pool, timedelta(days=7))
    board = await store.board("global")
    assert board is not None
    sid = uuid.uuid4()
    await log_row(pool, sid, "alice", 7, datetime.now(UTC) - timedelta(days=8))
    result = await store.commit_batch([w(board, "alice", 7, sid)])
    assert not result.outcomes[0].duplicate and result.outcomes[0].error is None
    assert await pool.fetchval("SELECT count(*) FROM game_sessions WHERE session_id = $1", sid) == 2
    again = await Store(pool, timedelta(days=30)).commit_batch([w(board, "alice", 7, sid)])  # one answer, the latest
    assert again.outcomes[0].duplicate and again.outcomes[0].value == 7


async def test_a_batch_waits_for_the_transaction_holding_its_session(
    store: Store, pool: asyncpg.Pool, services: Services
) -> None:
    board = await store.board("global")
    assert board is not None
    sid = uuid.uuid4()
    other = await asyncpg.connect(services.dsn)
    try:
        hold = other.transaction()
        await hold.start()
        await other.execute("SELECT lb_lock_sessions($1::uuid[])", [sid])
        await log_row(other, sid, "alice", 3, datetime.now(UTC))
        task = asyncio.create_task(store.commit_batch([w(board, "alice", 3, sid)]))

        async def blocked() -> None:
            n = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event = 'advisory' AND strpos(query, 'lb_submit') > 0"
            )
            assert n == 1

        await eventually(blocked, within=10)
        assert not task.done()
        await hold.commit()
        result = await asyncio.wait_for(task, 10)
        assert result.outcomes[0].duplicate
    finally:
        await other.close()
    assert await pool.fetchval("SELECT count(*) FROM game_sessions WHERE session_id = $1", sid) == 1


async def test_concurrent_identical_submissions_count_once(services: Services, clean: None) -> None:
    """Two connections send the same sessions at once, in opposite orders within their batches, 60 times:
    each session is logged once, counted once, and nothing deadlocks."""
    pools = [await asyncpg.create_pool(services.dsn, min_size=1, max_size=1) for _ in range(2)]
    try:
        stores = [Store(p) for p in pools]
        board = await stores[0].board("global")
        assert board is not None
        accepted = 0
        for i in range(60):
            sids = [uuid.uuid4() for _ in range(3)]
            batch = [w(board, f"p{i % 5}", 1 + k, sid) for k, sid in enumerate(sids)]
            results = await asyncio.gather(stores[0].commit_batch(batch), stores[1].commit_batch(list(reversed(batch))))
            for k in range(3):
                outcomes = [results[0].outcomes[k], results[1].outcomes[2 - k]]
                assert all(o.error is None for o in outcomes)
                assert sorted(o.duplicate for o in outcomes) == [False, True], (i, k)
                accepted += 1 + k
        logged = await pools[0].fetch("SELECT session_id, count(*) FROM game_sessions GROUP BY 1")
        assert len(logged) == 180 and all(r[1] == 1 for r in logged)
        total = await pools[0].fetchval("SELECT sum(value) FROM leaderboard WHERE board_id = 'global'")
        assert total == accepted
    finally:
        for p in pools:
            await p.close()


# ---------------------------------------------------------------------------------------------------------
# Retention


async def old_months(con: asyncpg.Connection, months: list[int]) -> None:
    """One submission in the middle of each of these months ago (placed by `ensure`, as it would be)."""
    for m in months:
        await log_row(con, uuid.uuid4(), f"old{m}", 1, month_start(-m) + timedelta(days=14))
    await partitions.ensure(con)


async def test_maintain_drops_only_whole_months_past_retention_and_is_idempotent(
    scratch: asyncpg.Connection,
) -> None:
    await old_months(scratch, [14, 13, 7, 6, 2])
    before = await partition_names(scratch)
    kept_rows = await scratch.fetchval("SELECT count(*) FROM game_sessions WHERE submitted_at >= $1", month_start(-6))

    report = await partitions.maintain(scratch, 6, timedelta(days=30))
    dropped = {p.name for p in report.removed}
    assert dropped == {name_of(month_start(-m)) for m in range(7, 15)}
    assert all(line.startswith("dropped game_sessions_") for line in report.lines())
    after = await partition_names(scratch)
    assert after == before - dropped
    assert {name_of(month_start(m)) for m in range(-6, 4)} | {"game_sessions_default"} <= after
    assert await scratch.fetchval("SELECT count(*) FROM game_sessions") == kept_rows

    again = await partitions.maintain(scratch, 6, timedelta(days=30))
    assert again.removed == [] and again.created == []
    assert await partition_names(scratch) == after

    # Retention 1: everything before last month goes, never the current or a future month
    report = await partitions.maintain(scratch, 1, timedelta(days=1))
    assert {name_of(month_start(m)) for m in range(-1, 4)} | {"game_sessions_default"} == await partition_names(scratch)


async def test_maintain_keeps_the_window_and_scheduled_live_seasons_and_names_the_others(
    scratch: asyncpg.Connection, scratch_db: str
) -> None:
    await old_months(scratch, [12, 9, 5, 3])
    pool = await asyncpg.create_pool(scratch_db, min_size=1, max_size=2)
    try:
        await Store(pool).create_board(BoardCreate(id="weekly", reset="weekly"))
    finally:
        await pool.close()
    # the weekly board's season has been live for 9.5 months (no process ran its resets); global for 2 years
    await scratch.execute("UPDATE leaderboards SET season_started_at = $1 WHERE id = 'weekly'", month_start(-9))
    await scratch.execute("UPDATE leaderboards SET season_started_at = now() - interval '2 years' WHERE id = 'global'")

    report = await partitions.maintain(scratch, 1, timedelta(days=100), dry_run=True)
    assert report.verb == "would drop" and "dry run: nothing was changed" in report.lines()
    assert await partition_names(scratch) >= {name_of(month_start(-12))}

    report = await partitions.maintain(scratch, 1, timedelta(days=100))
    assert {p.name for p in report.removed} == {name_of(month_start(-m)) for m in (12, 11, 10)}
    kept = dict(report.kept)
    assert "board 'weekly' is in season 1" in kept[name_of(month_start(-9))]
    assert "idempotency window (100 days)" in kept[name_of(month_start(-2))]
    assert any("live season of global (no reset schedule)" in line for line in report.lines())

    await scratch.execute("UPDATE leaderboards SET season_started_at = now() WHERE id = 'weekly'")
    detached = await partitions.maintain(scratch, 1, timedelta(days=1), detach=True)
    assert detached.verb == "detached" and name_of(month_start(-2)) not in await partition_names(scratch)
    assert await scratch.fetchval("SELECT to_regclass($1) IS NOT NULL", name_of(month_start(-2)))  # kept, on its own


async def test_maintain_on_the_command_line(scratch: asyncpg.Connection, scratch_db: str, services: Services) -> None:
    await old_months(scratch, [8])
    env = cli_env(scratch_db, None, log_retention_months=3)
    rc, out, err = await run_cli("maintain", dsn=None, redis_url=None, env=env)
    assert rc == 0, err
    lines = out.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"dropped {name_of(month_start(-m))}" for m in range(8, 3, -1)]
    assert lines[0].startswith(f"dropped {name_of(month_start(-8))} ({month_start(-8):%Y-%m-%d} to ")
    rc, out, err = await run_cli("maintain", dsn=None, redis_url=None, env=env)
    assert (rc, out) == (0, "retention: no month is older than 3 months\n"), (out, err)
    rc, out, err = await run_cli("maintain", dsn=None, redis_url=None, env=cli_env(scratch_db, None))
    assert rc == 0 and "every month is kept (LEADERBOARD_LOG_RETENTION_MONTHS is not set)" in out, err
    rc, out, err = await run_cli(
        "maintain", dsn=None, redis_url=None, env=cli_env(scratch_db, None, log_retention_months=0)
    )
    assert rc == 2 and "LEADERBOARD_LOG_RETENTION_MONTHS: must be an integer 1-1200, got '0'" in err, err


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("IDEMPOTENCY_WINDOW_DAYS", "0", "must be an integer 1-366, got '0'"),
        ("IDEMPOTENCY_WINDOW_DAYS", "a week", "must be an integer 1-366, got 'a week'"),
        ("LOG_RETENTION_MONTHS", "-1", "must be an integer 1-1200, got '-1'"),
    ],
)
def test_bad_log_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str) -> None:
    monkeypatch.setenv(f"LEADERBOARD_{variable}", value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert str(exc.value) == f"LEADERBOARD_{variable}: {said}"


def test_log_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERBOARD_LOG_RETENTION_MONTHS", "")
    s = load_settings()
    assert (s.idempotency_window_days, s.log_retention_months) == (30, None)
