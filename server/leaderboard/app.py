"""create_app(settings): the Starlette app. The lifespan owns the pools, the writer, the fan-out and drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from . import http, migrations, openapi
from . import observability as obs
from .auth import Authenticator
from .cache import Cache
from .fanout import Hub
from .logs import RequestIdMiddleware, configure_logging
from .outbox import watchdog
from .protocol import Refused
from .service import Leaderboard
from .settings import Settings
from .store import DB_DOWN, Store
from .writer import Writer
from .ws import Connection, websocket_endpoint

log = logging.getLogger(__name__)

REPO_DIST = Path(__file__).resolve().parents[2] / "client" / "dist"


@dataclass
class Services:
    """Everything the lifespan creates; endpoints reach it through app.state.services."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    store: Store
    cache: Cache
    writer: Writer
    hub: Hub
    lb: Leaderboard
    auth: Authenticator
    connections: set[Connection] = field(default_factory=set)
    draining: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def drain(self) -> None:
        """Stop taking work, let received submissions commit and be acked, close sockets with 1012."""
        if self.draining:
            return
        self.draining = True
        timeout = self.settings.drain_timeout_s
        log.info("draining: %d sockets", len(self.connections))
        conns = list(self.connections)
        if conns:
            await asyncio.wait([asyncio.create_task(c.shutdown(timeout)) for c in conns], timeout=timeout)
        await self.writer.close()


async def _watch_redis(svc: Services) -> None:
    """Rebuild the boards that missed writes while Redis was away, once it answers again."""
    while True:
        await asyncio.sleep(1.0)
        if not svc.cache.stale:
            continue
        try:
            await svc.redis.ping()
        except (RedisError, OSError):
            continue
        for board in list(svc.cache.stale):
            svc.cache.ensure_rebuild(board)


def _install_drain_handler(svc: Services) -> None:
    """On SIGTERM/SIGINT drain first, then hand the signal to uvicorn's own handler (which exits)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            async def drain_then_exit() -> None:
                try:
                    await svc.drain()
                finally:
                    previous(signum, frame)

            if svc.draining:
                previous(signum, frame)
            else:
                loop.call_soon_threadsafe(lambda: svc.tasks.append(loop.create_task(drain_then_exit())))

        signal.signal(sig, handler)


def create_app(settings: Settings, *, drain_on_signal: bool = False) -> Starlette:
    """The ASGI app. `settings.database_url` and `redis_url` must be set (the CLI resolves embedded ones)."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("create_app needs database_url and redis_url (leaderboard serve starts embedded ones)")
    dsn, redis_url = settings.database_url, settings.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        applied = await migrations.apply_migrations(dsn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=settings.db_pool_size)
        # Commands time out (a hung Redis must not hang a request: we fall back to Postgres);
        # the pub/sub connection idles by design, so it gets its own client without a read timeout.
        client = aioredis.from_url(redis_url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=1.0)
        listener = aioredis.from_url(redis_url, decode_responses=True, health_check_interval=15)
        store = Store(pool)
        cache = Cache(client, store, settings.rebuild_batch)
        writer = Writer(store, cache, settings.batch_max, settings.write_concurrency)
        lb = Leaderboard(store, cache, writer)
        hub = Hub(listener, cache, store, lb, settings.push_interval)
        svc = Services(
            settings,
            pool,
            client,
            store,
            cache,
            writer,
            hub,
            lb,
            Authenticator(pool, settings.player_token_secret),
        )
        app.state.services = svc
        writer_task = asyncio.create_task(writer.run(), name="writer")
        svc.tasks += [
            asyncio.create_task(hub.listen(), name="fanout-listener"),
            asyncio.create_task(_watch_redis(svc), name="redis-watch"),
            asyncio.create_task(
                watchdog(lambda: (c.outbox for c in svc.connections), settings.slow_socket_timeout_s),
                name="slow-socket-watchdog",
            ),
        ]
        try:
            await cache.warm(await store.boards())
        except (RedisError, OSError) as exc:
            log.warning("Redis unreachable at start-up (%s): reads use Postgres until it is back", exc)
            cache.stale.update(b.id for b in await store.boards())
        if drain_on_signal:
            _install_drain_handler(svc)
        try:
            yield
        finally:
            await svc.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer_task, settings.drain_timeout_s)
            for task in svc.tasks:
                task.cancel()
            await asyncio.gather(*svc.tasks, return_exceptions=True)
            await hub.close()
            await cache.close()
            await client.aclose()
            await listener.aclose()
            await pool.close()
            obs.process_exit()

    api = http.make_routes()
    routes = [
        Route("/api/leaderboard/submit", api["submit"], methods=["POST"]),
        Route("/api/leaderboard/top", api["top"], methods=["GET"]),
        Route("/api/leaderboard/rank/{user_id}", api["rank"], methods=["GET"]),
        Route("/api/leaderboards", api["list_boards"], methods=["GET"]),
        Route("/api/leaderboards", api["create_board"], methods=["POST"]),
        Route("/api/leaderboards/{board_id}", api["get_board"], methods=["GET"]),
        Route("/api/openapi.json", _openapi, methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        WebSocketRoute("/ws", websocket_endpoint),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIdMiddleware), Middleware(obs.MetricsMiddleware), *_cors(settings)],
        exception_handlers={
            Refused: http.refused,
            http._Invalid: http.invalid,
            HTTPException: http.http_error,
            Exception: _crash,
        },
    )
    static = settings.static_dir or (REPO_DIST if REPO_DIST.is_dir() else None)
    if static is not None:
        # The router's fallback, so a wrong method on an API route still answers 405, not the UI.
        app.router.default = _spa(Path(static))
    return app


