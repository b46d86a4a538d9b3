"""create_app(settings): the Starlette app. The lifespan owns the pools, the writer, the fan-out and drain.

transports (http.py, ws.py) -> service.py -> ranks.py (read model) / writer.py -> cache.py / store.py
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from . import http, migrations, openapi, partitions, redisconn, ws
from . import observability as obs
from .auth import Authenticator, TokenRules
from .cache import Cache
from .errors import NotFound, Refused, Unavailable
from .fanout import Hub
from .health import Health
from .limits import AuthFailures, SubmitLimit
from .logs import configure_logging, register_secret
from .outbox import watchdog
from .pipe import Pipe
from .protocol import encode
from .ranks import Ranks
from .service import Service
from .settings import ConfigError, Settings, load_settings
from .store import DB_DOWN, Store
from .writer import Writer

log = logging.getLogger(__name__)

REPO_DIST = Path(__file__).resolve().parents[2] / "client" / "dist"


@dataclass
class Runtime:
    """Everything the lifespan starts; it satisfies http.Context and ws.Context."""

    settings: Settings
    pool: asyncpg.Pool
    redis: redisconn.Client
    listener: redisconn.Client
    store: Store
    ranks: Ranks
    writer: Writer
    hub: Hub
    service: Service
    auth: Authenticator
    health: Health
    sockets: ws.Sockets = field(default_factory=ws.Sockets)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, dsn: str, redis_url: str) -> Runtime:
        applied = await migrations.apply_migrations(dsn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        # reset=_keep: we never change session state (no SET, LISTEN or session advisory locks), so a connection
        # goes back to the pool without asyncpg's default reset query, a round trip per use.
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=settings.db_pool_size, reset=_keep)
        # Commands time out (a hung Redis must not hang a request: we fall back to Postgres);
        # the pub/sub connections idle by design, so they get their own client without a read timeout.
        cluster = await redisconn.detect(redis_url, settings.redis_cluster)
        client = redisconn.connect(
            redis_url, cluster, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=1.0
        )
        listener = redisconn.connect(redis_url, cluster, decode_responses=True, health_check_interval=15)
        log.info("redis: %s", "a Redis Cluster (sharded pub/sub)" if cluster else "a single Redis")
        store = Store(pool, timedelta(days=settings.idempotency_window_days))
        ranks = Ranks(Cache(client, None if cluster else Pipe(redis_url)), store, settings.rebuild_batch)
        rate = SubmitLimit(ranks.cache, settings.player_submit_rate) if settings.player_submit_rate else None
        writer = Writer(store, ranks, settings.batch_max, settings.write_concurrency, rate)
        rules = TokenRules(
            settings.player_token_secret, settings.player_token_max_lifetime_s, settings.player_token_audience,
            settings.player_token_issuer,
        )  # fmt: skip
        rt = cls(
            settings, pool, client, listener, store, ranks, writer,
            Hub(listener, ranks, settings.push_interval, store.forget, settings.unsubscribe_grace_s),
            Service(store, ranks, writer),
            Authenticator(pool, rules, AuthFailures(settings.auth_failures_max, settings.auth_failure_window_s)),
            Health(dsn, client),
        )  # fmt: skip
        with contextlib.suppress(*DB_DOWN):
            await rt.auth.refresh()
        rt.tasks += [
            asyncio.create_task(writer.run(), name="writer"),
            asyncio.create_task(rt.hub.listen(), name="fanout-listener"),
            asyncio.create_task(ranks.watch(), name="redis-watch"),
            asyncio.create_task(ranks.settle(), name="cache-debts"),
            asyncio.create_task(ranks.verify_all(settings.verify_interval_s), name="verify"),
            asyncio.create_task(rt.service.run_schedule(), name="seasons"),
            asyncio.create_task(partitions.run(pool), name="log-partitions"),
            asyncio.create_task(rt.auth.run(rt.sockets.revoked), name="api-keys"),
            asyncio.create_task(rt.health.run(lambda: rt.sockets.broadcast_status(rt.health.status())), name="health"),
            asyncio.create_task(watchdog(rt.sockets.outboxes, settings.slow_socket_timeout_s), name="watchdog"),
        ]
        try:
            boards = await store.boards()
        except DB_DOWN as exc:
            log.warning("Postgres unreachable at start-up (%s)", exc)
        else:
            await ranks.warm(boards)
        return rt

    async def drain(self) -> None:
        """Stop taking work, let received submissions commit and be acked, close sockets with 1012."""
        if self.sockets.draining:
            return
        await self.sockets.drain(self.settings.drain_timeout_s)
        await self.writer.close()

    async def stop(self) -> None:
        await self.drain()
        writer_task, *others = self.tasks
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer_task, self.settings.drain_timeout_s)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.hub.close()
        await self.ranks.close()
        await self.redis.aclose()
        await self.listener.aclose()
        await self.health.close()
        await self.pool.close()
        obs.process_exit()


async def _keep(con: asyncpg.Connection) -> None:
    """A pool connection needs no reset: see Runtime.start."""


def _install_drain_handler(rt: Runtime) -> None:
    """On SIGTERM/SIGINT drain first, then hand the signal to uvicorn's own handler (which exits)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            async def drain_then_exit() -> None:
                try:
                    await rt.drain()
                finally:
                    previous(signum, frame)

            if rt.sockets.draining:
                previous(signum, frame)
            else:
                loop.call_soon_threadsafe(lambda: rt.tasks.append(loop.create_task(drain_then_exit())))

        signal.signal(sig, handler)


