"""Authentication and authorisation: API key roles, player tokens, public reads, WebSocket auth."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from helpers import (
    SECRET,
    Keys,
    ServerURL,
    assert_problem,
    eventually,
    player_token,
    row_counts,
    session_count,
    submit,
    ws_connect,
)

SUBMIT = "/api/leaderboard/submit"
BODY = {"user_id": "alice", "score": 1}


def bad_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": player_token("alice", ttl=-30),
        "forged": player_token("alice", secret="wrong-secret-0123456789abcdef0123456789"),
        "no-exp": jwt.encode({"sub": "alice"}, SECRET, "HS256"),
        "no-sub": jwt.encode({"exp": now + 600}, SECRET, "HS256"),
        "alg-none": jwt.encode({"sub": "alice", "exp": now + 600}, None, "none"),
        "alg-hs512": jwt.encode({"sub": "alice", "exp": now + 600}, SECRET * 2, "HS512"),
        "garbage": "not.a.token",
        "unknown-key": "lbk_" + "A" * 43,
    }


async def test_submit_needs_a_credential(anon: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    assert_problem(await anon.post(SUBMIT, json=BODY), 401, "unauthorized")
    assert await session_count(pool) == 0


@pytest.mark.parametrize("kind", list(bad_tokens()))
async def test_bad_credentials_are_401(server: ServerURL, make_client: Any, pool: asyncpg.Pool, kind: str) -> None:
    client = make_client(server, bad_tokens()[kind])
    assert_problem(await client.post(SUBMIT, json=BODY), 401, "unauthorized")
    assert await session_count(pool) == 0


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "lbk_x", "Token lbk_x"])
async def test_malformed_authorization_header_is_401(server: ServerURL, header: str, pool: asyncpg.Pool) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        resp = await client.post(SUBMIT, json=BODY, headers={"Authorization": header})
    assert_problem(resp, 401, "unauthorized")
    assert await session_count(pool) == 0


async def test_roles(server: ServerURL, keys: Keys, make_client: Any, pool: asyncpg.Pool) -> None:
    read = make_client(server, keys.read)
    assert_problem(await read.post(SUBMIT, json=BODY), 403, "forbidden")
    assert (await read.get("/api/leaderboard/top")).status_code == 200
    assert (await submit(make_client(server, keys.submit), "alice", 1))["score"] == 1
    assert (await submit(make_client(server, keys.admin), "bob", 2))["score"] == 2
    assert await session_count(pool) == 2


async def test_board_creation_is_admin_only(
    server: ServerURL, keys: Keys, make_client: Any, pool: asyncpg.Pool
) -> None:
    board = {"id": "new", "title": "New"}
    before = await row_counts(pool)
    assert_problem(await make_client(server).post("/api/leaderboards", json=board), 401, "unauthorized")
    for credential in (keys.read, keys.submit, player_token("alice")):
        assert_problem(await make_client(server, credential).post("/api/leaderboards", json=board), 403, "forbidden")
    assert await row_counts(pool) == before
    assert (await make_client(server, keys.admin).post("/api/leaderboards", json=board)).status_code == 201


async def test_revoked_key_is_401(server: ServerURL, make_client: Any, pool: asyncpg.Pool) -> None:
    from leaderboard.auth import create_api_key

    key = await create_api_key(pool, "submit", "to-revoke")
    client = make_client(server, key)
    await submit(client, "alice", 1)  # known to the server now
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'to-revoke'")

    async def refused() -> None:
        assert_problem(await client.post(SUBMIT, json={"user_id": "alice", "score": 1}), 401, "unauthorized")

    await eventually(refused, within=5)  # every process reloads its keys every 2 s
    before = await session_count(pool)
    await refused()
    assert await session_count(pool) == before  # a refused request writes nothing


async def test_a_revoked_key_closes_its_open_sockets(server: ServerURL, make_client: Any, pool: asyncpg.Pool) -> None:
    from leaderboard.auth import create_api_key

    key = await create_api_key(pool, "submit", "to-revoke")
    async with ws_connect(server, key) as ws:
        ack = await ws.reply_to({"type": "submit", "user_id": "bob", "score": 1})
        assert ack["type"] == "ack", ack
        await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'to-revoke'")
        assert await ws.expect_close(within=6) == 1008


async def test_keys_are_stored_hashed(keys: Keys, pool: asyncpg.Pool) -> None:
    assert keys.admin.startswith("lbk_") and len({keys.admin, keys.submit, keys.read}) == 3
    rows = await pool.fetch("SELECT role, key_hash FROM api_keys")
    assert sorted(r["role"] for r in rows) == ["admin", "read", "submit"]
    for row in rows:
        stored = bytes(row["key_hash"])
        for key in (keys.admin, keys.submit, keys.read):
            assert key.encode() not in stored and key[4:].encode() not in stored


async def test_player_submits_only_for_itself(server: ServerURL, make_client: Any, pool: asyncpg.Pool) -> None:
    alice = make_client(server, player_token("alice"))
    assert (await submit(alice, "alice", 7))["score"] == 7
    assert_problem(await alice.post(SUBMIT, json={"user_id": "bob", "score": 7}), 403, "forbidden")
    assert (await alice.get("/api/leaderboard/rank/alice")).json()["score"] == 7
    assert await session_count(pool) == 1


async def test_player_tokens_refused_without_a_secret(make_server: Any, make_client: Any, pool: asyncpg.Pool) -> None:
    server = await make_server(player_token_secret=None)
    client = make_client(server, player_token("alice"))
    assert_problem(await client.post(SUBMIT, json=BODY), 401, "unauthorized")
    assert await session_count(pool) == 0


async def test_private_reads_need_a_credential(
    make_server: Any, keys: Keys, make_client: Any, pool: asyncpg.Pool
) -> None:
    server = await make_server(public_read=False)
    await submit(make_client(server, keys.submit), "alice", 3)
    anon = make_client(server)
    for path in ("/api/leaderboard/top", "/api/leaderboard/rank/alice"):
        assert_problem(await anon.get(path), 401, "unauthorized")
        for credential in (keys.read, keys.submit, keys.admin, player_token("bob")):
            resp = await make_client(server, credential).get(path)
            assert resp.status_code == 200, (path, resp.text)
        assert_problem(await make_client(server, "lbk_nope").get(path), 401, "unauthorized")
    # operations endpoints stay open for probes
    assert (await anon.get("/healthz")).status_code == 200
    assert (await anon.get("/readyz")).status_code == 200


async def test_public_reads_by_default(anon: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    await submit(api, "alice", 3)
    assert (await anon.get("/api/leaderboard/top")).status_code == 200
    assert (await anon.get("/api/leaderboard/rank/alice")).status_code == 200
    assert (await anon.get("/api/leaderboards")).status_code == 200


# ---- WebSocket ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["expired", "forged", "garbage", "unknown-key"])
async def test_ws_bad_bearer_on_upgrade_closes_1008(server: ServerURL, kind: str) -> None:
    from websockets.exceptions import InvalidStatus

    try:
        async with ws_connect(server, bad_tokens()[kind]) as ws:
            assert await ws.expect_close() == 1008
    except InvalidStatus as exc:  # refusing the upgrade itself is not what the contract says
        raise AssertionError(f"upgrade refused with HTTP {exc.response.status_code}, expected close 1008") from None


async def test_ws_private_read_needs_auth(make_server: Any, keys: Keys) -> None:
    server = await make_server(public_read=False)
    async with ws_connect(server) as ws:
        # The contract does not say whether this closes (1008) or answers an error frame; either is fine,
        # but no subscription and no snapshot.
        await ws.send({"type": "subscribe", "ref": 1, "topics": ["top"]})
        try:
            reply = await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1008
        else:
            assert reply["type"] == "error" and reply["code"] in {"unauthorized", "forbidden"}, reply
            assert reply["ref"] == 1
            assert [f for f in await ws.quiet(0.3) if f["type"] == "top"] == []
    async with ws_connect(server, keys.read) as ws:
        reply = await ws.reply_to({"type": "subscribe", "topics": ["top"]})
        assert reply["type"] == "subscribed"
    async with ws_connect(server) as ws:
        assert (await ws.reply_to({"type": "auth", "token": player_token("bob")}))["ok"] is True
        assert (await ws.reply_to({"type": "subscribe", "topics": ["top"]}))["type"] == "subscribed"


async def test_ws_auth_frame_upgrades_rights(server: ServerURL, keys: Keys, pool: asyncpg.Pool) -> None:
    async with ws_connect(server, keys.read) as ws:
        # a read key on the upgrade, then a submit key in an auth frame
        reply = await ws.reply_to({"type": "auth", "token": keys.submit})
        assert reply["role"] == "submit"
        assert (await ws.reply_to({"type": "submit", "user_id": "zoe", "score": 4}))["type"] == "ack"
    assert await session_count(pool) == 1


async def test_ws_player_other_user_then_own(server: ServerURL, pool: asyncpg.Pool) -> None:
    async with ws_connect(server, player_token("alice")) as ws:
        err = await ws.reply_to({"type": "submit", "user_id": "mallory", "score": 4})
        assert err["type"] == "error" and err["code"] == "forbidden"
        assert (await ws.reply_to({"type": "submit", "user_id": "alice", "score": 4}))["type"] == "ack"
    assert await session_count(pool) == 1