def _cors(settings: Settings) -> list[Middleware]:
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"], expose_headers=["x-request-id"],
            max_age=600,
        )
    ]  # fmt: skip


def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return http.problem(500, "internal_error", "unexpected server error; it has been logged")


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi.document())


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
    svc: Services = request.app.state.services
    checks: dict[str, str] = {}
    if svc.draining:
        return http.problem(503, "unavailable", "draining: this instance is shutting down")
    try:
        async with svc.pool.acquire() as con:
            missing = await migrations.pending(con)
        checks["postgres"] = "ok"
        checks["migrations"] = "ok" if not missing else "pending: " + ", ".join(missing)
    except (*DB_DOWN, TimeoutError) as exc:
        checks["postgres"] = f"unreachable: {exc.__class__.__name__}"
    try:
        await svc.redis.ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable: {exc.__class__.__name__}"
    failing = {k: v for k, v in checks.items() if v != "ok"}
    if failing or "migrations" not in checks:
        return http.problem(503, "unavailable", "; ".join(f"{k}: {v}" for k, v in failing.items()))
    return JSONResponse({"status": "ready", "checks": checks})


async def _metrics(request: Request) -> Response:
    body, ctype = obs.metrics_response()
    return Response(body, media_type=ctype)


def _spa(root: Path) -> ASGIApp:
    """Serve the built UI: files as they are, index.html for any other non-API GET (client-side routes)."""
    root = root.resolve()

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].lstrip("/")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or path.startswith(("api/", "ws")):
            response: Response = http.problem(404, "not_found", "no such route")
        else:
            target = (root / path).resolve()
            index = root / "index.html"
            if path and target.is_file() and target.is_relative_to(root):
                response = FileResponse(target)
            elif index.is_file():
                response = FileResponse(index, headers={"Cache-Control": "no-cache"})
            else:
                response = http.problem(404, "not_found", "the UI is not built (make ui)")
        await response(scope, receive, send)

    return serve


def factory() -> ASGIApp:
    """uvicorn --factory entry point for `leaderboard serve`: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if obs.init_newrelic():
        return obs.wrap_asgi(create_app(settings, drain_on_signal=True))
    return create_app(settings, drain_on_signal=True)
