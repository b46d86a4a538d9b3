"""REST API against a real server, Postgres and Redis: endpoints, operators, ties, idempotency, bad input."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from jsonschema import Draft202012Validator

from support.clients import assert_problem, create_board, full_listing, rank, submit, top
from support.reference import MAX_VALUE, apply_op, percentile, ranked
from support.services import ApiKeys
from support.stores import assert_cache_matches_pg, pg_values, row_counts, session_count

# ---------------------------------------------------------------------------------------------------------
# submit


async def test_submit_answers_after_commit(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    sid = str(uuid.uuid4())
    ack = await submit(api, "alice", 120, session_id=sid, display_name="Alice")
    assert ack == {
        "accepted": True,
        "duplicate": False,
        "board": "global",
        "user_id": "alice",
        "score": 120,
        "rank": 1,
        "session_id": sid,
        "season": 1,
    }
    # Answered only after COMMIT: visible to another connection at once.
    assert await pg_values(pool) == {"alice": 120}
    row = await pool.fetchrow(
        "SELECT board_id, user_id, score FROM game_sessions WHERE session_id = $1", uuid.UUID(sid)
    )
    assert dict(row) == {"board_id": "global", "user_id": "alice", "score": 120}
    assert await pool.fetchval("SELECT display_name FROM users WHERE user_id = 'alice'") == "Alice"


async def test_submit_assigns_session_id_and_accumulates(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    first = await submit(api, "alice", 100)
    second = await submit(api, "alice", 20)
    assert uuid.UUID(first["session_id"]) != uuid.UUID(second["session_id"])
    assert (first["score"], second["score"]) == (100, 120)
    # No session_id: a retry cannot be recognised and counts again.
    third = await submit(api, "alice", 20)
    assert third["duplicate"] is False and third["score"] == 140
    assert await session_count(pool) == 3


async def test_rank_in_ack_reflects_the_board(api: httpx.AsyncClient) -> None:
    assert (await submit(api, "bob", 50))["rank"] == 1
    assert (await submit(api, "carol", 80))["rank"] == 1
    assert (await submit(api, "dave", 10))["rank"] == 3
    assert (await submit(api, "bob", 40))["rank"] == 1  # 90 > 80
    assert (await rank(api, "carol"))["rank"] == 2


async def test_idempotent_retry_is_counted_once(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    sid = str(uuid.uuid4())
    first = await submit(api, "alice", 10, session_id=sid)
    await submit(api, "alice", 5)  # another session moves the total on
    retry = await submit(api, "alice", 10, session_id=sid)
    assert retry["duplicate"] is True and retry["accepted"] is True
    assert retry["session_id"] == sid == first["session_id"]
    assert retry["score"] == 15  # the board's current value
    assert retry["rank"] == 1
    assert await pg_values(pool) == {"alice": 15}
    assert await session_count(pool) == 2
    assert (await top(api))["entries"][0]["score"] == 15


async def test_concurrent_retries_of_one_session_count_once(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    sid = str(uuid.uuid4())
    acks = await asyncio.gather(*(submit(api, "alice", 7, session_id=sid) for _ in range(10)))
    assert sorted(a["duplicate"] for a in acks) == [False] + [True] * 9
    assert all(a["score"] == 7 for a in acks)
    assert await pg_values(pool) == {"alice": 7}
    assert await session_count(pool) == 1


@pytest.mark.parametrize(
    "change",
    [{"score": 11}, {"user_id": "bob"}, {"board": "other"}],
    ids=["other-score", "other-user", "other-board"],
)
async def test_session_reuse_with_other_payload_is_409(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, pool: asyncpg.Pool, change: dict[str, Any]
) -> None:
    await create_board(admin, "other")
    sid = str(uuid.uuid4())
    await submit(api, "alice", 10, session_id=sid)
    before = await row_counts(pool)
    body = {"user_id": "alice", "score": 10, "board": "global", "session_id": sid, **change}
    resp = await api.post("/api/leaderboard/submit", json=body)
    assert_problem(resp, 409, "idempotency_conflict")
    assert await row_counts(pool) == before
    assert await pg_values(pool) == {"alice": 10}
    assert await pg_values(pool, "other") == {}


async def test_retry_with_other_display_name_is_still_a_duplicate(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    # the idempotency key identifies user, board and score; a display name is not part of the submission's identity
    sid = str(uuid.uuid4())
    await submit(api, "alice", 10, session_id=sid, display_name="Alice")
    retry = await submit(api, "alice", 10, session_id=sid, display_name="Alicia")
    assert retry["duplicate"] is True and retry["score"] == 10
    assert await session_count(pool) == 1


async def test_retries_mixed_with_conflicting_reuse(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """True retries of a committed submission are duplicates, also in a group commit that starts with a
    conflicting reuse of the same session_id."""
    sid = str(uuid.uuid4())
    await submit(api, "alice", 1, session_id=sid)
    post = api.post
    async with pool.acquire() as con, con.transaction():
        # Hold alice's row: the writer's next batch waits on it, and everything sent meanwhile queues up
        # behind it, to be committed together as one batch, in arrival order.
        await con.execute("SELECT 1 FROM leaderboard WHERE board_id = 'global' AND user_id = 'alice' FOR UPDATE")
        blocker = asyncio.create_task(post("/api/leaderboard/submit", json={"user_id": "alice", "score": 5}))
        await asyncio.sleep(0.3)
        scores = (2, 1, 3, 1)
        pending = []
        for s in scores:
            body = {"user_id": "alice", "score": s, "session_id": sid}
            pending.append(asyncio.create_task(post("/api/leaderboard/submit", json=body)))
            await asyncio.sleep(0.05)  # keep the arrival order
        await asyncio.sleep(0.3)
    assert (await blocker).status_code == 200
    for score, resp in zip(scores, await asyncio.gather(*pending), strict=True):
        if score == 1:  # a retry of the committed submission
            assert resp.status_code == 200, (score, resp.text)
            assert resp.json()["duplicate"] is True and resp.json()["score"] == 6
        else:
            assert_problem(resp, 409, "idempotency_conflict")
    assert await pg_values(pool) == {"alice": 6}
    assert await session_count(pool) == 2


async def test_display_name_shown_and_updated(api: httpx.AsyncClient) -> None:
    await submit(api, "alice", 10, display_name="Alice")
    await submit(api, "bob", 5)
    entries = (await top(api))["entries"]
    assert [(e["user_id"], e["display_name"]) for e in entries] == [("alice", "Alice"), ("bob", None)]
    await submit(api, "alice", 1, display_name="Queen A")
    assert (await rank(api, "alice"))["display_name"] == "Queen A"


# ---------------------------------------------------------------------------------------------------------
# operators and sort orders


CASES = [
    # operator, sort, submissions (user, score), expected values
    ("incr", "desc", [("a", 5), ("b", 3), ("a", -2), ("b", 4)], {"a": 3, "b": 7}),
    ("incr", "asc", [("a", 5), ("b", 3), ("a", 1)], {"a": 6, "b": 3}),
    ("best", "desc", [("a", 5), ("a", 3), ("b", 4), ("b", 9)], {"a": 5, "b": 9}),
    ("best", "asc", [("a", 50), ("a", 30), ("a", 40), ("b", 35)], {"a": 30, "b": 35}),
    ("set", "desc", [("a", 5), ("a", 3), ("b", 4)], {"a": 3, "b": 4}),
    ("set", "asc", [("a", 5), ("a", 9), ("b", 7), ("b", 1)], {"a": 9, "b": 1}),
]


@pytest.mark.parametrize(("operator", "sort", "subs", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
async def test_operator_and_sort(
    api: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    pool: asyncpg.Pool,
    operator: str,
    sort: str,
    subs: list[tuple[str, int]],
    expected: dict[str, int],
) -> None:
    board = await create_board(admin, "b1", sort=sort, operator=operator)
    assert (board["sort"], board["operator"]) == (sort, operator)
    model: dict[str, int] = {}
    for user, score in subs:
        ack = await submit(api, user, score, "b1")
        model[user] = apply_op(operator, sort, model.get(user), score)
        assert ack["score"] == model[user]
        assert ack["rank"] == next(e["rank"] for e in ranked(model, sort) if e["user_id"] == user)
    assert model == expected  # the reference model agrees with the hand-computed values
    assert await pg_values(pool, "b1") == expected
    listing = (await top(api, "b1"))["entries"]
    assert [(e["rank"], e["user_id"], e["score"]) for e in listing] == [
        (e["rank"], e["user_id"], e["score"]) for e in ranked(expected, sort)
    ]
    # the global board is untouched
    assert await pg_values(pool) == {}


async def test_asc_board_ranks_lowest_first(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    await create_board(admin, "laps", sort="asc", operator="best")
    for user, ms in [("slow", 90_000), ("fast", 61_000), ("mid", 75_000), ("fast", 65_000)]:
        await submit(api, user, ms, "laps")
    page = await top(api, "laps")
    assert [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]] == [
        (1, "fast", 61_000),
        (2, "mid", 75_000),
        (3, "slow", 90_000),
    ]
    r = await rank(api, "slow", "laps")
    assert (r["rank"], r["total"], r["percentile"]) == (3, 3, 33.33)


async def test_negative_values_and_extremes(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    await submit(api, "low", -MAX_VALUE)
    await submit(api, "high", MAX_VALUE)
    await submit(api, "zero", 0)
    entries = (await top(api))["entries"]
    assert [(e["user_id"], e["score"]) for e in entries] == [
        ("high", MAX_VALUE),
        ("zero", 0),
        ("low", -MAX_VALUE),
    ]
    assert (await rank(api, "low"))["score"] == -MAX_VALUE
    assert await pg_values(pool) == {"low": -MAX_VALUE, "high": MAX_VALUE, "zero": 0}


# ---------------------------------------------------------------------------------------------------------
# ties


async def test_ties_competition_ranking_and_byte_order(api: httpx.AsyncClient) -> None:
    # "Zed" < "amy" < "bob" in byte order (uppercase first); a locale collation would put amy first.
    for user, score in [("carol", 100), ("bob", 90), ("amy", 90), ("Zed", 90), ("dave", 80), ("eve", 80)]:
        await submit(api, user, score)
    entries = (await top(api))["entries"]
    assert [(e["rank"], e["user_id"]) for e in entries] == [
        (1, "carol"),
        (2, "Zed"),
        (2, "amy"),
        (2, "bob"),
        (5, "dave"),
        (5, "eve"),
    ]
    assert (await rank(api, "amy"))["rank"] == 2
    assert (await rank(api, "eve"))["rank"] == 5
    # paging through the tie keeps the order
    page = await top(api, limit=2, offset=2)
    assert [(e["rank"], e["user_id"]) for e in page["entries"]] == [(2, "amy"), (2, "bob")]


async def test_tie_on_asc_board(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    await create_board(admin, "golf", sort="asc", operator="set")
    for user, score in [("b", 70), ("a", 70), ("c", 68), ("d", 72)]:
        await submit(api, user, score, "golf")
    entries = (await top(api, "golf"))["entries"]
    assert [(e["rank"], e["user_id"]) for e in entries] == [(1, "c"), (2, "a"), (2, "b"), (4, "d")]


# ---------------------------------------------------------------------------------------------------------
# top and rank


async def test_top_paging_total_and_seq(api: httpx.AsyncClient) -> None:
    empty = await top(api)
    assert empty["board"] == "global" and empty["total"] == 0 and empty["entries"] == []
    assert isinstance(empty["seq"], int)
    for i in range(25):
        await submit(api, f"u{i:02d}", i * 10)
    page = await top(api)
    assert page["total"] == 25 and len(page["entries"]) == 10  # default limit
    assert page["seq"] > empty["seq"]
    assert [e["user_id"] for e in page["entries"]] == [f"u{i:02d}" for i in range(24, 14, -1)]
    assert set(page["entries"][0]) == {"rank", "user_id", "display_name", "score"}
    tail = await top(api, limit=100, offset=20)
    assert [(e["rank"], e["score"]) for e in tail["entries"]] == [(21 + i, (4 - i) * 10) for i in range(5)]
    beyond = await top(api, offset=1000)
    assert beyond["entries"] == [] and beyond["total"] == 25
    seq = page["seq"]
    await submit(api, "u00", 1)
    assert (await top(api))["seq"] > seq


async def test_rank_around_and_percentile(api: httpx.AsyncClient) -> None:
    for i in range(1, 8):  # p1 best ... p7 worst
        await submit(api, f"p{i}", 100 - i, display_name=f"P{i}")
    r = await rank(api, "p4", around=2)
    assert {k: r[k] for k in ("board", "user_id", "display_name", "rank", "score", "total")} == {
        "board": "global",
        "user_id": "p4",
        "display_name": "P4",
        "rank": 4,
        "score": 96,
        "total": 7,
    }
    assert r["percentile"] == percentile(4, 7) == 57.14
    assert [(e["rank"], e["user_id"]) for e in r["around"]] == [(i, f"p{i}") for i in range(2, 7)]
    first = await rank(api, "p1", around=1)
    assert first["percentile"] == 100.0
    assert [e["user_id"] for e in first["around"]] == ["p1", "p2"]
    last = await rank(api, "p7", around=25)
    assert [e["user_id"] for e in last["around"]] == [f"p{i}" for i in range(1, 8)]
    assert last["percentile"] == percentile(7, 7) == 14.29
    plain = await rank(api, "p3")
    assert [e["user_id"] for e in plain["around"]] == ["p3"]


async def test_rank_of_player_without_entry_is_404(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    await create_board(admin, "other")
    await submit(api, "alice", 1, "other")
    assert_problem(await api.get("/api/leaderboard/rank/alice"), 404, "not_found")
    assert_problem(await api.get("/api/leaderboard/rank/nobody", params={"board": "other"}), 404, "not_found")
    assert_problem(await api.get("/api/leaderboard/rank/alice", params={"board": "nope"}), 404, "not_found")
    assert_problem(await api.get("/api/leaderboard/top", params={"board": "nope"}), 404, "not_found")


# ---------------------------------------------------------------------------------------------------------
# boards


async def test_boards_list_create_get(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, anon: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    listing = (await anon.get("/api/leaderboards")).json()["boards"]
    assert [(b["id"], b["sort"], b["operator"]) for b in listing] == [("global", "desc", "incr")]
    assert {"id", "title", "sort", "operator", "created_at"} <= listing[0].keys()

    resp = await admin.post(
        "/api/leaderboards", json={"id": "speedrun", "title": "Speedrun", "sort": "asc", "operator": "best"}
    )
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert {k: made[k] for k in ("id", "title", "sort", "operator")} == {
        "id": "speedrun",
        "title": "Speedrun",
        "sort": "asc",
        "operator": "best",
    }
    assert isinstance(made["created_at"], str) and made["created_at"]
    row = await pool.fetchrow("SELECT title, sort_order, operator FROM leaderboards WHERE id = 'speedrun'")
    assert tuple(row) == ("Speedrun", "asc", "best")

    await submit(api, "alice", 5, "speedrun")
    await submit(api, "bob", 6, "speedrun")
    one = await anon.get("/api/leaderboards/speedrun")
    assert one.status_code == 200
    assert {k: one.json()[k] for k in ("id", "sort", "operator", "total")} == {
        "id": "speedrun",
        "sort": "asc",
        "operator": "best",
        "total": 2,
    }
    ids = {b["id"] for b in (await anon.get("/api/leaderboards")).json()["boards"]}
    assert ids == {"global", "speedrun"}


async def test_board_defaults_and_conflict(admin: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    resp = await admin.post("/api/leaderboards", json={"id": "plain", "title": "Plain"})
    assert resp.status_code == 201, resp.text
    assert (resp.json()["sort"], resp.json()["operator"]) == ("desc", "incr")
    before = await row_counts(pool)
    again = await admin.post("/api/leaderboards", json={"id": "plain", "title": "Other", "sort": "asc"})
    assert_problem(again, 409, "conflict")
    assert_problem(await admin.post("/api/leaderboards", json={"id": "global", "title": "G"}), 409, "conflict")
    assert await row_counts(pool) == before
    assert await pool.fetchval("SELECT title FROM leaderboards WHERE id = 'plain'") == "Plain"


async def test_unknown_board_is_404(anon: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    assert_problem(await anon.get("/api/leaderboards/nope"), 404, "not_found")
    resp = await api.post("/api/leaderboard/submit", json={"user_id": "alice", "score": 1, "board": "nope"})
    assert_problem(resp, 404, "not_found")
    assert await session_count(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


# ---------------------------------------------------------------------------------------------------------
# out of range


async def test_out_of_range_total_is_refused_and_writes_nothing(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    await submit(api, "alice", MAX_VALUE - 1)
    await submit(api, "bob", -MAX_VALUE)
    before = await row_counts(pool)
    resp = await api.post("/api/leaderboard/submit", json={"user_id": "alice", "score": 2})
    assert_problem(resp, 422, "out_of_range")
    resp = await api.post("/api/leaderboard/submit", json={"user_id": "bob", "score": -1})
    assert_problem(resp, 422, "out_of_range")
    assert await row_counts(pool) == before
    assert await pg_values(pool) == {"alice": MAX_VALUE - 1, "bob": -MAX_VALUE}
    # exactly at the limit is fine
    assert (await submit(api, "alice", 1))["score"] == MAX_VALUE


async def test_out_of_range_does_not_fail_its_batch(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    await submit(api, "big", MAX_VALUE)
    sessions = [str(uuid.uuid4()) for _ in range(40)]

    async def post(i: int) -> httpx.Response:
        if i % 10 == 5:
            body = {"user_id": "big", "score": 1, "session_id": sessions[i]}
        else:
            body = {"user_id": f"u{i % 7}", "score": i, "session_id": sessions[i]}
        return await api.post("/api/leaderboard/submit", json=body)

    # Fired together so that they share the writer's group commits.
    responses = await asyncio.gather(*(post(i) for i in range(40)))
    expected: dict[str, int] = {"big": MAX_VALUE}
    for i, resp in enumerate(responses):
        if i % 10 == 5:
            assert_problem(resp, 422, "out_of_range")
        else:
            assert resp.status_code == 200, resp.text
            expected[f"u{i % 7}"] = expected.get(f"u{i % 7}", 0) + i
    assert await pg_values(pool) == expected
    assert await session_count(pool) == 1 + 36
    listing = await full_listing(api)
    assert {e["user_id"]: e["score"] for e in listing} == expected


# ---------------------------------------------------------------------------------------------------------
# concurrency


async def test_fifty_concurrent_submitters_exact_totals(
    api: httpx.AsyncClient, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    users = [f"player{i}" for i in range(12)]

    async def submitter(n: int) -> list[tuple[str, int]]:
        done = []
        for k in range(6):
            user, score = users[(n * 7 + k) % len(users)], n * 10 + k
            ack = await submit(api, user, score)
            assert ack["accepted"] and not ack["duplicate"]
            done.append((user, score))
        return done

    results = await asyncio.gather(*(submitter(n) for n in range(50)))
    expected: dict[str, int] = {}
    for user, score in (pair for batch in results for pair in batch):
        expected[user] = expected.get(user, 0) + score
    assert await session_count(pool) == 300
    assert await pg_values(pool) == expected
    listing = await full_listing(api)
    want = ranked(expected, "desc")
    assert [(e["rank"], e["user_id"], e["score"]) for e in listing] == [
        (e["rank"], e["user_id"], e["score"]) for e in want
    ]
    await assert_cache_matches_pg(pool, rds)
    for e in want:
        r = await rank(api, e["user_id"])
        assert (r["rank"], r["score"]) == (e["rank"], e["score"])


# ---------------------------------------------------------------------------------------------------------
# operations


async def test_health_and_ready(anon: httpx.AsyncClient) -> None:
    health = await anon.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await anon.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and isinstance(ready.json()["checks"], dict)


async def test_metrics_are_prometheus_text(api: httpx.AsyncClient) -> None:
    await submit(api, "alice", 1)
    resp = await api.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in resp.text


ROUTES = {
    "/api/leaderboard/submit": {"post"},
    "/api/leaderboard/top": {"get"},
    "/api/leaderboard/rank/{user_id}": {"get"},
    "/api/leaderboards": {"get", "post"},
    "/api/leaderboards/{id}": {"get"},
}


async def test_openapi_lists_every_route(anon: httpx.AsyncClient) -> None:
    resp = await anon.get("/api/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1"), doc.get("openapi")
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    # parameter names in templates are cosmetic: /api/leaderboards/{id} == /api/leaderboards/{board_id}
    shapes = {re.sub(r"\{[^}]+\}", "{}", p): p for p in paths}
    for path, methods in ROUTES.items():
        assert re.sub(r"\{[^}]+\}", "{}", path) in shapes, (path, sorted(paths))
        documented = paths[shapes[re.sub(r"\{[^}]+\}", "{}", path)]]
        assert methods <= set(documented), (path, documented.keys())
    for path in ("/healthz", "/readyz"):
        assert path in paths, (path, sorted(paths))
    for path, item in paths.items():
        declared = {p["name"] for op in item.values() if isinstance(op, dict) for p in op.get("parameters", [])}
        declared |= {p["name"] for p in item.get("parameters", [])} if isinstance(item, dict) else set()
        for segment in path.split("/"):
            if segment.startswith("{"):
                assert segment.strip("{}") in declared, (path, declared)
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                assert op.get("responses"), (path, method)
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:
            raise AssertionError(f"component schema {name} is not valid JSON Schema: {exc}") from exc
    submit_op = paths["/api/leaderboard/submit"]["post"]
    assert "requestBody" in submit_op


# ---------------------------------------------------------------------------------------------------------
# bad input: no 500, a problem body, nothing written

LONG = "x" * 65

BAD_SUBMITS: list[tuple[str, Any, int, set[str]]] = [
    ("not-json", b"{user_id: alice", 400, {"bad_request"}),
    ("empty-body", b"", 400, {"bad_request"}),
    ("json-list", [{"user_id": "a", "score": 1}], 422, {"validation_error"}),
    ("json-string", "alice", 422, {"validation_error"}),
    ("json-null", None, 422, {"validation_error"}),
    ("missing-user", {"score": 1}, 422, {"validation_error"}),
    ("missing-score", {"user_id": "alice"}, 422, {"validation_error"}),
    ("score-string", {"user_id": "alice", "score": "abc"}, 422, {"validation_error"}),
    ("score-numeric-string", {"user_id": "alice", "score": "10"}, 422, {"validation_error"}),
    ("score-float", {"user_id": "alice", "score": 1.5}, 422, {"validation_error"}),
    ("score-bool", {"user_id": "alice", "score": True}, 422, {"validation_error"}),
    ("score-null", {"user_id": "alice", "score": None}, 422, {"validation_error"}),
    ("score-list", {"user_id": "alice", "score": [1]}, 422, {"validation_error"}),
    ("score-2^53", {"user_id": "alice", "score": 2**53}, 422, {"validation_error", "out_of_range"}),
    ("score--2^53", {"user_id": "alice", "score": -(2**53)}, 422, {"validation_error", "out_of_range"}),
    ("score-huge", {"user_id": "alice", "score": 10**30}, 422, {"validation_error", "out_of_range"}),
    ("user-empty", {"user_id": "", "score": 1}, 422, {"validation_error"}),
    ("user-too-long", {"user_id": LONG, "score": 1}, 422, {"validation_error"}),
    ("user-space", {"user_id": "al ice", "score": 1}, 422, {"validation_error"}),
    ("user-slash", {"user_id": "a/b", "score": 1}, 422, {"validation_error"}),
    ("user-unicode", {"user_id": "zoë", "score": 1}, 422, {"validation_error"}),
    ("user-newline", {"user_id": "alice\n", "score": 1}, 422, {"validation_error"}),
    ("user-number", {"user_id": 12, "score": 1}, 422, {"validation_error"}),
    ("board-upper", {"user_id": "alice", "score": 1, "board": "Global"}, 422, {"validation_error"}),
    ("board-dash-first", {"user_id": "alice", "score": 1, "board": "-x"}, 422, {"validation_error"}),
    ("board-too-long", {"user_id": "alice", "score": 1, "board": "b" * 65}, 422, {"validation_error"}),
    ("board-empty", {"user_id": "alice", "score": 1, "board": ""}, 422, {"validation_error"}),
    ("board-unknown", {"user_id": "alice", "score": 1, "board": "nope"}, 404, {"not_found"}),
    ("session-not-uuid", {"user_id": "alice", "score": 1, "session_id": "abc"}, 422, {"validation_error"}),
    ("session-int", {"user_id": "alice", "score": 1, "session_id": 5}, 422, {"validation_error"}),
    ("display-too-long", {"user_id": "alice", "score": 1, "display_name": LONG}, 422, {"validation_error"}),
    ("display-number", {"user_id": "alice", "score": 1, "display_name": 5}, 422, {"validation_error"}),
]


@pytest.mark.parametrize(("body", "status", "codes"), [c[1:] for c in BAD_SUBMITS], ids=[c[0] for c in BAD_SUBMITS])
async def test_bad_submit(api: httpx.AsyncClient, pool: asyncpg.Pool, body: Any, status: int, codes: set[str]) -> None:
    before = await row_counts(pool)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await api.post("/api/leaderboard/submit", content=content, headers={"Content-Type": "application/json"})
    problem = assert_problem(resp, status, codes)
    if isinstance(body, dict) and problem["code"] == "validation_error":
        assert isinstance(problem.get("errors"), list) and problem["errors"], problem
    assert await row_counts(pool) == before


async def test_wrong_content_type_is_415(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    resp = await api.post(
        "/api/leaderboard/submit",
        content=b'{"user_id":"a","score":1}',
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(resp, 415, "unsupported_media_type")
    assert await session_count(pool) == 0


async def test_huge_body_is_413(api: httpx.AsyncClient, admin: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    before = await row_counts(pool)
    huge = json.dumps({"user_id": "alice", "score": 1, "display_name": "x" * (4 << 20)})
    resp = await api.post("/api/leaderboard/submit", content=huge, headers={"Content-Type": "application/json"})
    assert_problem(resp, 413, "payload_too_large")
    huge_board = json.dumps({"id": "big", "title": "t" * (4 << 20)})
    resp = await admin.post("/api/leaderboards", content=huge_board, headers={"Content-Type": "application/json"})
    assert_problem(resp, 413, "payload_too_large")
    assert await row_counts(pool) == before


BAD_QUERIES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("top-limit-0", "/api/leaderboard/top", {"limit": 0}, 422, "validation_error"),
    ("top-limit-101", "/api/leaderboard/top", {"limit": 101}, 422, "validation_error"),
    ("top-limit-neg", "/api/leaderboard/top", {"limit": -1}, 422, "validation_error"),
    ("top-limit-text", "/api/leaderboard/top", {"limit": "ten"}, 422, "validation_error"),
    ("top-limit-float", "/api/leaderboard/top", {"limit": "1.5"}, 422, "validation_error"),
    ("top-limit-underscore", "/api/leaderboard/top", {"limit": "5_0"}, 422, "validation_error"),
    ("top-limit-plus", "/api/leaderboard/top", {"limit": "+5"}, 422, "validation_error"),
    ("top-limit-space", "/api/leaderboard/top", {"limit": " 5"}, 422, "validation_error"),
    ("top-limit-arabic-digit", "/api/leaderboard/top", {"limit": "\u0665"}, 422, "validation_error"),
    ("top-offset-neg", "/api/leaderboard/top", {"offset": -1}, 422, "validation_error"),
    ("top-offset-text", "/api/leaderboard/top", {"offset": "x"}, 422, "validation_error"),
    ("top-board-bad", "/api/leaderboard/top", {"board": "Bad!"}, 422, "validation_error"),
    ("top-board-unknown", "/api/leaderboard/top", {"board": "nope"}, 404, "not_found"),
    ("top-board-newline", "/api/leaderboard/top", {"board": "global\n"}, 422, "validation_error"),
    ("rank-around-26", "/api/leaderboard/rank/alice", {"around": 26}, 422, "validation_error"),
    ("rank-around-neg", "/api/leaderboard/rank/alice", {"around": -1}, 422, "validation_error"),
    ("rank-around-text", "/api/leaderboard/rank/alice", {"around": "x"}, 422, "validation_error"),
    ("rank-board-bad", "/api/leaderboard/rank/alice", {"board": "a b"}, 422, "validation_error"),
    ("rank-board-unknown", "/api/leaderboard/rank/alice", {"board": "nope"}, 404, "not_found"),
    ("rank-user-bad", "/api/leaderboard/rank/al%20ice", {}, 422, "validation_error"),
    ("rank-user-long", f"/api/leaderboard/rank/{LONG}", {}, 422, "validation_error"),
    ("rank-user-newline", "/api/leaderboard/rank/alice%0A", {}, 422, "validation_error"),
    ("unknown-route", "/api/leaderboard/nothing", {}, 404, "not_found"),
    ("unknown-api-root", "/api/nothing", {}, 404, "not_found"),
]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"), [c[1:] for c in BAD_QUERIES], ids=[c[0] for c in BAD_QUERIES]
)
async def test_bad_read(api: httpx.AsyncClient, path: str, params: dict[str, Any], status: int, code: str) -> None:
    await submit(api, "alice", 1)
    assert_problem(await api.get(path, params=params), status, code)


BAD_BOARDS: list[tuple[str, Any, int, str]] = [
    ("not-json", b"{", 400, "bad_request"),
    ("json-list", [], 422, "validation_error"),
    ("missing-id", {"title": "T"}, 422, "validation_error"),
    ("id-upper", {"id": "Speed", "title": "T"}, 422, "validation_error"),
    ("id-long", {"id": "s" * 65, "title": "T"}, 422, "validation_error"),
    ("id-number", {"id": 5, "title": "T"}, 422, "validation_error"),
    ("sort-bad", {"id": "s", "title": "T", "sort": "up"}, 422, "validation_error"),
    ("operator-bad", {"id": "s", "title": "T", "operator": "max"}, 422, "validation_error"),
    ("title-number", {"id": "s", "title": 5}, 422, "validation_error"),
]


@pytest.mark.parametrize(("body", "status", "code"), [c[1:] for c in BAD_BOARDS], ids=[c[0] for c in BAD_BOARDS])
async def test_bad_board_create(
    admin: httpx.AsyncClient, pool: asyncpg.Pool, body: Any, status: int, code: str
) -> None:
    before = await row_counts(pool)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await admin.post("/api/leaderboards", content=content, headers={"Content-Type": "application/json"})
    assert_problem(resp, status, code)
    assert await row_counts(pool) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/leaderboard/submit"), ("DELETE", "/api/leaderboards"), ("PUT", "/api/leaderboard/top")],
)
async def test_wrong_method_is_405(
    make_server: Any, keys: ApiKeys, make_client: Any, tmp_path: Path, method: str, path: str
) -> None:
    # with a UI being served as well (its catch-all route must not hide the API's 405s)
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "index.html").write_text("<!doctype html><title>ui</title>")
    server = await make_server(static_dir=tmp_path / "ui")
    api = make_client(server, keys.submit)
    assert_problem(await api.request(method, path), 405, "method_not_allowed")
    assert (await api.get("/some/client/route")).status_code == 200  # the UI's own fallback still works


async def test_operator_view_route_serves_the_ui(make_server: Any, make_client: Any, tmp_path: Path) -> None:
    # /admin is a client-side route (the operator view): the UI's index.html, not a 404, and never cached stale
    (tmp_path / "ui" / "assets").mkdir(parents=True)
    (tmp_path / "ui" / "index.html").write_text("<!doctype html><title>ui</title>")
    (tmp_path / "ui" / "assets" / "app.js").write_text("console.log(1)")
    server = await make_server(static_dir=tmp_path / "ui")
    client = make_client(server)
    for path in ("/admin", "/admin/", "/admin?player=alice&board=cup", "/?view=admin"):
        resp = await client.get(path)
        assert resp.status_code == 200, path
        assert resp.text == "<!doctype html><title>ui</title>", path
        assert resp.headers["content-type"].startswith("text/html"), path
        assert resp.headers["cache-control"] == "no-cache", path
    assert (await client.get("/assets/app.js")).text == "console.log(1)"
    # the API under it is not shadowed by the UI's fallback
    assert_problem(await client.get("/api/audit"), 401, "unauthorized")
