"""Metrics facade for the hot path: Prometheus always, New Relic when it is configured.

Every function here is cheap: an in-memory counter/gauge/histogram update (prometheus-client's own lock)
and, when the New Relic agent is active, an in-memory custom metric. Nothing here does I/O.

Prometheus multiprocess mode (``leaderboard serve --workers N``): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory *before* ``prometheus_client`` is first imported in any worker (``setup_multiprocess()``
does this in the parent process); ``metrics_response()`` then aggregates every worker's files, and
``process_exit()`` should be called when a worker stops so that its live gauges disappear.

New Relic is optional: ``init_newrelic()`` imports and initializes the agent only when
``NEW_RELIC_LICENSE_KEY`` or ``NEW_RELIC_CONFIG_FILE`` is set, and must run before the app (and Starlette,
asyncpg, redis) are imported/built so the agent's import hooks can instrument them. HTTP transactions are
named by route template by ``MetricsMiddleware`` (``WebTransaction/Uri/api/leaderboard/rank/{user_id}``).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
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

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NR_PREFIX = "Custom/Leaderboard/"
UNMATCHED = "unmatched"

# Label values that come from the network are clamped to these sets so that a client sending
# {"type": "<random>"} cannot create unbounded time series.
WS_IN_KINDS = frozenset({"auth", "submit", "subscribe", "unsubscribe", "ping", "invalid"})
WS_OUT_KINDS = frozenset({"auth", "ack", "subscribed", "unsubscribed", "pong", "top", "rank", "error"})
SUBMISSION_RESULTS = frozenset({"accepted", "duplicate", "rejected"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
_REBUILD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

# --- Prometheus metrics (default registry; in multiprocess mode values live in mmap files) -------------

WS_CONNECTIONS = Gauge(
    "leaderboard_ws_connections",
    "Open WebSocket connections",
    multiprocess_mode="livesum",
)
WS_MESSAGES_IN = Counter("leaderboard_ws_messages_in_total", "WebSocket frames received, by frame type", ["type"])
WS_MESSAGES_OUT = Counter("leaderboard_ws_messages_out_total", "WebSocket frames sent, by frame type", ["type"])
SUBMISSIONS = Counter(
    "leaderboard_submissions_total", "Score submissions by result (accepted|duplicate|rejected)", ["result"]
)
BATCH_SIZE = Histogram("leaderboard_batch_size", "Submissions per group-commit transaction", buckets=_BATCH_BUCKETS)
BATCH_COMMIT_SECONDS = Histogram(
    "leaderboard_batch_commit_seconds",
    "Duration of one group-commit transaction (BEGIN..COMMIT)",
    buckets=_LATENCY_BUCKETS,
)
CACHE_WRITE_SECONDS = Histogram(
    "leaderboard_cache_write_seconds",
    "Duration of the Redis update after a committed batch",
    buckets=_LATENCY_BUCKETS,
)
PUSH_LATENCY_SECONDS = Histogram(
    "leaderboard_push_latency_seconds",
    "Time from a board change to the push being written to a socket (one observation per socket)",
    buckets=_PUSH_BUCKETS,
)
SUBSCRIBERS = Gauge(
    "leaderboard_subscribers",
    "Subscribed sockets per board and topic",
    ["board", "topic"],
    multiprocess_mode="livesum",
)
REDIS_FALLBACK = Counter(
    "leaderboard_redis_fallback_total", "Operations served from Postgres because Redis failed", ["op"]
)
REBUILDS = Counter("leaderboard_rebuilds_total", "Redis board rebuilds from Postgres by result", ["board", "result"])
REBUILD_SECONDS = Histogram(
    "leaderboard_rebuild_seconds", "Duration of a board rebuild", ["board"], buckets=_REBUILD_BUCKETS
)
CACHE_READY = Gauge(
    "leaderboard_cache_ready",
    "1 when the board's Redis cache is complete and serves reads, 0 while it is rebuilt",
    ["board"],
    multiprocess_mode="livemin",
)
SLOW_SOCKETS_CLOSED = Counter(
    "leaderboard_slow_socket_closed_total", "Sockets closed with 1013 because they fell behind"
)
HTTP_REQUESTS = Counter(
    "leaderboard_http_requests_total",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "leaderboard_http_request_duration_seconds",
    "HTTP request latency by method, route template and status",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)

# Children cached per label tuple: .labels() takes the metric lock and validates every call.
_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = metric.labels(*labels)
        _children[key] = child
    return child


def _observe_n(hist: Any, value: float, n: int) -> None:
    """Record `n` identical observations in O(1) (one per socket of a fan-out)."""
    if n <= 0:
        return
    if n == 1:
        hist.observe(value)
        return
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None:  # prometheus-client internals changed
        for _ in range(n):
            hist.observe(value)
        return
    total.inc(value * n)
    buckets[bisect.bisect_left(bounds, value)].inc(n)


# --- New Relic state (set by init_newrelic) ------------------------------------------------------------

_nr: ModuleType | None = None  # the `newrelic.agent` module when active
_nr_app: Any = None


def _nr_metric(name: str, value: float | dict[str, float]) -> None:
    assert _nr is not None
    txn = _nr.current_transaction()
    if txn is not None:
        txn.record_custom_metric(NR_PREFIX + name, value)
    elif _nr_app is not None:
        _nr_app.record_custom_metric(NR_PREFIX + name, value)


def _nr_count(name: str, n: int) -> None:
    # A count of n as one aggregated sample, so NR's call_count is the number of events.
    _nr_metric(name, {"count": n, "total": float(n), "min": 1.0, "max": 1.0, "sum_of_squares": float(n)})


def _nr_timing(name: str, seconds: float, n: int = 1) -> None:
    if n == 1:
        _nr_metric(name, seconds)
    else:
        _nr_metric(
            name,
            {
                "count": n,
                "total": seconds * n,
                "min": seconds,
                "max": seconds,
                "sum_of_squares": seconds * seconds * n,
            },
        )


# --- Facade ----------------------------------------------------------------------------------------


def ws_connected(delta: int) -> None:
    """+1 when a WebSocket is accepted, -1 when it closes."""
    WS_CONNECTIONS.inc(delta)
    if _nr is not None:
        _nr_metric("WebSocket/ConnectionDelta", float(delta))


def ws_message_in(kind: str) -> None:
    """One client frame received (kind = frame type, or 'invalid' for unparseable frames)."""
    if kind not in WS_IN_KINDS:
        kind = OTHER
    _child(WS_MESSAGES_IN, kind).inc()
    if _nr is not None:
        _nr_count("WebSocket/In/" + kind, 1)


def ws_message_out(kind: str, n: int = 1) -> None:
    """`n` server frames of one type sent (a fan-out sends the same frame to n sockets)."""
    if kind not in WS_OUT_KINDS:
        kind = OTHER
    _child(WS_MESSAGES_OUT, kind).inc(n)
    if _nr is not None:
        _nr_count("WebSocket/Out/" + kind, n)


def submissions(result: str, n: int = 1) -> None:
    """`n` submissions finished with result accepted|duplicate|rejected."""
    if result not in SUBMISSION_RESULTS:
        result = OTHER
    _child(SUBMISSIONS, result).inc(n)
    if _nr is not None:
        _nr_count("Submissions/" + result, n)


def batch_committed(size: int, commit_seconds: float) -> None:
    """One group-commit transaction of `size` submissions took `commit_seconds`."""
    BATCH_SIZE.observe(size)
    BATCH_COMMIT_SECONDS.observe(commit_seconds)
    if _nr is not None:
        _nr_metric("Writer/BatchSize", float(size))
        _nr_timing("Writer/CommitSeconds", commit_seconds)


def cache_written(seconds: float) -> None:
    """The Redis update for one committed batch took `seconds`."""
    CACHE_WRITE_SECONDS.observe(seconds)
    if _nr is not None:
        _nr_timing("Cache/WriteSeconds", seconds)


def push(latency_seconds: float, n: int = 1) -> None:
    """A push reached `n` sockets, `latency_seconds` after the change it carries."""
    _observe_n(PUSH_LATENCY_SECONDS, latency_seconds, n)
    if _nr is not None:
        _nr_timing("Push/LatencySeconds", latency_seconds, n)


def subscribers(board: str, topic: str, count: int) -> None:
    """This process now has `count` sockets subscribed to (board, topic)."""
    _child(SUBSCRIBERS, board, topic).set(count)
    if _nr is not None:
        _nr_metric(f"Subscribers/{board}/{topic}", float(count))


def redis_fallback(op: str) -> None:
    """An operation (e.g. 'rank', 'top', 'ack') was answered from Postgres because Redis failed."""
    _child(REDIS_FALLBACK, op).inc()
    if _nr is not None:
        _nr_count("Redis/Fallback/" + op, 1)


def rebuild(board: str, result: str, seconds: float) -> None:
    """A rebuild of `board`'s Redis cache from Postgres ended with `result` after `seconds`."""
    _child(REBUILDS, board, result).inc()
    _child(REBUILD_SECONDS, board).observe(seconds)
    if _nr is not None:
        _nr_timing(f"Cache/Rebuild/{result}", seconds)