def create_app(settings: Settings, *, drain_on_signal: bool = False) -> Starlette:
    """The ASGI app. `settings.database_url` and `redis_url` must be set (the CLI resolves embedded ones)."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("create_app needs database_url and redis_url (leaderboard serve starts embedded ones)")
    dsn, redis_url = settings.database_url, settings.redis_url
    register_secret(settings.player_token_secret)
    started: list[Runtime] = []

    def runtime() -> Runtime:
        if not started:
            raise Unavailable("the server is starting; retry")
        return started[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = await Runtime.start(settings, dsn, redis_url)
        started.append(rt)
        if drain_on_signal:
            _install_drain_handler(rt)
        # Everything allocated so far lives as long as the process: move it out of the collector's way, so a
        # full collection does not walk it again on the hot path (measured: ~10% CPU per request, see
        # docs/performance.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await rt.stop()

    async def readyz(request: Request) -> Response:
        return await _readyz(runtime())

    endpoints: dict[str, Callable[[Request], Awaitable[Response]]] = {
        **http.handlers(runtime),
        "healthz": _healthz,
        "readyz": readyz,
        "metrics": _metrics,
        "openapi": _openapi,
    }
    # One Starlette route per path, so a 405 lists in `Allow` every method the path has (GET and POST
    # /api/leaderboards), not only those of the first route that matched the path.
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for r in openapi.ROUTES:
        by_path.setdefault(r.path, {})[r.method] = endpoints[r.name]
    routes: list[Route | WebSocketRoute] = [
        Route(path, _by_method(handlers), methods=list(handlers)) for path, handlers in by_path.items()
    ]
    routes.append(WebSocketRoute("/ws", ws.endpoint(runtime)))
    routes.append(Route("/ws", _not_upgraded))  # (a Route matches HTTP only, a WebSocketRoute WebSockets only)
    hot = [Route(r.path, endpoints[r.name], methods=[r.method]) for r in openapi.ROUTES if r.name in http.HOT]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(obs.HttpMiddleware), *_cors(settings), Middleware(http.Direct, routes=hot)],
        exception_handlers={
            Refused: http.refused,
            HTTPException: http.http_error,
            ClientDisconnect: _gone,
            Exception: _crash,
        },
    )
    static = settings.static_dir or (REPO_DIST if REPO_DIST.is_dir() else None)
    if static is not None:
        # The router's fallback, so a wrong method on an API route still answers 405, not the UI.
        app.router.default = _spa(Path(static))
    return app


def _by_method(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def endpoint(request: Request) -> Response:  # the route has checked the method (HEAD = GET)
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return endpoint


def _cors(settings: Settings) -> list[Middleware]:
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"], expose_headers=["x-request-id"],
            max_age=600,
        )
    ]  # fmt: skip


def _gone(request: Request, exc: Exception) -> Response:
    """The client went away (or was cut off by guard.py) while we read its body: nothing to answer, no error."""
    log.debug("client disconnected while sending %s", request.url.path)
    return Response(status_code=400)


def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return http.problem(Refused("unexpected server error; it has been logged", code="internal_error", status=500))


_DOCUMENT: list[bytes] = []


async def _openapi(request: Request) -> Response:
    if not _DOCUMENT:
        _DOCUMENT.append(encode(openapi.document()))
    return Response(_DOCUMENT[0], media_type="application/json")


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _readyz(rt: Runtime) -> Response:
    if rt.sockets.draining:
        return http.problem(Unavailable("draining: this instance is shutting down"))
    checks = await rt.health.probe()
    failing = {k: v for k, v in checks.items() if v != "ok"}
    if failing:
        return http.problem(Unavailable("; ".join(f"{k}: {v}" for k, v in failing.items())))
    return JSONResponse({"status": "ready", "checks": checks})


async def _not_upgraded(request: Request) -> Response:
    """A browser or curl at the WebSocket endpoint: say what it is rather than "no such route"."""
    detail = "/ws is the WebSocket endpoint: connect with a WebSocket client (docs/protocol.md)"
    headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    return http.problem(Refused(detail, code="upgrade_required", status=426), headers)


async def _metrics(request: Request) -> Response:
    body, ctype = obs.metrics_response()
    return Response(body, media_type=ctype)


def _spa(root: Path) -> ASGIApp:
    """Serve the built UI: files as they are, index.html for any other non-API GET (client-side routes)."""
    root = root.resolve()

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].lstrip("/")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or path.startswith(("api/", "ws")):
            response: Response = http.problem(NotFound("no such route"))
        else:
            target = (root / path).resolve()
            index = root / "index.html"
            if path and target.is_file() and target.is_relative_to(root):
                response = FileResponse(target)
            elif index.is_file():
                response = FileResponse(index, headers={"Cache-Control": "no-cache"})
            else:
                response = http.problem(NotFound("the UI is not built (make ui)"))
        await response(scope, receive, send)

    return serve


def factory() -> ASGIApp:
    """uvicorn --factory entry point for `leaderboard serve`: settings from the environment (a bad one is one
    line and exit 2, not a traceback: `serve` checks them before uvicorn starts, this covers uvicorn run by hand)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format, access_log=settings.access_log)
    if obs.init_newrelic():
        return obs.wrap_asgi(create_app(settings, drain_on_signal=True))
    return create_app(settings, drain_on_signal=True)
