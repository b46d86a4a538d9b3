"""Abuse limits (limits.py): a player's submission rate shared by every server process, failed authentication
slowed down per client address, and sockets that never authenticate nor subscribe closed after a while."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from leaderboard.limits import AuthFailures
from support.clients import assert_problem, bearer, player_token, ws_connect, ws_url
from support.services import ApiKeys, ServerURL

RATE = 2.0  # submissions per second per player: bursts of 4


async def logged(pool: asyncpg.Pool, *sessions: str) -> set[str]:
    """Which of these session ids Postgres logged."""
    rows = await pool.fetch("SELECT session_id::text FROM game_sessions WHERE session_id = ANY($1::uuid[])", sessions)
    return {r[0] for r in rows}


def body(user: str, score: int = 1, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "score": score, "session_id": str(uuid.uuid4()), **extra}


# ---------------------------------------------------------------------------------------------------------
# the per-player submission rate


async def test_the_rate_is_shared_by_two_servers_and_refusals_write_nothing(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    one = make_client(await make_server(player_submit_rate=RATE), keys.submit)
    two = make_client(await make_server(player_submit_rate=RATE), keys.submit)
    accepted = [body("alice", i) for i in range(4)]  # the burst: twice the rate
    for i, item in enumerate(accepted):
        resp = await (one if i % 2 else two).post("/api/leaderboard/submit", json=item)
        assert resp.status_code == 200, resp.text
    refused = [body("alice"), body("alice")]
    for http in (one, two):
        resp = await http.post("/api/leaderboard/submit", json=refused[http is two])
        problem = assert_problem(resp, 429, "rate_limited")
        assert "'alice'" in problem["detail"] and "nothing was written" in problem["detail"]
        assert resp.headers["retry-after"] == "1"  # 0.5 s at most (one interval of 2/s), rounded up
    assert await logged(pool, *(b["session_id"] for b in refused)) == set()
    assert await logged(pool, *(b["session_id"] for b in accepted)) == {b["session_id"] for b in accepted}
    # other players, and the same player on another board, have buckets of their own
    assert (await one.post("/api/leaderboard/submit", json=body("bob"))).status_code == 200
    admin = make_client(one.base_url, keys.admin)
    assert (await admin.post("/api/leaderboards", json={"id": "other"})).status_code == 201
    assert (await two.post("/api/leaderboard/submit", json=body("alice", board="other"))).status_code == 200
    # the bucket refills at the rate: one more after 1 / rate seconds (at least: the steps above took time too)
    await asyncio.sleep(1 / RATE + 0.05)
    assert (await two.post("/api/leaderboard/submit", json=body("alice", 10))).status_code == 200
    # a burst at once from both servers: at most what the bucket holds (the burst) gets through
    burst = await asyncio.gather(*(h.post("/api/leaderboard/submit", json=body("alice", 100)) for h in [one, two] * 4))
    assert {r.status_code for r in burst} <= {200, 429} and any(r.status_code == 429 for r in burst)
    passed = sum(r.status_code == 200 for r in burst)
    total = await pool.fetchval("SELECT value FROM leaderboard WHERE board_id = 'global' AND user_id = 'alice'")
    assert total == sum(range(4)) + 10 + 100 * passed


async def test_a_batch_refuses_only_the_items_over_the_rate(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    api = make_client(await make_server(player_submit_rate=RATE), keys.submit)
    items = [body("carol", 10) for _ in range(6)] + [body("dave", 5)]
    resp = await api.post("/api/leaderboard/submit/batch", json={"items": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["accepted"] for r in results] == [True] * 4 + [False] * 2 + [True]
    assert {r["error"]["code"] for r in results[4:6]} == {"rate_limited"}
    assert resp.headers["retry-after"] == "1"
    assert await logged(pool, *(i["session_id"] for i in items[4:6])) == set()
    assert await pool.fetchval("SELECT value FROM leaderboard WHERE user_id = 'carol'") == 40
    # a batch without refusals carries no Retry-After
    resp = await api.post("/api/leaderboard/submit/batch", json={"items": [body("erin")]})
    assert resp.status_code == 200 and "retry-after" not in resp.headers


async def test_a_socket_over_the_rate_gets_rate_limited_error_frames(
    make_server: Any, keys: ApiKeys, pool: asyncpg.Pool
) -> None:
    server = await make_server(player_submit_rate=RATE)
    async with ws_connect(server, keys.submit) as ws:
        frames = [{"type": "submit", "ref": f"s{i}", **body("frank")} for i in range(6)]
        for frame in frames:
            await ws.send(frame)
        replies = {}
        while len(replies) < 6:
            msg = await ws.recv()
            if msg.get("ref", "").startswith("s"):
                replies[msg["ref"]] = msg
        kinds = [replies[f"s{i}"]["type"] for i in range(6)]
        assert kinds.count("ack") == 4 and kinds.count("error") == 2, kinds
        errors = [r for r in replies.values() if r["type"] == "error"]
        assert all(e["code"] == "rate_limited" and 0 < e["retry_after"] <= 1 / RATE for e in errors), errors
    refused = [f["session_id"] for f in frames if replies[f["ref"]]["type"] == "error"]
    assert await logged(pool, *refused) == set()


async def test_without_redis_the_rate_fails_open(
    make_server: Any, keys: ApiKeys, make_client: Any, private_redis: Any, pool: asyncpg.Pool
) -> None:
    api = make_client(await make_server(player_submit_rate=RATE, redis_url=private_redis.url), keys.submit)
    private_redis.stop()
    items = [body("gina", 1) for _ in range(6)]
    for item in items:  # more than the burst: none refused, all written
        resp = await api.post("/api/leaderboard/submit", json=item)
        assert resp.status_code == 200, resp.text
    assert len(await logged(pool, *(i["session_id"] for i in items))) == 6


async def test_the_rate_is_off_by_default(api: httpx.AsyncClient) -> None:
    for i in range(12):
        assert (await api.post("/api/leaderboard/submit", json=body("hal", i))).status_code == 200


# ---------------------------------------------------------------------------------------------------------
# failed authentication


async def test_repeated_failed_authentication_is_refused_for_a_while(
    make_server: Any, keys: ApiKeys, make_client: Any
) -> None:
    server = await make_server(auth_failures_max=3, auth_failure_window_s=1.5)
    bad = make_client(server, "lbk_guessed")
    good = make_client(server, keys.read)
    anon = make_client(server)
    for _ in range(3):
        assert_problem(await bad.get("/api/leaderboards"), 401, "unauthorized")
    started = time.monotonic()
    problem = assert_problem(await good.get("/api/leaderboards"), 429, "rate_limited")  # before the key is looked at
    assert "failed authentications" in problem["detail"]
    resp = await bad.post("/api/leaderboard/submit", json=body("x"))
    assert_problem(resp, 429, "rate_limited")
    assert 1 <= int(resp.headers["retry-after"]) <= 2
    assert (await anon.get("/api/leaderboards")).status_code == 200  # reads without a credential go on
    # the upgrade of a socket with a credential is refused too; a bad player token counted the same way
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(server), additional_headers=bearer(keys.read)):
            pass
    assert info.value.response.status_code == 429
    await asyncio.sleep(max(0.0, started + 1.6 - time.monotonic()))
    assert (await good.get("/api/leaderboards")).status_code == 200
    player = make_client(server, player_token("p", secret="x" * 40))
    for _ in range(3):
        assert_problem(await player.get("/api/leaderboards"), 401, "unauthorized")
    assert_problem(await good.get("/api/leaderboards"), 429, "rate_limited")


async def test_a_socket_that_fails_authentication_is_closed(server: ServerURL, keys: ApiKeys) -> None:
    async with ws_connect(server, "lbk_wrong") as ws:  # on the upgrade
        assert await ws.expect_close() == 1008
    async with ws_connect(server) as ws:  # with an auth frame
        await ws.send({"type": "auth", "token": "lbk_wrong"})
        assert await ws.expect_close() == 1008


def test_failures_are_remembered_in_bounded_memory_and_per_ipv6_64() -> None:
    failures = AuthFailures(limit=2, window=60, max_addresses=100)
    for i in range(1000):
        failures.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(failures._seen) == 100
    failures.failed("2001:db8::1")
    failures.failed("2001:db8::ffff")  # the same /64
    with pytest.raises(Exception, match="failed authentications"):
        failures.check("2001:db8::abcd")
    failures.check("2001:db8:0:1::1")  # another /64
    failures.failed("::ffff:192.0.2.1")
    failures.failed("192.0.2.1")  # an IPv4-mapped address is the IPv4 address
    with pytest.raises(Exception, match="failed authentications"):
        failures.check("192.0.2.1")


# ---------------------------------------------------------------------------------------------------------
# idle sockets


async def test_a_socket_that_neither_authenticates_nor_subscribes_is_closed(make_server: Any, keys: ApiKeys) -> None:
    server = await make_server(ws_idle_timeout_s=0.6)
    async with ws_connect(server) as idle, ws_connect(server) as watcher, ws_connect(server) as authed:
        async with ws_connect(server, keys.submit) as keyed:
            assert (await watcher.reply_to({"type": "subscribe", "topics": ["status"]}))["type"] == "subscribed"
            assert (await authed.reply_to({"type": "auth", "token": keys.read}))["type"] == "auth"
            started = time.monotonic()
            assert (await idle.reply_to({"type": "ping"}))["type"] == "pong"  # pings are no excuse
            refused = await idle.reply_to({"type": "subscribe", "board": "nope", "topics": ["top"]})
            assert refused["code"] == "not_found"  # nor is a subscribe that was refused
            try:
                while True:
                    await idle.conn.recv()
            except Exception as exc:  # ConnectionClosed: the close frame says why
                rcvd = getattr(exc, "rcvd", None)
                assert rcvd is not None and rcvd.code == 1008, exc
                assert "no auth or subscribe within 0.6 s" in rcvd.reason
            assert 0.4 < time.monotonic() - started < 3
            await asyncio.sleep(0.6)
            for ws in (watcher, authed, keyed):  # still served
                assert (await ws.reply_to({"type": "ping"}))["type"] == "pong"
