"""Moderation: void, remove, ban and unban recomputed from the submission log; pushes on every process; the
audit log; the operator `decr`; wrong roles and bad inputs that write nothing."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from support.clients import assert_problem, submit


async def void(admin: httpx.AsyncClient, session_id: str, reason: str = "cheat", expect: int = 200) -> dict[str, Any]:
    resp = await admin.post("/api/leaderboard/void", json={"session_id": session_id, "reason": reason})
    assert resp.status_code == expect, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def test_smoke(admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    a = await submit(api, "alice", 5)
    b = await submit(api, "alice", 7)
    await submit(api, "bob", 9)
    got = await void(admin, b["session_id"])
    assert got["score"] == 5, got
    rank = (await api.get("/api/leaderboard/rank/alice")).json()
    assert rank["score"] == 5, rank
    await void(admin, b["session_id"], expect=409)
    gone = await void(admin, a["session_id"])
    assert gone["score"] is None
    assert (await api.get("/api/leaderboard/rank/alice")).status_code == 404
    top = (await api.get("/api/leaderboard/top")).json()
    assert [e["user_id"] for e in top["entries"]] == ["bob"], top
    again = await submit(api, "alice", 7, session_id=b["session_id"])
    assert again["duplicate"] and again["score"] is None, again
    ban = await admin.post("/api/players/bob/ban", json={"reason": "x"})
    assert ban.status_code == 200, ban.text
    assert_problem(await api.post("/api/leaderboard/submit", json={"user_id": "bob", "score": 1}), 403, "banned")
    top = (await api.get("/api/leaderboard/top")).json()
    assert top["entries"] == [], top
    unban = await admin.delete("/api/players/bob/ban")
    assert unban.json()["boards"] == {"global": 9}, unban.text
    audit = (await admin.get("/api/audit")).json()
    assert [e["action"] for e in audit["entries"]] == ["unban", "ban", "void", "void"], audit
    subs = (await admin.get("/api/players/alice/submissions")).json()
    assert len(subs["submissions"]) == 2 and all(s["voided_at"] for s in subs["submissions"]), subs
    _ = uuid
