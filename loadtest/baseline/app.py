"""Starlette app of the seed design: same REST shape as our API for submit/top/rank/boards."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_boards (
    id text PRIMARY KEY, title text NOT NULL, sort text NOT NULL DEFAULT 'desc',
    operator text NOT NULL DEFAULT 'incr', created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS baseline_game_sessions (
    session_id uuid PRIMARY KEY, board_id text NOT NULL, user_id text NOT NULL, score bigint NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS baseline_leaderboard (
    board_id text NOT NULL, user_id text NOT NULL, total_score bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (board_id, user_id));
INSERT INTO baseline_boards (id, title) VALUES ('global', 'Global') ON CONFLICT DO NOTHING;
"""

INSERT_SESSION = """
INSERT INTO baseline_game_sessions (session_id, board_id, user_id, score) VALUES ($1, $2, $3, $4)
ON CONFLICT (session_id) DO NOTHING RETURNING 1
"""
UPSERT_TOTAL = """
INSERT INTO baseline_leaderboard (board_id, user_id, total_score) VALUES ($1, $2, $3)
ON CONFLICT (board_id, user_id)
DO UPDATE SET total_score = baseline_leaderboard.total_score + EXCLUDED.total_score, updated_at = now()
RETURNING total_score
"""
SELECT_TOTAL = "SELECT total_score FROM baseline_leaderboard WHERE board_id = $1 AND user_id = $2"
TOP_FALLBACK = """
SELECT user_id, total_score FROM baseline_leaderboard WHERE board_id = $1
ORDER BY total_score DESC LIMIT $2 OFFSET $3
"""
RANK_FALLBACK = """
SELECT count(*) FROM baseline_leaderboard WHERE board_id = $1
AND total_score > (SELECT total_score FROM baseline_leaderboard WHERE board_id = $1 AND user_id = $2)
"""

_BOARD_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def zkey(board: str) -> str:
    return f"baseline:leaderboard_scores:{board}"


class Submit(BaseModel):
    user_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")
    score: int = Field(ge=-(2**53 - 1), le=2**53 - 1)
    board: str = Field(default="global", pattern=_BOARD_RE.pattern)
    session_id: uuid.UUID | None = None
    display_name: str | None = Field(default=None, max_length=64)


class NewBoard(BaseModel):
    id: str = Field(pattern=_BOARD_RE.pattern)
    title: str | None = None
    sort: str = "desc"
    operator: str = "incr"


@dataclass
class Config:
    pg_dsn: str
    redis_url: str
    api_key: str | None = None
    pool_size: int = 20


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _problem(status: int, code: str, detail: str) -> Response:
    body = {"type": f"/problems/{code}", "title": code, "status": status, "detail": detail, "code": code}
    return Response(orjson.dumps(body), status_code=status, media_type="application/problem+json")


