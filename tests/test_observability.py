"""Metrics facade, HTTP metrics middleware, multiprocess exposition, logging, New Relic developer mode."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from leaderboard import logs
from leaderboard import observability as obs
from support.metrics import exposed

SERVER_DIR = str(Path(obs.__file__).resolve().parents[1])


def value(name: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NEW_RELIC_") and k != obs.MULTIPROC_ENV and k != "PYTHONPATH"
    }
    env["PYTHONPATH"] = SERVER_DIR
    env.update(extra)
    return env


def run_py(code: str, env: dict[str, str], cwd: Path, timeout: float = 90) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


# --- facade -> Prometheus text format -------------------------------------------------------------------


def test_facade_exposes_expected_names_and_labels() -> None:
    before = exposed()
    obs.count(obs.WS_CONNECTIONS, +1)
    obs.count(obs.WS_CONNECTIONS, +1)
    obs.count(obs.WS_CONNECTIONS, -1)
    obs.count(obs.WS_IN, 1, "submit")
    obs.count(obs.WS_IN, 1, "no-such-frame-type")  # clamped, no new series per junk type
    obs.count(obs.WS_OUT, 7, "top")
    obs.count(obs.SUBMISSIONS, 3, "accepted")
    obs.count(obs.SUBMISSIONS, 1, "duplicate")
    obs.count(obs.SUBMISSIONS, 1, "rejected")
    obs.observe(obs.BATCH_SIZE, 12)
    obs.observe(obs.BATCH_SECONDS, 0.004)
    obs.observe(obs.CACHE_WRITE_SECONDS, 0.0007)
    obs.gauge(obs.SUBSCRIBERS, 5, "global", "top")
    obs.count(obs.REDIS_FALLBACK, 1, "rank")
    obs.count(obs.REBUILDS, 1, "speedrun", "ok")
    obs.observe(obs.REBUILD_SECONDS, 1.5, "speedrun")
    obs.gauge(obs.CACHE_READY, 0, "speedrun")
    obs.count(obs.SLOW_SOCKETS)
    after = exposed()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("leaderboard_ws_connections") == 1
    assert delta("leaderboard_ws_messages_in_total", type="submit") == 1
    assert delta("leaderboard_ws_messages_in_total", type="other") == 1
    assert ("leaderboard_ws_messages_in_total", (("type", "no-such-frame-type"),)) not in after
    assert delta("leaderboard_ws_messages_out_total", type="top") == 7
    assert delta("leaderboard_submissions_total", result="accepted") == 3
    assert delta("leaderboard_submissions_total", result="duplicate") == 1
    assert delta("leaderboard_submissions_total", result="rejected") == 1
    assert delta("leaderboard_batch_size_count") == 1
    assert delta("leaderboard_batch_size_sum") == 12
    assert delta("leaderboard_batch_size_bucket", le="10.0") == 0
    assert delta("leaderboard_batch_size_bucket", le="20.0") == 1
    assert delta("leaderboard_batch_commit_seconds_bucket", le="0.005") == 1
    assert delta("leaderboard_batch_commit_seconds_bucket", le="0.0025") == 0
    assert delta("leaderboard_cache_write_seconds_count") == 1
    assert after[("leaderboard_subscribers", (("board", "global"), ("topic", "top")))] == 5
    assert delta("leaderboard_redis_fallback_total", op="rank") == 1
    assert delta("leaderboard_rebuilds_total", board="speedrun", result="ok") == 1
    assert delta("leaderboard_rebuild_seconds_count", board="speedrun") == 1
    assert after[("leaderboard_cache_ready", (("board", "speedrun"),))] == 0
    obs.gauge(obs.CACHE_READY, 1, "speedrun")
    assert value("leaderboard_cache_ready", board="speedrun") == 1
    assert delta("leaderboard_slow_socket_closed_total") == 1


def test_push_records_one_observation_per_flush() -> None:
    count = value("leaderboard_push_latency_seconds_count")
    total = value("leaderboard_push_latency_seconds_sum")
    le_10ms = value("leaderboard_push_latency_seconds_bucket", le="0.01")
    le_5ms = value("leaderboard_push_latency_seconds_bucket", le="0.005")
    inf = value("leaderboard_push_latency_seconds_bucket", le="+Inf")
    obs.observe(obs.PUSH_SECONDS, 0.008)
    obs.observe(obs.PUSH_SECONDS, 0.01)  # a value exactly on a bucket bound belongs to that bucket (le)
    obs.observe(obs.PUSH_SECONDS, 9.0)  # beyond the last bound: only +Inf
    assert value("leaderboard_push_latency_seconds_count") - count == 3
    assert value("leaderboard_push_latency_seconds_sum") - total == pytest.approx(0.008 + 0.01 + 9.0)
    assert value("leaderboard_push_latency_seconds_bucket", le="0.01") - le_10ms == 2
    assert value("leaderboard_push_latency_seconds_bucket", le="0.005") - le_5ms == 0
    assert value("leaderboard_push_latency_seconds_bucket", le="+Inf") - inf == 3


# --- HTTP middleware: route templates ---------------------------------------------------------------------


async def _rank(request: Request) -> Response:
    return JSONResponse({"user_id": request.path_params["user_id"]})


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _crash(request: Request) -> Response:
    raise RuntimeError("endpoint failed")


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/api/leaderboard/rank/{user_id}", _rank),
            Route("/api/leaderboard/submit", _ok, methods=["POST"]),
            Route("/crash", _crash),
        ],
        middleware=[Middleware(obs.HttpMiddleware)],
    )


def _requests(method: str, route: str, status: str) -> float:
    return value("leaderboard_http_requests_total", method=method, route=route, status=status)


async def test_middleware_labels_by_route_template() -> None:
    rank = "/api/leaderboard/rank/{user_id}"
    before = {
        "rank": _requests("GET", rank, "200"),
        "submit405": _requests("GET", "/api/leaderboard/submit", "405"),
        "unmatched": _requests("GET", "unmatched", "404"),
        "crash": _requests("GET", "/crash", "500"),
        "latency": value("leaderboard_http_request_duration_seconds_count", method="GET", route=rank, status="200"),
    }
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for user in ("alice", "bob", "carol"):
            assert (await client.get(f"/api/leaderboard/rank/{user}")).status_code == 200
        assert (await client.get("/api/leaderboard/submit")).status_code == 405
        assert (await client.get("/no/such/route/4711")).status_code == 404
        assert (await client.get("/crash")).status_code == 500

    assert _requests("GET", rank, "200") - before["rank"] == 3
    assert _requests("GET", "/api/leaderboard/submit", "405") - before["submit405"] == 1
    assert _requests("GET", "unmatched", "404") - before["unmatched"] == 1
    assert _requests("GET", "/crash", "500") - before["crash"] == 1
    latency = value("leaderboard_http_request_duration_seconds_count", method="GET", route=rank, status="200")
    assert latency - before["latency"] == 3
    # Raw paths never become label values.
    routes = {dict(labels).get("route") for (name, labels) in exposed() if name.startswith("leaderboard_http")}
    assert not any(r and ("alice" in r or "4711" in r) for r in routes)


async def test_the_real_app_labels_its_hot_routes_by_template(api: httpx.AsyncClient) -> None:
    """submit, top and rank bypass Starlette's router (http.Direct); their metrics still name the route."""
    hot = {
        ("POST", "/api/leaderboard/submit"): 2,
        ("GET", "/api/leaderboard/top"): 1,
        ("GET", "/api/leaderboard/rank/{user_id}"): 1,
    }
    before = {k: _requests(*k, "200") for k in hot}
    unmatched = sum(_requests(m, "unmatched", "200") for m in ("GET", "POST"))
    for user in ("alice", "bob"):
        assert (await api.post("/api/leaderboard/submit", json={"user_id": user, "score": 5})).status_code == 200
    assert (await api.get("/api/leaderboard/top")).status_code == 200
    assert (await api.get("/api/leaderboard/rank/alice")).status_code == 200
    assert {k: _requests(*k, "200") - before[k] for k in hot} == hot
    assert sum(_requests(m, "unmatched", "200") for m in ("GET", "POST")) == unmatched


