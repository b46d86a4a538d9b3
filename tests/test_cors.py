"""CORS: off by default; when origins are configured, browsers on those origins may call the REST API."""

from __future__ import annotations

from typing import Any

from support.clients import bearer
from support.services import ApiKeys


async def test_no_cors_headers_by_default(server: str, make_client: Any) -> None:
    client = make_client(server)
    resp = await client.get("/api/leaderboard/top", headers={"Origin": "https://game.example"})
    assert resp.status_code == 200
    assert "access-control-allow-origin" not in resp.headers


async def test_configured_origin_is_allowed_and_preflight_answers(
    make_server: Any, keys: ApiKeys, make_client: Any
) -> None:
    server = await make_server(cors_origins="https://game.example, https://admin.example")
    client = make_client(server)
    pre = await client.options(
        "/api/leaderboard/submit",
        headers={
            "Origin": "https://game.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://game.example"
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    resp = await client.post(
        "/api/leaderboard/submit",
        json={"user_id": "alice", "score": 3},
        headers={"Origin": "https://game.example", **bearer(keys.submit)},
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://game.example"
    other = await client.get("/api/leaderboard/top", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
