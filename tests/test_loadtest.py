"""The load generator against real servers: it drives load, measures, and its verifier catches lost writes."""

from __future__ import annotations

import asyncio
import os
import re
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


async def _postmaster_pid(dsn: str) -> int:
    """The postmaster is the parent of any backend."""
    from loadtest import procstat

    con = await asyncpg.connect(dsn)
    try:
        st = procstat.read_stat(await con.fetchval("SELECT pg_backend_pid()"))
    finally:
        await con.close()
    assert st is not None, "Postgres runs on another machine"
    return st.ppid


@pytest.mark.parametrize("transport", ["ws", "rest"])
async def test_closed_loop_reports_cpu_per_acked_op(
    make_server: Callable[..., Awaitable[ServerURL]], keys: ApiKeys, services: Services, transport: str
) -> None:
    import os

    url = await make_server()
    postmaster = await _postmaster_pid(services.dsn)
    report = await _run(
        url=url,
        key=keys.admin,
        scenario="closed",
        transport=transport,
        procs=1,
        conns=10,
        duration=1.5,
        users=50,
        server_pids=[os.getpid()],  # the server runs in this process
        postgres_pids=[postmaster],
        verify_dsn=services.dsn,
    )
    assert report["options"]["inflight"] == 1 and report["sockets"]["submit"] == 10
    assert report["errors"] == {} and report["verify"]["ok"], report["verify"]["problems"]
    cpu = report["cpu"]
    assert cpu["ops"] > 50 and 1.0 < cpu["window_s"] < 2.5
    for group in ("server", "postgres", "generator"):
        assert cpu[group]["us_per_op"] > 0, (group, cpu)
    assert cpu["generator"]["messages"] >= 2 * cpu["ops"] and cpu["generator"]["us_per_message"] > 0


async def test_read_scenario_seeds_and_reads_top_and_rank(
    make_server: Callable[..., Awaitable[ServerURL]], keys: ApiKeys
) -> None:
    url = await make_server()
    for kind in ("top", "rank"):
        report = await _run(
            url=url, key=keys.admin, scenario="read", read=kind, procs=1, conns=8, duration=1.0, users=200
        )
        assert report["unit"] == f"read {kind}" and report["options"]["transport"] == "rest"
        assert report["errors"] == {}, report["errors"]
        assert report["seeded_s"] is not None and report["submissions"]["acked"] > 100
        assert report["cpu"]["ops"] > 0 and "verify" not in report


@pytest.mark.parametrize("transport", ["ws", "rest"])
async def test_batch_scenario_runs_and_verifies(
    make_server: Callable[..., Awaitable[ServerURL]], keys: ApiKeys, services: Services, transport: str
) -> None:
    url = await make_server()
    report = await _run(
        url=url, key=keys.admin, scenario="batch", transport=transport, procs=1, duration=1.0, verify_dsn=services.dsn
    )
    assert "skipped" not in report, report
    assert report["errors"] == {}, report["errors"]
    assert report["submissions"]["acked"] >= 100
    assert report["verify"]["ok"], report["verify"]["problems"]


def test_batch_encoder_and_decoder_follow_the_contract() -> None:
    import orjson
    from loadtest import batch

    items = [{"user_id": "a", "score": 3, "board": "b", "session_id": "s1"}, {"user_id": "c", "score": 1}]
    assert orjson.loads(batch.encode_rest(items)) == {"items": items}
    assert orjson.loads(batch.encode_ws(7, items)) == {"type": "submit", "ref": 7, "items": items}
    for bad in ([], [items[0]] * (batch.MAX_ITEMS + 1)):
        with pytest.raises(ValueError):
            batch.encode_rest(bad)
    ack = {"index": 0, "accepted": True, "duplicate": False, "board": "b", "user_id": "a", "score": 3, "rank": 1,
           "session_id": "s1"}  # fmt: skip
    refused = {"index": 1, "error": {"code": "validation_error", "detail": "score"}}
    out = batch.decode_results({"type": "ack", "ref": 7, "results": [ack, refused]}, 2)
    assert out[0].ack == ack and out[0].error_code is None
    assert out[1].ack is None and (out[1].error_code, out[1].error_detail) == ("validation_error", "score")
    for msg, n in (
        ({"results": [ack]}, 2),  # too few results
        ({"results": [refused, ack]}, 2),  # out of item order
        ({"results": [{"index": 0}]}, 1),  # neither an ack nor an error
        ({"type": "error", "code": "validation_error"}, 1),
    ):
        with pytest.raises(batch.BatchFormatError):
            batch.decode_results(msg, n)
    assert batch.unsupported_note("rest", 200, {"results": [refused]}) is None
    assert batch.unsupported_note("ws", None, {"type": "ack", "ref": "probe", "results": [refused]}) is None
    assert "HTTP 404" in (batch.unsupported_note("rest", 404, None) or "")
    assert "'unknown_type'" in (batch.unsupported_note("ws", None, {"type": "error", "code": "unknown_type"}) or "")


