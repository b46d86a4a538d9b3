"""WebSocket /ws end to end on a real uvicorn: every client frame, its reply, bad frames, close codes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from support.clients import WS, create_board, player_token, submit, subscribe_top, top, ws_connect
from support.reference import MAX_VALUE
from support.services import ApiKeys, ServerURL
from support.stores import pg_values, row_counts, session_count


async def test_ping_pong_echoes_ref(server: ServerURL) -> None:
    async with ws_connect(server) as ws:
        await ws.send({"type": "ping", "ref": 3})
        assert await ws.recv() == {"type": "pong", "ref": 3}
        await ws.send({"type": "ping", "ref": "abc"})
        assert await ws.recv() == {"type": "pong", "ref": "abc"}
        await ws.send({"type": "ping"})
        pong = await ws.recv()
        assert pong["type"] == "pong" and pong.get("ref") is None


async def test_subscribe_top_snapshot_then_pushes(server: ServerURL, api: httpx.AsyncClient) -> None:
    await submit(api, "alice", 10, display_name="Alice")
    async with ws_connect(server) as ws:
        await ws.send({"type": "subscribe", "ref": 2, "board": "global", "topics": ["top"], "limit": 5})
        subscribed = await ws.recv()
        assert {k: subscribed[k] for k in ("type", "ref", "board", "topics")} == {
            "type": "subscribed",
            "ref": 2,
            "board": "global",
            "topics": ["top"],
        }
        snap = await ws.recv()
        assert snap["type"] == "top" and snap["board"] == "global"
        assert snap["total"] == 1
        assert snap["entries"] == [{"rank": 1, "user_id": "alice", "display_name": "Alice", "score": 10}]
        assert snap["seq"] <= (await top(api))["seq"]  # same counter (a warm-up rebuild may bump it)

        await submit(api, "bob", 20)
        push = await ws.recv_type("top", where=lambda m: m["total"] == 2)
        assert push["seq"] > snap["seq"]
        assert [(e["rank"], e["user_id"], e["score"]) for e in push["entries"]] == [
            (1, "bob", 20),
            (2, "alice", 10),
        ]
        for i in range(6):
            await submit(api, f"u{i}", 100 + i)
        last = await ws.recv_type("top", where=lambda m: m["total"] == 8)
        assert len(last["entries"]) == 5  # the subscription's limit
        assert [e["user_id"] for e in last["entries"]] == ["u5", "u4", "u3", "u2", "u1"]


async def test_subscribe_default_board_and_limit(server: ServerURL, api: httpx.AsyncClient) -> None:
    for i in range(12):
        await submit(api, f"u{i:02d}", i)
    async with ws_connect(server) as ws:
        reply = await ws.reply_to({"type": "subscribe", "topics": ["top"]})
        assert reply["type"] == "subscribed" and reply["board"] == "global"
        snap = await ws.recv_type("top")
        assert len(snap["entries"]) == 10 and snap["total"] == 12


async def test_subscribe_rank(server: ServerURL, api: httpx.AsyncClient) -> None:
    async with ws_connect(server) as ws:
        await ws.send({"type": "subscribe", "ref": "r", "board": "global", "topics": ["rank"], "user_id": "alice"})
        subscribed = await ws.recv()
        assert subscribed["type"] == "subscribed" and subscribed["ref"] == "r"
        assert subscribed["topics"] == ["rank"]
        first = await ws.recv_type("rank")
        assert first["board"] == "global" and first["user_id"] == "alice"
        assert (first["rank"], first["score"], first["previous_rank"]) == (None, None, None)

        await submit(api, "alice", 50)
        got = await ws.recv_type("rank", where=lambda m: m["rank"] is not None)
        assert (got["rank"], got["score"]) == (1, 50)
        await submit(api, "bob", 80)  # alice falls to 2
        moved = await ws.recv_type("rank", where=lambda m: m["rank"] == 2)
        assert (moved["previous_rank"], moved["score"]) == (1, 50)
        assert moved["seq"] > got["seq"]


async def test_subscribe_rank_of_ranked_player_starts_with_current(server: ServerURL, api: httpx.AsyncClient) -> None:
    await submit(api, "bob", 80)
    await submit(api, "alice", 50)
    async with ws_connect(server) as ws:
        await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "alice"})
        first = await ws.recv_type("rank")
        assert (first["rank"], first["score"], first["previous_rank"]) == (2, 50, None)


async def test_subscribe_both_topics(server: ServerURL, api: httpx.AsyncClient) -> None:
    await submit(api, "alice", 5)
    async with ws_connect(server) as ws:
        reply = await ws.reply_to({"type": "subscribe", "topics": ["top", "rank"], "user_id": "alice"})
        assert reply["type"] == "subscribed" and sorted(reply["topics"]) == ["rank", "top"]
        frames = [await ws.recv(), await ws.recv()]
        assert sorted(f["type"] for f in frames) == ["rank", "top"]
        missing = await ws.reply_to({"type": "subscribe", "topics": ["top", "rank"]})
        assert missing["type"] == "error" and missing["code"] == "validation_error"


async def test_unsubscribe_stops_pushes(server: ServerURL, api: httpx.AsyncClient) -> None:
    async with ws_connect(server) as ws:
        await subscribe_top(ws)
        reply = await ws.reply_to({"type": "unsubscribe", "board": "global", "topics": ["top"]})
        assert reply["type"] == "unsubscribed" and reply["topics"] == ["top"]
        await submit(api, "alice", 1)
        await submit(api, "bob", 2)
        stray = await ws.quiet(0.6)  # twelve push intervals
        assert [f for f in stray if f["type"] == "top"] == []
        # the socket is still fine
        assert (await ws.reply_to({"type": "ping"}))["type"] == "pong"


async def test_unsubscribe_rank(server: ServerURL, api: httpx.AsyncClient) -> None:
    async with ws_connect(server) as ws:
        await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "alice"})
        await ws.recv_type("rank")
        reply = await ws.reply_to({"type": "unsubscribe", "topics": ["rank"], "user_id": "alice"})
        assert reply["type"] == "unsubscribed"
        await submit(api, "alice", 1)
        assert [f for f in await ws.quiet(0.6) if f["type"] == "rank"] == []


async def test_submit_frame_ack(server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool) -> None:
    sid = str(uuid.uuid4())
    async with ws_connect(server, keys.submit) as ws:
        frame = {
            "type": "submit",
            "ref": 1,
            "user_id": "alice",
            "score": 5,
            "board": "global",
            "session_id": sid,
        }
        await ws.send({**frame, "display_name": "Alice"})
        ack = await ws.recv_type("ack")
        assert ack == {
            "type": "ack",
            "ref": 1,
            "accepted": True,
            "duplicate": False,
            "board": "global",
            "user_id": "alice",
            "score": 5,
            "rank": 1,
            "session_id": sid,
            "season": 1,
        }
        await ws.send({**frame, "ref": 2})
        dup = await ws.recv_type("ack")
        assert dup["ref"] == 2 and dup["duplicate"] is True and dup["score"] == 5
        await ws.send({**frame, "ref": 3, "score": 6})
        conflict = await ws.recv_type("error")
        assert conflict["ref"] == 3 and conflict["code"] == "idempotency_conflict"
        await ws.send({"type": "submit", "ref": 4, "user_id": "alice", "score": 7})
        assert (await ws.recv_type("ack"))["score"] == 12
    assert await pg_values(pool) == {"alice": 12}
    assert await session_count(pool) == 2


async def test_submit_frame_errors_keep_socket_open(
    server: ServerURL, keys: ApiKeys, admin: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await create_board(admin, "other")
    async with ws_connect(server, keys.submit) as ws:
        ok = await ws.reply_to({"type": "submit", "user_id": "alice", "score": MAX_VALUE})
        assert ok["type"] == "ack"
        before = await row_counts(pool)
        cases = [
            ({"user_id": "alice", "score": 1}, "out_of_range"),
            ({"user_id": "alice", "score": 1, "board": "nope"}, "not_found"),
            ({"user_id": "al ice", "score": 1}, "validation_error"),
            ({"user_id": "alice", "score": "1"}, "validation_error"),
            ({"user_id": "alice"}, "validation_error"),
            ({"user_id": "alice", "score": 2**53}, "validation_error"),
        ]
        for i, (fields, code) in enumerate(cases):
            err = await ws.reply_to({"type": "submit", "ref": f"e{i}", **fields})
            assert err["type"] == "error" and err["code"] == code, (fields, err)
            assert isinstance(err["detail"], str) and err["detail"]
        assert (await ws.reply_to({"type": "ping"}))["type"] == "pong"
        assert await row_counts(pool) == before


async def test_auth_frame_roles(server: ServerURL, keys: ApiKeys) -> None:
    for credential, role in [(keys.admin, "admin"), (keys.submit, "submit"), (keys.read, "read")]:
        async with ws_connect(server) as ws:
            reply = await ws.reply_to({"type": "auth", "token": credential})
            assert reply["type"] == "auth" and reply["ok"] is True and reply["role"] == role
            assert reply.get("user_id") is None
    async with ws_connect(server) as ws:
        reply = await ws.reply_to({"type": "auth", "token": player_token("alice")})
        assert (reply["ok"], reply["role"], reply["user_id"]) == (True, "player", "alice")


async def test_player_submits_for_itself_over_ws(server: ServerURL, pool: asyncpg.Pool) -> None:
    async with ws_connect(server) as ws:
        await ws.reply_to({"type": "auth", "token": player_token("alice")})
        ack = await ws.reply_to({"type": "submit", "user_id": "alice", "score": 3})
        assert ack["type"] == "ack" and ack["score"] == 3
        err = await ws.reply_to({"type": "submit", "user_id": "bob", "score": 3})
        assert err["type"] == "error" and err["code"] == "forbidden"
        assert (await ws.reply_to({"type": "ping"}))["type"] == "pong"
    assert await pg_values(pool) == {"alice": 3}


async def test_bearer_on_upgrade_grants_submit(server: ServerURL, keys: ApiKeys) -> None:
    async with ws_connect(server, keys.submit) as ws:
        ack = await ws.reply_to({"type": "submit", "user_id": "alice", "score": 1})
        assert ack["type"] == "ack"


@pytest.mark.parametrize(
    "token",
    ["lbk_not-a-real-key", "garbage", "expired", "forged"],
    ids=["unknown-key", "garbage", "expired", "forged"],
)
async def test_bad_auth_frame_closes_1008(server: ServerURL, token: str) -> None:
    if token == "expired":
        token = player_token("alice", ttl=-60)
    elif token == "forged":
        token = player_token("alice", secret="not-the-secret-0123456789abcdef01234567")
    async with ws_connect(server) as ws:
        await ws.send({"type": "auth", "ref": 1, "token": token})
        assert await ws.expect_close() == 1008


@pytest.mark.parametrize("credential", ["none", "read", "player-other"])
async def test_submit_without_rights_closes_1008(
    server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool, credential: str
) -> None:
    async with ws_connect(server, keys.read if credential == "read" else None) as ws:
        if credential == "player-other":
            # a player submitting for someone else gets an error frame (forbidden), not a close:
            await ws.reply_to({"type": "auth", "token": player_token("bob")})
            err = await ws.reply_to({"type": "submit", "user_id": "alice", "score": 1})
            assert err["code"] == "forbidden"
        else:
            await ws.send({"type": "submit", "ref": 1, "user_id": "alice", "score": 1})
            assert await ws.expect_close() == 1008
    assert await session_count(pool) == 0


SUB = {"ref": 1, "type": "subscribe"}
BAD_FRAMES: list[tuple[str, Any, str, Any]] = [
    ("not-json", "{type: ping", "invalid_json", None),
    ("array", json.dumps([{"type": "ping"}]), "invalid_frame", None),
    ("string", json.dumps("ping"), "invalid_frame", None),
    ("number", "42", "invalid_frame", None),
    ("no-type", {"ref": 7, "board": "global"}, "invalid_frame", 7),
    ("type-not-string", {"ref": 8, "type": 5}, "invalid_frame", 8),
    ("unknown-type", {"ref": "u", "type": "launch"}, "unknown_type", "u"),
    ("subscribe-no-topics", SUB | {"board": "global"}, "validation_error", 1),
    ("subscribe-bad-topic", SUB | {"topics": ["all"]}, "validation_error", 1),
    ("subscribe-limit-0", SUB | {"topics": ["top"], "limit": 0}, "validation_error", 1),
    ("subscribe-limit-101", SUB | {"topics": ["top"], "limit": 101}, "validation_error", 1),
    ("subscribe-limit-text", SUB | {"topics": ["top"], "limit": "5"}, "validation_error", 1),
    ("subscribe-bad-board", SUB | {"board": "B!", "topics": ["top"]}, "validation_error", 1),
    ("subscribe-unknown-board", SUB | {"board": "nope", "topics": ["top"]}, "not_found", 1),
    ("rank-no-user", SUB | {"topics": ["rank"]}, "validation_error", 1),
    ("rank-bad-user", SUB | {"topics": ["rank"], "user_id": "a b"}, "validation_error", 1),
    ("unsubscribe-no-topics", {"ref": 1, "type": "unsubscribe"}, "validation_error", 1),
    ("submit-bad-user", {"ref": 9, "type": "submit", "user_id": "", "score": 1}, "validation_error", 9),
    ("submit-float", {"ref": 9, "type": "submit", "user_id": "a", "score": 0.5}, "validation_error", 9),
    ("submit-bad-session", {"ref": 9, "type": "submit", "user_id": "a", "score": 1, "session_id": "x"},
     "validation_error", 9),
    ("submit-unknown-board", {"ref": 9, "type": "submit", "user_id": "a", "score": 1, "board": "nope"},
     "not_found", 9),
]  # fmt: skip


@pytest.mark.parametrize(("frame", "code", "ref"), [c[1:] for c in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES])
async def test_bad_frame_gets_error_and_socket_stays(
    server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool, frame: Any, code: str, ref: Any
) -> None:
    before = await row_counts(pool)
    async with ws_connect(server, keys.submit) as ws:
        await ws.send(frame)
        err = await ws.recv()
        assert err["type"] == "error", err
        assert err["code"] == code, err
        assert err.get("ref") == ref, err
        assert isinstance(err["detail"], str) and err["detail"]
        assert (await ws.reply_to({"type": "ping"}))["type"] == "pong"
    assert await row_counts(pool) == before


async def test_oversized_frame_closes_1009(make_server: Any, keys: ApiKeys, pool: asyncpg.Pool) -> None:
    server = await make_server(max_frame_bytes=4096)
    async with ws_connect(server, keys.submit) as ws:
        await ws.send({"type": "submit", "user_id": "alice", "score": 1, "display_name": "x" * 5000})
        assert await ws.expect_close() == 1009
    assert await session_count(pool) == 0
    # just under the limit is served normally
    async with ws_connect(server, keys.submit) as ws:
        frame = {"type": "ping", "ref": "p" * 64}
        padded = json.dumps(frame) + " " * (4000 - len(json.dumps(frame)))
        await ws.send(padded)
        assert (await ws.recv())["type"] == "pong"


async def test_default_frame_limit_is_64k(server: ServerURL) -> None:
    async with ws_connect(server) as ws:
        await ws.send(json.dumps({"type": "ping"}) + " " * 65_600)
        assert await ws.expect_close() == 1009


async def test_ref_too_long_is_not_echoed_blindly(server: ServerURL) -> None:
    async with ws_connect(server) as ws:
        err = await _send_and_recv(ws, {"type": "ping", "ref": "r" * 65})
        assert err["type"] == "error" and err["code"] in {"validation_error", "invalid_frame"}
        assert (await ws.reply_to({"type": "ping"}))["type"] == "pong"


async def _send_and_recv(ws: WS, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(frame)
    return await ws.recv()


async def test_too_many_subscriptions(make_server: Any) -> None:
    # followed players count towards max_followed (tests/test_friends.py has max_subscriptions: tops of boards)
    server = await make_server(max_followed=1)
    async with ws_connect(server) as ws:
        assert (await ws.reply_to({"type": "subscribe", "topics": ["top"]}))["type"] == "subscribed"
        reply = await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "alice"})
        assert reply["type"] == "subscribed"
        err = await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "bob"})
        assert err["type"] == "error" and err["code"] == "too_many_subscriptions"
        # unsubscribing frees a slot
        off = await ws.reply_to({"type": "unsubscribe", "topics": ["rank"], "user_id": "alice"})
        assert off["type"] == "unsubscribed"
        assert (await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "bob"}))["type"] == "subscribed"