def cache_ready(board: str, ready: bool) -> None:
    """Whether `board`'s Redis cache is complete (reads served from Redis) or being rebuilt."""
    _child(CACHE_READY, board).set(1 if ready else 0)
    if _nr is not None:
        _nr_metric(f"Cache/Ready/{board}", 1.0 if ready else 0.0)


def slow_socket_closed() -> None:
    """A socket was closed with 1013 because it did not read its pushes in time."""
    SLOW_SOCKETS_CLOSED.inc()
    if _nr is not None:
        _nr_count("WebSocket/SlowClosed", 1)


# --- Exposition --------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The Prometheus multiprocess directory, or None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def setup_multiprocess(directory: str | os.PathLike[str]) -> None:
    """In the parent process, before workers start: make `directory` empty and export it to workers."""
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)


def process_exit(pid: int | None = None) -> None:
    """Called when a worker exits: drop its live gauges from the multiprocess aggregate."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    mp: Any = multiprocess  # untyped in prometheus-client
    mp.mark_process_dead(os.getpid() if pid is None else pid)


def metrics_response() -> tuple[bytes, str]:
    """Body and content type for GET /metrics (aggregated over workers in multiprocess mode).

    The classic text format (version 0.0.4) is what every Prometheus version scrapes; all our names are
    legacy-valid, so nothing is lost against the newer 1.0.0 content type.
    """
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        mp: Any = multiprocess  # untyped in prometheus-client
        mp.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4


# --- HTTP middleware ----------------------------------------------------------------------------------


def _resolve(routes: Any, scope: Scope, depth: int = 0) -> str | None:
    """Walk (possibly mounted) routes like Starlette's router does and build the full path template."""
    from starlette.routing import Match, Mount

    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            if route.routes and depth < 8:
                inner = _resolve(route.routes, {**scope, **child}, depth + 1)
                template = route.path + inner if inner is not None else None
            else:
                template = route.path_format
        else:
            template = getattr(route, "path_format", None)
        if match is Match.FULL:
            return template
        if partial is None:
            partial = template
    return partial


