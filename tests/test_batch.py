"""Batch submissions (a game server ending a match): REST /submit/batch and WebSocket `items` frames."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from support.clients import assert_problem, player_token, rank, ws_connect
from support.services import ApiKeys, ServerURL
from support.stores import pg_values, session_count

BATCH = "/api/leaderboard/submit/batch"


async def test_rest_batch_commits_each_item_on_its_own(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    sid = str(uuid.uuid4())
    items: list[Any] = [
        {"user_id": "a", "score": 10, "session_id": sid},
        {"user_id": "b b", "score": 5},  # invalid user_id
        {"user_id": "b", "score": 7, "display_name": "Bee"},
        {"user_id": "a", "score": 10, "session_id": sid},  # the same session again: a duplicate
        {"user_id": "c", "score": 1, "board": "nope"},  # unknown board
        "not an object",
        {"user_id": "a", "score": 5},
    ]
    resp = await api.post(BATCH, json={"items": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert (results[0]["accepted"], results[0]["duplicate"], results[0]["score"]) == (True, False, 10)
    assert results[1]["error"]["code"] == "validation_error" and "user_id" in results[1]["error"]["detail"]
    assert results[2]["score"] == 7 and results[2]["rank"] in (1, 2)  # before or after a's second item
    assert (results[3]["duplicate"], results[3]["score"]) == (True, 15)  # the current value, after the batch
    assert results[4]["error"]["code"] == "not_found"
    assert results[5]["error"]["code"] == "validation_error"
    assert results[6]["score"] == 15 and results[6]["rank"] == 1
    assert await pg_values(pool) == {"a": 15, "b": 7}
    assert await session_count(pool) == 3


async def test_rest_batch_limits_and_bad_bodies(
    api: httpx.AsyncClient, anon: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    too_many = {"items": [{"user_id": f"u{i}", "score": 1} for i in range(501)]}
    assert_problem(await api.post(BATCH, json=too_many), 422, "validation_error")
    assert_problem(await api.post(BATCH, json={"items": []}), 422, "validation_error")
    assert_problem(await api.post(BATCH, json={"items": {}}), 422, "validation_error")
    assert_problem(await anon.post(BATCH, json={"items": [{"user_id": "a", "score": 1}]}), 401, "unauthorized")
    assert await session_count(pool) == 0


async def test_a_player_token_batches_only_its_own_scores(
    server: ServerURL, make_client: Any, pool: asyncpg.Pool
) -> None:
    player = make_client(server, player_token("alice"))
    resp = await player.post(BATCH, json={"items": [{"user_id": "alice", "score": 3}, {"user_id": "bob", "score": 9}]})
    results = resp.json()["results"]
    assert results[0]["accepted"] and results[1]["error"]["code"] == "forbidden"
    assert await pg_values(pool) == {"alice": 3}


async def test_ws_batch_frame_is_answered_by_one_ack_in_item_order(
    server: ServerURL, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    async with ws_connect(server, keys.submit) as ws:
        items = [{"user_id": f"p{i:03d}", "score": i} for i in range(300)] + [{"user_id": "p000", "score": "x"}]
        ack = await ws.reply_to({"type": "submit", "items": items}, within=30)
        assert ack["type"] == "ack", ack
        results = ack["results"]
        assert len(results) == 301 and [r["index"] for r in results] == list(range(301))
        assert all(r["accepted"] for r in results[:300])
        assert results[300]["error"]["code"] == "validation_error"
        assert results[299]["rank"] == 1
        too_many = await ws.reply_to({"type": "submit", "items": [{"user_id": "x", "score": 1}] * 501})
        assert too_many["type"] == "error" and too_many["code"] == "validation_error", too_many
    assert await session_count(pool) == 300
    assert (await rank(make_client(server), "p299"))["rank"] == 1
