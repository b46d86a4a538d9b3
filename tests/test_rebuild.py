"""cache.rebuild: a board streamed from Postgres into Redis in pages, merged with writes made meanwhile."""

from __future__ import annotations

from typing import Any

import asyncpg

from helpers import assert_cache_matches_pg
from leaderboard.cache import Cache, Keys
from leaderboard.ranks import Ranks
from leaderboard.store import Store, Written


async def _seed(pool: asyncpg.Pool, n: int, named_from: int) -> None:
    """n players on `global` (values with ties); only user_ids >= named_from (in byte order) have names."""
    users = [f"p{i:04d}" for i in range(n)]
    await pool.execute(
        "INSERT INTO users (user_id, display_name) SELECT u, CASE WHEN u >= $2 THEN 'Name ' || u END "
        "FROM unnest($1::text[]) AS u",
        users, f"p{named_from:04d}",
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO leaderboard (board_id, user_id, value, sort_key, version) "
        "SELECT 'global', u, v, -v, nextval('leaderboard_version_seq') "
        "FROM unnest($1::text[], $2::bigint[]) AS t(u, v)",
        users, [i % 37 for i in range(n)],
    )  # fmt: skip


async def test_rebuild_loads_every_member_name_and_version_across_pages(
    pool: asyncpg.Pool, rds: Any, clean: None
) -> None:
    # 250 players over pages of 100; the first 150 (by user_id) have no display name, so a whole names page
    # is empty and the scan must carry on past it.
    await _seed(pool, 250, named_from=150)
    ranks = Ranks(Cache(rds), Store(pool), rebuild_batch=100)
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


async def test_rebuild_keeps_a_newer_write_made_while_it_ran(pool: asyncpg.Pool, rds: Any, clean: None) -> None:
    await _seed(pool, 120, named_from=0)
    store = Store(pool)
    cache = Cache(rds)
    ranks = Ranks(cache, store, rebuild_batch=100)
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
                await cache.write("global", [_written("p0001", 1000, version)], [], 0.0)

    store.scan = scan_with_a_concurrent_write  # type: ignore[method-assign]
    assert await ranks.rebuild("global") == 120
    await assert_cache_matches_pg(pool, rds)
    assert await rds.zscore(k.z, "p0001") == -1000
    assert (await rds.zrange(k.z, 0, 0)) == ["p0001"]


def _written(user: str, value: int, version: int) -> Written:
    return Written("global", user, value, -value, version, None)