async def test_ws_client_reassembles_fragments_answers_close_and_reports_the_code() -> None:
    import websockets.asyncio.server as ws_server
    from loadtest.wire import HandshakeError, ws_connect

    async def handler(conn: Any) -> None:
        await conn.send(["frag", "mented"])  # one message in two frames
        await conn.send("whole")
        await conn.recv()
        await conn.close(4001, "bye")

    got: list[bytes] = []
    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with ws_server.serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        c = await ws_connect(
            "127.0.0.1", port, "/", lambda _c, p: got.append(p), on_close=lambda _c, code: closed.set_result(code)
        )
        assert c.open
        c.send(b"hi")
        assert await asyncio.wait_for(closed, 5) == 4001
        assert got == [b"fragmented", b"whole"] and not c.open and c.close_code == 4001

    async def refuse(conn: Any) -> None:
        pass

    async with ws_server.serve(refuse, "127.0.0.1", 0, process_request=lambda c, r: c.respond(403, "no")) as srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeError) as e:
            await ws_connect("127.0.0.1", port, "/", lambda _c, p: None)
        assert e.value.status == 403


def test_procstat_counts_a_tree_including_children_that_exited() -> None:
    import subprocess
    import time

    from loadtest import procstat

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    # parent: starts a child that burns 0.3 s of CPU and exits (reaped by the parent), then waits to be sampled
    parent_code = f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {burn!r}])\ntime.sleep(5)\n"
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        before = procstat.sample([], {"tree": [parent.pid]}, [])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = procstat.read_stat(parent.pid)
            assert st is not None
            if st.children >= 0.25:  # the child has exited and been reaped
                break
            time.sleep(0.05)
        after = procstat.sample([], {"tree": [parent.pid]}, [])
        assert after["tree"] - before["tree"] >= 0.2
    finally:
        parent.kill()
        parent.wait()