def _route_template(scope: Scope, request: Scope) -> str:
    """Path template of the route Starlette's router matched, or 'unmatched'.

    Starlette's router records the matched route in scope['route']. Without mounts its `path_format` is
    the template; with mounts (root_path grew) the route is relative, so the routes are walked again from
    the top-level router (scope['router']) on a copy of the request's original path.
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    if scope.get("root_path", "") == request["root_path"] and not hasattr(route, "routes"):
        fmt = getattr(route, "path_format", None)
        return fmt if isinstance(fmt, str) and fmt else UNMATCHED
    router = scope.get("router")
    template = _resolve(getattr(router, "routes", ()), request) if router is not None else None
    return template or UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware: HTTP request count and latency by method, route template and status.

    Also names the New Relic web transaction after the route template when the agent is active.
    WebSocket and lifespan scopes pass straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # What routing needs, before the router mutates scope (root_path grows inside mounts).
        request: Scope = {
            "type": "http",
            "path": scope.get("path", "/"),
            "root_path": scope.get("root_path", ""),
            "method": scope.get("method", "GET"),
            "headers": scope.get("headers", []),
        }
        status = 500
        route: str | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if _nr is not None:
                    # The agent ends the web transaction with the last body chunk, so name it now.
                    route = _route_template(scope, request)
                    name_transaction(route)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if route is None:
                route = _route_template(scope, request)
                if _nr is not None:  # e.g. an exception: the 500 is sent by an outer middleware
                    name_transaction(route)
            method = request["method"]
            if method not in HTTP_METHODS:
                method = OTHER
            labels = (method, route, str(status))
            _child(HTTP_REQUESTS, *labels).inc()
            _child(HTTP_REQUEST_SECONDS, *labels).observe(time.perf_counter() - start)


# --- New Relic ----------------------------------------------------------------------------------------


def newrelic_enabled() -> bool:
    """True iff NEW_RELIC_LICENSE_KEY or NEW_RELIC_CONFIG_FILE is set (non-empty)."""
    return bool(os.environ.get("NEW_RELIC_LICENSE_KEY") or os.environ.get("NEW_RELIC_CONFIG_FILE"))


def newrelic_active() -> bool:
    """Whether init_newrelic() initialized the agent in this process."""
    return _nr is not None


def init_newrelic() -> bool:
    """Initialize the New Relic agent if configured (call before the app is built); returns whether active.

    With NEW_RELIC_CONFIG_FILE the agent reads that ini file (NEW_RELIC_ENVIRONMENT picks a section);
    otherwise it is configured from NEW_RELIC_* environment variables (license key, app name, ...).
    """
    global _nr, _nr_app
    if _nr is not None:
        return True
    if not newrelic_enabled():
        return False
    import newrelic.agent as agent

    config_file = os.environ.get("NEW_RELIC_CONFIG_FILE") or None
    agent.initialize(config_file, os.environ.get("NEW_RELIC_ENVIRONMENT") or None)
    # register_application() without timeout does not block: the agent connects in the background.
    _nr_app = agent.register_application()
    _nr = agent
    return True


def wrap_asgi(app: ASGIApp) -> ASGIApp:
    """Wrap the ASGI app in the New Relic ASGI wrapper when the agent is active, else return it unchanged."""
    if _nr is None:
        return app
    wrapped: ASGIApp = _nr.ASGIApplicationWrapper(app)
    return wrapped


@contextlib.contextmanager
def _background_task(name: str) -> Iterator[None]:
    assert _nr is not None
    with _nr.BackgroundTask(_nr_app, name=name, group="Leaderboard"):
        yield


def background_task(name: str) -> contextlib.AbstractContextManager[None]:
    """A New Relic background transaction around one unit of work; a no-op when New Relic is off.

    Inside an active transaction (e.g. a WebSocket message handled under the ASGI wrapper) the agent
    records a function trace instead of a nested transaction.
    """
    if _nr is None:
        return contextlib.nullcontext()
    if _nr.current_transaction() is not None:
        trace: contextlib.AbstractContextManager[None] = _nr.FunctionTrace(name, group="Leaderboard")
        return trace
    return _background_task(name)


def record_event(kind: str, attrs: dict[str, Any]) -> None:
    """A New Relic custom event of type `kind` (e.g. 'LeaderboardRebuild'); a no-op when New Relic is off."""
    if _nr is None:
        return
    txn = _nr.current_transaction()
    if txn is not None:
        txn.record_custom_event(kind, attrs)
    elif _nr_app is not None:
        _nr_app.record_custom_event(kind, attrs)


def name_transaction(route: str) -> None:
    """Name the current New Relic web transaction after the route template (WebTransaction/Uri/<route>)."""
    if _nr is None:
        return
    # Priority above the agent's Starlette hooks (1-2), which name by endpoint function.
    _nr.set_transaction_name(route, group="Uri", priority=10)
