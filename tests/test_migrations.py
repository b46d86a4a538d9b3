"""Migrations: applied once, idempotent, safe to race, and the schema the contract relies on."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from support.reference import MAX_VALUE
from support.services import Services

TABLES = {
    "leaderboards": {"id", "title", "sort_order", "operator", "created_at"},
    "users": {"user_id", "display_name", "created_at"},
    "game_sessions": {"session_id", "board_id", "user_id", "score", "submitted_at"},
    "leaderboard": {"board_id", "user_id", "value", "sort_key", "version", "updated_at"},
    "api_keys": {"id", "name", "role", "key_hash", "created_at", "revoked_at"},
    "schema_migrations": {"version", "name", "applied_at"},
}


async def columns(con: asyncpg.Connection) -> dict[str, set[str]]:
    rows = await con.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    )
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["table_name"], set()).add(r["column_name"])
    return out


async def test_apply_twice_is_a_noop(scratch_db: str) -> None:
    from leaderboard.migrations import apply_migrations

    first = await apply_migrations(scratch_db)
    assert first, "a fresh database needs migrations"
    con = await asyncpg.connect(scratch_db)
    try:
        recorded = await con.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in recorded] == first
        schema = await columns(con)
        for table, cols in TABLES.items():
            assert cols <= schema.get(table, set()), (table, schema.get(table))
        board = await con.fetchrow("SELECT sort_order, operator FROM leaderboards WHERE id = 'global'")
        assert tuple(board) == ("desc", "incr")

        assert await apply_migrations(scratch_db) == []
        assert await con.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version") == recorded
        assert await columns(con) == schema
        assert await con.fetchval("SELECT count(*) FROM leaderboards") == 1
    finally:
        await con.close()


async def test_concurrent_migrators_apply_once(scratch_db: str) -> None:
    from leaderboard.migrations import apply_migrations

    results = await asyncio.gather(*(apply_migrations(scratch_db) for _ in range(4)))
    applied = [r for r in results if r]
    assert len(applied) == 1, results
    con = await asyncpg.connect(scratch_db)
    try:
        assert await con.fetchval("SELECT count(*) FROM schema_migrations") == len(applied[0])
        assert await con.fetchval("SELECT count(*) FROM leaderboards WHERE id = 'global'") == 1
    finally:
        await con.close()


async def test_session_database_is_current(services: Services) -> None:
    from leaderboard.migrations import apply_migrations

    assert await apply_migrations(services.dsn) == []


async def test_schema_refuses_what_the_contract_refuses(scratch_db: str) -> None:
    from leaderboard.migrations import apply_migrations

    await apply_migrations(scratch_db)
    con = await asyncpg.connect(scratch_db)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await con.execute("INSERT INTO leaderboards (id, title) VALUES ('Bad Id', 'x')")
        with pytest.raises(asyncpg.CheckViolationError):
            await con.execute("INSERT INTO leaderboards (id, title, operator) VALUES ('ok', 'x', 'max')")
        await con.execute("INSERT INTO users (user_id) VALUES ('alice')")
        with pytest.raises(asyncpg.CheckViolationError):
            await con.execute(
                "INSERT INTO leaderboard (board_id, season, user_id, value, sort_key, version)"
                " VALUES ('global', 1, 'alice', $1, 0, 1)",
                MAX_VALUE + 1,
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            async with con.transaction():
                await con.execute(
                    "INSERT INTO game_sessions (session_id, board_id, user_id, score, season)"
                    " VALUES ('00000000-0000-0000-0000-000000000001', 'global', 'alice', 1, 1)"
                )
                await con.execute(
                    "INSERT INTO game_sessions (session_id, board_id, user_id, score, season)"
                    " VALUES ('00000000-0000-0000-0000-000000000001', 'global', 'alice', 2, 1)"
                )
    finally:
        await con.close()