def create_app(cfg: Config) -> Starlette:
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(cfg.pg_dsn, min_size=2, max_size=cfg.pool_size)
        async with pool.acquire() as con:
            await con.execute("SELECT pg_advisory_lock(424242)")
            try:
                await con.execute(SCHEMA)
            finally:
                await con.execute("SELECT pg_advisory_unlock(424242)")
        # Blocking pool: under load, requests wait for a connection instead of failing "Too many connections".
        r = aioredis.Redis.from_pool(  # from_pool: aclose() below also closes the pool
            aioredis.BlockingConnectionPool.from_url(cfg.redis_url, max_connections=64, timeout=30)
        )
        state["pool"], state["redis"] = pool, r
        try:
            yield
        finally:
            await r.aclose()
            await pool.close()

    def authorized(request: Request) -> bool:
        if cfg.api_key is None:
            return True
        return request.headers.get("authorization") == f"Bearer {cfg.api_key}"

    async def submit(request: Request) -> Response:
        if not authorized(request):
            return _problem(401, "unauthorized", "missing or bad credential")
        try:
            body = Submit.model_validate_json(await request.body())
        except ValidationError as e:
            return _problem(422, "validation_error", str(e.errors()[0]["msg"]))
        pool: asyncpg.Pool = state["pool"]  # type: ignore[assignment]
        r: aioredis.Redis = state["redis"]  # type: ignore[assignment]
        sid = body.session_id or uuid.uuid4()
        # The seed design, step by step: BEGIN; insert session; upsert total; ZINCRBY; COMMIT.
        async with pool.acquire() as con, con.transaction():
            inserted = await con.fetchval(INSERT_SESSION, sid, body.board, body.user_id, body.score)
            if inserted is None:  # the primary key refused a replayed session_id
                total = await con.fetchval(SELECT_TOTAL, body.board, body.user_id)
                duplicate = True
            else:
                total = await con.fetchval(UPSERT_TOTAL, body.board, body.user_id, body.score)
                await r.zincrby(zkey(body.board), body.score, body.user_id)
                duplicate = False
        rank = await r.zrevrank(zkey(body.board), body.user_id)
        return _json(
            {
                "accepted": True,
                "duplicate": duplicate,
                "board": body.board,
                "user_id": body.user_id,
                "score": total,
                "rank": None if rank is None else rank + 1,
                "session_id": str(sid),
            }
        )

    async def top(request: Request) -> Response:
        board = request.query_params.get("board", "global")
        try:
            limit = int(request.query_params.get("limit", "10"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return _problem(422, "validation_error", "limit/offset must be integers")
        r: aioredis.Redis = state["redis"]  # type: ignore[assignment]
        rows = await r.zrevrange(zkey(board), offset, offset + limit - 1, withscores=True)
        total = await r.zcard(zkey(board))
        if not rows:
            # Cold cache: the seed design reads PG and populates Redis with just these rows.
            pool: asyncpg.Pool = state["pool"]  # type: ignore[assignment]
            async with pool.acquire() as con:
                db_rows = await con.fetch(TOP_FALLBACK, board, limit, offset)
            if db_rows:
                await r.zadd(zkey(board), {row["user_id"]: row["total_score"] for row in db_rows})
            rows = [(row["user_id"].encode(), row["total_score"]) for row in db_rows]
            total = len(rows)
        entries = [
            {"rank": offset + i + 1, "user_id": u.decode(), "display_name": None, "score": int(s)}
            for i, (u, s) in enumerate(rows)
        ]
        return _json({"board": board, "total": total, "seq": None, "entries": entries})

    async def rank(request: Request) -> Response:
        board = request.query_params.get("board", "global")
        user_id = request.path_params["user_id"]
        r: aioredis.Redis = state["redis"]  # type: ignore[assignment]
        async with r.pipeline(transaction=False) as p:
            p.zrevrank(zkey(board), user_id)
            p.zscore(zkey(board), user_id)
            p.zcard(zkey(board))
            idx, score, total = await p.execute()
        if idx is None:
            pool: asyncpg.Pool = state["pool"]  # type: ignore[assignment]
            async with pool.acquire() as con:
                score = await con.fetchval(SELECT_TOTAL, board, user_id)
                if score is None:
                    return _problem(404, "not_found", "no entry for this user")
                idx = await con.fetchval(RANK_FALLBACK, board, user_id)
            await r.zadd(zkey(board), {user_id: score})
        rnk = idx + 1
        total = max(total, rnk)
        return _json(
            {
                "board": board,
                "user_id": user_id,
                "display_name": None,
                "rank": rnk,
                "score": int(score),
                "total": total,
                "percentile": round(100 * (total - rnk + 1) / total, 2),
                "around": [],
            }
        )

    async def create_board(request: Request) -> Response:
        if not authorized(request):
            return _problem(401, "unauthorized", "missing or bad credential")
        try:
            body = NewBoard.model_validate_json(await request.body())
        except ValidationError as e:
            return _problem(422, "validation_error", str(e.errors()[0]["msg"]))
        pool: asyncpg.Pool = state["pool"]  # type: ignore[assignment]
        async with pool.acquire() as con:
            row = await con.fetchrow(
                "INSERT INTO baseline_boards (id, title, sort, operator) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING id, title, sort, operator, created_at",
                body.id,
                body.title or body.id,
                body.sort,
                body.operator,
            )
        if row is None:
            return _problem(409, "conflict", "board exists")
        return _json({**dict(row), "created_at": row["created_at"].isoformat()}, 201)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    routes = [
        Route("/api/leaderboard/submit", submit, methods=["POST"]),
        Route("/api/leaderboard/top", top, methods=["GET"]),
        Route("/api/leaderboard/rank/{user_id}", rank, methods=["GET"]),
        Route("/api/leaderboards", create_board, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
