"""``python -m loadtest.bench [--quick]``: the benchmark suite behind ``make bench``.

Starts ``leaderboard serve`` on a fresh data dir (embedded Postgres + Valkey) and the seed-design baseline
(``loadtest.baseline``) pointed at the *same* embedded Postgres and Valkey (its own ``baseline_*`` tables, Valkey db 1),
runs a fixed suite, and rewrites ``docs/benchmarks.md`` and ``docs/img/bench-*.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from leaderboard.settings import redact_url
from loadtest.benchcluster import cluster_suite, create_database, drop_database, format_rows
from loadtest.runner import RunOptions, create_board, format_table, run, seed_board
from loadtest.wire import http_connect
from loadtest.worker import raise_nofile

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LEADERBOARD = str(VENV_BIN / "leaderboard")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# The server's per-process connection cap (LEADERBOARD_MAX_CONNECTIONS, 10,000 by default, guard.py) counts
# every HTTP and WebSocket connection; the largest watcher run opens 10,000 watchers + 100 rank watchers + 16
# submit connections, so the servers under test get room for that (the cap itself is not what is measured).
MAX_CONNECTIONS = 12_000


SERVER_ENV: dict[str, str] = {}  # --server-env NAME=VALUE: settings of the servers under test


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    env["LEADERBOARD_LOG_LEVEL"] = "WARNING"
    env["LEADERBOARD_MAX_CONNECTIONS"] = str(MAX_CONNECTIONS)
    env.update(SERVER_ENV)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    pg_dsn: str
    redis_url: str
    admin_key: str
    postmaster_pid: int | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def valkey_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads((self.data_dir / "valkey" / "server.json").read_text())["pid"])
        return None

    def backends(self) -> dict[str, list[int]]:
        """The CPU groups besides the target itself: Postgres (the postmaster's tree) and Valkey."""
        return {
            "postgres_pids": [self.postmaster_pid] if self.postmaster_pid else [],
            "redis_pids": [self.valkey_pid] if self.valkey_pid else [],
        }


def _http_status(port: int, path: str) -> int:
    async def go() -> int:
        c = await http_connect("127.0.0.1", port, connect_timeout=2)
        try:
            return (await asyncio.wait_for(c.request("GET", path), 5)).status
        finally:
            c.close()

    try:
        return asyncio.run(go())
    except (OSError, TimeoutError):
        return 0


def start_server(data_dir: Path, database_url: str | None = None) -> Server:
    """A `leaderboard serve` on its embedded Postgres and Valkey, or on `database_url`'s Postgres (which it then
    neither owns nor stops: Server.postmaster_pid stays None)."""
    port = _free_port()
    cmd = [LEADERBOARD, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    _log("starting: " + " ".join(cmd))
    env = _clean_env() | ({"LEADERBOARD_DATABASE_URL": database_url} if database_url else {})
    with open(data_dir / "server.log", "wb") as log:  # (the server has its own copy of the descriptor)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    pg, rd = database_url, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(data_dir / 'server.log').read_text()[-2000:]}")
        text = (data_dir / "server.log").read_text(errors="replace")
        # The server says where its embedded backends are: "postgres: embedded, data in DIR (URI)".
        m = re.search(r"^postgres: embedded, data in .* \((\S+)\)$", text, re.M)
        pg = m.group(1) if m else pg
        m = re.search(r"^redis: embedded valkey, data in .* \((\S+)\)$", text, re.M)
        rd = m.group(1) if m else rd
        if pg and rd and _http_status(port, "/readyz") == 200:
            break
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("server did not become ready in 120 s")
    assert pg and rd
    out = subprocess.run(
        [LEADERBOARD, "keys", "create", "--role", "admin", "--name", "bench", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    key = out.stdout.strip().splitlines()[-1]
    postmaster = None
    with contextlib.suppress(OSError, ValueError):
        if database_url is None:
            postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    return Server(proc, port, data_dir, pg, rd, key, postmaster)


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = 30, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stop_server(srv: Server) -> None:
    """SIGINT: uvicorn drains, then re-raises the signal as KeyboardInterrupt, so `serve` stops its embedded
    Postgres and Valkey. (After SIGTERM it re-raises SIGTERM, which kills the process before that cleanup.)
    Anything still running from our data dir afterwards is stopped here by pid."""
    stop_proc(srv.proc, sig=signal.SIGINT)
    pids = []
    if srv.postmaster_pid:
        pids.append((srv.postmaster_pid, signal.SIGINT, "postgres"))  # SIGINT = fast shutdown
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads((srv.data_dir / "valkey" / "server.json").read_text())
        pids.append((int(state["pid"]), signal.SIGTERM, "valkey-server"))
    for pid, sig, name in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if name not in p.name() or p.status() == psutil.STATUS_ZOMBIE:
                continue  # a zombie already stopped; its parent reaps it
            _log(f"stopping leftover embedded {name} (pid {pid})")
            p.send_signal(sig)
            try:
                p.wait(30)
            except psutil.TimeoutExpired:
                p.kill()


def start_baseline(pg_dsn: str, redis_url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "loadtest.baseline", "--pg-dsn", pg_dsn, "--redis-url", redis_url]
    cmd += ["--port", str(port), "--pool-size", "10"]
    _log("starting baseline: " + " ".join(cmd))
    with open(data_dir / "baseline.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=_clean_env())
    deadline = time.monotonic() + 30
    while _http_status(port, "/healthz") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"baseline did not start: {(data_dir / 'baseline.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, port


# -- raw ceilings ----------------------------------------------------------------------------------------------


async def pg_ceiling(dsn: str, seconds: float, conns: int, batch: int) -> dict[str, Any]:
    """Durable batched inserts: one transaction per batch of rows shaped like game_sessions, unnest arrays."""
    table = f"bench_scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(
        f"CREATE TABLE {table} (session_id uuid PRIMARY KEY, board_id text NOT NULL, user_id text NOT NULL, "
        "score bigint NOT NULL, submitted_at timestamptz NOT NULL DEFAULT now())"
    )
    sql = (
        f"INSERT INTO {table} (session_id, board_id, user_id, score) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[])"
    )
    rows = 0
    import uuid

    async def loop(con: asyncpg.Connection) -> None:
        nonlocal rows
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ids = [uuid.uuid4() for _ in range(batch)]
            users = [f"u{random.randrange(10_000)}" for _ in range(batch)]
            async with con.transaction():
                await con.execute(sql, ids, ["scratch"] * batch, users, [random.randint(1, 100)] * batch)
            rows += batch

    cons = [await asyncpg.connect(dsn) for _ in range(conns)]
    try:
        t = time.monotonic()
        await asyncio.gather(*(loop(c) for c in cons))
        took = time.monotonic() - t
    finally:
        for c in cons:
            await c.close()
        await admin.execute(f"DROP TABLE {table}")
        await admin.close()
    return {"rows_per_s": round(rows / took), "conns": conns, "batch": batch, "seconds": round(took, 2)}


def fanout_floor(sockets: int, size: int = 600, rounds: int = 5) -> dict[str, Any]:
    """The kernel's price of one push on loopback: `sockets` TCP connections to ourselves, one frame of `size`
    bytes sent to each with a bare `socket.send` per round (no event loop, no Python around it, nobody reading:
    what every flush of the fan-out pays at least). CPU per send (user + system, getrusage), best of `rounds`."""
    import resource

    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    ends: list[socket.socket] = []
    frame = b"\x81\x7e" + (size - 4).to_bytes(2, "big") + b"x" * (size - 4)
    best = float("inf")
    try:
        senders = []
        for _ in range(sockets):
            ends.append(socket.create_connection(listener.getsockname()))
            ends[-1].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            senders.append(listener.accept()[0])
            ends.append(senders[-1])
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_SELF)
            for s in senders:
                s.send(frame)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            best = min(best, cpu / sockets)
    finally:
        for s in ends:
            s.close()
        listener.close()
    return {"sockets": sockets, "bytes": size, "us_per_send": round(best * 1e6, 2)}


async def redis_ceiling(url: str, seconds: float, pipeline: int) -> dict[str, Any]:
    """Pipelined single-member ZADDs written as raw RESP, so the client library's encoding cost is not measured."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    db = int(u.path.strip("/") or 0)
    key = f"bench:scratch:{secrets.token_hex(4)}".encode()

    def cmd(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    payloads = [
        b"".join(
            cmd(b"ZADD", key, b"%d" % random.randrange(1 << 40), b"u%d" % random.randrange(1_000_000))
            for _ in range(pipeline)
        )
        for _ in range(20)
    ]
    reader, writer = await asyncio.open_connection(u.hostname or "127.0.0.1", u.port or 6379)
    n = 0
    try:
        writer.write(cmd(b"SELECT", b"%d" % db))
        await reader.readline()
        t = time.monotonic()
        end = t + seconds
        i = 0
        while time.monotonic() < end:
            writer.write(payloads[i % len(payloads)])
            i += 1
            for _ in range(pipeline):
                line = await reader.readline()
                if not line.startswith(b":"):
                    raise RuntimeError(f"ZADD failed: {line!r}")
            n += pipeline
        took = time.monotonic() - t
        writer.write(cmd(b"DEL", key))
        await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    return {"zadd_per_s": round(n / took), "pipeline": pipeline, "seconds": round(took, 2)}


# -- board sizes ----------------------------------------------------------------------------------------------


SEED_USERS = "INSERT INTO users (user_id) SELECT 'z' || g FROM generate_series(1, $1) g ON CONFLICT DO NOTHING"
SEED_BOARD = """
INSERT INTO leaderboard (board_id, season, user_id, value, sort_key, version)
SELECT $2, (SELECT season FROM leaderboards WHERE id = $2), 'z' || g, v, -v, nextval('leaderboard_version_seq')
FROM (SELECT g, (random() * 1e9)::bigint AS v FROM generate_series(1, $1) g) t
"""


async def _create_board(srv: Server, board: str) -> None:
    c = await http_connect("127.0.0.1", srv.port)
    try:
        body = json.dumps({"id": board, "title": board, "sort": "desc", "operator": "incr"}).encode()
        resp = await c.request("POST", "/api/leaderboards", body, {"Authorization": f"Bearer {srv.admin_key}"})
        if resp.status != 201:
            raise RuntimeError(f"create board {board}: {resp.status} {resp.body[:200]!r}")
    finally:
        c.close()


async def _seed(dsn: str, board: str, n: int) -> float:
    con = await asyncpg.connect(dsn)
    try:
        t = time.monotonic()
        # Seeding only: rows are consistent by construction, so skip the per-row FK triggers (superuser).
        await con.execute("SET session_replication_role = replica")
        await con.execute("SET synchronous_commit = off")
        await con.execute(SEED_USERS, n)
        await con.execute(SEED_BOARD, n, board)
        await con.execute("ANALYZE leaderboard")
        return time.monotonic() - t
    finally:
        await con.close()


async def _time_reads(port: int, board: str, n_users: int, requests: int) -> dict[str, Any]:
    from loadtest.analysis import summarize

    c = await http_connect("127.0.0.1", port)
    out: dict[str, Any] = {}
    try:
        for name in ("top", "rank"):
            lat = []
            for i in range(requests + 50):
                if name == "top":
                    path = f"/api/leaderboard/top?board={board}&limit=10"
                else:
                    path = f"/api/leaderboard/rank/z{random.randint(1, n_users)}?board={board}"
                t = time.perf_counter()
                resp = await c.request("GET", path)
                took = time.perf_counter() - t
                if resp.status != 200:
                    raise RuntimeError(f"GET {path}: {resp.status} {resp.body[:200]!r}")
                if i >= 50:  # warm-up excluded
                    lat.append(took)
            out[name] = summarize(lat)
    finally:
        c.close()
    return out


def board_sizes(srv: Server, sizes: list[int], requests: int) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        board = f"bench-size-{n}-{secrets.token_hex(2)}"
        asyncio.run(_create_board(srv, board))
        seed_s = asyncio.run(_seed(srv.pg_dsn, board, n))
        cmd = [LEADERBOARD, "rebuild", "--board", board, "--data-dir", str(srv.data_dir)]
        t = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), cwd=REPO, check=True)
        wall = time.monotonic() - t
        m = re.search(r"(\d+) members rebuilt in ([\d.]+)s", out.stdout)
        reported = float(m.group(2)) if m else None
        members = int(m.group(1)) if m else None
        reads = asyncio.run(_time_reads(srv.port, board, n, requests))
        row = {
            "members": n,
            "board": board,
            "seed_s": round(seed_s, 2),
            "rebuild_reported_s": reported,
            "rebuild_members": members,
            "rebuild_command_wall_s": round(wall, 2),
            "top": reads["top"],
            "rank": reads["rank"],
            "command": " ".join(cmd).replace(str(srv.data_dir), "TMP"),
        }
        _log(
            f"board {n:>9,}: seed {seed_s:.1f}s, rebuild {reported}s (command {wall:.1f}s), "
            f"top p99 {reads['top']['p99']} ms, rank p99 {reads['rank']['p99']} ms"
        )
        results.append(row)
    return results


# -- the suite ------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    duration: float  # each step of throughput vs offered load
    rates: list[int]
    hot_duration: float  # closed-loop / pipelined / batch / read runs
    read_members: int  # members seeded on the read scenarios' board
    watchers: list[int]
    watch_rate: int
    watch_duration: float
    sizes: list[int]
    read_requests: int
    ceiling_s: float


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan(True, 2, [1000], 2, 2_000, [100, 1000], 2000, 2, [10_000], 300, 1)
    return Plan(
        False,
        5,
        [1000, 2000, 4000, 8000],
        5,
        10_000,
        [100, 1000, 5000, 10_000],
        5000,
        8,
        [10_000, 100_000, 1_000_000],
        1000,
        2,
    )


TARGETS = {
    # name: (transport, conns, inflight) for throughput vs offered load
    "leaderboard (WebSocket)": ("ws", 32, 32),
    "leaderboard (REST)": ("rest", 128, 1),
    "baseline (REST)": ("rest", 128, 1),
}

# Load shapes of the hot-path runs: (name, connections, in flight per connection)
CLOSED = ("100 closed-loop clients", 100, 1)
# uvicorn answers a connection's pipelined requests one at a time: over REST the server sees ≤ 32 at once
PIPELINED = ("pipelined 32 × 32", 32, 32)
BATCH = 100  # items per batch request/frame


def _run(label: str, cmdline: list[str], **kw: Any) -> dict[str, Any]:
    opts = RunOptions(quiet=True, **kw)
    report = run(opts)
    report["command"] = "python -m loadtest " + " ".join(cmdline)
    report["label"] = label
    if "skipped" in report:
        _log(f"{label}: skipped: {report['skipped']}")
        return report
    s = report["submissions"]
    w = report["watch"]
    extra = ""
    if w["watchers"]:
        extra = f", push p99 {w['push_latency_ms']['p99']} ms, watchers {w['watchers']}"
    v = report.get("verify", {})
    cpu = report.get("cpu", {})
    per_op = ", ".join(f"{k} {cpu[k]['us_per_op']}" for k in ("server", "postgres", "redis", "generator") if k in cpu)
    _log(
        f"{label}: acked {s['acked_per_s']} {report['unit']}/s (offered {s['offered_per_s'] or 'max'}), ack p99 "
        f"{s['ack_latency_ms']['p99']} ms{extra}, CPU µs/op: {per_op}; errors {sum(report['errors'].values())}, "
        f"verify {'OK' if v.get('ok') else v.get('problems', '-')}"
    )
    return report


def _cmd(url: str, scenario: str, **kw: Any) -> list[str]:
    parts = ["--url", url, "--key", "$KEY", scenario]
    kw = {**kw, "server_pid": "$PID", "postgres_pid": "$PG_PID", "redis_pid": "$VALKEY_PID", **kw}
    for k, v in kw.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts += [flag] if v is True else [flag, str(v)]
    return parts


def throughput_suite(plan: Plan, srv: Server, base_port: int, base_pid: int) -> list[dict[str, Any]]:
    out = []
    for label, (transport, conns, inflight) in TARGETS.items():
        is_base = label.startswith("baseline")
        url = f"http://127.0.0.1:{base_port}" if is_base else srv.url
        pid = base_pid if is_base else srv.proc.pid
        tables = "baseline" if is_base else "core"
        for rate in plan.rates:
            kw: dict[str, Any] = dict(
                transport=transport, conns=conns, inflight=inflight, rate=float(rate), duration=plan.duration,
                procs=2, retry_fraction=0.01, users=10_000,
            )  # fmt: skip
            r = _run(
                f"{label} @ {rate or 'max'}/s",
                _cmd(url, "submit", **kw, server_pid="$PID", verify_dsn="$DSN", verify_tables=tables),
                url=url, key=srv.admin_key, scenario="submit", server_pids=[pid],
                **srv.backends(),
                verify_dsn=srv.pg_dsn, verify_tables=tables, **kw,
            )  # fmt: skip
            r["target"] = label
            out.append(r)
    return out


def hot_path_suite(plan: Plan, srv: Server, base_port: int, base_pid: int) -> list[dict[str, Any]]:
    """CPU per acknowledged submission at 100 closed-loop clients and at full pipelining, then batches."""
    base_url = f"http://127.0.0.1:{base_port}"
    runs = [
        ("leaderboard (WebSocket)", "ws", CLOSED),
        ("leaderboard (REST)", "rest", CLOSED),
        ("baseline (REST)", "rest", CLOSED),
        ("leaderboard (WebSocket)", "ws", PIPELINED),
        ("leaderboard (REST)", "rest", PIPELINED),
        ("baseline (REST)", "rest", PIPELINED),
    ]
    out = []
    for target, transport, (shape, conns, inflight) in runs:
        is_base = target.startswith("baseline")
        url = base_url if is_base else srv.url
        tables = "baseline" if is_base else "core"
        kw: dict[str, Any] = dict(
            transport=transport, conns=conns, inflight=inflight, rate=0.0, duration=plan.hot_duration, procs=2,
            retry_fraction=0.01, users=10_000,
        )  # fmt: skip
        r = _run(
            f"{target}, {shape}",
            _cmd(url, "submit", **kw, verify_dsn="$DSN", verify_tables=tables),
            url=url, key=srv.admin_key, scenario="submit", server_pids=[base_pid if is_base else srv.proc.pid],
            verify_dsn=srv.pg_dsn, verify_tables=tables, **srv.backends(), **kw,
        )  # fmt: skip
        r["target"], r["shape"] = target, shape
        out.append(r)
    for transport, name in (("ws", "leaderboard (WebSocket batch)"), ("rest", "leaderboard (REST batch)")):
        kw = dict(
            transport=transport, conns=8, inflight=2, batch=BATCH, rate=0.0, duration=plan.hot_duration, procs=2,
            retry_fraction=0.01, users=10_000,
        )  # fmt: skip
        r = _run(
            f"{name}, {BATCH} items",
            _cmd(srv.url, "batch", **kw, verify_dsn="$DSN"),
            url=srv.url, key=srv.admin_key, scenario="batch", server_pids=[srv.proc.pid], verify_dsn=srv.pg_dsn,
            **srv.backends(), **kw,
        )  # fmt: skip
        r["target"], r["shape"] = name, f"8 × 2 requests of {BATCH} items"
        out.append(r)
    return out


# The machine's own PostgreSQL (a packaged one: built with LLVM, jit = on), for the step below.
SYSTEM_PG = os.environ.get("LEADERBOARD_BENCH_SYSTEM_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def system_postgres(dsn: str) -> dict[str, Any]:
    """The PostgreSQL at `dsn`, if one answers: its version, whether it can JIT, its `jit`, its postmaster's pid
    (on this machine) and a new empty database for one run; else {"skipped": why}."""
    try:
        con = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return {"skipped": f"no PostgreSQL answers at {redact_url(dsn)} ({exc.__class__.__name__})"}
    try:
        row = await con.fetchrow("SELECT version(), pg_jit_available(), current_setting('jit'), pg_backend_pid()")
        postmaster = None
        with contextlib.suppress(psutil.Error):
            postmaster = psutil.Process(row[3]).ppid()  # (this connection's backend is a child of the postmaster)
    finally:
        await con.close()
    database = f"lb_bench_{secrets.token_hex(4)}"
    try:
        db_dsn = await create_database(dsn, database)
    except asyncpg.PostgresError as exc:  # (a role that may not create databases, say)
        return {"skipped": f"no database could be created at {redact_url(dsn)} ({exc.__class__.__name__}: {exc})"}
    return {
        "version": row[0].split(" on ")[0], "jit_available": row[1], "jit": row[2], "postmaster_pid": postmaster,
        "database": database, "dsn": db_dsn,
    }  # fmt: skip


def system_pg_suite(plan: Plan) -> dict[str, Any]:
    """The WebSocket closed-loop step again, on a server whose database is on the machine's own PostgreSQL (a
    new database, dropped afterwards) instead of the embedded one: a packaged PostgreSQL differs (JIT, for one:
    docs/performance.md, sql/010), and operators run theirs."""
    info = asyncio.run(system_postgres(SYSTEM_PG))
    if "skipped" in info:
        _log(f"the machine's PostgreSQL: skipped: {info['skipped']}")
        return info
    tmp = Path(tempfile.mkdtemp(prefix="lbs-"))
    srv = None
    try:
        srv = start_server(tmp, database_url=info["dsn"])
        shape, conns, inflight = CLOSED
        kw: dict[str, Any] = dict(
            transport="ws", conns=conns, inflight=inflight, rate=0.0, duration=plan.hot_duration, procs=2,
            retry_fraction=0.01, users=10_000,
        )  # fmt: skip
        r = _run(
            f"leaderboard (WebSocket) on {info['version']}, {shape}",
            _cmd(srv.url, "submit", **kw, verify_dsn="$DSN"),
            url=srv.url, key=srv.admin_key, scenario="submit", server_pids=[srv.proc.pid], verify_dsn=info["dsn"],
            postgres_pids=[info["postmaster_pid"]] if info["postmaster_pid"] else [],
            redis_pids=[srv.valkey_pid] if srv.valkey_pid else [], **kw,
        )  # fmt: skip
        r["target"], r["shape"] = "leaderboard (WebSocket)", shape
        return {**info, "dsn": redact_url(info["dsn"]), "run": r}
    finally:
        if srv is not None:
            stop_server(srv)
        asyncio.run(drop_database(SYSTEM_PG, info["database"]))
        shutil.rmtree(tmp, ignore_errors=True)


def read_suite(plan: Plan, srv: Server, base_port: int, base_pid: int) -> list[dict[str, Any]]:
    """REST top-10 and rank reads on a seeded board, ours and the baseline's, closed loop and pipelined."""
    out = []
    for target, port, pid in (("leaderboard (REST)", srv.port, srv.proc.pid), ("baseline (REST)", base_port, base_pid)):
        board = f"bench-read-{secrets.token_hex(3)}"
        asyncio.run(create_board("127.0.0.1", port, srv.admin_key, board))
        took = asyncio.run(seed_board("127.0.0.1", port, srv.admin_key, board, plan.read_members))
        _log(f"{target}: seeded {board} with {plan.read_members:,} members in {took:.1f}s (REST submissions)")
        url = f"http://127.0.0.1:{port}"
        for kind in ("top", "rank"):
            for shape, conns, inflight in (CLOSED, PIPELINED):
                kw: dict[str, Any] = dict(
                    read=kind, board=board, users=plan.read_members, conns=conns, inflight=inflight,
                    duration=plan.hot_duration, procs=2, limit=10,
                )  # fmt: skip
                r = _run(
                    f"{target} {kind}, {shape}",
                    _cmd(url, "read", **kw),
                    url=url, key=srv.admin_key, scenario="read", server_pids=[pid], **srv.backends(), **kw,
                )  # fmt: skip
                r["target"], r["shape"], r["read"] = target, shape, kind
                out.append(r)
    return out


def watcher_suite(plan: Plan, srv: Server, base_port: int, base_pid: int) -> list[dict[str, Any]]:
    out = []
    limit = raise_nofile()
    for n in plan.watchers:
        if n + 500 > limit:
            _log(f"skipping {n} watchers: RLIMIT_NOFILE is {limit}")
            continue
        kw: dict[str, Any] = dict(
            transport="ws", conns=16, inflight=16, rate=float(plan.watch_rate), duration=plan.watch_duration,
            procs=2, watchers=n, rank_watchers=100, retry_fraction=0.01,
        )  # fmt: skip
        r = _run(
            f"{n} watchers @ {plan.watch_rate}/s",
            _cmd(srv.url, "watch", **kw, server_pid="$PID", verify_dsn="$DSN"),
            url=srv.url, key=srv.admin_key, scenario="watch", server_pids=[srv.proc.pid],
            verify_dsn=srv.pg_dsn, **srv.backends(), **kw,
        )  # fmt: skip
        r["target"] = "leaderboard (push)"
        out.append(r)
    if not plan.quick:
        # The seed design's "live" view: browsers polling /top once a second.
        n = 1000
        url = f"http://127.0.0.1:{base_port}"
        kw = dict(
            transport="rest", conns=32, inflight=1, rate=1000.0, duration=plan.watch_duration, procs=2,
            watchers=n, rank_watchers=0, watch_mode="poll", poll_interval=1.0, retry_fraction=0.01,
        )  # fmt: skip
        r = _run(
            f"baseline {n} pollers @ 1000/s",
            _cmd(url, "watch", **kw, server_pid="$PID", verify_dsn="$DSN", verify_tables="baseline"),
            url=url, key=srv.admin_key, scenario="watch", server_pids=[base_pid],
            verify_dsn=srv.pg_dsn, **srv.backends(),
            verify_tables="baseline", **kw,
        )  # fmt: skip
        r["target"] = "baseline (poll 1 s)"
        out.append(r)
    return out


def _versions(srv: Server) -> dict[str, str]:
    v: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("leaderboard", "starlette", "uvicorn", "websockets", "asyncpg", "redis", "orjson", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            v[pkg] = metadata.version(pkg)

    async def server_versions() -> None:
        con = await asyncpg.connect(srv.pg_dsn)
        try:
            v["postgres"] = (await con.fetchval("SHOW server_version")).split()[0]
            v["postgres fsync / synchronous_commit"] = (
                f"{await con.fetchval('SHOW fsync')} / {await con.fetchval('SHOW synchronous_commit')}"
            )
        finally:
            await con.close()
        import redis.asyncio as aioredis

        r = aioredis.from_url(srv.redis_url)
        info = await r.info("server")
        v["valkey/redis"] = str(info.get("valkey_version") or info.get("redis_version"))
        await r.aclose()

    asyncio.run(server_versions())
    with contextlib.suppress(Exception):
        v["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout.strip()
    return v


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "nofile_limit": raise_nofile(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@contextlib.contextmanager
def services(keep: bool) -> Iterator[tuple[Server, subprocess.Popen[bytes], int]]:
    # Short path: the embedded Postgres puts its unix socket in here (108-byte limit).
    tmp = Path(tempfile.mkdtemp(prefix="lbb-"))
    srv = None
    base = None
    try:
        srv = start_server(tmp)
        _log(f"server pid {srv.proc.pid} on {srv.url}; postgres {srv.pg_dsn}; valkey {srv.redis_url}")
        base_redis = re.sub(r"/\d+$", "", srv.redis_url) + "/1"
        base, base_port = start_baseline(srv.pg_dsn, base_redis, tmp)
        _log(f"baseline pid {base.pid} on http://127.0.0.1:{base_port} (same Postgres, Valkey db 1)")
        yield srv, base, base_port
    finally:
        if base is not None:
            stop_proc(base)
        if srv is not None:
            stop_server(srv)
        if keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke version")
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="markdown file to rewrite")
    ap.add_argument("--img-dir", default=str(REPO / "docs" / "img"))
    ap.add_argument("--json", help="also write every raw result here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir and logs")
    ap.add_argument("--render", metavar="JSON", help="only re-render the docs from a --json file of a run")
    ap.add_argument("--cluster-only", action="store_true", help="only the Redis Cluster runs: print their table")
    ap.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting of the servers under test, e.g. LEADERBOARD_PLAYER_SUBMIT_RATE=1000 (repeatable)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    # SIGTERM (a stopped `make bench`, a CI timeout) unwinds like Ctrl-C: the `finally` blocks stop the servers,
    # the baseline and the generators this run started, instead of leaving them running.
    signal.signal(signal.SIGTERM, _terminated)
    for item in args.server_env:
        name, _, value = item.partition("=")
        SERVER_ENV[name] = value
    if args.cluster_only:
        return _cluster_only(args)
    if args.render:
        from loadtest.benchdoc import render, write_plots

        saved = json.loads(Path(args.render).read_text())
        img_dir = Path(args.img_dir)
        img_dir.mkdir(parents=True, exist_ok=True)
        doc = Path(args.doc)
        doc.write_text(render(saved, write_plots(saved, img_dir), doc.parent))
        _log(f"re-rendered {doc} from {args.render}")
        return 0
    plan = make_plan(args.quick)
    raise_nofile()
    started = time.monotonic()
    results: dict[str, Any] = {"quick": plan.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results["machine"] = _machine()
    results["read_members"] = plan.read_members
    with services(args.keep) as (srv, base, base_port):
        results["versions"] = _versions(srv)
        results["server_command"] = (
            f"LEADERBOARD_MAX_CONNECTIONS={MAX_CONNECTIONS} {LEADERBOARD} serve --port {srv.port} --data-dir TMP"
        )
        results["baseline_command"] = (
            f"{sys.executable} -m loadtest.baseline --pg-dsn <server's embedded postgres> "
            f"--redis-url <server's embedded valkey>/1 --port {base_port} --pool-size 10"
        )
        _log("raw ceilings")
        results["ceilings"] = {
            "pg_1conn": asyncio.run(pg_ceiling(srv.pg_dsn, plan.ceiling_s, 1, 500)),
            "pg_4conn": asyncio.run(pg_ceiling(srv.pg_dsn, plan.ceiling_s, 4, 500)),
            "redis": asyncio.run(redis_ceiling(srv.redis_url, plan.ceiling_s, 1000)),
            "fanout": fanout_floor(4000),
        }
        _log(f"ceilings: {results['ceilings']}")
        results["hot_path"] = hot_path_suite(plan, srv, base_port, base.pid)
        results["system_pg"] = system_pg_suite(plan)
        results["reads"] = read_suite(plan, srv, base_port, base.pid)
        results["throughput"] = throughput_suite(plan, srv, base_port, base.pid)
        results["watchers"] = watcher_suite(plan, srv, base_port, base.pid)
        results["board_sizes"] = board_sizes(srv, plan.sizes, plan.read_requests)
        results["cluster"] = cluster_suite(sys.modules[__name__], plan, srv, srv.data_dir)
    results["total_s"] = round(time.monotonic() - started, 1)
    from loadtest.benchdoc import render, write_plots

    img_dir = Path(args.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    images = write_plots(results, img_dir)
    doc = Path(args.doc)
    doc.write_text(render(results, images, doc.parent))
    if args.json:
        Path(args.json).write_text(json.dumps(_strip(results), indent=2, default=str))
    _log(f"done in {results['total_s']} s; wrote {doc} and {', '.join(str(p) for p in images)}")
    for r in results["throughput"][-1:]:
        print(format_table(r))
    return 0


def _strip(results: dict[str, Any]) -> dict[str, Any]:
    out = dict(results)
    for k in ("hot_path", "reads", "throughput", "watchers"):
        out[k] = [{kk: vv for kk, vv in r.items() if kk != "raw"} for r in results.get(k, [])]
    if "run" in results.get("system_pg", {}):
        out["system_pg"] = {**results["system_pg"], "run": _no_raw(results["system_pg"]["run"])}
    if "runs" in results.get("cluster", {}):
        out["cluster"] = {**results["cluster"], "runs": [_no_raw(r) for r in results["cluster"]["runs"]]}
    return out


def _no_raw(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "raw"}


def _cluster_only(args: argparse.Namespace) -> int:
    plan = make_plan(args.quick)
    raise_nofile()
    with services(args.keep) as (srv, _base, _base_port):
        result = cluster_suite(sys.modules[__name__], plan, srv, srv.data_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(_strip({"cluster": result})["cluster"], indent=2, default=str))
    print(format_rows(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