async def test_middleware_passes_websocket_and_lifespan_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = obs.HttpMiddleware(inner)

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        raise AssertionError("middleware must not send")

    total_before = sum(v for k, v in exposed().items() if k[0] == "leaderboard_http_requests_total")
    await mw({"type": "websocket", "path": "/ws"}, receive, send)
    await mw({"type": "lifespan"}, receive, send)
    total_after = sum(v for k, v in exposed().items() if k[0] == "leaderboard_http_requests_total")
    assert seen == ["websocket", "lifespan"]
    assert total_after == total_before


# --- multiprocess -----------------------------------------------------------------------------------------

WORKER = """
    import os, sys
    from leaderboard import observability as obs
    n = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["N"])
    for _ in range(n):
        obs.count(obs.WS_CONNECTIONS, +1)
        obs.count(obs.SUBMISSIONS, 1, "accepted")
        obs.observe(obs.PUSH_SECONDS, 0.02)
    obs.gauge(obs.SUBSCRIBERS, n, "global", "top")
    obs.gauge(obs.CACHE_READY, 1, "global")
    print(os.getpid())
"""


def test_multiprocess_two_writers_one_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mp_dir = tmp_path / "prom"
    monkeypatch.setenv(obs.MULTIPROC_ENV, str(mp_dir))  # so that teardown restores the original
    obs.setup_multiprocess(mp_dir)
    env = clean_env(**{obs.MULTIPROC_ENV: str(mp_dir)})
    pid_a = int(run_py(WORKER, {**env, "N": "3"}, tmp_path))
    pid_b = int(run_py(WORKER, {**env, "N": "4"}, tmp_path))
    assert pid_a != pid_b
    assert len(list(mp_dir.glob("*.db"))) >= 2

    # A third process collects (what GET /metrics does in any worker).
    collect = """
        from leaderboard import observability as obs
        body, ctype = obs.metrics_response()
        print(ctype)
        print(body.decode())
    """
    out = run_py(collect, env, tmp_path)
    ctype, body = out.split("\n", 1)
    assert ctype.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body)
        for s in fam.samples
    }
    assert samples[("leaderboard_submissions_total", (("result", "accepted"),))] == 7
    assert samples[("leaderboard_push_latency_seconds_count", ())] == 7
    assert samples[("leaderboard_subscribers", (("board", "global"), ("topic", "top")))] == 7
    # Live gauges of exited workers still count until they are marked dead...
    assert samples[("leaderboard_ws_connections", ())] == 7
    assert samples[("leaderboard_cache_ready", (("board", "global"),))] == 1

    # ...which process_exit() does for a worker that stops; counters survive, its gauges go.
    obs.process_exit(pid_a)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for _, s in _families(obs.metrics_response())}
    assert samples[("leaderboard_ws_connections", ())] == 4
    assert samples[("leaderboard_submissions_total", (("result", "accepted"),))] == 7