@pytest.fixture
async def fake_nakama() -> AsyncIterator[str]:
    """A stand-in speaking the slice of Nakama's REST API that loadtest.nakama uses (no Nakama here)."""
    import base64

    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    scores: dict[str, int] = {}

    def token_for(uid: str) -> str:
        claims = base64.urlsafe_b64encode(orjson.dumps({"uid": uid})).rstrip(b"=").decode()
        return f"hdr.{claims}.sig"

    def uid_of(request: Request) -> str:
        return orjson.loads(base64.urlsafe_b64decode(request.headers["authorization"].split(".")[1] + "=="))["uid"]

    async def auth(request: Request) -> Response:
        assert request.headers["authorization"] == "Basic " + base64.b64encode(b"defaultkey:").decode()
        assert request.query_params["create"] == "true"
        device = orjson.loads(await request.body())["id"]
        return Response(orjson.dumps({"token": token_for(f"uid-{device}")}))

    def record(uid: str) -> dict[str, Any]:
        rank = 1 + sum(1 for s in scores.values() if s > scores[uid])
        return {"owner_id": uid, "score": str(scores[uid]), "rank": str(rank)}

    async def board(request: Request) -> Response:
        if request.method == "POST":
            uid = uid_of(request)
            scores[uid] = scores.get(uid, 0) + int(orjson.loads(await request.body())["score"])
            return Response(orjson.dumps(record(uid)))
        owners = request.query_params.getlist("owner_ids")
        top = sorted(scores, key=lambda u: -scores[u])[: int(request.query_params["limit"])]
        body = {"records": [record(u) for u in top], "owner_records": [record(u) for u in owners if u in scores]}
        return Response(orjson.dumps(body))

    app = Starlette(
        routes=[
            Route("/v2/account/authenticate/device", auth, methods=["POST"]),
            Route("/v2/leaderboard/{board_id}", board, methods=["GET", "POST"]),
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_nakama_mode_speaks_its_rest_api(fake_nakama: str) -> None:
    from loadtest import nakama

    for op in ("write", "top", "rank"):
        report = await nakama.run(fake_nakama, op=op, board="bench", clients=4, duration=0.5)
        assert report["errors"] == {}, (op, report)
        assert report["acked_per_s"] > 0 and report["cpu"]["ops"] > 0, (op, report)


@pytest.fixture
async def fake_batch_server() -> AsyncIterator[str]:
    """A stand-in with issue #11's batch submissions (REST and WebSocket), in memory, until the server has them.
    It refuses every item for user u0, so per-item refusals are exercised too."""
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    sessions: set[str] = set()
    boards: set[str] = set()
    totals: dict[tuple[str, str], int] = {}

    def results(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, it in enumerate(items):
            if it["user_id"] == "u0":
                out.append({"index": i, "error": {"code": "validation_error", "detail": "u0 is refused here"}})
                continue
            if it.get("board") not in boards:  # e.g. the generator's probe
                out.append({"index": i, "error": {"code": "not_found", "detail": "no such board"}})
                continue
            key = (it.get("board", "global"), it["user_id"])
            dup = it["session_id"] in sessions
            if not dup:
                sessions.add(it["session_id"])
                totals[key] = totals.get(key, 0) + it["score"]
            out.append({"index": i, "accepted": True, "duplicate": dup, "board": key[0], "user_id": key[1],
                        "score": totals[key], "rank": None, "session_id": it["session_id"]})  # fmt: skip
        return out

    async def create_board(request: Request) -> Response:
        boards.add(orjson.loads(await request.body())["id"])
        return Response(b"{}", status_code=201)

    async def batch(request: Request) -> Response:
        return Response(orjson.dumps({"results": results(orjson.loads(await request.body())["items"])}))

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                msg = orjson.loads(await websocket.receive_text())
                reply = {"type": "ack", "ref": msg["ref"], "results": results(msg["items"])}
                await websocket.send_text(orjson.dumps(reply).decode())
        except Exception:
            pass

    app = Starlette(
        routes=[
            Route("/api/leaderboards", create_board, methods=["POST"]),
            Route("/api/leaderboard/submit/batch", batch, methods=["POST"]),
            WebSocketRoute("/ws", ws),
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("transport", ["ws", "rest"])
async def test_batch_scenario_against_a_server_with_batches(fake_batch_server: str, transport: str) -> None:
    report = await _run(
        url=fake_batch_server, scenario="batch", transport=transport, procs=1, conns=2, batch=20, duration=1.0,
        users=30, retry_fraction=0.2,
    )  # fmt: skip
    s = report["submissions"]
    assert report["unit"] == "batch item"
    assert set(report["errors"]) == {"item_error:validation_error"}, report["errors"]  # u0's items only
    assert s["acked"] > 100 and 0 < s["acked_duplicate"] <= s["replays_sent"]
    # replays ride in later batches and must come back duplicate (else "unexpected_duplicate" or a double accept)
    assert s["idempotency"]["double_accepted"] == 0
    assert report["cpu"]["ops"] == sum(r["acked_in_window"] for r in report["raw"])


async def test_the_bench_seeds_a_board_the_schema_accepts(services: Services, pool: asyncpg.Pool, clean: None) -> None:
    """`make bench` seeds big boards straight into Postgres: the seeding must follow the schema (it once
    lacked the season column and crashed the board-size step)."""
    from loadtest.bench import _seed

    await pool.execute("INSERT INTO leaderboards (id, title) VALUES ('seeded', 'seeded')")
    await _seed(services.dsn, "seeded", 500)
    assert await pool.fetchval("SELECT count(*) FROM leaderboard WHERE board_id = 'seeded' AND season = 1") == 500


async def test_submitfn_measures_lb_submit_alone_and_its_batches_commit(
    services: Services, pool: asyncpg.Pool, clean: None
) -> None:
    """loadtest.submitfn (docs/performance.md, sql/009): its batches are real commits, the existing players'
    and the new ones', and it reports a cost per batch and per submission."""
    from loadtest.submitfn import measure

    ms, us = await measure(services.dsn, "global", size=10, batches=5, users=30, new=False)
    assert ms > 0 and us >= 0
    assert await pool.fetchval("SELECT count(*) FROM game_sessions WHERE board_id = 'global'") == 25 * 10
    assert 0 < await pool.fetchval("SELECT count(*) FROM leaderboard WHERE user_id LIKE 'u%'") <= 30
    await measure(services.dsn, "global", size=10, batches=5, users=30, new=True)
    assert await pool.fetchval("SELECT count(*) FROM leaderboard WHERE user_id LIKE 'n%'") == 25 * 10


def test_fanout_floor_measures_a_send_per_socket_and_closes_them() -> None:
    from loadtest.bench import fanout_floor

    fds = len(os.listdir("/proc/self/fd"))
    floor = fanout_floor(50, size=300, rounds=2)
    assert (floor["sockets"], floor["bytes"]) == (50, 300)
    assert 0 < floor["us_per_send"] < 10_000
    assert len(os.listdir("/proc/self/fd")) == fds  # every connection it opened is closed


def test_the_bench_runs_its_closed_loop_on_an_outside_postgres_and_leaves_it_running(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench.system_pg_suite: a server on a new database of a PostgreSQL it did not start (here the suite's),
    the WebSocket closed-loop step against it, verified; then the database is dropped and that PostgreSQL still
    answers (the bench stops what it started, nothing else). A PostgreSQL that does not answer is a skip."""
    from loadtest import bench

    async def databases() -> set[str]:
        con = await asyncpg.connect(services.admin_dsn)
        try:
            return {r[0] for r in await con.fetch("SELECT datname FROM pg_database")}
        finally:
            await con.close()

    before = asyncio.run(databases())
    monkeypatch.setattr(bench, "SYSTEM_PG", services.admin_dsn)
    out = bench.system_pg_suite(bench.make_plan(quick=True))
    r = out["run"]
    assert r["submissions"]["acked"] > 0 and sum(r["errors"].values()) == 0
    assert r["verify"]["ok"], r["verify"]
    assert out["version"].startswith("PostgreSQL") and out["jit"] in ("on", "off")
    assert out["database"] not in asyncio.run(databases()) and asyncio.run(databases()) == before
    monkeypatch.setattr(bench, "SYSTEM_PG", "postgresql://nobody@127.0.0.1:1/none")
    assert "no PostgreSQL answers" in bench.system_pg_suite(bench.make_plan(quick=True))["skipped"]

    async def make_role() -> None:
        con = await asyncpg.connect(services.admin_dsn)
        try:
            await con.execute("DROP ROLE IF EXISTS lb_bench_nocreate; CREATE ROLE lb_bench_nocreate LOGIN")
        finally:
            await con.close()

    asyncio.run(make_role())
    try:  # a role that may not create databases: a skip, not a crash
        monkeypatch.setattr(bench, "SYSTEM_PG", re.sub(r"//[^@/]*@", "//lb_bench_nocreate@", services.admin_dsn))
        assert "no database could be created" in bench.system_pg_suite(bench.make_plan(quick=True))["skipped"]
    finally:
        asyncio.run(_drop_role(services.admin_dsn))


async def _drop_role(dsn: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("DROP ROLE IF EXISTS lb_bench_nocreate")
    finally:
        await con.close()
