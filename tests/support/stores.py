"""What Postgres and Redis hold, read directly: row counts, board values, Redis vs Postgres."""

from __future__ import annotations

from typing import Any

import asyncpg

DATA_TABLES = ("users", "game_sessions", "leaderboard", "api_keys", "leaderboards")


async def row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as con:
        return {t: await con.fetchval(f"SELECT count(*) FROM {t}") for t in DATA_TABLES}


async def pg_values(pool: asyncpg.Pool, board: str = "global") -> dict[str, int]:
    rows = await pool.fetch("SELECT user_id, value FROM leaderboard WHERE board_id = $1", board)
    return {r["user_id"]: int(r["value"]) for r in rows}


async def session_count(pool: asyncpg.Pool, board: str | None = None) -> int:
    if board is None:
        return int(await pool.fetchval("SELECT count(*) FROM game_sessions"))
    return int(await pool.fetchval("SELECT count(*) FROM game_sessions WHERE board_id = $1", board))


def cache_key(board: str, part: str = "z") -> str:
    """A board's Redis key, as the core names it (see leaderboard/cache.py)."""
    from leaderboard.cache import Keys

    return str(getattr(Keys(board), part))


async def assert_cache_matches_pg(pool: asyncpg.Pool, rds: Any, board: str = "global", *, ready: bool = True) -> None:
    """Redis holds exactly the committed rows of the board (same members, same sort keys) and, unless
    `ready=False`, marks the board complete."""
    if ready:
        assert await rds.exists(cache_key(board, "ready")), f"board {board} not marked ready in Redis"
    rows = await pool.fetch("SELECT user_id, sort_key FROM leaderboard WHERE board_id = $1", board)
    pg = {r["user_id"]: int(r["sort_key"]) for r in rows}
    cached = {m: int(float(s)) for m, s in await rds.zrange(cache_key(board), 0, -1, withscores=True)}
    assert cached == pg