def _families(response: tuple[bytes, str]) -> Iterator[tuple[str, Any]]:
    for fam in text_string_to_metric_families(response[0].decode()):
        for s in fam.samples:
            yield fam.name, s


def test_setup_multiprocess_empties_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "prom" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    monkeypatch.delenv(obs.MULTIPROC_ENV, raising=False)
    obs.setup_multiprocess(tmp_path / "prom")
    monkeypatch.setenv(obs.MULTIPROC_ENV, os.environ[obs.MULTIPROC_ENV])  # undo at teardown
    assert os.environ[obs.MULTIPROC_ENV] == str(tmp_path / "prom")
    assert list((tmp_path / "prom").iterdir()) == []


# --- logging ----------------------------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_factory = logging.getLogRecordFactory()
    stream = io.StringIO()
    yield stream
    for h in root.handlers[:]:
        if h not in saved_handlers:
            root.removeHandler(h)
    root.setLevel(saved_level)
    logging.setLogRecordFactory(saved_factory)


JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.c2lnbmF0dXJlLXZhbHVl"
API_KEY = "lbk_Q3vJ8mZt0aXc_91kLpR2"


def test_json_lines_with_context_and_extras(log_stream: io.StringIO) -> None:
    logs.configure_logging("DEBUG", "json", stream=log_stream)
    log = logging.getLogger("leaderboard.test")
    with logs.bound(request_id="req-1", board="global"):
        assert logs.request_id() == "req-1"
        log.info("submitted %s for %s", 120, "alice", extra={"conn_id": "c-9", "rank": 4})
    log.debug("outside")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "INFO" and first["logger"] == "leaderboard.test"
    assert first["msg"] == "submitted 120 for alice"
    assert first["request_id"] == "req-1" and first["board"] == "global"
    assert first["conn_id"] == "c-9" and first["rank"] == 4
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert "request_id" not in lines[1] and lines[1]["msg"] == "outside"
    assert logs.request_id() is None


