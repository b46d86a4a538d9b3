"""Moderation: void, remove, ban and unban recomputed from the submission log (per operator, against a reference
recompute), pushes on every process, Redis equal to Postgres afterwards (tombstones survive rebuilds and
delayed writes), the audit log, the CLI, the operator `decr`, and wrong roles and bad inputs that write
nothing."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leaderboard.auth import Principal
from leaderboard.cache import Cache
from leaderboard.moderation import Moderation
from leaderboard.protocol import TEXT_RULE, Submission
from leaderboard.ranks import Ranks
from leaderboard.service import Moderator
from leaderboard.store import Store, Written
from leaderboard.writer import Writer
from support.clients import assert_problem, bearer, submit, subscribe_top, ws_connect, ws_submit_many
from support.polling import eventually
from support.processes import cli_command, cli_env
from support.reference import ranked, recompute
from support.services import ApiKeys, ServerURL, Services
from support.stores import assert_cache_matches_pg, cache_key, pg_values

ADMIN = Principal("admin", name="test")


async def void(admin: httpx.AsyncClient, session_id: str, reason: str = "cheat", expect: int = 200) -> dict[str, Any]:
    resp = await admin.post("/api/leaderboard/void", json={"session_id": session_id, "reason": reason})
    assert resp.status_code == expect, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def refused(
    admin: httpx.AsyncClient, session_id: str, status: int, code: str, reason: str = "x"
) -> dict[str, Any]:
    resp = await admin.post("/api/leaderboard/void", json={"session_id": session_id, "reason": reason})
    return assert_problem(resp, status, code)


async def ban(admin: httpx.AsyncClient, user: str, reason: str = "aimbot", expect: int = 200) -> dict[str, Any]:
    resp = await admin.post(f"/api/players/{user}/ban", json={"reason": reason})
    assert resp.status_code == expect, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def unban(admin: httpx.AsyncClient, user: str, expect: int = 200, **params: Any) -> dict[str, Any]:
    resp = await admin.delete(f"/api/players/{user}/ban", params=params)
    assert resp.status_code == expect, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def make_board(admin: httpx.AsyncClient, board: str, **spec: Any) -> None:
    resp = await admin.post("/api/leaderboards", json={"id": board, **spec})
    assert resp.status_code == 201, resp.text


async def listing(http: httpx.AsyncClient, board: str = "global") -> list[tuple[int, str, int]]:
    resp = await http.get("/api/leaderboard/top", params={"board": board, "limit": 100})
    assert resp.status_code == 200, resp.text
    return [(e["rank"], e["user_id"], e["score"]) for e in resp.json()["entries"]]


def expected(values: dict[str, int], sort: str = "desc") -> list[tuple[int, str, int]]:
    return [(e["rank"], e["user_id"], e["score"]) for e in ranked(values, sort)]


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    tables = ("leaderboard", "game_sessions", "bans", "audit", "users")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables} | {
        "voided": await pool.fetchval("SELECT count(*) FROM game_sessions WHERE voided_at IS NOT NULL")
    }


# ---------------------------------------------------------------------------------------------------------
# Void


@pytest.mark.parametrize(
    ("operator", "sort", "scores", "voided", "after"),
    [
        ("incr", "desc", [5, 7, -2], 1, 3),
        ("decr", "desc", [5, 7, 1], 0, -8),
        ("best", "desc", [5, 9, 7], 1, 7),
        ("best", "asc", [50, 20, 30], 1, 30),
        ("set", "desc", [5, 9, 7], 2, 9),  # the latest left
        ("set", "asc", [5, 9, 7], 0, 7),
    ],
)
async def test_void_recomputes_the_value_from_the_rest_of_the_log(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, rds: Any, pool: asyncpg.Pool,
    operator: str, sort: str, scores: list[int], voided: int, after: int,
) -> None:  # fmt: skip
    await make_board(admin, "b", operator=operator, sort=sort)
    acks = [await submit(api, "cheat", s, "b") for s in scores]
    await submit(api, "other", 6, "b")
    got = await void(admin, acks[voided]["session_id"])
    assert got == {"board": "b", "user_id": "cheat", "session_id": acks[voided]["session_id"], "score": after,
                   "season": 1}  # fmt: skip
    kept = [s for i, s in enumerate(scores) if i != voided]
    assert after == recompute(operator, sort, kept)
    assert (await api.get("/api/leaderboard/rank/cheat", params={"board": "b"})).json()["score"] == after
    other = recompute(operator, sort, [6])
    assert other is not None
    assert await listing(api, "b") == expected({"cheat": after, "other": other}, sort)
    await assert_cache_matches_pg(pool, rds, "b")


async def test_voiding_every_submission_removes_the_entry_and_a_retry_does_not_bring_it_back(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool, rds: Any, server: ServerURL, keys: ApiKeys
) -> None:
    a = await submit(api, "alice", 5)
    await submit(api, "bob", 3)
    gone = await void(admin, a["session_id"])
    assert gone["score"] is None
    assert_problem(await api.get("/api/leaderboard/rank/alice"), 404, "not_found")
    assert await listing(api) == [(1, "bob", 3)]
    # the same submission again, REST and WebSocket: a duplicate that brings nothing back
    again = await submit(api, "alice", 5, session_id=a["session_id"])
    assert (again["duplicate"], again["score"], again["rank"]) == (True, None, None)
    async with ws_connect(server, keys.submit) as ws:
        (ack,) = await ws_submit_many(ws, [{"user_id": "alice", "score": 5, "session_id": a["session_id"]}])
        assert (ack["duplicate"], ack["score"]) == (True, None)
    assert await listing(api) == [(1, "bob", 3)]
    await assert_cache_matches_pg(pool, rds)
    # a new submission starts from nothing
    assert (await submit(api, "alice", 2))["score"] == 2
    assert await listing(api) == [(1, "bob", 3), (2, "alice", 2)]


async def test_void_refusals_write_nothing(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    a = await submit(api, "alice", 5)
    await void(admin, a["session_id"])
    before = await counts(pool)
    body = await refused(admin, a["session_id"], 409, "already_voided", "again")
    assert "already voided" in body["detail"]
    assert_problem(await admin.post("/api/leaderboard/void", json={"session_id": str(uuid.uuid4()), "reason": "x"}),
                   404, "not_found")  # fmt: skip
    for bad in ({"session_id": "nope", "reason": "x"}, {"session_id": a["session_id"]},
                {"session_id": a["session_id"], "reason": ""}, {"session_id": a["session_id"], "reason": "x" * 501},
                {"session_id": a["session_id"], "reason": "\u202eevil"},
                {"session_id": a["session_id"], "reason": "x", "extra": 1}):  # fmt: skip
        body = assert_problem(await admin.post("/api/leaderboard/void", json=bad), 422, "validation_error")
        assert "pattern" not in body["detail"] and "\\x" not in body["detail"], body  # said in words
    body = assert_problem(
        await admin.post("/api/leaderboard/void", json={"session_id": a["session_id"], "reason": "a\u0000"}),
        422, "validation_error",
    )  # fmt: skip
    assert body["detail"] == f"reason: {TEXT_RULE}"
    assert await counts(pool) == before


async def test_restore_undoes_a_void_and_a_remove(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool, rds: Any
) -> None:
    a = await submit(api, "alice", 5)
    b = await submit(api, "alice", 7)
    await submit(api, "bob", 6)
    await void(admin, b["session_id"])
    resp = await admin.post("/api/leaderboard/restore", json={"session_id": b["session_id"], "reason": "mistake"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["score"] == 12
    assert await listing(api) == [(1, "alice", 12), (2, "bob", 6)]
    before = await counts(pool)
    again = await admin.post("/api/leaderboard/restore", json={"session_id": b["session_id"], "reason": "x"})
    assert_problem(again, 409, "not_voided")
    assert await counts(pool) == before
    # a removal voids every submission: restoring one brings the entry back with that one alone
    await admin.delete("/api/leaderboard/entries/alice", params={"board": "global", "reason": "oops"})
    assert await listing(api) == [(1, "bob", 6)]
    resp = await admin.post("/api/leaderboard/restore", json={"session_id": a["session_id"], "reason": "appeal"})
    assert resp.json()["score"] == 5
    assert await listing(api) == [(1, "bob", 6), (2, "alice", 5)]
    await assert_cache_matches_pg(pool, rds)
    actions = (await admin.get("/api/audit", params={"user_id": "alice"})).json()["entries"]
    assert [e["action"] for e in actions] == ["restore", "remove", "restore", "void"]
    assert (await admin.get("/api/audit", params={"user_id": "bob"})).json()["entries"] == []


async def test_a_void_that_would_leave_the_range_is_refused(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    big = 2**53 - 1
    await submit(api, "edge", big)
    minus = await submit(api, "edge", -10)
    await submit(api, "edge", 10)  # at the limit again: without the -10 it would be over it
    body = await refused(admin, minus["session_id"], 409, "out_of_range", "x")
    assert "outside" in body["detail"]
    assert (await api.get("/api/leaderboard/rank/edge")).json()["score"] == big


async def test_ended_seasons_are_final(admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    await make_board(admin, "weekly", reset="weekly")
    old = await submit(api, "alice", 5, "weekly")
    assert (await admin.post("/api/leaderboards/weekly/reset")).status_code == 200
    before = await counts(pool)
    body = await refused(admin, old["session_id"], 409, "season_ended", "x")
    assert "season 1" in body["detail"]
    assert await counts(pool) == before
    # a ban removes the live season's entries only; the ended season keeps its standings
    await submit(api, "alice", 3, "weekly")
    await ban(admin, "alice")
    past = (await api.get("/api/leaderboard/top", params={"board": "weekly", "season": 1})).json()
    assert [(e["user_id"], e["score"]) for e in past["entries"]] == [("alice", 5)]
    assert await listing(api, "weekly") == []
    assert (await unban(admin, "alice"))["boards"] == {"weekly": 3}


# ---------------------------------------------------------------------------------------------------------
# Remove, ban, unban


async def test_remove_voids_the_players_live_season_and_is_404_without_an_entry(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool, rds: Any
) -> None:
    for s in (1, 2, 3):
        await submit(api, "cheat", s)
    await submit(api, "fair", 4)
    resp = await admin.delete("/api/leaderboard/entries/cheat", params={"board": "global", "reason": "wallhack"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"board": "global", "user_id": "cheat", "season": 1, "voided": 3}
    assert await listing(api) == [(1, "fair", 4)]
    await assert_cache_matches_pg(pool, rds)
    before = await counts(pool)
    assert_problem(await admin.delete("/api/leaderboard/entries/cheat", params={"board": "global", "reason": "x"}),
                   404, "not_found")  # fmt: skip
    assert_problem(await admin.delete("/api/leaderboard/entries/fair", params={"board": "nope", "reason": "x"}),
                   404, "not_found")  # fmt: skip
    assert_problem(await admin.delete("/api/leaderboard/entries/fair", params={"board": "global"}), 422,
                   "validation_error")  # fmt: skip
    assert await counts(pool) == before
    # the player may play again: the new submission starts from nothing
    assert (await submit(api, "cheat", 1))["score"] == 1


async def test_ban_refuses_every_submission_and_unban_restores_exact_totals(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool, rds: Any, server: ServerURL, keys: ApiKeys,
    make_client: Callable[..., httpx.AsyncClient],
) -> None:  # fmt: skip
    await make_board(admin, "laps", sort="asc", operator="best")
    await submit(api, "cheat", 10)
    voided = await submit(api, "cheat", 20)
    await submit(api, "cheat", 30, "laps")
    await submit(api, "cheat", 25, "laps")
    await submit(api, "fair", 15)
    await void(admin, voided["session_id"])
    banned = await ban(admin, "cheat")
    assert banned == {"user_id": "cheat", "banned": True, "boards": {"global": None, "laps": None}}
    assert await listing(api) == [(1, "fair", 15)] and await listing(api, "laps") == []
    await assert_cache_matches_pg(pool, rds)
    await assert_cache_matches_pg(pool, rds, "laps")

    before = await counts(pool)
    assert_problem(await api.post("/api/leaderboard/submit", json={"user_id": "cheat", "score": 99}), 403, "banned")
    assert_problem(await admin.post("/api/leaderboard/submit", json={"user_id": "cheat", "score": 99}), 403, "banned")
    from support.clients import player_token

    player = make_client(server, player_token("cheat"))
    assert_problem(await player.post("/api/leaderboard/submit", json={"user_id": "cheat", "score": 99}), 403, "banned")
    batch = await api.post("/api/leaderboard/submit/batch", json={"items": [
        {"user_id": "cheat", "score": 1}, {"user_id": "fair", "score": 1, "board": "laps"}]})  # fmt: skip
    results = batch.json()["results"]
    assert results[0]["error"]["code"] == "banned" and results[1]["accepted"], results
    async with ws_connect(server, keys.submit) as ws:
        reply = await ws.reply_to({"type": "submit", "user_id": "cheat", "score": 5})
        assert (reply["type"], reply["code"]) == ("error", "banned"), reply
    after = await counts(pool)
    assert after["game_sessions"] == before["game_sessions"] + 1  # fair's lap only
    assert after["leaderboard"] == before["leaderboard"] + 1
    assert_problem(await admin.post("/api/players/cheat/ban", json={"reason": "again"}), 409, "already_banned")

    restored = await unban(admin, "cheat", reason="appeal accepted")
    # global: 10 (+20 voided); laps: best of 30, 25 (asc); the submissions refused while banned are not there
    assert restored == {"user_id": "cheat", "banned": False, "boards": {"global": 10, "laps": 25}}
    assert await listing(api) == [(1, "fair", 15), (2, "cheat", 10)]
    assert await listing(api, "laps") == [(1, "fair", 1), (2, "cheat", 25)]
    await assert_cache_matches_pg(pool, rds)
    await assert_cache_matches_pg(pool, rds, "laps")
    assert_problem(await admin.delete("/api/players/cheat/ban"), 404, "not_found")
    assert (await submit(api, "cheat", 1))["score"] == 11


async def test_every_action_is_audited_newest_first_with_paging(
    admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    a = await submit(api, "p1", 5)
    await submit(api, "p2", 5)
    await void(admin, a["session_id"], reason="bug")
    await admin.delete("/api/leaderboard/entries/p2", params={"board": "global", "reason": "smurf"})
    await ban(admin, "p3", reason="chargeback")
    await unban(admin, "p3")
    page = (await admin.get("/api/audit", params={"limit": 3})).json()
    assert [(e["action"], e["user_id"], e["reason"]) for e in page["entries"]] == [
        ("unban", "p3", "ban lifted"), ("ban", "p3", "chargeback"), ("remove", "p2", "smurf")]  # fmt: skip
    assert all(e["actor"] == "test-admin" for e in page["entries"])
    older = (await admin.get("/api/audit", params={"limit": 3, "before": page["next_before"]})).json()
    assert [(e["action"], e["board"], e["session_id"]) for e in older["entries"]] == [
        ("void", "global", a["session_id"])]  # fmt: skip
    assert older["entries"][0]["detail"] == {"boards": {"global": None}} and older["next_before"] is None


async def test_submissions_lists_the_log_newest_first_with_voids(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, server: ServerURL, keys: ApiKeys,
    make_client: Callable[..., httpx.AsyncClient],
) -> None:  # fmt: skip
    await make_board(admin, "other")
    acks = [await submit(api, "p", s) for s in (1, 2, 3)]
    await submit(api, "p", 9, "other")
    await void(admin, acks[1]["session_id"])
    reader = make_client(server, keys.read)
    got = (await reader.get("/api/players/p/submissions", params={"board": "global"})).json()
    assert got["user_id"] == "p" and got["banned"] is False
    assert [(s["score"], s["voided_at"] is not None) for s in got["submissions"]] == [(3, False), (2, True), (1, False)]
    assert all(s["live"] for s in got["submissions"])
    assert (await admin.post("/api/leaderboards/other/reset")).status_code == 200
    other = (await reader.get("/api/players/p/submissions", params={"board": "other"})).json()["submissions"]
    assert [(s["score"], s["season"], s["live"]) for s in other] == [(9, 1, False)]
    assert len((await reader.get("/api/players/p/submissions")).json()["submissions"]) == 4
    assert len((await reader.get("/api/players/p/submissions", params={"limit": 1})).json()["submissions"]) == 1


# ---------------------------------------------------------------------------------------------------------
# Roles and bad inputs: a clear 4xx, nothing written


ACTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/leaderboard/void", {"json": {"session_id": str(uuid.uuid4()), "reason": "x"}}),
    ("POST", "/api/leaderboard/restore", {"json": {"session_id": str(uuid.uuid4()), "reason": "x"}}),
    ("DELETE", "/api/leaderboard/entries/p", {"params": {"board": "global", "reason": "x"}}),
    ("POST", "/api/players/p/ban", {"json": {"reason": "x"}}),
    ("DELETE", "/api/players/p/ban", {}),
    ("GET", "/api/audit", {}),
]


async def test_only_admin_keys_moderate(
    server: ServerURL, keys: ApiKeys, make_client: Callable[..., httpx.AsyncClient], api: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:  # fmt: skip
    from support.clients import player_token

    await submit(api, "p", 1)
    before = await counts(pool)
    for method, path, kw in ACTIONS:
        assert_problem(await make_client(server).request(method, path, **kw), 401, "unauthorized")
        for credential in (keys.submit, keys.read, player_token("p")):
            assert_problem(await make_client(server, credential).request(method, path, **kw), 403, "forbidden")
    # a player's submissions: admin and read keys only
    assert_problem(await make_client(server).get("/api/players/p/submissions"), 401, "unauthorized")
    for credential in (keys.submit, player_token("p")):
        assert_problem(await make_client(server, credential).get("/api/players/p/submissions"), 403, "forbidden")
    assert await counts(pool) == before


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("POST", "/api/players/bad%20id/ban", {"json": {"reason": "x"}}),
        ("POST", "/api/players/p/ban", {"json": {"reason": "   "}}),
        ("POST", "/api/players/p/ban", {"json": {}}),
        ("DELETE", "/api/players/p/ban", {"params": {"reason": "\x00"}}),
        ("DELETE", "/api/leaderboard/entries/p", {"params": {"board": "Bad Board", "reason": "x"}}),
        ("GET", "/api/audit", {"params": {"limit": 0}}),
        ("GET", "/api/audit", {"params": {"limit": 501}}),
        ("GET", "/api/audit", {"params": {"before": "x"}}),
        ("GET", "/api/audit", {"params": {"user_id": "no spaces"}}),
        ("POST", "/api/leaderboard/restore", {"json": {"session_id": "x", "reason": "x"}}),
        ("GET", "/api/players/p/submissions", {"params": {"limit": 1000}}),
        ("GET", "/api/players/p/submissions", {"params": {"board": "BAD"}}),
    ],
)
async def test_bad_moderation_inputs_are_422_and_write_nothing(
    admin: httpx.AsyncClient, pool: asyncpg.Pool, method: str, path: str, kw: dict[str, Any]
) -> None:
    before = await counts(pool)
    assert_problem(await admin.request(method, path, **kw), 422, "validation_error")
    assert await counts(pool) == before


# ---------------------------------------------------------------------------------------------------------
# Pushes on every process, and Redis equal to Postgres


async def test_each_action_is_pushed_on_another_process(
    make_server: Callable[..., Awaitable[ServerURL]], make_client: Callable[..., httpx.AsyncClient], keys: ApiKeys
) -> None:
    one, two = await make_server(), await make_server()
    admin, api = make_client(one, keys.admin), make_client(one, keys.submit)
    a = await submit(api, "alice", 5)
    await submit(api, "alice", 5)
    await submit(api, "bob", 7)
    async with ws_connect(two, keys.read) as ws, ws_connect(two, keys.read) as follower:
        await subscribe_top(ws)
        reply = await follower.reply_to(
            {"type": "subscribe", "board": "global", "topics": ["rank"], "user_id": "alice"}
        )
        assert reply["type"] == "subscribed"
        assert (await follower.recv_type("rank"))["rank"] == 1

        def top_is(entries: list[tuple[str, int]]) -> Callable[[dict[str, Any]], bool]:
            return lambda m: [(e["user_id"], e["score"]) for e in m["entries"]] == entries

        await void(admin, a["session_id"])
        await ws.recv_type("top", where=top_is([("bob", 7), ("alice", 5)]))
        moved = await follower.recv_type("rank", where=lambda m: m["rank"] == 2)
        assert (moved["score"], moved["previous_rank"]) == (5, 1)

        await ban(admin, "alice")
        await ws.recv_type("top", where=top_is([("bob", 7)]))
        gone = await follower.recv_type("rank", where=lambda m: m["rank"] is None)
        assert gone["previous_rank"] == 2

        await unban(admin, "alice")
        await ws.recv_type("top", where=top_is([("bob", 7), ("alice", 5)]))
        await follower.recv_type("rank", where=lambda m: m["rank"] == 2)

        await admin.delete("/api/leaderboard/entries/bob", params={"board": "global", "reason": "x"})
        await ws.recv_type("top", where=top_is([("alice", 5)]))
        await follower.recv_type("rank", where=lambda m: m["rank"] == 1)
    # the other process reads what the first one wrote
    assert await listing(make_client(two, keys.read)) == [(1, "alice", 5)]


async def test_a_removal_survives_a_delayed_write_a_rebuild_and_the_integrity_check(
    store: Store, cache: Cache, ranks: Ranks, make_writer: Callable[..., Writer], pool: asyncpg.Pool, rds: Any
) -> None:
    info = await store.board("global")
    assert info is not None
    writer = make_writer()
    await ranks.rebuild("global")
    ack = await writer.submit(Submission(user_id="alice", score=5), info)
    await writer.submit(Submission(user_id="bob", score=3), info)
    stale = (await store.current("global", ["alice"]))[0]  # alice's row as a slow writer still holds it
    mod = Moderator(Moderation(pool), ranks)
    await mod.void(ADMIN, ack.session_id, "x")
    assert await rds.zscore(cache_key("global"), "alice") is None
    # the slow writer's write of the older version arrives late: ignored
    await cache.write("global", [stale], [], 0.0, 1)
    assert await rds.zscore(cache_key("global"), "alice") is None
    assert await ranks.verify(info)  # Redis agrees with Postgres (members and highest version): no rebuild
    # a rebuild while the tombstone is live (as if it was written during the load) keeps alice out
    await ranks.rebuild("global")
    await assert_cache_matches_pg(pool, rds)
    assert await ranks.verify(info)


async def test_a_removal_left_unwritten_by_a_dead_process_is_repaired(
    store: Store, ranks: Ranks, make_writer: Callable[..., Writer], pool: asyncpg.Pool, rds: Any
) -> None:
    info = await store.board("global")
    assert info is not None
    writer = make_writer()
    await ranks.rebuild("global")
    ack = await writer.submit(Submission(user_id="alice", score=5), info)
    await Moderation(pool).void(ack.session_id, "x", "died before its cache write")  # Postgres only
    assert await rds.zscore(cache_key("global"), "alice") is not None
    debts = await store.old_intents(0)
    assert ["alice"] in [users for _, _, users in debts]  # (the submission's own debt may be there too)
    for _, board, users in debts:
        await ranks.repair(board, users)

    async def converged() -> bool:
        await assert_cache_matches_pg(pool, rds)
        return True

    await eventually(converged)


# ---------------------------------------------------------------------------------------------------------
# Random logs and random voids equal a reference recompute


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operator=st.sampled_from(["incr", "decr", "best", "set"]),
    sort=st.sampled_from(["desc", "asc"]),
    log=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-1000, 1000)), min_size=1, max_size=25),
    voids=st.sets(st.integers(0, 24), max_size=10),
)
async def test_random_logs_and_voids_equal_a_reference_recompute(
    store: Store, ranks: Ranks, make_writer: Callable[..., Writer], pool: asyncpg.Pool, rds: Any,
    operator: str, sort: str, log: list[tuple[str, int]], voids: set[int],
) -> None:  # fmt: skip
    from leaderboard.protocol import BoardCreate

    board = f"h-{uuid.uuid4().hex[:12]}"  # a board of its own per example
    info = await store.create_board(BoardCreate(id=board, operator=operator, sort=sort))  # type: ignore[arg-type]
    assert info is not None
    await ranks.rebuild(board)
    writer = make_writer()
    acks = [await writer.submit(Submission(user_id=u, score=s, board=board), info) for u, s in log]
    mod = Moderator(Moderation(pool), ranks)
    for i in sorted(v for v in voids if v < len(log)):
        await mod.void(ADMIN, acks[i].session_id, "random")
    kept: dict[str, list[int]] = {}
    for i, (u, s) in enumerate(log):
        kept.setdefault(u, [])
        if i not in voids:
            kept[u].append(s)
    want = {u: v for u, scores in kept.items() if (v := recompute(operator, sort, scores)) is not None}
    assert await pg_values(pool, board) == want
    await assert_cache_matches_pg(pool, rds, board)


# ---------------------------------------------------------------------------------------------------------
# decr, and the CLI


async def test_decr_subtracts_from_nothing_and_from_a_value(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    await make_board(admin, "lives", operator="decr", sort="asc")
    assert (await submit(api, "p", 3, "lives"))["score"] == -3
    assert (await submit(api, "p", -10, "lives"))["score"] == 7
    assert (await submit(api, "q", 1, "lives"))["score"] == -1
    assert await listing(api, "lives") == [(1, "q", -1), (2, "p", 7)]
    far = {"board": "lives", "user_id": "q", "score": 2**53 - 1}
    assert_problem(await api.post("/api/leaderboard/submit", json=far), 422, "out_of_range")


async def test_cli_void_ban_unban(services: Services, api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    a = await submit(api, "p", 5)
    await submit(api, "p", 6)
    env = cli_env(services.dsn, services.redis_url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli_command(), *args], env=env, capture_output=True, text=True, timeout=60)

    done = cli("void", a["session_id"], "--reason", "dup account")
    assert done.returncode == 0, done.stderr
    assert f"voided {a['session_id']} of p on global (season 1): score now 6" in done.stdout
    assert (await api.get("/api/leaderboard/rank/p")).json()["score"] == 6
    again = cli("void", a["session_id"], "--reason", "x")
    assert again.returncode == 1 and "already voided" in again.stderr
    assert cli("void", "not-a-uuid", "--reason", "x").returncode == 2
    banned = cli("ban", "p", "--reason", "cheat")
    assert banned.returncode == 0 and "banned p (global: no entry)" in banned.stdout, banned.stdout + banned.stderr
    assert_problem(await api.get("/api/leaderboard/rank/p"), 404, "not_found")
    out = cli("unban", "p")
    assert out.returncode == 0 and "unbanned p (global: 6)" in out.stdout, out.stdout + out.stderr
    assert (await api.get("/api/leaderboard/rank/p")).json()["score"] == 6
    actors = [r[0] for r in await pool.fetch("SELECT actor FROM audit ORDER BY id")]
    assert len(actors) == 3 and all(a.startswith("cli:") for a in actors)


_ = (asyncio, bearer, Written)
