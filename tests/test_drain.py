"""Graceful drain: SIGTERM under load. Every acked submission is in Postgres exactly once, every client sees
1012, and re-sending the unacknowledged ones elsewhere (same session_id) counts each score once."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support.clients import ws_url
from support.processes import spawned_server
from support.services import ApiKeys, Services


async def _submitter(url: str, key: str, n: int, sent: dict[str, tuple[str, int]], acked: list[str]) -> int | None:
    """Pipeline submissions until the server closes the socket; return the close code it sent."""
    async with connect(ws_url(url), additional_headers={"Authorization": f"Bearer {key}"}) as ws:

        async def read() -> None:
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "ack":
                        acked.append(msg["session_id"])
            except ConnectionClosed:  # 1012 is not a "normal" close for the client library
                pass

        reader = asyncio.create_task(read())
        try:
            for i in range(n):
                sid = str(uuid.uuid4())
                user = f"u{i % 7}"
                sent[sid] = (user, i % 5 + 1)
                await ws.send(json.dumps({"type": "submit", "user_id": user, "score": i % 5 + 1, "session_id": sid}))
                await asyncio.sleep(0.002)
        except ConnectionClosed:
            pass
        await asyncio.wait_for(reader, 20)
        return ws.close_code


async def test_sigterm_under_load_loses_and_doubles_nothing(
    services: Services, clean: None, keys: ApiKeys, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    sent: dict[str, tuple[str, int]] = {}
    acked: list[str] = []
    async with spawned_server(tmp_path / "a", services.dsn, services.redis_url, drain_timeout_s=5) as (url, proc):
        clients = [asyncio.create_task(_submitter(url, keys.submit, 5000, sent, acked)) for _ in range(4)]
        await asyncio.sleep(1.0)  # under load
        proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*clients)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    assert codes == [1012] * 4
    assert len(acked) > 100
    assert len(acked) == len(set(acked)), "a submission was acknowledged twice"
    stored = {str(r["session_id"]): (r["user_id"], r["score"]) for r in await pool.fetch("SELECT * FROM game_sessions")}
    assert all(stored.get(sid) == sent[sid] for sid in acked), "an acked submission is missing from Postgres"

    # A client re-sends everything it has no ack for to another instance: committed ones are duplicates.
    unacked = [sid for sid in sent if sid not in set(acked)]
    async with (
        spawned_server(tmp_path / "b", services.dsn, services.redis_url) as (url, _),
        connect(ws_url(url), additional_headers={"Authorization": f"Bearer {keys.submit}"}) as ws,
    ):
        for sid in unacked:
            user, score = sent[sid]
            await ws.send(json.dumps({"type": "submit", "user_id": user, "score": score, "session_id": sid}))
        answers: list[dict[str, Any]] = [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in unacked]
    assert all(a["type"] == "ack" for a in answers)
    assert {a["session_id"] for a in answers if a["duplicate"]} == {sid for sid in unacked if sid in stored}
    totals: dict[str, int] = {}
    for user, score in sent.values():
        totals[user] = totals.get(user, 0) + score
    rows = await pool.fetch("SELECT user_id, value FROM leaderboard WHERE board_id = 'global'")
    assert {r["user_id"]: r["value"] for r in rows} == totals