def test_secrets_are_redacted_everywhere(log_stream: io.StringIO) -> None:
    logs.configure_logging("INFO", "json", stream=log_stream)
    logs.register_secret("player-token-secret-0f9e")
    log = logging.getLogger("leaderboard.test")
    log.info("auth header %r", f"Bearer {API_KEY}")
    log.info("token " + JWT)  # secret in the message itself, not an argument
    log.info("ws auth frame %s", {"type": "auth", "token": JWT})
    log.warning("cfg", extra={"dsn": "postgresql://lb:hunter2pass@db:5432/lb", "hdr": {"a": f"bearer {JWT}"}})
    try:
        raise PermissionError(f"bad key {API_KEY} with secret player-token-secret-0f9e")
    except PermissionError:
        log.exception("rejected")
    out = log_stream.getvalue()
    for secret in (API_KEY, JWT, "eyJhbGciOi", "hunter2pass", "player-token-secret-0f9e", "c2lnbmF0dXJl"):
        assert secret not in out
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["msg"] == "auth header 'Bearer [REDACTED]'"
    assert records[1]["msg"] == "token [REDACTED]"
    assert records[3]["dsn"] == "postgresql://lb:[REDACTED]@db:5432/lb"
    assert "PermissionError: bad key [REDACTED] with secret [REDACTED]" in records[4]["exc"]
    assert "lbk_" not in out


def test_redaction_reaches_other_handlers(log_stream: io.StringIO) -> None:
    """Other handlers (uvicorn's, New Relic log forwarding) see records after the redacting factory."""
    logs.configure_logging("INFO", "human", stream=log_stream)
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    other = logging.getLogger("thirdparty")
    capture = Capture()
    other.addHandler(capture)
    try:
        other.warning("Authorization: Bearer %s", JWT)
    finally:
        other.removeHandler(capture)
    assert seen == ["Authorization: Bearer [REDACTED]"]
    assert JWT not in log_stream.getvalue()
    assert "thirdparty  Authorization: Bearer [REDACTED]" in log_stream.getvalue()


def test_bad_format_string_still_logs_one_json_line(log_stream: io.StringIO) -> None:
    logs.configure_logging("INFO", "json", stream=log_stream)
    (ours,) = [h for h in logging.getLogger().handlers if getattr(h, "_leaderboard_handler", False)]
    # Only our handler: pytest's capture handler on the root would raise on the bad format itself.
    isolated = logging.getLogger("isolated.badformat")
    isolated.propagate = False
    isolated.addHandler(ours)
    try:
        isolated.warning("count %d for %s", "not-a-number", API_KEY)
    finally:
        isolated.removeHandler(ours)
    (line,) = log_stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["msg"].startswith("count %d for %s") and API_KEY not in line


