"""Shared helpers for the integration tests: HTTP/WS clients, reference ranking, DB snapshots."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

MAX_VALUE = 2**53 - 1
SECRET = "s3cret-for-tests-only-0123456789abcdef"  # >= 32 bytes: PyJWT warns on shorter HS256 keys
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
REPO = Path(__file__).resolve().parent.parent
DATA_TABLES = ("users", "game_sessions", "leaderboard", "api_keys", "leaderboards")


# ---------------------------------------------------------------------------------------------------------
# Fixture value types


class ServerURL(str):
    """The base URL of a running server; `.stop()` shuts it down, `.settings` is what it runs with."""

    settings: Any
    stop: Callable[[], Awaitable[None]]


@dataclass
class Services:
    dsn: str  # the test database, migrated
    redis_url: str
    admin_dsn: str  # a database on the same server, for CREATE/DROP DATABASE
    embedded: bool


@dataclass
class Keys:
    admin: str
    submit: str
    read: str


# ---------------------------------------------------------------------------------------------------------
# Credentials


def bearer(credential: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def player_token(sub: str, *, secret: str = SECRET, ttl: float = 600, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(payload, secret, "HS256")


# ---------------------------------------------------------------------------------------------------------
# HTTP


def assert_problem(resp: httpx.Response, status: int, code: str | Iterable[str]) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with the given status and `code`; return the body."""
    codes = {code} if isinstance(code, str) else set(code)
    assert resp.status_code == status, (resp.status_code, resp.text)
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", ctype
    body = resp.json()
    assert isinstance(body, dict), body
    assert PROBLEM_FIELDS <= body.keys(), body
    assert body["status"] == status, body
    assert body["code"] in codes, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["type"], str) and body["type"], body
    return body


async def submit(
    http: httpx.AsyncClient,
    user_id: str,
    score: int,
    board: str | None = None,
    *,
    expect: int = 200,
    **extra: Any,
) -> dict[str, Any]:
    """POST a submission and check the status; return the JSON body."""
    body: dict[str, Any] = {"user_id": user_id, "score": score, **extra}
    if board is not None:
        body["board"] = board
    resp = await http.post("/api/leaderboard/submit", json=body)
    assert resp.status_code == expect, (resp.status_code, resp.text)
    return resp.json()  # type: ignore[no-any-return]


async def top(http: httpx.AsyncClient, board: str = "global", limit: int = 10, offset: int = 0) -> dict[str, Any]:
    resp = await http.get("/api/leaderboard/top", params={"board": board, "limit": limit, "offset": offset})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def full_listing(http: httpx.AsyncClient, board: str = "global") -> list[dict[str, Any]]:
    """Every entry of a board, read through /top in pages of 100."""
    entries: list[dict[str, Any]] = []
    while True:
        page = await top(http, board, limit=100, offset=len(entries))
        entries.extend(page["entries"])
        if len(page["entries"]) < 100:
            assert len(entries) == page["total"], (len(entries), page["total"])
            return entries


