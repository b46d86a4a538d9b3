"""Metadata: an optional JSON object with a submission, kept with the entry (the submission that produced the
value: incr/decr/set the latest, best the one that set the best), shown in top, rank, around, friends and
pushes, from Redis and from Postgres alike, through rebuilds and moderation; and its limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from support.clients import assert_problem, submit, subscribe_top, ws_connect, ws_submit_many
from support.services import ApiKeys, ServerURL, runtime_of
from support.stores import cache_key

KIT = {"car": "ferrari", "laps": [71.2, 70.9], "clean": True}


async def entries(http: httpx.AsyncClient, board: str = "global") -> dict[str, Any]:
    resp = await http.get("/api/leaderboard/top", params={"board": board, "limit": 100})
    assert resp.status_code == 200, resp.text
    return {e["user_id"]: e for e in resp.json()["entries"]}


async def make_board(admin: httpx.AsyncClient, board: str, **spec: Any) -> None:
    resp = await admin.post("/api/leaderboards", json={"id": board, **spec})
    assert resp.status_code == 201, resp.text


async def test_metadata_is_shown_with_the_entry_everywhere(
    api: httpx.AsyncClient, server: ServerURL, keys: ApiKeys
) -> None:
    await submit(api, "alice", 10, metadata=KIT)
    await submit(api, "bob", 5)
    top = await entries(api)
    assert top["alice"] == {"rank": 1, "user_id": "alice", "display_name": None, "score": 10, "metadata": KIT}
    assert "metadata" not in top["bob"]  # no metadata: no key
    rank = (await api.get("/api/leaderboard/rank/bob", params={"around": 1})).json()
    assert [e.get("metadata") for e in rank["around"]] == [KIT, None]
    friends = (await api.get("/api/leaderboard/ranks", params={"user_ids": "bob,alice"})).json()
    assert [e.get("metadata") for e in friends["entries"]] == [KIT, None]
    async with ws_connect(server, keys.submit) as ws:
        snap = await subscribe_top(ws)
        assert snap["entries"][0]["metadata"] == KIT
        (ack,) = await ws_submit_many(ws, [{"user_id": "bob", "score": 20, "metadata": {"car": "mclaren"}}])
        assert ack["accepted"]
        pushed = await ws.recv_type("top", where=lambda m: m["entries"][0]["user_id"] == "bob")
        assert pushed["entries"][0]["metadata"] == {"car": "mclaren"}


@pytest.mark.parametrize(
    ("operator", "sort", "sent", "kept"),
    [
        ("incr", "desc", [(5, {"m": 1}), (3, {"m": 2})], {"m": 2}),  # the latest
        ("incr", "desc", [(5, {"m": 1}), (3, None)], None),  # the latest had none
        ("decr", "asc", [(5, {"m": 1}), (3, {"m": 2})], {"m": 2}),
        ("set", "desc", [(5, {"m": 1}), (3, {"m": 2})], {"m": 2}),
        ("set", "desc", [(5, {"m": 1}), (5, {"m": 2})], {"m": 2}),  # same value, new metadata
        ("best", "desc", [(5, {"m": 1}), (3, {"m": 2})], {"m": 1}),  # the one that set the best
        ("best", "desc", [(5, {"m": 1}), (5, {"m": 2})], {"m": 1}),  # a tie does not beat it
        ("best", "desc", [(5, {"m": 1}), (8, {"m": 2})], {"m": 2}),
        ("best", "asc", [(5, {"m": 1}), (3, {"m": 2}), (4, {"m": 3})], {"m": 2}),
    ],
)
async def test_the_submission_that_produced_the_value_gives_the_metadata(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool, server: ServerURL, keys: ApiKeys,
    operator: str, sort: str, sent: list[tuple[int, dict[str, int] | None]], kept: dict[str, int] | None,
) -> None:  # fmt: skip
    await make_board(admin, "b", operator=operator, sort=sort)
    for score, meta in sent:  # one at a time (each its own batch)
        await submit(api, "p", score, "b", **({"metadata": meta} if meta else {}))
    assert (await entries(api, "b"))["p"].get("metadata") == kept
    # the same submissions in one batch (one transaction) give the same
    async with ws_connect(server, keys.submit) as ws:
        frames = [{"user_id": "q", "score": s, "board": "b", **({"metadata": m} if m else {})} for s, m in sent]
        await ws_submit_many(ws, frames)
    assert (await entries(api, "b"))["q"].get("metadata") == kept
    # and Postgres holds what Redis shows
    stored = await pool.fetchval("SELECT metadata::text FROM leaderboard WHERE board_id = 'b' AND user_id = 'p'")
    assert (stored is None) == (kept is None)


async def test_metadata_survives_a_rebuild_and_reads_from_postgres_agree(
    api: httpx.AsyncClient, server: ServerURL, rds: Any
) -> None:
    await submit(api, "alice", 10, metadata=KIT)
    await submit(api, "bob", 5, metadata={"n": 1})
    await submit(api, "carol", 1)
    from_redis = await entries(api)
    rt = runtime_of(server)
    await rds.delete(cache_key("global", "ready"))  # not ready: reads go to Postgres
    rt.ranks.changed("global")
    assert await entries(api) == from_redis
    while (rebuilt := await rt.ranks.rebuild("global")) is None:  # the read started one: it holds the lock
        await asyncio.sleep(0.05)
    assert rebuilt == 3
    assert await rds.hgetall(cache_key("global", "m")) == {"alice": '{"car": "ferrari", "laps": [71.2, 70.9], '
                                                           '"clean": true}', "bob": '{"n": 1}'}  # fmt: skip
    rt.ranks.changed("global")
    assert await entries(api) == from_redis


async def test_a_void_brings_back_the_metadata_of_what_remains(
    admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    await make_board(admin, "laps", operator="best", sort="asc")
    await submit(api, "p", 70, "laps", metadata={"lap": "good"})
    cheat = await submit(api, "p", 50, "laps", metadata={"lap": "cut"})
    assert (await entries(api, "laps"))["p"]["metadata"] == {"lap": "cut"}
    resp = await admin.post("/api/leaderboard/void", json={"session_id": cheat["session_id"], "reason": "cut"})
    assert resp.json()["score"] == 70
    assert (await entries(api, "laps"))["p"]["metadata"] == {"lap": "good"}


def nested(levels: int) -> dict[str, Any]:
    """An object `levels` deep: {"a": {"a": ... {} ...}}."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        "text",
        7,
        True,
        {"blob": "x" * 1020},  # 1,031 bytes encoded
        {"name": "nul\u0000"},
        nested(17),  # one level too deep
        nested(300),  # orjson cannot even encode it (this was a 500)
        {"n": [1e308] * 4},  # 53 bytes sent, 1,247 as Postgres stores it (every digit)
    ],
)
async def test_bad_metadata_is_422_and_writes_nothing(
    api: httpx.AsyncClient, pool: asyncpg.Pool, server: ServerURL, keys: ApiKeys, bad: Any
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM game_sessions")
    body = assert_problem(
        await api.post("/api/leaderboard/submit", json={"user_id": "p", "score": 1, "metadata": bad}),
        422, "validation_error",
    )  # fmt: skip
    assert body["detail"].startswith("metadata"), body
    async with ws_connect(server, keys.submit) as ws:
        reply = await ws.reply_to({"type": "submit", "user_id": "p", "score": 1, "metadata": bad})
        assert (reply["type"], reply["code"]) == ("error", "validation_error"), reply
    assert await pool.fetchval("SELECT count(*) FROM game_sessions") == before


async def test_metadata_at_the_nesting_limit_and_with_plain_numbers_is_accepted(api: httpx.AsyncClient) -> None:
    plain = {"n": [1e308] * 3, "x": 0.1, "big": 18446744073709551615}
    for meta, stored in ((nested(16), nested(16)), (plain, plain | {"n": [10**308] * 3})):
        await submit(api, "p", 1, metadata=meta)
        assert (await entries(api))["p"]["metadata"] == stored  # (jsonb writes 1e308 with its 309 digits)


async def test_a_batch_refuses_only_its_item_with_bad_metadata(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    items = [{"user_id": "ok", "score": 1}, {"user_id": "deep", "score": 1, "metadata": nested(300)}]
    resp = await api.post("/api/leaderboard/submit/batch", json={"items": items})
    assert resp.status_code == 200, resp.text
    ok, deep = resp.json()["results"]
    assert ok["accepted"] is True
    assert deep["error"]["code"] == "validation_error" and deep["error"]["detail"].startswith("metadata"), deep
    assert await pool.fetchval("SELECT array_agg(user_id) FROM game_sessions") == ["ok"]


async def test_metadata_of_exactly_the_limit_is_accepted(api: httpx.AsyncClient) -> None:
    meta = {"blob": "x" * (1024 - len('{"blob":""}'))}
    await submit(api, "p", 1, metadata=meta)
    assert (await entries(api))["p"]["metadata"] == meta


async def test_a_second_process_pushes_the_metadata(
    make_server: Callable[..., Awaitable[ServerURL]], make_client: Callable[..., httpx.AsyncClient], keys: ApiKeys
) -> None:
    one, two = await make_server(), await make_server()
    async with ws_connect(two, keys.read) as ws:
        await subscribe_top(ws)
        await submit(make_client(one, keys.submit), "far", 3, metadata={"from": "one"})
        pushed = await ws.recv_type("top", where=lambda m: bool(m["entries"]))
        assert pushed["entries"][0]["metadata"] == {"from": "one"}
