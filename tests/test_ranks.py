"""Layer: ranks.py (the read model): Redis if ready else Postgres, the stale set, rebuilds and their merge."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from leaderboard.cache import Cache, Keys
from leaderboard.errors import Unavailable
from leaderboard.protocol import Submission
from leaderboard.ranks import Ranks
from leaderboard.redisconn import pause
from leaderboard.store import BoardInfo, Store, Write, Written
from support.polling import eventually
from support.reference import ranked
from support.services import Services
from support.stores import assert_cache_matches_pg

VALUES = {"a": 50, "b": 70, "c": 50, "d": 10, "e": 90}


async def global_board(store: Store) -> BoardInfo:
    board = await store.board("global")
    assert board is not None
    return board


async def commit(store: Store, board: BoardInfo, scores: dict[str, int]) -> list[Written]:
    """Commit straight to Postgres (no cache write); return the rows written."""
    batch = [Write(Submission(user_id=u, score=s, board=board.id), uuid.uuid4(), board) for u, s in scores.items()]
    result = await store.commit_batch(batch)
    assert all(o.error is None for o in result.outcomes)
    return result.written


def rank_of(values: dict[str, int]) -> dict[str, int]:
    return {e["user_id"]: e["rank"] for e in ranked(values, "desc")}


async def ready(cache: Cache, board: str = "global", within: float = 10.0) -> None:
    async def check() -> None:
        assert await cache.is_ready(board)

    await eventually(check, within)


@pytest.fixture
async def closed_pool(services: Services) -> asyncpg.Pool:
    """A real pool that is closed: every query fails as 'Postgres did not answer' does (InterfaceError)."""
    pool = await asyncpg.create_pool(services.dsn, min_size=0, max_size=1)
    await pool.close()
    return pool


# ---------------------------------------------------------------------------------------------------------
# reads


@pytest.mark.parametrize("read", ["top", "standing", "follow"])
async def test_a_read_on_a_board_not_ready_is_answered_by_postgres_and_starts_a_rebuild(
    ranks: Ranks, store: Store, cache: Cache, pool: asyncpg.Pool, rds: aioredis.Redis, read: str
) -> None:
    board = await global_board(store)
    await commit(store, board, VALUES)
    assert not await cache.is_ready("global")
    floor = await store.seq_floor()
    if read == "top":
        page = await ranks.top(board, 1, 3)
        assert page == await store.top(board, 1, 3, floor)  # Postgres' answer, with the floor it vouches for
    elif read == "standing":
        found = await ranks.standing(board, "a", 1)
        assert found == await store.standing(board, "a", 1, 0)
        assert found is not None and found.rank == rank_of(VALUES)["a"]
    else:
        seq, positions = await ranks.follow(board, ["c", "zz"])
        assert (seq, positions) == (floor, await store.follow("global", ["c", "zz"]))
    await ready(cache)
    await assert_cache_matches_pg(pool, rds)
    # served by Redis now: a change that only Redis has shows up
    await cache.write("global", [Written("global", "redis-only", 1000, -1000, 10**9, None)], [], 0.0, 1)
    assert (await ranks.top(board, 0, 1)).members[0].user_id == "redis-only"
    assert (await ranks.follow(board, ["redis-only"]))[1]["redis-only"] is not None


async def test_seq_comes_from_redis_or_from_the_floor_postgres_vouches_for(
    make_ranks: Callable[..., Ranks], store: Store, cache: Cache, private_redis: Any, make_redis: Any
) -> None:
    board = await global_board(store)
    await commit(store, board, VALUES)
    await make_ranks().rebuild("global")
    ranks = make_ranks()
    assert await ranks.seq(board) == await cache.seq("global") > 0
    private_redis.stop()
    away = make_ranks(Cache(make_redis(private_redis.url)))
    assert await away.seq(board) == await store.seq_floor() >= await cache.seq("global")


# ---------------------------------------------------------------------------------------------------------
# record (after a commit)


async def test_record_on_a_ready_board_stores_the_rows_and_returns_redis_ranks(
    ranks: Ranks, store: Store, cache: Cache, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    board = await global_board(store)
    assert await ranks.rebuild("global") == 0
    written = await commit(store, board, VALUES)
    got = await ranks.record(board, written, dict(VALUES), 0.0)
    assert got == rank_of(VALUES)
    await assert_cache_matches_pg(pool, rds)
    assert ranks.stale == set()


async def test_record_on_a_board_not_ready_answers_from_postgres_and_rebuilds(
    ranks: Ranks, store: Store, cache: Cache, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    board = await global_board(store)
    await commit(store, board, {"x": 1000})  # committed, never cached: Redis alone would not know x
    written = await commit(store, board, VALUES)
    got = await ranks.record(board, written, dict(VALUES), 0.0)
    assert got == {u: r for u, r in rank_of({**VALUES, "x": 1000}).items() if u != "x"}
    await ready(cache)
    await assert_cache_matches_pg(pool, rds)


async def test_redis_away_marks_the_board_stale_and_watch_rebuilds_it_when_back(
    make_ranks: Callable[..., Ranks], store: Store, private_redis: Any, make_redis: Any, pool: asyncpg.Pool
) -> None:
    board = await global_board(store)
    client = make_redis(private_redis.url)
    ranks = make_ranks(Cache(client))
    assert await ranks.rebuild("global") == 0
    first = {"a": 50, "b": 70}
    assert await ranks.record(board, await commit(store, board, first), first, 0.0) == {"b": 1, "a": 2}

    private_redis.stop()
    written = await commit(store, board, {"c": 60, "a": 100})
    got = await ranks.record(board, written, {"c": 60, "a": 150}, 0.0)  # users -> committed values
    assert got == {"a": 1, "c": 3}  # from Postgres
    assert ranks.stale == {"global"}
    page = await ranks.top(board, 0, 10)  # reads fall back as well
    assert [(m.user_id, m.key) for m in page.members] == [("a", -150), ("b", -70), ("c", -60)]

    private_redis.start()  # same port; its AOF still has the board as it was, marked ready but stale
    watcher = asyncio.create_task(ranks.watch(interval=0.05))
    try:

        async def rebuilt() -> None:
            assert ranks.stale == set()
            await assert_cache_matches_pg(pool, client)

        await eventually(rebuilt, within=20)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert (await ranks.cache.top("global", 0, 10)).total == 3


async def test_neither_redis_nor_postgres_is_unavailable(
    make_ranks: Callable[..., Ranks], private_redis: Any, make_redis: Any, closed_pool: asyncpg.Pool, store: Store
) -> None:
    board = await global_board(store)
    private_redis.stop()
    ranks = make_ranks(Cache(make_redis(private_redis.url)), Store(closed_pool))
    with pytest.raises(Unavailable):
        await ranks.top(board, 0, 10)
    with pytest.raises(Unavailable):
        await ranks.standing(board, "a", 0)
    with pytest.raises(Unavailable):
        await ranks.follow(board, ["a"])
    with pytest.raises(Unavailable):
        await ranks.seq(board)
    # after a commit (made elsewhere), the ack goes out without a rank rather than failing
    assert await ranks.record(board, [Written("global", "a", 1, -1, 1, None)], {"a": 1}, 0.0) == {"a": None}
    assert ranks.stale == {"global"}


# ---------------------------------------------------------------------------------------------------------
# warm-up and rebuilds


async def test_warm_rebuilds_boards_not_ready_and_marks_all_stale_when_redis_is_away(
    make_ranks: Callable[..., Ranks], store: Store, cache: Cache, private_redis: Any, make_redis: Any
) -> None:
    board = await global_board(store)
    await commit(store, board, VALUES)
    await make_ranks().warm([board])
    await ready(cache)
    assert (await cache.top("global", 0, 10)).total == len(VALUES)

    private_redis.stop()
    away = make_ranks(Cache(make_redis(private_redis.url)))
    await away.warm(await store.boards())
    assert away.stale == {b.id for b in await store.boards()}


async def test_a_failed_rebuild_leaves_the_board_stale(
    make_ranks: Callable[..., Ranks], store: Store, private_redis: Any, make_redis: Any
) -> None:
    await commit(store, await global_board(store), VALUES)
    private_redis.stop()
    ranks = make_ranks(Cache(make_redis(private_redis.url)))
    with pytest.raises((RedisError, OSError)):
        await ranks.rebuild("global")
    assert ranks.stale == {"global"}


async def test_a_rebuild_held_by_another_process_is_left_to_it(ranks: Ranks, store: Store, rds: aioredis.Redis) -> None:
    await commit(store, await global_board(store), VALUES)
    await rds.set(Keys("global").lock, "someone-else", px=30_000)
    assert await ranks.rebuild("global") is None
    assert not await ranks.cache.is_ready("global")
    assert await ranks.rebuild("no-such-board") == 0


async def _seed(pool: asyncpg.Pool, n: int, named_from: int) -> None:
    """n players on `global` (values with ties); only user_ids >= named_from (in byte order) have names."""
    users = [f"p{i:04d}" for i in range(n)]
    await pool.execute(
        "INSERT INTO users (user_id, display_name) SELECT u, CASE WHEN u >= $2 THEN 'Name ' || u END "
        "FROM unnest($1::text[]) AS u",
        users, f"p{named_from:04d}",
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO leaderboard (board_id, season, user_id, value, sort_key, version) "
        "SELECT 'global', 1, u, v, -v, nextval('leaderboard_version_seq') "
        "FROM unnest($1::text[], $2::bigint[]) AS t(u, v)",
        users, [i % 37 for i in range(n)],
    )  # fmt: skip


async def test_rebuild_loads_every_member_name_and_version_across_pages(
    pool: asyncpg.Pool, rds: aioredis.Redis, ranks: Ranks
) -> None:
    # 250 players over pages of 100; the first 150 (by user_id) have no display name, so a whole names page
    # is empty and the scan must carry on past it.
    await _seed(pool, 250, named_from=150)
    assert ranks.rebuild_batch == 100
    assert await ranks.rebuild("global") == 250
    await assert_cache_matches_pg(pool, rds)
    k = Keys("global")
    names = await rds.hgetall(k.n)
    assert names == {f"p{i:04d}": f"Name p{i:04d}" for i in range(150, 250)}
    versions = await rds.hgetall(k.v)
    rows = await pool.fetch("SELECT user_id, version FROM leaderboard WHERE board_id = 'global'")
    assert versions == {r["user_id"]: str(r["version"]) for r in rows}
    assert not await rds.exists(k.z_new, k.v_new, k.n_new)
    assert int(await rds.get(k.seq)) > 0


async def test_rebuild_keeps_a_newer_write_made_while_it_ran(
    pool: asyncpg.Pool, rds: aioredis.Redis, store: Store, cache: Cache, make_ranks: Callable[..., Ranks]
) -> None:
    await _seed(pool, 120, named_from=0)
    ranks = make_ranks(cache, store, 100)
    k = Keys("global")
    real_scan = store.scan

    async def scan_with_a_concurrent_write(board_id: str, batch: int) -> Any:
        first = True
        async for page in real_scan(board_id, batch):
            yield page
            if first:  # a writer commits p0001 = 1000 after the snapshot and stores it in the live keys
                first = False
                version = await pool.fetchval(
                    "UPDATE leaderboard SET value = 1000, sort_key = -1000, "
                    "version = nextval('leaderboard_version_seq') "
                    "WHERE board_id = 'global' AND user_id = 'p0001' RETURNING version"
                )
                await cache.write("global", [Written("global", "p0001", 1000, -1000, version, None)], [], 0.0, 1)

    store.scan = scan_with_a_concurrent_write  # type: ignore[method-assign]
    assert await ranks.rebuild("global") == 120
    await assert_cache_matches_pg(pool, rds)
    assert await rds.zscore(k.z, "p0001") == -1000
    assert (await rds.zrange(k.z, 0, 0)) == ["p0001"]


async def test_a_retry_loop_stops_at_its_next_pause_when_a_call_swallowed_its_cancellation() -> None:
    """redis-py can turn a cancellation that arrives while it reconnects into a ConnectionError; the loops that
    retry Redis calls (watch, settle, verify, pub/sub) still stop, at their next pause (redisconn.pause)."""
    turns = 0
    calling = asyncio.Event()

    async def swallowing_call() -> None:
        calling.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    async def loop() -> None:
        nonlocal turns
        while True:
            await pause(0.01)
            turns += 1
            try:
                await swallowing_call()
            except (RedisError, OSError):
                continue

    task = asyncio.create_task(loop())
    await asyncio.wait_for(calling.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert turns == 1