async def rank(http: httpx.AsyncClient, user_id: str, board: str = "global", around: int = 0) -> dict[str, Any]:
    resp = await http.get(f"/api/leaderboard/rank/{user_id}", params={"board": board, "around": around})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def create_board(
    http: httpx.AsyncClient,
    board_id: str,
    sort: str = "desc",
    operator: str = "incr",
    title: str | None = None,
) -> dict[str, Any]:
    body = {"id": board_id, "title": title or board_id.title(), "sort": sort, "operator": operator}
    resp = await http.post("/api/leaderboards", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def wait_ready(url: str, within: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + within
    last: str = ""
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"server process exited with {proc.returncode}")
            try:
                resp = await http.get("/readyz")
                if resp.status_code == 200:
                    return
                last = resp.text
            except httpx.TransportError as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready after {within}s: {last}")


async def eventually(check: Any, within: float = 10.0, interval: float = 0.05) -> Any:
    """Retry an async `check()` until it stops raising AssertionError; re-raise the last failure."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------------------
# Reference model of the contract (docs/protocol.md)


def apply_op(operator: str, sort: str, old: int | None, score: int) -> int:
    if old is None:
        return score
    if operator == "incr":
        return old + score
    if operator == "set":
        return score
    assert operator == "best"
    return max(old, score) if sort == "desc" else min(old, score)


def ranked(values: Mapping[str, int], sort: str) -> list[dict[str, Any]]:
    """Competition ranking ("1224"); ties ordered by user_id byte order."""
    sign = -1 if sort == "desc" else 1
    order = sorted(values, key=lambda u: (sign * values[u], u.encode()))
    out = []
    for user in order:
        better = sum(1 for v in values.values() if (v > values[user] if sort == "desc" else v < values[user]))
        out.append({"rank": better + 1, "user_id": user, "score": values[user]})
    return out


def percentile(rank_: int, total: int) -> float:
    return round(100 * (total - rank_ + 1) / total, 2)


# ---------------------------------------------------------------------------------------------------------
# Postgres


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
    from leaderboard.cache import Keys as CacheKeys

    return str(getattr(CacheKeys(board), part))


async def assert_cache_matches_pg(pool: asyncpg.Pool, rds: Any, board: str = "global", *, ready: bool = True) -> None:
    """Redis holds exactly the committed rows of the board (same members, same sort keys) and, unless
    `ready=False`, marks the board complete."""
    if ready:
        assert await rds.exists(cache_key(board, "ready")), f"board {board} not marked ready in Redis"
    rows = await pool.fetch("SELECT user_id, sort_key FROM leaderboard WHERE board_id = $1", board)
    pg = {r["user_id"]: int(r["sort_key"]) for r in rows}
    cached = {m: int(float(s)) for m, s in await rds.zrange(cache_key(board), 0, -1, withscores=True)}
    assert cached == pg


def dsn_with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


# ---------------------------------------------------------------------------------------------------------
# WebSocket


def assert_seq_order(frames: list[dict[str, Any]]) -> None:
    """Pushes of one topic/board as a client sees them: seq never goes back, and a repeated seq repeats the
    same content (a client drops it; the contract allows nothing else)."""
    for prev, cur in itertools.pairwise(frames):
        assert cur["seq"] >= prev["seq"], [(f["seq"], f.get("total"), f.get("rank")) for f in frames]
        if cur["seq"] == prev["seq"]:
            strip = {"ref"}
            assert {k: v for k, v in cur.items() if k not in strip} == {
                k: v for k, v in prev.items() if k not in strip
            }, ("same seq, different content", prev, cur)


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws"


class WS:
    """A thin JSON wrapper over a websockets client connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []  # everything received, in order

    def max_seq(self) -> int:
        return max((f["seq"] for f in self.frames if isinstance(f.get("seq"), int)), default=0)

    async def send(self, frame: Any) -> None:
        await self.conn.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, within: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), within)
        msg = json.loads(raw)
        assert isinstance(msg, dict) and "type" in msg, msg
        self.frames.append(msg)
        return msg

    async def recv_type(self, type_: str, within: float = 5.0, where: Any = None) -> dict[str, Any]:
        """Receive until a frame of `type_` (matching `where(frame)` if given); skip other frames."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {type_!r} frame within {within}s")
            try:
                msg = await self.recv(left)
            except TimeoutError:
                raise AssertionError(f"no {type_!r} frame within {within}s") from None
            if msg["type"] == type_ and (where is None or where(msg)):
                return msg

    async def reply_to(self, frame: dict[str, Any], within: float = 5.0) -> dict[str, Any]:
        """Send a frame with a ref and return the first non-push frame that echoes it."""
        ref = frame.setdefault("ref", uuid.uuid4().hex[:12])
        await self.send(frame)
        deadline = time.monotonic() + within
        while True:
            msg = await self.recv(max(deadline - time.monotonic(), 0.01))
            if msg.get("ref") == ref:
                return msg

    async def expect_close(self, within: float = 5.0) -> int | None:
        """Read (and drop) frames until the server closes; return the close code received."""
        deadline = time.monotonic() + within
        try:
            while True:
                await asyncio.wait_for(self.conn.recv(), max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        except TimeoutError:
            raise AssertionError(f"socket not closed within {within}s") from None

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Collect whatever arrives within `seconds`."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got


async def ws_submit_many(ws: WS, subs: Iterable[dict[str, Any]], within: float = 60) -> list[dict[str, Any]]:
    """Pipeline submit frames on one socket (much cheaper than HTTP requests); return the acks in order."""
    frames = [{"type": "submit", "ref": f"s{i}", **sub} for i, sub in enumerate(subs)]
    for frame in frames:
        await ws.send(frame)
    acks: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    while len(acks) < len(frames):
        msg = await ws.recv(max(deadline - time.monotonic(), 0.01))
        if msg["type"] in ("ack", "error") and isinstance(msg.get("ref"), str) and msg["ref"].startswith("s"):
            assert msg["type"] == "ack", msg
            acks[msg["ref"]] = msg
    return [acks[f["ref"]] for f in frames]


@asynccontextmanager
async def ws_connect(base_url: str, credential: str | None = None, **kwargs: Any) -> AsyncIterator[WS]:
    async with connect(
        ws_url(base_url),
        additional_headers=bearer(credential),
        max_size=None,
        ping_interval=None,
        open_timeout=10,
        close_timeout=2,
        **kwargs,
    ) as conn:
        yield WS(conn)


async def subscribe_top(ws: WS, board: str = "global", limit: int = 10) -> dict[str, Any]:
    """Subscribe to `top`; check the `subscribed` reply and return the immediate snapshot."""
    reply = await ws.reply_to({"type": "subscribe", "board": board, "topics": ["top"], "limit": limit})
    assert reply["type"] == "subscribed", reply
    assert reply["board"] == board and reply["topics"] == ["top"], reply
    snap = await ws.recv_type("top", where=lambda m: m["board"] == board)
    return snap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("leaderboard")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from leaderboard.cli import main; sys.exit(main())"]


def cli_env(dsn: str | None, redis_url: str | None, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    if dsn:
        env["LEADERBOARD_DATABASE_URL"] = dsn
    if redis_url:
        env["LEADERBOARD_REDIS_URL"] = redis_url
    env["LEADERBOARD_PLAYER_TOKEN_SECRET"] = SECRET
    for key, value in settings.items():
        env[f"LEADERBOARD_{key.upper()}"] = str(value)
    return env


def start_serve(
    workdir: Path, dsn: str | None, redis_url: str | None, *args: str, **settings: Any
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """Start `leaderboard serve` on a free port, output to a log file; return (base URL, process, log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"serve-{port}.log"
    cmd = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(workdir)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, *args], env=cli_env(dsn, redis_url, **settings), stdout=out, stderr=subprocess.STDOUT
        )
    return f"http://127.0.0.1:{port}", proc, log


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@asynccontextmanager
async def spawned_server(
    workdir: Path, dsn: str | None, redis_url: str | None, *args: str, **settings: Any
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`leaderboard serve` in a subprocess, ready; yields (base URL, process); SIGTERM at exit."""
    url, proc, log = start_serve(workdir, dsn, redis_url, *args, **settings)
    try:
        try:
            await wait_ready(url, within=60, proc=proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{tail(log)}") from None
        yield url, proc
    finally:
        await asyncio.to_thread(stop_process, proc)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
