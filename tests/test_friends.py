"""Friends: GET /api/leaderboard/ranks?user_ids=… (ranks of some players on the whole board) and the WebSocket
rank subscription of many players at once (`user_ids`).

Checked against the reference ranking (support/reference.py), from Redis and from Postgres (a board not
ready in Redis), on both sort orders, with ties; an ended season from Postgres.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leaderboard.cache import Keys
from leaderboard.protocol import player_entries
from leaderboard.ranks import Ranks
from leaderboard.store import Store
from support.clients import assert_problem, create_board, ws_connect
from support.reference import ranked
from support.services import ApiKeys, ServerURL

USERS = ["a", "B", "b", "c.d", "e@x", "Z-9", "u_1", "u:2", "zz", "m"]
NOBODY = ["ghost", "nobody.here"]
_boards = itertools.count()


def reference(values: dict[str, int], sort: str, asked: list[str]) -> list[dict[str, Any]]:
    """The entries a friends read must answer: the reference listing restricted to the players asked for."""
    wanted = set(asked)
    return [e for e in ranked(values, sort) if e["user_id"] in wanted]


def shape(entries: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["user_id"], e["score"]) for e in entries]


async def friends(http: httpx.AsyncClient, board: str, ids: list[str], **params: Any) -> dict[str, Any]:
    resp = await http.get("/api/leaderboard/ranks", params={"board": board, "user_ids": ",".join(ids), **params})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def fill(api: httpx.AsyncClient, board: str, values: dict[str, int]) -> None:
    results = await asyncio.gather(
        *(
            api.post("/api/leaderboard/submit", json={"user_id": u, "score": v, "board": board,
                                                      "display_name": f"N {u}"})
            for u, v in values.items()
        )
    )  # fmt: skip
    assert all(r.status_code == 200 for r in results), [r.text for r in results]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])  # fmt: skip
@given(
    sort=st.sampled_from(["desc", "asc"]),
    values=st.dictionaries(st.sampled_from(USERS), st.integers(-3, 3) | st.integers(-(2**40), 2**40), min_size=1),
    asked=st.lists(st.sampled_from(USERS + NOBODY), min_size=1, max_size=14),
)
async def test_friends_ranks_equal_competition_ranks_from_redis_and_from_postgres(
    sort: str, values: dict[str, int], asked: list[str], api: httpx.AsyncClient, admin: httpx.AsyncClient,
    rds: aioredis.Redis,
) -> None:  # fmt: skip
    board = f"friends{next(_boards)}"
    await create_board(admin, board, sort=sort, operator="set")
    await fill(api, board, values)
    want = reference(values, sort, asked)

    from_redis = await friends(api, board, asked)
    assert from_redis["board"] == board and from_redis["season"] == 1 and from_redis["total"] == len(values)
    assert shape(from_redis["entries"]) == shape(want)
    assert all(e["display_name"] == f"N {e['user_id']}" for e in from_redis["entries"])
    assert all(set(e) == {"rank", "user_id", "display_name", "score"} for e in from_redis["entries"])  # as /top's

    await rds.delete(Keys(board).ready)  # not ready: the next read is Postgres's (and starts a rebuild)
    from_postgres = await friends(api, board, asked)
    assert from_postgres == from_redis


async def test_the_read_model_answers_the_same_from_redis_and_from_postgres(
    api: httpx.AsyncClient, ranks: Ranks, store: Store
) -> None:
    values = {"a": 5, "b": 9, "c": 5, "d": -2, "e": 9, "f": 0}
    await fill(api, "global", values)
    board = await store.board("global")
    assert board is not None
    asked = ["e", "a", "zz", "c", "d"]
    cached = await ranks.cache.players("global", asked)
    ranks.stale.add("global")  # missed a write: Postgres until the rebuild
    stored = await ranks.players(board, asked)
    assert player_entries(stored, "desc") == player_entries(cached, "desc")
    assert stored.total == cached.total == len(values)
    got = [(e.rank, e.user_id, e.score) for e in player_entries(cached, "desc")]
    assert got == shape(reference(values, "desc", asked))


async def test_duplicates_collapse_and_unknown_players_are_left_out(api: httpx.AsyncClient) -> None:
    await fill(api, "global", {f"p{i:03d}": i % 7 for i in range(120)})
    ids = [f"p{i:03d}" for i in range(100)]
    body = await friends(api, "global", ids + ids[:30])  # 130 ids, 100 different: accepted
    assert len(body["entries"]) == 100
    body = await friends(api, "global", ["p001", "p001", "ghost"])
    assert [e["user_id"] for e in body["entries"]] == ["p001"]
    resp = await api.get("/api/leaderboard/ranks", params=[("user_ids", "p001"), ("user_ids", "p002,p003")])
    assert [e["user_id"] for e in resp.json()["entries"]] == ["p003", "p002", "p001"]  # 3 > 2 > 1 (desc)


async def test_bad_friends_reads_are_4xx(api: httpx.AsyncClient) -> None:
    await fill(api, "global", {"a": 1})
    url = "/api/leaderboard/ranks"
    too_many = ",".join(f"u{i}" for i in range(101))
    body = assert_problem(await api.get(url, params={"user_ids": too_many}), 422, "validation_error")
    assert "at most 100" in body["detail"]
    assert_problem(await api.get(url), 422, "validation_error")
    assert_problem(await api.get(url, params={"user_ids": ""}), 422, "validation_error")
    body = assert_problem(await api.get(url, params={"user_ids": "a,b c"}), 422, "validation_error")
    assert "'b c'" in body["detail"]
    assert_problem(await api.get(url, params={"user_ids": "a,,b"}), 422, "validation_error")
    assert_problem(await api.get(url, params={"user_ids": "a", "board": "nope"}), 404, "not_found")
    assert_problem(await api.get(url, params={"user_ids": "a", "board": "Bad Board"}), 422, "validation_error")
    assert_problem(await api.get(url, params={"user_ids": "a", "season": "2"}), 404, "not_found")
    assert_problem(await api.get(url, params={"user_ids": "a", "season": "0"}), 422, "validation_error")


async def test_an_ended_season_is_read_from_postgres(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    await create_board(admin, "weekly", sort="asc", operator="best")
    first = {"a": 30, "b": 10, "c": 30, "d": 20}
    await fill(api, "weekly", first)
    resp = await admin.post("/api/leaderboards/weekly/reset")
    assert resp.status_code == 200, resp.text
    await fill(api, "weekly", {"a": 5})
    ended = await friends(api, "weekly", ["c", "a", "b", "x"], season=1)
    assert ended["season"] == 1 and ended["total"] == 4
    assert shape(ended["entries"]) == shape(reference(first, "asc", ["a", "b", "c"]))
    live = await friends(api, "weekly", ["c", "a", "b"])
    assert live["season"] == 2 and live["total"] == 1 and shape(live["entries"]) == [(1, "a", 5)]
    assert await friends(api, "weekly", ["c", "a", "b"], season=2) == live


async def test_the_openapi_document_lists_the_friends_read(anon: httpx.AsyncClient) -> None:
    doc = (await anon.get("/api/openapi.json")).json()
    op = doc["paths"]["/api/leaderboard/ranks"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["user_ids"]["required"] and {"board", "season"} <= params.keys()
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PlayersPage"
    }


# ---------------------------------------------------------------------------------------------------------
# WebSocket: following friends with one frame


async def test_a_socket_follows_its_friends_with_one_frame(server: ServerURL, api: httpx.AsyncClient) -> None:
    await fill(api, "global", {"a": 10, "b": 20, "c": 30})
    async with ws_connect(server) as ws:
        sub = await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_ids": ["a", "b", "a", "new"]})
        assert sub["type"] == "subscribed" and sub["user_ids"] == ["a", "b", "new"], sub
        first = {}
        while len(first) < 3:
            push = await ws.recv_type("rank")
            first[push["user_id"]] = push
        assert (first["a"]["rank"], first["b"]["rank"], first["new"]["rank"]) == (3, 2, None)
        # each friend gets its own pushes as it moves
        await fill(api, "global", {"a": 25})  # a: 35, first; c second, b third
        got: dict[str, dict[str, Any]] = {}
        while {"a", "b"} - got.keys():
            push = await ws.recv_type("rank")
            got[push["user_id"]] = push
        assert (got["a"]["rank"], got["a"]["previous_rank"], got["b"]["rank"], got["b"]["previous_rank"]) == (
            1, 3, 3, 2,
        )  # fmt: skip
        await fill(api, "global", {"new": 1})
        push = await ws.recv_type("rank", where=lambda f: f["user_id"] == "new")
        assert push["rank"] == 4
        # unsubscribing some friends stops their pushes only
        off = await ws.reply_to({"type": "unsubscribe", "topics": ["rank"], "user_ids": ["a", "new"]})
        assert off["type"] == "unsubscribed"
        await fill(api, "global", {"a": 100, "new": 100, "b": 1000})
        push = await ws.recv_type("rank")
        assert push["user_id"] == "b" and push["rank"] == 1
        assert not [f for f in await ws.quiet(0.4) if f["type"] == "rank" and f["user_id"] in ("a", "new")]


async def test_what_a_socket_follows_is_bounded(make_server: Any, keys: ApiKeys, make_client: Any) -> None:
    server = await make_server(max_followed=150, max_subscriptions=1)
    await create_board(make_client(server, keys.admin), "other")
    async with ws_connect(server) as ws:
        ids = [f"f{i}" for i in range(100)]
        assert (await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_ids": ids}))["type"] == "subscribed"
        more = [f"g{i}" for i in range(51)]
        err = await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_ids": more})
        assert err["type"] == "error" and err["code"] == "too_many_subscriptions"
        assert "at most 150 players" in err["detail"]
        ok = await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_ids": more[:50]})
        assert ok["type"] == "subscribed"
        # 101 ids in one frame, an empty list, a bad id: validation errors
        for bad in ([f"h{i}" for i in range(101)], [], ["bad id"]):
            err = await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_ids": bad})
            assert err["type"] == "error" and err["code"] == "validation_error", err
        err = await ws.reply_to({"type": "subscribe", "topics": ["rank"]})
        assert err["code"] == "validation_error" and "user_ids" in err["detail"]
        # the top of boards counts apart: one board's here
        assert (await ws.reply_to({"type": "subscribe", "topics": ["top"]}))["type"] == "subscribed"
        err = await ws.reply_to({"type": "subscribe", "board": "other", "topics": ["top"]})
        assert err["code"] == "too_many_subscriptions" and "at most 1 boards" in err["detail"]
