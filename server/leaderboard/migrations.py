"""Numbered plain-SQL migrations (sql/NNN_name.sql), applied in order, once, under an advisory lock."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import asyncpg

_LOCK_ID = 0x1EADB0A2D  # any constant; serialises concurrent migrators (several workers starting at once)
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migrations_dir() -> Path:
    """The wheel ships sql/ inside the package; a source checkout keeps it at the repository root."""
    packaged = resources.files("leaderboard") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "sql"


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for path in sorted(migrations_dir().glob("*.sql")):
        m = _NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path.stem, path.read_text()))
    return found


async def pending(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[str]:
    """Names of migrations not yet applied (empty when the schema is current)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in available() if version not in done]


async def apply_migrations(dsn: str) -> list[str]:
    """Apply what is missing; return the names newly applied. Applying twice is a no-op."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for version, name, sql in available():
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
                applied.append(name)
            return applied
    finally:
        await conn.close()
