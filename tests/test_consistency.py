"""Property: after any workload, Postgres values follow the operator, and Redis ranks equal Postgres ranks."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.clients import create_board, full_listing, rank, top
from support.reference import apply_op, ranked
from support.stores import assert_cache_matches_pg, pg_values, session_count

USERS = ["a", "B", "b", "c.d", "e@x", "Z-9", "u_1", "u:2"]
SMALL = st.integers(min_value=-50, max_value=50)  # small values: many ties
WIDE = st.integers(min_value=-(2**40), max_value=2**40)

workloads = st.tuples(
    st.sampled_from(["incr", "best", "set"]),
    st.sampled_from(["desc", "asc"]),
    st.lists(
        st.lists(st.tuples(st.sampled_from(USERS), st.one_of(SMALL, WIDE)), min_size=1, max_size=6),
        min_size=1,
        max_size=5,
    ),
)
_boards = itertools.count()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=workloads)
async def test_redis_ranks_equal_postgres_ranks(
    workload: tuple[str, str, list[list[tuple[str, int]]]],
    api: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    pool: asyncpg.Pool,
    rds: aioredis.Redis,
) -> None:
    operator, sort, rounds = workload
    board = f"prop{next(_boards)}"  # one fresh board per example: fixtures are per test, not per example
    await create_board(admin, board, sort=sort, operator=operator)
    model: dict[str, int] = {}
    n = 0
    for batch in rounds:
        # One round is submitted concurrently (one submission per user per round, so the order per user is
        # the submission order); rounds run one after the other.
        per_user: dict[str, int] = {}
        for user, score in batch:
            per_user[user] = score
        results = await asyncio.gather(
            *(
                api.post("/api/leaderboard/submit", json={"user_id": u, "score": s, "board": board})
                for u, s in per_user.items()
            )
        )
        for (user, score), resp in zip(per_user.items(), results, strict=True):
            new = apply_op(operator, sort, model.get(user), score)
            assert resp.status_code == 200, resp.text
            assert resp.json()["score"] == new
            model[user] = new
            n += 1

    assert await pg_values(pool, board) == model
    assert await session_count(pool, board) == n
    await assert_cache_matches_pg(pool, rds, board)
    want = [(e["rank"], e["user_id"], e["score"]) for e in ranked(model, sort)]
    listing = await full_listing(api, board)
    assert [(e["rank"], e["user_id"], e["score"]) for e in listing] == want
    for r, user, score in want:
        got = await rank(api, user, board)
        assert (got["rank"], got["score"], got["total"]) == (r, score, len(model))
    # Postgres' own ranking (sort_key, then user_id in byte order) agrees with the reference
    rows = await pool.fetch(
        "SELECT user_id, value, 1 + (SELECT count(*) FROM leaderboard o"
        "  WHERE o.board_id = l.board_id AND o.sort_key < l.sort_key) AS rank"
        " FROM leaderboard l WHERE board_id = $1 ORDER BY sort_key, user_id",
        board,
    )
    assert [(r["rank"], r["user_id"], r["value"]) for r in rows] == want


async def test_listing_pages_stitch_together(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    scores = {f"s{i:03d}": (i % 17) * 3 for i in range(230)}
    for chunk in range(0, 230, 46):
        await asyncio.gather(
            *(
                api.post("/api/leaderboard/submit", json={"user_id": u, "score": v})
                for u, v in list(scores.items())[chunk : chunk + 46]
            )
        )
    want = [(e["rank"], e["user_id"], e["score"]) for e in ranked(scores, "desc")]
    pages: list[Any] = []
    for offset in range(0, 230, 37):
        pages.extend((await top(api, limit=37, offset=offset))["entries"])
    assert [(e["rank"], e["user_id"], e["score"]) for e in pages] == want
