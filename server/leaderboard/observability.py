"""Metrics: defined once in a table, exported to Prometheus, mirrored to New Relic when it is configured.

Every metric below is one row: its Prometheus series and the New Relic custom-metric name it also feeds
(`Custom/Leaderboard/<name>`, label values joined with "/"). The functions the code calls are one line each.
Nothing here does I/O.

Prometheus multiprocess mode (`leaderboard serve --workers N`): `setup_multiprocess()` in the parent sets
PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client; `metrics_response()` aggregates the
workers' files and `process_exit()` drops a stopped worker's live gauges.

New Relic is optional: `init_newrelic()` imports the agent only when NEW_RELIC_LICENSE_KEY or
NEW_RELIC_CONFIG_FILE is set, before the app is built, so its import hooks instrument Starlette, asyncpg and
redis. Web transactions are named by route template (WebTransaction/Uri/<template>).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from . import logs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NR_PREFIX = "Custom/Leaderboard/"
OTHER, UNMATCHED = "other", "unmatched"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# Label values that come from the network are clamped to these sets (no unbounded series from junk input).
ALLOWED = {
    "ws_in": frozenset({"auth", "submit", "subscribe", "unsubscribe", "ping", "invalid"}),
    "ws_out": frozenset(
        {"auth", "ack", "subscribed", "unsubscribed", "pong", "top", "rank", "error", "status", "season"}
    ),
    "result": frozenset({"accepted", "duplicate", "rejected"}),
    "method": frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}),
}

LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Metric:
    prom: Any  # a prometheus_client Counter, Gauge or Histogram
    nr: str  # New Relic name under Custom/Leaderboard/ ("" = Prometheus only)
    allowed: frozenset[str] | None  # values the first label may take (others become "other")


def _m(
    kind: type, name: str, doc: str, labels: tuple[str, ...] = (), nr: str = "", allowed: str = "", **kw: Any
) -> Metric:
    return Metric(kind(name, doc, list(labels), **kw), nr, ALLOWED.get(allowed))


# fmt: off
WS_CONNECTIONS = _m(Gauge, "leaderboard_ws_connections", "Open WebSocket connections",
                    nr="WebSocket/ConnectionDelta", multiprocess_mode="livesum")
WS_IN = _m(Counter, "leaderboard_ws_messages_in_total", "WebSocket frames received, by frame type", ("type",),
           nr="WebSocket/In", allowed="ws_in")
WS_OUT = _m(Counter, "leaderboard_ws_messages_out_total", "WebSocket frames sent, by frame type", ("type",),
            nr="WebSocket/Out", allowed="ws_out")
SUBMISSIONS = _m(Counter, "leaderboard_submissions_total", "Score submissions by result", ("result",),
                 nr="Submissions", allowed="result")
BATCH_SIZE = _m(Histogram, "leaderboard_batch_size", "Submissions per group-commit transaction",
                nr="Writer/BatchSize", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000))
BATCH_SECONDS = _m(Histogram, "leaderboard_batch_commit_seconds", "Duration of one group-commit transaction",
                   nr="Writer/CommitSeconds", buckets=LATENCY)
CACHE_WRITE_SECONDS = _m(Histogram, "leaderboard_cache_write_seconds", "Redis update after a committed batch",
                         nr="Cache/WriteSeconds", buckets=LATENCY)
PUSH_SECONDS = _m(Histogram, "leaderboard_push_latency_seconds",
                  "Time from the oldest change a flush carries to its frames being written (one per flush)",
                  nr="Push/LatencySeconds",
                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0))
SUBSCRIBERS = _m(Gauge, "leaderboard_subscribers", "Subscribed sockets per board and topic", ("board", "topic"),
                 nr="Subscribers", multiprocess_mode="livesum")
REDIS_FALLBACK = _m(Counter, "leaderboard_redis_fallback_total", "Operations served from Postgres because Redis "
                    "failed", ("op",), nr="Redis/Fallback")
REBUILDS = _m(Counter, "leaderboard_rebuilds_total", "Redis board rebuilds from Postgres by result",
              ("board", "result"))
REBUILD_SECONDS = _m(Histogram, "leaderboard_rebuild_seconds", "Duration of a board rebuild", ("board",),
                     nr="Cache/Rebuild", buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
CACHE_READY = _m(Gauge, "leaderboard_cache_ready", "1 when the board's Redis cache is complete, 0 while rebuilt",
                 ("board",), nr="Cache/Ready", multiprocess_mode="livemin")
SLOW_SOCKETS = _m(Counter, "leaderboard_slow_socket_closed_total", "Sockets closed with 1013 (fell behind)",
                  nr="WebSocket/SlowClosed")
GC_THAW_SECONDS = _m(Histogram, "leaderboard_gc_thaw_seconds", "One collection of what closed sockets left "
                     "(collector.py)", nr="Process/GCThaw", buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
HTTP_REQUESTS = _m(Counter, "leaderboard_http_requests_total", "HTTP requests by method, route template, status",
                   ("method", "route", "status"), allowed="method")
HTTP_SECONDS = _m(Histogram, "leaderboard_http_request_duration_seconds", "HTTP request latency",
                  ("method", "route", "status"), allowed="method", buckets=LATENCY)
# fmt: on

_children: dict[tuple[Any, ...], Any] = {}  # .labels() validates and locks on every call: cache the children


def _series(metric: Metric, labels: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    """The Prometheus child for these label values (clamped) and the values used."""
    if metric.allowed is not None and labels[0] not in metric.allowed:
        labels = (OTHER, *labels[1:])
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = (metric.prom.labels(*labels) if labels else metric.prom, labels)
    return child


def count(metric: Metric, n: float = 1, *labels: str) -> None:
    """Add n to a counter (or a gauge: n may be negative)."""
    series, labels = _series(metric, labels)
    series.inc(n)
    if _nr is not None and metric.nr:
        # n events as one aggregated sample, so New Relic's call_count is the number of events
        sample = {"count": n, "total": float(n), "min": 1.0, "max": 1.0, "sum_of_squares": float(n)}
        _nr_record(metric, labels, sample if n > 0 else n)


def observe(metric: Metric, value: float, *labels: str) -> None:
    series, labels = _series(metric, labels)
    series.observe(value)
    if _nr is not None and metric.nr:
        _nr_record(metric, labels, value)


def gauge(metric: Metric, value: float, *labels: str) -> None:
    series, labels = _series(metric, labels)
    series.set(value)
    if _nr is not None and metric.nr:
        _nr_record(metric, labels, value)


# ---- exposition ------------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def setup_multiprocess(directory: str | os.PathLike[str]) -> None:
    """In the parent process, before workers start: make `directory` empty and export it to workers."""
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)


def process_exit(pid: int | None = None) -> None:
    """A worker stops: drop its live gauges from the multiprocess aggregate."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid() if pid is None else pid)  # type: ignore[no-untyped-call]