def test_auto_format_and_validation(log_stream: io.StringIO) -> None:
    logs.configure_logging("INFO", "auto", stream=log_stream)  # a StringIO is not a TTY -> JSON
    logging.getLogger("x").info("hello")
    assert json.loads(log_stream.getvalue())["msg"] == "hello"
    with pytest.raises(ValueError):
        logs.configure_logging("INFO", "xml", stream=log_stream)


async def test_request_id_middleware_binds_and_echoes() -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(logs.request_id())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)], middleware=[Middleware(obs.HttpMiddleware)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        given = await client.get("/", headers={"X-Request-ID": "abc-123"})
        fresh = await client.get("/")
        bogus = await client.get("/", headers={"X-Request-ID": "evil value with spaces"})
    assert given.headers["x-request-id"] == "abc-123"
    assert fresh.headers["x-request-id"] and fresh.headers["x-request-id"] != "abc-123"
    assert bogus.headers["x-request-id"] != "evil value with spaces"
    assert seen == ["abc-123", fresh.headers["x-request-id"], bogus.headers["x-request-id"]]


# --- New Relic -------------------------------------------------------------------------------------------


def test_newrelic_disabled_is_not_imported(tmp_path: Path) -> None:
    code = """
        import sys
        from leaderboard import observability as obs
        assert not obs.newrelic_enabled()
        assert obs.init_newrelic() is False
        app = object()
        assert obs.wrap_asgi(app) is app
        with obs.background_task("x"):
            obs.count(obs.SUBMISSIONS, 1, "accepted")
        obs.name_transaction("/x")
        assert "newrelic" not in sys.modules, "agent imported although disabled"
        print("ok")
    """
    assert run_py(code, clean_env(), tmp_path).strip() == "ok"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


NR_PROBE = """
    import asyncio, json, os

    # Imported before the agent is initialized, as `leaderboard.app` does (uvicorn imports the module,
    # then calls factory(), which calls init_newrelic()): the agent instruments already-imported modules.
    import asyncpg
    import httpx
    import redis.asyncio as aioredis
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from leaderboard import observability as obs

    assert obs.newrelic_enabled()
    assert obs.init_newrelic() is True
    import time
    import newrelic.agent

    # init_newrelic() registers without blocking; wait for the (offline) activation before any request.
    deadline = time.monotonic() + 30
    while not newrelic.agent.application().active:
        assert time.monotonic() < deadline, "agent did not activate in developer mode"
        time.sleep(0.05)

    DB, REDIS = os.environ.get("PROBE_DB"), os.environ.get("PROBE_REDIS")

    async def rank(request: Request) -> JSONResponse:
        if DB:
            con = await asyncpg.connect(DB)
            try:
                await con.fetchval("SELECT 1")
            finally:
                await con.close()
        if REDIS:
            r = aioredis.Redis.from_url(REDIS)
            await r.get("lb:probe:nonexistent")
            await r.aclose()
        obs.count(obs.SUBMISSIONS, 1, "accepted")
        return JSONResponse({"user_id": request.path_params["user_id"]})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("endpoint crashed")

    app = obs.wrap_asgi(
        Starlette(
            routes=[Route("/api/leaderboard/rank/{user_id}", rank), Route("/api/crash/{n}", boom)],
            middleware=[Middleware(obs.HttpMiddleware)],
        )
    )

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for user in ("alice", "bob"):
                assert (await client.get(f"/api/leaderboard/rank/{user}")).status_code == 200
            assert (await client.get("/api/crash/1")).status_code == 500
        with obs.background_task("writer.batch"):
            obs.observe(obs.BATCH_SIZE, 3)
            obs.observe(obs.BATCH_SECONDS, 0.004)
            obs.observe(obs.PUSH_SECONDS, 0.02)
        obs.count(obs.WS_IN, 1, "ping")  # outside any transaction: application-level custom metric

    asyncio.run(main())

    from newrelic.core.agent import agent_instance
    application = agent_instance().application(os.environ["PROBE_APP"])
    engine = application._stats_engine
    metrics = {}
    tables = [engine.stats_table, application._stats_custom_engine.stats_table]
    for table in tables:
        for (name, scope), stats in list(table.items()):
            if hasattr(stats, "call_count"):  # time/custom metrics (not Apdex)
                metrics[f"{name}|{scope}"] = stats.call_count
    print(json.dumps({"metrics": metrics}))
"""


@pytest.fixture(scope="module")
def nr_probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run a tiny app under the real agent in developer mode (no network) in a subprocess."""
    tmp = tmp_path_factory.mktemp("newrelic")
    app_name = "leaderboard-devmode-test"
    ini = tmp / "newrelic.ini"
    ini.write_text(
        textwrap.dedent(f"""
            [newrelic]
            app_name = {app_name}
            developer_mode = true
            log_file = stderr
            log_level = warning
            """)
    )
    db = os.environ.get("LEADERBOARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    rds = os.environ.get("LEADERBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    env = clean_env(NEW_RELIC_CONFIG_FILE=str(ini), PROBE_APP=app_name)
    if _reachable(db, 5432):
        env["PROBE_DB"] = db
    if _reachable(rds, 6379):
        env["PROBE_REDIS"] = rds
    out = run_py(NR_PROBE, env, tmp)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["db"], result["redis"] = "PROBE_DB" in env, "PROBE_REDIS" in env
    return result


def test_newrelic_web_transaction_named_by_route(nr_probe: dict[str, Any]) -> None:
    metrics = nr_probe["metrics"]
    name = "WebTransaction/Uri/api/leaderboard/rank/{user_id}"
    assert metrics[f"{name}|"] == 2
    # Also when the endpoint raises and the 500 is sent outside the middleware.
    assert metrics["WebTransaction/Uri/api/crash/{n}|"] == 1
    # Not named by raw path, nor by the endpoint function (the agent's Starlette default).
    assert not any("alice" in k or "bob" in k or "crash/1" in k for k in metrics)
    assert not any(k.startswith("WebTransaction/Function/") for k in metrics)


def test_newrelic_custom_metrics_events_and_background_tasks(nr_probe: dict[str, Any]) -> None:
    metrics = nr_probe["metrics"]
    assert metrics["Custom/Leaderboard/Submissions/accepted|"] == 2
    assert metrics["Custom/Leaderboard/Writer/BatchSize|"] == 1
    assert metrics["Custom/Leaderboard/Writer/CommitSeconds|"] == 1
    assert metrics["Custom/Leaderboard/Push/LatencySeconds|"] == 1
    assert metrics["Custom/Leaderboard/WebSocket/In/ping|"] == 1
    assert metrics["OtherTransaction/Leaderboard/writer.batch|"] == 1


def test_newrelic_instruments_asyncpg_and_redis(nr_probe: dict[str, Any]) -> None:
    if not (nr_probe["db"] and nr_probe["redis"]):
        pytest.skip("Postgres/Redis not reachable (LEADERBOARD_TEST_DATABASE_URL/_REDIS_URL or 127.0.0.1)")
    metrics = nr_probe["metrics"]
    scope = "WebTransaction/Uri/api/leaderboard/rank/{user_id}"
    assert metrics[f"Datastore/operation/Postgres/select|{scope}"] == 2
    assert metrics[f"Datastore/operation/Redis/get|{scope}"] == 2
    assert metrics["Datastore/allWeb|"] >= 4
