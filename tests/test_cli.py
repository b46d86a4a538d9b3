"""The `leaderboard` command: migrate, keys, rebuild, demo, serve (graceful drain, embedded mode, one serve per
data dir), and what every command does with a bad configuration or an unreachable server."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from support.clients import bearer, create_board, submit, subscribe_top, top, ws_connect
from support.processes import cli_command, cli_env, free_port, spawned_server, tail
from support.services import ApiKeys, Services, dsn_with_database
from support.stores import assert_cache_matches_pg, cache_key


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A data dir for embedded servers, outside pytest's tmp tree: the embedded Postgres runs as another
    user when we are root and must be able to traverse every parent directory, and pytest resets its own
    root to 0700 whenever another session starts (other people run tests on this machine too)."""
    root = Path(tempfile.mkdtemp(prefix="lbc-"))
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


async def run_cli(
    *args: str, dsn: str | None, redis_url: str | None, within: float = 120, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cli_command(),
        *args,
        env=env if env is not None else cli_env(dsn, redis_url),
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
        # The key alone on stdout (KEY=$(leaderboard keys create ... | tail -1)); what it is on stderr.
        key = out.strip()
        assert key.startswith("lbk_") and len(out.splitlines()) == 1 and " " not in key, out
        said = re.search(r"created (\w+) key (\d+) '([^']+)'; it is shown once, store it now", err)
        assert said and said.groups() == (role, str(len(created) + 1), f"cli-{role}"), err
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


@pytest.mark.parametrize("access_log", [None, "true"])
async def test_serve_logs_each_request_only_with_the_access_log_on(
    services: Services, tmp_path: Path, access_log: str | None
) -> None:
    """LEADERBOARD_ACCESS_LOG: off by default (a line per request costs about what the request does)."""
    settings = {} if access_log is None else {"access_log": access_log}
    async with spawned_server(tmp_path / "s", services.dsn, services.redis_url, **settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(3):
                assert (await http.get("/api/leaderboards")).status_code == 200
    text = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "s").glob("serve-*.log"))
    if access_log:
        assert text.count("GET /api/leaderboards HTTP/1.1") == 3, text[-2000:]
    else:
        assert "GET /api/leaderboards" not in text, text[-2000:]


