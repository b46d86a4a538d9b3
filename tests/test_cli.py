"""The `leaderboard` command: migrate, keys create, rebuild, serve (graceful drain, embedded mode)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from support.clients import bearer, create_board, submit, subscribe_top, top, ws_connect
from support.processes import cli_command, cli_env, spawned_server, tail
from support.services import ApiKeys, Services
from support.stores import assert_cache_matches_pg, cache_key


async def run_cli(*args: str, dsn: str | None, redis_url: str | None, within: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cli_command(),
        *args,
        env=cli_env(dsn, redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_twice(scratch_db: str, services: Services) -> None:
    rc, _, err = await run_cli("migrate", dsn=scratch_db, redis_url=services.redis_url)
    assert rc == 0, err
    con = await asyncpg.connect(scratch_db)
    try:
        recorded = await con.fetch("SELECT * FROM schema_migrations ORDER BY version")
        assert recorded
        rc, _, err = await run_cli("migrate", dsn=scratch_db, redis_url=services.redis_url)
        assert rc == 0, err
        assert await con.fetch("SELECT * FROM schema_migrations ORDER BY version") == recorded
    finally:
        await con.close()


async def test_keys_create_prints_a_working_key(
    services: Services, clean: None, make_server: Any, make_client: Any, pool: asyncpg.Pool
) -> None:
    created = {}
    for role in ("submit", "read", "admin"):
        rc, out, err = await run_cli(
            "keys",
            "create",
            "--role",
            role,
            "--name",
            f"cli-{role}",
            dsn=services.dsn,
            redis_url=services.redis_url,
        )
        assert rc == 0, err
        key = out.strip().splitlines()[-1]
        assert key.startswith("lbk_") and " " not in key, out
        created[role] = key
    rows = await pool.fetch("SELECT name, role FROM api_keys ORDER BY name")
    assert [(r["name"], r["role"]) for r in rows] == [
        ("cli-admin", "admin"),
        ("cli-read", "read"),
        ("cli-submit", "submit"),
    ]
    server = await make_server()
    assert (await submit(make_client(server, created["submit"]), "alice", 3))["score"] == 3
    resp = await make_client(server, created["read"]).post(
        "/api/leaderboard/submit", json={"user_id": "alice", "score": 1}
    )
    assert resp.status_code == 403
    resp = await make_client(server, created["admin"]).post("/api/leaderboards", json={"id": "x", "title": "X"})
    assert resp.status_code == 201


async def test_keys_create_refuses_a_bad_role(services: Services, clean: None, pool: asyncpg.Pool) -> None:
    rc, out, _ = await run_cli(
        "keys", "create", "--role", "root", "--name", "nope", dsn=services.dsn, redis_url=services.redis_url
    )
    assert rc != 0
    assert "lbk_" not in out
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_rebuild_repairs_a_wrong_cache(
    services: Services,
    api: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    pool: asyncpg.Pool,
    rds: aioredis.Redis,
) -> None:
    await create_board(admin, "second", sort="asc", operator="best")
    await asyncio.gather(*(submit(api, f"u{i:03d}", i) for i in range(120)))
    await asyncio.gather(*(submit(api, f"v{i:02d}", 100 - i, "second") for i in range(30)))
    # damage the cache behind the service's back
    await rds.zadd(cache_key("global"), {"ghost": -(10**9)})
    await rds.zrem(cache_key("global"), "u005", "u006")
    await rds.zadd(cache_key("global"), {"u007": -(10**6)})
    await rds.zrem(cache_key("second"), "v00")

    rc, _, err = await run_cli("rebuild", "--board", "global", dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 0, err
    await assert_cache_matches_pg(pool, rds, "global")
    page = await top(api)
    assert page["entries"][0]["user_id"] == "u119" and page["total"] == 120
    assert await rds.zcard(cache_key("second")) == 29  # --board global left the other board alone

    rc, _, err = await run_cli("rebuild", dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 0, err
    await assert_cache_matches_pg(pool, rds, "second")
    await assert_cache_matches_pg(pool, rds, "global")


async def test_serve_drains_on_sigterm(services: Services, clean: None, keys: ApiKeys, tmp_path: Path) -> None:
    async with spawned_server(
        tmp_path / "s", services.dsn, services.redis_url, push_interval_ms=50, drain_timeout_s=3
    ) as (url, proc):
        async with (
            ws_connect(url) as ws,
            httpx.AsyncClient(base_url=url, headers=bearer(keys.submit)) as http,
        ):
            await subscribe_top(ws)
            await submit(http, "alice", 1)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await ws.expect_close(within=15) == 1012
            rc = await asyncio.to_thread(proc.wait, 20)
            assert rc == 0, rc
            assert time.monotonic() - started < 15


async def test_serve_embedded_mode_keeps_data(tmp_path: Path) -> None:
    """No database or Redis URL: embedded servers under --data-dir; a restart keeps every score."""
    data = tmp_path / "data"
    async with spawned_server(data, None, None) as (url, proc):
        args = ("keys", "create", "--role", "submit", "--name", "e", "--data-dir", str(data))
        rc, out, err = await run_cli(*args, dsn=None, redis_url=None)
        assert rc == 0, err + tail(next(data.glob("serve-*.log")))
        key = out.strip().splitlines()[-1]
        async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as http:
            assert (await submit(http, "alice", 9))["rank"] == 1
    assert proc.returncode == 0
    async with spawned_server(data, None, None) as (url, proc), httpx.AsyncClient(base_url=url) as http:
        page = await top(http)
        assert [(e["user_id"], e["score"]) for e in page["entries"]] == [("alice", 9)]
    assert proc.returncode == 0


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([*cli_command(), "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    for command in ("serve", "migrate", "keys", "rebuild"):
        assert command in out
