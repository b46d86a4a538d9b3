"""`leaderboard serve | migrate | keys | rebuild | demo`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .settings import Settings


class Backends:
    """Resolve Postgres and Redis: the configured URLs, or embedded servers under the data dir."""

    def __init__(self, settings: Settings, *, redis: bool = True, own: bool = False) -> None:
        self.settings, self.want_redis, self.own = settings, redis, own
        self._pg: object | None = None
        self._redis: object | None = None

    def __enter__(self) -> Settings:
        from .embedded import EmbeddedPostgres, EmbeddedRedis

        s = self.settings
        updates: dict[str, str] = {}
        if not s.database_url:
            pg = EmbeddedPostgres(s.data_dir)
            updates["database_url"] = pg.start()
            self._pg = pg
            _say(f"postgres: embedded, data in {pg.pgdata} ({updates['database_url']})")
        else:
            _say(f"postgres: {_redact(s.database_url)}")
        if self.want_redis:
            if not s.redis_url:
                r = EmbeddedRedis(s.data_dir)
                updates["redis_url"] = r.start()
                self._redis = r
                _say(f"redis: embedded valkey, data in {r.dir} ({updates['redis_url']})")
            else:
                _say(f"redis: {_redact(s.redis_url)}")
        return s.model_copy(update=updates)

    def __exit__(self, *exc: object) -> None:
        if not self.own:
            return
        for server in (self._redis, self._pg):
            if server is not None:
                server.stop()  # type: ignore[attr-defined]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in {"data_dir": args.data_dir}.items() if v is not None}
    for name in ("host", "port", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import guard, migrations
    from . import observability as obs

    with Backends(_settings(args), own=True) as s:
        guard.raise_nofile(s)
        assert s.database_url and s.redis_url
        asyncio.run(migrations.apply_migrations(s.database_url))
        os.environ["LEADERBOARD_DATABASE_URL"] = s.database_url
        os.environ["LEADERBOARD_REDIS_URL"] = s.redis_url
        if s.workers > 1 and obs.multiprocess_dir() is None:
            obs.setup_multiprocess(tempfile.mkdtemp(prefix="leaderboard-metrics-"))
        _say(f"serving on http://{s.host}:{s.port} with {s.workers} worker(s)")
        # uvicorn re-raises the signal that stopped it once it has shut down; turn that into a normal exit
        # so the embedded servers are stopped cleanly on the way out.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop)
        try:
            uvicorn.run(
                "leaderboard.app:factory", factory=True, host=s.host, port=s.port, workers=s.workers,
                log_config=None, lifespan="on", proxy_headers=True,
                timeout_graceful_shutdown=int(s.drain_timeout_s) + 5,
                **guard.server_options(s),  # the guarded HTTP protocol, WebSocket options, limits
            )  # fmt: skip
        except _Stopped:
            pass
    return 0


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def migrate(args: argparse.Namespace) -> int:
    from . import migrations

    with Backends(_settings(args), redis=False) as s:
        assert s.database_url
        applied = asyncio.run(migrations.apply_migrations(s.database_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def keys(args: argparse.Namespace) -> int:
    import asyncpg

    from . import auth, migrations

    async def run(dsn: str) -> int:
        await migrations.apply_migrations(dsn)
        con = await asyncpg.connect(dsn)
        try:
            if args.action == "create":
                print(await auth.create_api_key(con, args.role, args.name))
            elif args.action == "list":
                for r in await auth.list_api_keys(con):
                    state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "active"
                    print(f"{r['id']:>5}  {r['role']:<7} {r['name']:<24} {r['created_at']:%Y-%m-%d}  {state}")
            elif not await auth.revoke_api_key(con, args.id):
                print(f"no active key with id {args.id}", file=sys.stderr)
                return 1
            return 0
        finally:
            await con.close()

    if args.action == "create" and not args.name:
        print("--name is required", file=sys.stderr)
        return 2
    with Backends(_settings(args), redis=False) as s:
        assert s.database_url
        return asyncio.run(run(s.database_url))


def rebuild(args: argparse.Namespace) -> int:
    import asyncpg
    import redis.asyncio as aioredis

    from .cache import Cache
    from .ranks import Ranks
    from .store import Store

    async def run(dsn: str, url: str) -> int:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        client = aioredis.from_url(url, decode_responses=True)
        try:
            store = Store(pool)
            cache = Ranks(Cache(client), store, s.rebuild_batch)
            boards = [args.board] if args.board else [b.id for b in await store.boards()]
            for board in boards:
                if await store.board(board) is None:
                    print(f"no board {board!r}", file=sys.stderr)
                    return 1
                started = time.perf_counter()
                count = await cache.rebuild(board)
                took = time.perf_counter() - started
                if count is None:
                    print(f"{board}: another process is rebuilding it right now", file=sys.stderr)
                    return 1
                print(f"{board}: {count} members rebuilt in {took:.2f}s")
            return 0
        finally:
            await client.aclose()
            await pool.close()

    with Backends(_settings(args)) as s:
        assert s.database_url and s.redis_url
        return asyncio.run(run(s.database_url, s.redis_url))


def demo(args: argparse.Namespace) -> int:
    import asyncpg

    from . import auth, migrations
    from .demo import AuthFailed, DemoError, run_demo

    async def make_key(dsn: str) -> str:
        await migrations.apply_migrations(dsn)
        con = await asyncpg.connect(dsn)
        try:
            return await auth.create_api_key(con, "submit", "demo")
        finally:
            await con.close()

    key = args.key
    if key is None:
        with Backends(_settings(args), redis=False) as s:
            assert s.database_url
            key = asyncio.run(make_key(s.database_url))
    try:
        asyncio.run(
            run_demo(
                args.url, key, players=args.players, rate=args.rate, board=args.board, duration=args.duration,
                connections=args.connections,
            )
        )  # fmt: skip
    except KeyboardInterrupt:
        pass
    except (AuthFailed, DemoError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaderboard", description="Real-time leaderboard service")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, default=None,
                       help="where embedded Postgres/Valkey keep their data (default ./.leaderboard)")  # fmt: skip
        return p

    p = with_data_dir(sub.add_parser("serve", help="run the API, WebSocket and UI server"))
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    p.set_defaults(fn=serve)

    with_data_dir(sub.add_parser("migrate", help="apply pending SQL migrations")).set_defaults(fn=migrate)

    p = with_data_dir(sub.add_parser("keys", help="manage API keys"))
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("--role", choices=["admin", "submit", "read"], default="submit")
    p.add_argument("--name", default=None, help="what the key is for (create)")
    p.add_argument("--id", type=int, default=None, help="key id (revoke)")
    p.set_defaults(fn=keys)

    p = with_data_dir(sub.add_parser("rebuild", help="reload boards from Postgres into Redis"))
    p.add_argument("--board", default=None, help="one board (default: all)")
    p.set_defaults(fn=rebuild)

    p = with_data_dir(sub.add_parser("demo", help="submit realistic demo traffic to a running server"))
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=None, help="a submit key (default: create one)")
    p.add_argument("--players", type=int, default=1000)
    p.add_argument("--rate", type=float, default=50.0, help="submissions per second")
    p.add_argument("--board", default="global")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    p.add_argument("--connections", type=int, default=4, help="WebSocket connections")
    p.set_defaults(fn=demo)

    args = parser.parse_args(argv)
    if args.command == "keys" and args.action == "revoke" and args.id is None:
        parser.error("keys revoke needs --id")
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