async def test_serve_embedded_mode_keeps_data(data: Path) -> None:
    """No database or Redis URL: embedded servers under --data-dir; a restart keeps every score."""
    async with spawned_server(data, None, None) as (url, proc):
        args = ("keys", "create", "--role", "submit", "--name", "e", "--data-dir", str(data))
        rc, out, err = await run_cli(*args, dsn=None, redis_url=None)
        assert rc == 0, err + tail(serve_log(data))
        key = out.strip().splitlines()[-1]
        async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as http:
            assert (await submit(http, "alice", 9))["rank"] == 1
    assert proc.returncode == 0
    async with spawned_server(data, None, None) as (url, proc), httpx.AsyncClient(base_url=url) as http:
        page = await top(http)
        assert [(e["user_id"], e["score"]) for e in page["entries"]] == [("alice", 9)]
    assert proc.returncode == 0
    assert embedded_running(data) == []


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([*cli_command(), "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    for command in ("serve", "migrate", "keys", "rebuild"):
        assert command in out


# ---------------------------------------------------------------------------------------------------------
# Keys, demo, help


async def test_keys_list_has_a_header_and_revoke_says_what_it_revoked(services: Services, clean: None) -> None:
    args = ("keys", "create", "--role", "read", "--name", "dashboard")
    rc, _, err = await run_cli(*args, dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 0, err
    rc, out, err = await run_cli("keys", "list", dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 0, err
    header, row = out.splitlines()
    assert header.split() == ["id", "role", "name", "created", "state"]
    assert row.split()[:3] == ["1", "read", "dashboard"] and row.endswith("active")

    rc, out, err = await run_cli("keys", "revoke", "--id", "1", dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 0, err
    assert out == (
        "revoked read key 1 'dashboard': within a few seconds every server refuses it and closes the WebSockets "
        "that authenticated with it (1008)\n"
    )
    rc, out, err = await run_cli("keys", "revoke", "--id", "1", dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 1 and out == "" and "no active key with id 1" in err


async def test_demo_says_it_created_a_key_and_revokes_it_on_exit(
    services: Services, server: str, pool: asyncpg.Pool
) -> None:
    args = ("demo", "--url", server, "--duration", "1.5", "--players", "20", "--rate", "20", "--connections", "1")
    rc, out, err = await run_cli(*args, dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 0, out + err
    assert "acked=" in out
    (row,) = await pool.fetch("SELECT id, role, revoked_at FROM api_keys WHERE name = 'demo'")
    assert f"demo: created submit key {row['id']} 'demo' for this run; it is revoked when the demo ends" in err
    assert f"demo: revoked key {row['id']}" in err
    assert row["role"] == "submit" and row["revoked_at"] is not None


async def test_demo_with_no_server_says_so_and_creates_nothing(
    services: Services, clean: None, pool: asyncpg.Pool
) -> None:
    port = free_port()
    rc, out, err = await run_cli(
        "demo", "--url", f"http://127.0.0.1:{port}", dsn=services.dsn, redis_url=services.redis_url, within=30
    )
    assert (rc, out) == (1, ""), err
    assert err.strip().splitlines()[-1] == (
        f"demo: no server answers at 127.0.0.1:{port} (Connection refused): start one first (`make run`), "
        "or give its address with --url"
    )
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 0
    rc, _, err = await run_cli("demo", "--url", "ftp://127.0.0.1:1", dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 1 and err.strip().splitlines()[-1].startswith("demo: unsupported URL scheme in 'ftp://"), err


async def test_demo_stopped_with_sigterm_still_revokes_its_key(
    services: Services, server: str, pool: asyncpg.Pool
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cli_command(),
        *("demo", "--url", server, "--players", "10", "--rate", "10", "--connections", "1"),
        env=cli_env(services.dsn, services.redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    await asyncio.wait_for(proc.stdout.readline(), 30)  # "demo: N players ..." once it is running
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert await pool.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE name = 'demo'") is True


def test_every_option_has_help() -> None:
    from leaderboard.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert isinstance(commands.choices, dict)
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"leaderboard {name}: {action.option_strings or action.dest} has no help"


# ---------------------------------------------------------------------------------------------------------
# Embedded servers: a process stops only what it started; one serve per data dir


def serve_log(data: Path) -> Path:
    """The log of the `leaderboard serve` that spawned_server started on this data dir."""
    return next(data.glob("serve-*.log"))


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def embedded_running(data: Path) -> list[str]:
    """The embedded servers of a data dir that are still running."""
    running = []
    pid_file = data / "pg" / "postmaster.pid"
    if pid_file.exists() and Path(f"/proc/{pid_file.read_text().split()[0]}").exists():
        running.append("postgres")
    try:
        state = json.loads((data / "valkey" / "server.json").read_text())
    except OSError:
        state = None
    if state and Path(f"/proc/{state['pid']}").exists():
        running.append("valkey")
    return running


async def test_second_serve_on_a_data_dir_in_use_refuses_and_leaves_the_first_alone(data: Path) -> None:
    async with spawned_server(data, None, None) as (url, proc), httpx.AsyncClient(base_url=url) as http:
        port = url.rsplit(":", 1)[1]
        # Same port (the case: it used to fail on the port and stop the shared Postgres on its way
        # out) and another port: refused at once, one line, exit 2, nothing started or stopped.
        for serve_port in (port, str(free_port())):
            rc, out, err = await run_cli(
                "serve", "--port", serve_port, "--data-dir", str(data), dsn=None, redis_url=None, within=60
            )
            assert (rc, out) == (2, ""), err
            assert err.strip() == (
                f"{data} is in use by another `leaderboard serve` (pid {proc.pid}, {url}): stop that one first, "
                f"or give this one another --data-dir (or LEADERBOARD_DATA_DIR)"
            )
            assert (await http.get("/readyz")).status_code == 200
        # Other commands attach to its servers and leave them running, even when they fail.
        rc, out, err = await run_cli("keys", "list", "--data-dir", str(data), dsn=None, redis_url=None)
        assert rc == 0, err
        assert out.startswith("   id  role")
        assert re.search(rf"^postgres: embedded, data in .*, attached to the one pid {proc.pid} runs \(", err, re.M)
        rc, _, err = await run_cli(
            "rebuild", "--data-dir", str(data), dsn=None, redis_url=f"redis://127.0.0.1:{free_port()}/0"
        )
        assert rc == 2 and "LEADERBOARD_REDIS_URL: cannot reach Redis" in err, err
        assert (await http.get("/readyz")).status_code == 200
        assert embedded_running(data) == ["postgres", "valkey"]
        # What serve says about its servers, in the form loadtest/bench.py reads the URLs from.
        said = serve_log(data).read_text()
        assert re.search(r"^postgres: embedded, data in .*, started by this process \((\S+)\)$", said, re.M)
        assert re.search(r"^redis: embedded valkey, data in .*, started by this process \((\S+)\)$", said, re.M)
    assert proc.returncode == 0
    assert embedded_running(data) == []


async def test_a_command_stops_the_embedded_servers_it_started(data: Path) -> None:
    """No server running: `keys list` and `rebuild` start the embedded ones, and stop them again."""
    rc, out, err = await run_cli("keys", "list", "--data-dir", str(data), dsn=None, redis_url=None)
    assert rc == 0, err
    assert re.search(r"^postgres: embedded, data in .*, started by this process \(postgresql://", err, re.M), err
    assert embedded_running(data) == []
    rc, out, err = await run_cli("rebuild", "--data-dir", str(data), dsn=None, redis_url=None)
    assert rc == 0, err
    assert "global: 0 members rebuilt" in out
    assert embedded_running(data) == []


async def test_serve_closed_by_its_terminal_stops_its_embedded_servers(data: Path) -> None:
    """SIGHUP (the terminal of `make run` closed) stops serve as SIGTERM does: the embedded servers it started
    stop with it (the default action would kill serve alone and leave them running)."""
    async with spawned_server(data, None, None) as (url, proc), httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert embedded_running(data) == ["postgres", "valkey"]
        proc.send_signal(signal.SIGHUP)
        rc = await asyncio.to_thread(proc.wait, 60)
    assert rc == 0
    assert embedded_running(data) == []


async def test_serve_takes_over_a_lock_left_by_a_dead_serve(data: Path) -> None:
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    write_file(data / "serve.lock", json.dumps({"pid": gone.pid, "address": "http://127.0.0.1:1"}))
    async with spawned_server(data, None, None) as (url, proc), httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert json.loads((data / "serve.lock").read_text())["pid"] == proc.pid
    assert embedded_running(data) == []


# ---------------------------------------------------------------------------------------------------------
# Configuration errors and unreachable servers: one line, exit 2, before anything starts

TRACEBACK_NOISE = ("Traceback", "pydantic", "validation error", "ref.", "[type=", "input_value")


def bad_env(**variables: str) -> dict[str, str]:
    env = cli_env(None, None)
    env.update(variables)
    return env


@pytest.mark.parametrize(
    "command",
    [("serve",), ("migrate",), ("keys", "list"), ("keys", "create", "--name", "x"), ("rebuild",), ("demo",)],
)
async def test_every_command_reports_a_bad_setting_in_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = bad_env(LEADERBOARD_PORT="abc")
    rc, out, err = await run_cli(*command, "--data-dir", str(data), dsn=None, redis_url=None, env=env)
    assert (rc, out, err) == (2, "", "LEADERBOARD_PORT: must be an integer 0-65535, got 'abc'\n")
    assert not data.exists()  # nothing was started


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"LEADERBOARD_PLAYER_TOKEN_SECRET": "CHANGE_ME_long_random_secret"},
            "LEADERBOARD_PLAYER_TOKEN_SECRET: still holds the CHANGE_ME placeholder from the example file: "
            "set a real value",
        ),
        (
            {"LEADERBOARD_PLAYER_TOKEN_SECRET": "a-secret-that-is-too-short"},
            "LEADERBOARD_PLAYER_TOKEN_SECRET: must be at least 32 characters (HS256 needs a 256-bit key), got 26; "
            "generate one with python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
        ),
        (
            {"LEADERBOARD_DATABASE_URL": "postgres//lb:pw@localhost/lb"},
            "LEADERBOARD_DATABASE_URL: must be a PostgreSQL URL like postgresql://user:password@host:5432/dbname "
            "(not a URL), got 'postgres//lb:***@localhost/lb'",
        ),
        (
            {"LEADERBOARD_REDIS_URL": "redis://localhost:six/0"},
            "LEADERBOARD_REDIS_URL: must be a Redis URL like redis://host:6379/0 (the port is not a number "
            "0-65535), got 'redis://localhost:six/0'",
        ),
        ({"LEADERBOARD_WORKERS": "0"}, "LEADERBOARD_WORKERS: must be an integer 1-64, got '0'"),
        (
            {"LEADERBOARD_LOG_LEVEL": "LOUD"},
            "LEADERBOARD_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
        ),
    ],
)
async def test_bad_settings_are_one_line_each(variables: dict[str, str], expected: str, tmp_path: Path) -> None:
    env = bad_env(**variables)
    rc, _, err = await run_cli("serve", "--data-dir", str(tmp_path / "d"), dsn=None, redis_url=None, env=env)
    assert (rc, err.rstrip("\n")) == (2, expected)
    assert not any(noise in err for noise in TRACEBACK_NOISE)


async def test_a_bad_command_line_value_is_named_as_the_option(tmp_path: Path) -> None:
    rc, _, err = await run_cli("serve", "--workers", "0", "--data-dir", str(tmp_path), dsn=None, redis_url=None)
    assert (rc, err) == (2, "--workers: must be an integer 1-64, got 0\n")


async def test_serve_reports_an_unreachable_database_with_the_password_hidden(
    services: Services, tmp_path: Path
) -> None:
    port = free_port()
    dsn = f"postgresql://lb:s3cretpw@127.0.0.1:{port}/lb"
    args = ("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"))
    rc, out, err = await run_cli(*args, dsn=dsn, redis_url=services.redis_url)
    assert (rc, out) == (2, ""), err
    assert err == (
        f"LEADERBOARD_DATABASE_URL: cannot reach PostgreSQL at postgresql://lb:***@127.0.0.1:{port}/lb: "
        "connection refused (is it running, on this host and port?)\n"
    )
    rc, _, err = await run_cli("migrate", dsn=dsn_with_database(services.admin_dsn, "no_such_db"), redis_url=None)
    assert rc == 2 and err.startswith("LEADERBOARD_DATABASE_URL: cannot reach PostgreSQL at ")
    assert err.rstrip().endswith('database "no_such_db" does not exist'), err


async def test_serve_reports_an_unreachable_redis(services: Services, tmp_path: Path) -> None:
    url = f"redis://:s3cretpw@127.0.0.1:{free_port()}/0"
    args = ("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"))
    rc, _, err = await run_cli(*args, dsn=services.dsn, redis_url=url)
    assert rc == 2, err
    assert err.startswith("LEADERBOARD_REDIS_URL: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "connection refused" in err and "s3cretpw" not in err and len(err.splitlines()) == 1


async def test_serve_reports_a_port_in_use(services: Services, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"))
        rc, _, err = await run_cli(*args, dsn=services.dsn, redis_url=services.redis_url)
    assert rc == 2, err
    assert err.startswith(f"cannot listen on 127.0.0.1:{port}: address already in use") and len(err.splitlines()) == 1


async def test_an_unknown_variable_is_warned_about(scratch_db: str, services: Services) -> None:
    env = cli_env(scratch_db, services.redis_url, databse_url="postgresql://typo")
    rc, _, err = await run_cli("migrate", dsn=None, redis_url=None, env=env)
    assert rc == 0, err
    assert (
        "warning: LEADERBOARD_DATABSE_URL is not a setting and is ignored; did you mean LEADERBOARD_DATABASE_URL?"
        in err.splitlines()
    )


@pytest.mark.parametrize("command", [("serve",), ("keys", "list")])
async def test_an_unusable_data_dir_is_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    write_file(blocker, "")
    args = (*command, "--port", str(free_port())) if command == ("serve",) else command
    rc, out, err = await run_cli(*args, "--data-dir", str(blocker / "data"), dsn=None, redis_url=None)
    assert (rc, out) == (2, "")
    assert err == (
        f"cannot use the data dir {blocker / 'data'}: Not a directory (choose a writable one with --data-dir or "
        "LEADERBOARD_DATA_DIR)\n"
    )
