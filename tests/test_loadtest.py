"""The load generator against real servers: it drives load, measures, and its verifier catches lost writes."""

from __future__ import annotations

import asyncio
import sys
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from support.services import ApiKeys, ServerURL, Services

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `loadtest` lives at the repo root, next to `server/`
    sys.path.insert(0, str(REPO))

from loadtest import analysis  # noqa: E402
from loadtest.runner import RunOptions, run  # noqa: E402
from loadtest.verify import verify  # noqa: E402

pytestmark = pytest.mark.timeout(180)


async def _run(**kw: Any) -> dict[str, Any]:
    # run() is synchronous (it owns worker processes and its own event loops): keep the server's loop free.
    return await asyncio.to_thread(run, RunOptions(quiet=True, keep_raw=True, **kw))


async def test_mixed_run_against_server_verifies_and_detects_tampering(
    make_server: Callable[..., Awaitable[ServerURL]], keys: ApiKeys, services: Services
) -> None:
    url = await make_server()
    report = await _run(
        url=url,
        key=keys.admin,
        scenario="mixed",
        procs=2,
        conns=4,
        inflight=4,
        duration=2.0,
        users=50,
        watchers=20,
        rank_watchers=5,
        retry_fraction=0.2,
        verify_dsn=services.dsn,
    )
    s = report["submissions"]
    assert report["errors"] == {}, report["errors"]
    assert report["closes"] == {}, report["closes"]
    assert s["acked"] > 50 and s["acked_duplicate"] > 0
    # every replay came back as a duplicate, and no session was accepted twice
    assert s["idempotency"]["double_accepted"] == 0
    assert s["acked_duplicate"] == s["replays_sent"]
    assert s["ack_latency_ms"]["n"] == s["acked"] and s["ack_latency_ms"]["p99"] > 0
    w = report["watch"]
    assert w["watchers"] == 20 and w["snapshots_per_watcher"]["min"] >= 2
    assert w["seq_regressions"] == 0
    assert w["push_latency_ms"]["n"] > 0 and w["push_latency_ms"]["p50"] > 0
    assert w["rank_notifications"] > 0
    v = report["verify"]
    assert v["ok"], v["problems"]
    assert v["acked_sessions"] == s["idempotency"]["sessions_acked"] and v["served_top_checked"] > 0

    # The verifier must fail when Postgres lost an acked submission or a board value is off.
    raw, board = report["raw"], report["board"]
    sid = next(a[0] for r in raw for a in r["acks"] if not a[3])
    con = await asyncpg.connect(services.dsn)
    try:
        await con.execute("DELETE FROM game_sessions WHERE session_id = $1::uuid", sid)
        bad = await verify(services.dsn, board, raw)
        assert not bad["ok"]
        assert any("missing" in p for p in bad["problems"]), bad["problems"]
        await con.execute(
            "UPDATE leaderboard SET value = value + 1 WHERE board_id = $1 AND user_id = "
            "(SELECT user_id FROM leaderboard WHERE board_id = $1 ORDER BY user_id LIMIT 1)",
            board,
        )
        bad = await verify(services.dsn, board, raw)
        assert any("board value" in p for p in bad["problems"]), bad["problems"]
    finally:
        await con.close()


@pytest.fixture
async def baseline_url(services: Services) -> AsyncIterator[str]:
    import uvicorn
    from loadtest.baseline.app import Config, create_app

    redis_url = services.redis_url.rsplit("/", 1)[0] + "/3"
    config = uvicorn.Config(
        create_app(Config(services.dsn, redis_url)),
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 30)


async def test_baseline_rest_with_pollers_verifies(baseline_url: str, services: Services) -> None:
    report = await _run(
        url=baseline_url,
        scenario="watch",
        transport="rest",
        procs=1,
        conns=4,
        inflight=1,
        rate=200.0,
        duration=2.5,
        users=30,
        watchers=10,
        rank_watchers=0,
        watch_mode="poll",
        poll_interval=0.5,
        retry_fraction=0.1,
        verify_dsn=services.dsn,
        verify_tables="baseline",
    )
    s = report["submissions"]
    assert report["errors"] == {}
    assert 200 <= s["acked"] and s["acked_duplicate"] == s["replays_sent"]
    assert report["watch"]["snapshots_per_watcher"]["min"] >= 3
    # polling every 0.5 s: a change waits for the next poll, so the median cannot be near zero
    assert report["watch"]["push_latency_ms"]["p50"] > 20
    assert report["verify"]["ok"], report["verify"]["problems"]


def _worker_result(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"value_sent": {}, "snap_info": {}, "snap_recv": {}, "rank_events": []}
    base.update(kw)
    return base


def test_push_latency_is_measured_per_watcher_from_the_producing_send() -> None:
    s1 = ("s", 1)
    s2 = ("s", 2)
    s3 = ("s", 3)
    info = {
        s1: (1, 10.0, (("a", 5),)),
        s2: (2, 10.5, (("a", 5), ("b", 7))),  # b=7 is new
        s3: (3, 11.0, (("b", 9), ("a", 5))),  # b=9 is new
    }
    res = [
        _worker_result(
            value_sent={("b", 7): 10.4, ("b", 9): 10.9},
            snap_info=info,
            # watcher X saw 1 -> 2 -> 3; watcher Y saw 1 -> 3 (coalesced): it is charged from b=9's send only
            snap_recv={(s1, s2): array("d", [10.45]), (s2, s3): array("d", [11.0]), (s1, s3): array("d", [11.2])},
        )
    ]
    out = analysis.push_latency(res)
    # samples: 10.45-10.4 = 50 ms, 11.0-10.9 = 100 ms, 11.2-10.9 = 300 ms; b=7 is not in snapshot 3
    assert out["top"]["n"] == 3
    assert out["top"]["max"] == pytest.approx(300, abs=0.2)
    assert out["top"]["p50"] == pytest.approx(100, abs=0.2)
    assert out["changes_unattributed"] == 0