def metrics_response() -> tuple[bytes, str]:
    """Body and content type of GET /metrics (the classic text format every Prometheus scrapes)."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


class HttpMiddleware:
    """Per HTTP request: a request id (a well-formed X-Request-ID, else a new one) bound to every log line and
    echoed in the response; count and latency by method, route template and status; the New Relic
    transaction named by route template. A WebSocket gets a `conn_id` for its log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            with logs.bound(conn_id=logs.new_id()) if scope["type"] == "websocket" else contextlib.nullcontext():
                await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = rid if _REQUEST_ID.match(rid) else logs.new_id()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
                if _nr is not None:  # the agent ends the transaction with the last body chunk: name it now
                    name_transaction(_route(scope))
            await send(message)

        try:
            with logs.bound(request_id=rid):
                await self.app(scope, receive, send_wrapper)
        finally:
            route = _route(scope)
            if _nr is not None and status == 500:  # an exception: the 500 is sent by an outer middleware
                name_transaction(route)
            labels = (scope["method"], route, str(status))
            count(HTTP_REQUESTS, 1, *labels)
            observe(HTTP_SECONDS, time.perf_counter() - start, *labels)


def _route(scope: Scope) -> str:
    """The path template of the route Starlette matched (never the raw path), or 'unmatched'."""
    fmt = getattr(scope.get("route"), "path_format", None)
    return fmt if isinstance(fmt, str) and fmt else UNMATCHED


# ---- New Relic -------------------------------------------------------------------------------------------

_nr: ModuleType | None = None  # the `newrelic.agent` module when active
_nr_app: Any = None


def _nr_record(metric: Metric, labels: tuple[str, ...], value: float | dict[str, float]) -> None:
    assert _nr is not None
    (_nr.current_transaction() or _nr_app).record_custom_metric(NR_PREFIX + "/".join((metric.nr, *labels)), value)


def newrelic_enabled() -> bool:
    return bool(os.environ.get("NEW_RELIC_LICENSE_KEY") or os.environ.get("NEW_RELIC_CONFIG_FILE"))


def init_newrelic() -> bool:
    """Start the New Relic agent if configured (call before the app is built); return whether it runs.
    With NEW_RELIC_CONFIG_FILE it reads that ini file; otherwise the NEW_RELIC_* environment variables."""
    global _nr, _nr_app
    if _nr is None and newrelic_enabled():
        import newrelic.agent as agent

        agent.initialize(os.environ.get("NEW_RELIC_CONFIG_FILE") or None, os.environ.get("NEW_RELIC_ENVIRONMENT"))
        _nr_app = agent.register_application()  # without a timeout: connects in the background
        _nr = agent
    return _nr is not None


def wrap_asgi(app: ASGIApp) -> ASGIApp:
    """The app wrapped in New Relic's ASGI wrapper when the agent runs, else the app itself."""
    return app if _nr is None else _nr.ASGIApplicationWrapper(app)


def background_task(name: str) -> contextlib.AbstractContextManager[Any]:
    """A New Relic background transaction around one unit of work (a function trace inside a transaction);
    a no-op when New Relic is off."""
    if _nr is None:
        return contextlib.nullcontext()
    if _nr.current_transaction() is not None:
        return _nr.FunctionTrace(name, group="Leaderboard")  # type: ignore[no-any-return]
    return _nr.BackgroundTask(_nr_app, name=name, group="Leaderboard")  # type: ignore[no-any-return]


def name_transaction(route: str) -> None:
    if _nr is not None:  # priority above the agent's Starlette hooks (1-2), which name by endpoint function
        _nr.set_transaction_name(route, group="Uri", priority=10)
