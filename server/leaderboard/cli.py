"""`leaderboard serve | migrate | keys | rebuild | maintain | demo`.

Every command reads its settings with `load_settings()`; a configuration problem, an unreachable
database or Redis, or a data dir already served ends the command with one line per problem on stderr and
exit code 2, before anything is started or stopped. Embedded servers a command starts are stopped when it
ends; embedded servers it attached to (another process started them) are left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .embedded import DataDirError, DataDirInUse, EmbeddedError, EmbeddedPostgres, EmbeddedRedis, ServeLock
from .settings import ConfigError, Settings, load_settings, redact_url, unknown_variables

if TYPE_CHECKING:
    from .ranks import Ranks

EXIT_CONFIG = 2
CONNECT_TIMEOUT_S = 5.0


class Unusable(Exception):
    """A configured server cannot be used (unreachable, refused the credentials...). One line per server."""


class Backends:
    """Resolve Postgres and Redis: the configured URLs, or embedded servers under the data dir.

    On exit, stops the embedded servers this process started (or took over from a process that is gone) and
    leaves the ones another live process started alone.
    """

    def __init__(self, settings: Settings, *, redis: bool = True) -> None:
        self.settings, self.want_redis = settings, redis
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Settings:
        s = self.settings
        updates: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            if not s.database_url:
                pg = EmbeddedPostgres(s.data_dir)
                stack.callback(pg.stop)
                updates["database_url"] = pg.start()
                # loadtest/bench.py reads the URL from the end of this line ("postgres: embedded, data in ... (URL)").
                _say(f"postgres: embedded, data in {pg.pgdata}, {_ownership(pg)} ({updates['database_url']})")
            else:
                _say(f"postgres: {redact_url(s.database_url)}")
            if self.want_redis:
                if not s.redis_url:
                    r = EmbeddedRedis(s.data_dir)
                    stack.callback(r.stop)
                    updates["redis_url"] = r.start()
                    _say(f"redis: embedded valkey, data in {r.dir}, {_ownership(r)} ({updates['redis_url']})")
                else:
                    _say(f"redis: {redact_url(s.redis_url)}")
            self._stack = stack.pop_all()  # started without a hitch: stop them in __exit__, not now
        return s.model_copy(update=updates)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _ownership(server: EmbeddedPostgres | EmbeddedRedis) -> str:
    if server.adopted:
        return "taken over (the process that started it is gone)"
    if server.owned:
        return "started by this process"
    return f"attached to the one pid {server.owner.pid} runs" if server.owner is not None else "attached"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("data_dir", "host", "port", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise exc.naming({name: "--" + name.replace("_", "-") for name in overrides}) from None


# --- checks before anything starts -------------------------------------------------------------------------


def check_servers(settings: Settings, *, redis: bool = True) -> None:
    """Connect to the configured (not embedded) Postgres and Redis once; raise Unusable saying why not."""

    async def run() -> list[str]:
        checks = []
        if settings.database_url:
            checks.append(_check_postgres(settings.database_url))
        if redis and settings.redis_url:
            checks.append(_check_redis(settings.redis_url))
        return [p for p in await asyncio.gather(*checks) if p]

    found = asyncio.run(run())
    if found:
        raise Unusable("\n".join(found))


async def _check_postgres(dsn: str) -> str | None:
    import asyncpg

    try:
        con = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        return f"LEADERBOARD_DATABASE_URL: cannot reach PostgreSQL at {redact_url(dsn)}: {_why(exc)}"
    await con.close()
    return None


async def _check_redis(url: str) -> str | None:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        await client.ping()
    except (OSError, RedisError, ValueError) as exc:
        return f"LEADERBOARD_REDIS_URL: cannot reach Redis at {redact_url(url)}: {_why(exc)}"
    finally:
        await client.aclose()
    return None


def _why(exc: BaseException) -> str:
    """The reason in a few words: the OS error underneath a driver error if there is one."""
    cause = exc.__cause__ or exc.__context__
    if not isinstance(exc, OSError) and isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
        exc = cause
    if isinstance(exc, TimeoutError) or exc.__class__.__name__ == "TimeoutError":
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is it running, on this host and port?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__


def check_port(host: str, port: int) -> None:
    """Raise Unusable if `serve` could not listen on host:port (bound the way uvicorn binds)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:
            raise Unusable(f"LEADERBOARD_HOST: cannot listen on {host!r}: unknown host ({exc.strerror})") from None
        except OSError as exc:
            raise Unusable(
                f"cannot listen on {host}:{port}: {_why(exc)} "
                "(another server? choose another --port or LEADERBOARD_PORT)"
            ) from None


# --- commands ----------------------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import guard, migrations
    from . import observability as obs

    # uvicorn re-raises the signal that stopped it once it has shut down; turn that (or a signal before it
    # runs) into a normal exit, so the embedded servers this process started are stopped on the way out.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    # Closing the terminal (SIGHUP) stops it as SIGTERM does: drained, embedded servers stopped, instead of the
    # default action that would leave them running. (With --workers N, uvicorn's supervisor takes SIGHUP over:
    # it restarts the workers.)
    signal.signal(signal.SIGHUP, _hang_up)
    settings = _settings(args)
    embedded = not settings.database_url or not settings.redis_url
    lock = ServeLock(settings.data_dir)
    if embedded:
        lock.acquire(f"http://{settings.host}:{settings.port}")
    try:
        check_port(settings.host, settings.port)
        check_servers(settings)
        with Backends(settings) as s:
            guard.raise_nofile(s)
            assert s.database_url and s.redis_url
            asyncio.run(migrations.apply_migrations(s.database_url))
            os.environ["LEADERBOARD_DATABASE_URL"] = s.database_url
            os.environ["LEADERBOARD_REDIS_URL"] = s.redis_url
            if s.workers > 1 and obs.multiprocess_dir() is None:
                obs.setup_multiprocess(tempfile.mkdtemp(prefix="leaderboard-metrics-"))
            _say(f"serving on http://{s.host}:{s.port} with {s.workers} worker(s)")
            if embedded:  # (the first run of `make run`: say what comes next)
                _say(
                    f"next: open http://{s.host}:{s.port}/ ; a key to submit scores: `.venv/bin/leaderboard keys "
                    "create --role submit --name NAME`, or `make demo` for a living board (README: Using it)"
                )
            uvicorn.run(
                "leaderboard.app:factory", factory=True, host=s.host, port=s.port, workers=s.workers,
                log_config=None, lifespan="on", proxy_headers=True,
                timeout_graceful_shutdown=int(s.drain_timeout_s) + 5,
                **guard.server_options(s),  # the guarded HTTP protocol, WebSocket options, limits
            )  # fmt: skip
    except _Stopped:
        pass  # Backends has stopped what this process started on the way out
    finally:
        lock.release()
    return 0


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def _hang_up(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # whichever handler SIGTERM has now (ours, uvicorn's, the drain's)


def migrate(args: argparse.Namespace) -> int:
    from . import migrations

    settings = _settings(args)
    check_servers(settings, redis=False)
    with Backends(settings, redis=False) as s:
        assert s.database_url
        applied = asyncio.run(migrations.apply_migrations(s.database_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _on_backends(
    args: argparse.Namespace, run: Callable[[Settings], Coroutine[Any, Any, int]], *, redis: bool = True
) -> int:
    """Run a command's `run(settings)` against the configured servers, or embedded ones it starts (and stops
    again) or attaches to: the settings it gets name the servers' URLs."""
    settings = _settings(args)
    check_servers(settings, redis=redis)
    with Backends(settings, redis=redis) as s:
        assert s.database_url and (s.redis_url or not redis)
        return asyncio.run(run(s))


@contextlib.asynccontextmanager
async def _read_model(s: Settings) -> AsyncIterator[Ranks]:
    """The read model over a Postgres pool and a Redis client of the command's own, closed on the way out:
    what a command needs to change Redis as a server does (`ranks.store.pool` is the pool)."""
    import asyncpg

    from . import redisconn
    from .cache import Cache
    from .ranks import Ranks
    from .store import Store

    assert s.database_url and s.redis_url
    pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
    try:
        client = redisconn.connect(
            s.redis_url, await redisconn.detect(s.redis_url, s.redis_cluster), decode_responses=True
        )
        try:
            ranks = Ranks(Cache(client), Store(pool), s.rebuild_batch)
            try:
                yield ranks
            finally:
                await ranks.close()
        finally:
            await client.aclose()
    finally:
        await pool.close()


KEYS_HEADER = f"{'id':>5}  {'role':<7} {'name':<24} {'created':<10}  state"


def keys(args: argparse.Namespace) -> int:
    import asyncpg

    from . import auth, migrations

    async def run(s: Settings) -> int:
        assert s.database_url
        await migrations.apply_migrations(s.database_url)
        con = await asyncpg.connect(s.database_url)
        try:
            if args.action == "create":
                async with con.transaction():
                    key = await auth.create_api_key(con, args.role, args.name)
                    # currval: the id this session's INSERT just drew, whatever other sessions do.
                    key_id = await con.fetchval("SELECT currval(pg_get_serial_sequence('api_keys', 'id'))")
                _say(f"created {args.role} key {key_id} {args.name!r}; it is shown once, store it now:")
                print(key, flush=True)
            elif args.action == "list":
                print(KEYS_HEADER)
                for r in await auth.list_api_keys(con):
                    state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "active"
                    print(f"{r['id']:>5}  {r['role']:<7} {r['name']:<24} {r['created_at']:%Y-%m-%d}  {state}")
            else:
                row = await con.fetchrow("SELECT role, name FROM api_keys WHERE id = $1", args.id)
                if row is None or not await auth.revoke_api_key(con, args.id):
                    _say(f"no active key with id {args.id} (`leaderboard keys list` shows them)")
                    return 1
                print(
                    f"revoked {row['role']} key {args.id} {row['name']!r}: within a few seconds every server "
                    f"refuses it and closes the WebSockets that authenticated with it (1008)"
                )
            return 0
        finally:
            await con.close()

    if args.action == "create" and not args.name:
        _say("keys create needs --name (what the key is for, e.g. --name game-server-eu)")
        return 2
    return _on_backends(args, run, redis=False)


def rebuild(args: argparse.Namespace) -> int:
    async def run(s: Settings) -> int:
        async with _read_model(s) as ranks:
            store = ranks.store
            boards = [args.board] if args.board else [b.id for b in await store.boards()]
            for board in boards:
                if await store.board(board) is None:
                    print(f"no board {board!r}", file=sys.stderr)
                    return 1
                started = time.perf_counter()
                count = await ranks.rebuild(board)
                took = time.perf_counter() - started
                if count is None:
                    print(f"{board}: another process is rebuilding it right now", file=sys.stderr)
                    return 1
                print(f"{board}: {count} members rebuilt in {took:.2f}s")
            return 0

    return _on_backends(args, run)


def moderate(args: argparse.Namespace) -> int:
    """void / remove / ban / unban: the same transactions and cache writes as the admin API."""
    import getpass
    import uuid

    from . import migrations
    from .auth import Principal
    from .errors import Refused
    from .moderation import Moderation
    from .service import Moderator

    async def run(s: Settings) -> int:
        assert s.database_url
        await migrations.apply_migrations(s.database_url)
        async with _read_model(s) as ranks:
            mod = Moderator(Moderation(ranks.store.pool), ranks)
            return await act(mod, Principal("admin", name=f"cli:{getpass.getuser()}"))

    async def act(mod: Moderator, who: Principal) -> int:
        try:
            if args.command in ("void", "restore"):
                undo = mod.void if args.command == "void" else mod.restore
                v = await undo(who, uuid.UUID(args.session_id), args.reason)
                now = "no entry left" if v.score is None else f"score now {v.score}"
                done = "voided" if args.command == "void" else "restored"
                print(f"{done} {v.session_id} of {v.user_id} on {v.board} (season {v.season}): {now}")
            elif args.command == "remove":
                r = await mod.remove(who, args.board, args.user_id, args.reason)
                voided = f"{r.voided} submission{'' if r.voided == 1 else 's'} voided"
                print(f"removed {r.user_id} from {r.board} (season {r.season}); {voided}")
            else:
                act = mod.ban if args.command == "ban" else mod.unban
                b = await act(who, args.user_id, args.reason)
                entries = {k: "no entry" if value is None else value for k, value in b.boards.items()}
                boards = ", ".join(f"{k}: {value}" for k, value in entries.items()) or "no board"
                print(f"{'banned' if b.banned else 'unbanned'} {b.user_id} ({boards})")
            return 0
        except Refused as exc:
            _say(f"{args.command}: {exc.detail} ({exc.code})")
            return 1

    if args.command in ("void", "restore"):
        try:
            uuid.UUID(args.session_id)
        except ValueError:
            _say(f"{args.command}: {args.session_id!r} is not a session id (a UUID)")
            return 2
    return _on_backends(args, run)


def maintain(args: argparse.Namespace) -> int:
    import asyncpg

    from . import migrations, partitions

    async def run(s: Settings) -> int:
        assert s.database_url
        await migrations.apply_migrations(s.database_url)
        con = await asyncpg.connect(s.database_url)
        try:
            report = await partitions.maintain(
                con, s.log_retention_months, timedelta(days=s.idempotency_window_days), detach=args.detach,
                dry_run=args.dry_run,
            )  # fmt: skip
        except asyncpg.LockNotAvailableError:
            _say(f"maintain: game_sessions stayed locked for {partitions.LOCK_TIMEOUT} (a long query?); run it again")
            return 1
        finally:
            await con.close()
        for line in report.lines() or ["nothing to do"]:
            print(line)
        return 0

    return _on_backends(args, run, redis=False)


def demo(args: argparse.Namespace) -> int:
    import asyncpg

    from . import auth, migrations
    from .demo import AuthFailed, DemoError, check_reachable, run_demo

    async def make_key(dsn: str) -> tuple[int, str]:
        await migrations.apply_migrations(dsn)
        con = await asyncpg.connect(dsn)
        try:
            async with con.transaction():
                key = await auth.create_api_key(con, "submit", "demo")
                key_id = await con.fetchval("SELECT currval(pg_get_serial_sequence('api_keys', 'id'))")
            return int(key_id), key
        finally:
            await con.close()

    async def revoke(dsn: str, key_id: int) -> None:
        con = await asyncpg.connect(dsn)
        try:
            await auth.revoke_api_key(con, key_id)
        finally:
            await con.close()

    key, key_id = args.key, None
    settings = _settings(args) if key is None else None  # (a bad setting is reported first, as by every command)
    try:
        check_reachable(args.url)
    except (DemoError, ValueError) as exc:  # (ValueError: a URL that is not http(s) or ws(s))
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    if settings is not None:
        check_servers(settings, redis=False)
        with Backends(settings, redis=False) as s:
            assert s.database_url
            key_id, key = asyncio.run(make_key(s.database_url))
        _say(f"demo: created submit key {key_id} 'demo' for this run; it is revoked when the demo ends")

    async def until_stopped() -> None:
        # SIGTERM cancels the demo: an exception raised by a signal handler (_stop) could land inside one of the
        # loop's callbacks, which would log it and go on.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_demo(
                args.url, key, players=args.players, rate=args.rate, board=args.board, duration=args.duration,
                connections=args.connections,
            )  # fmt: skip

    try:
        asyncio.run(until_stopped())
    except (KeyboardInterrupt, _Stopped):
        pass  # Ctrl-C or SIGTERM: the normal way to end a demo without --duration
    except (AuthFailed, DemoError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if key_id is not None and settings is not None:
            with Backends(settings, redis=False) as s:
                assert s.database_url
                asyncio.run(revoke(s.database_url, key_id))
            _say(f"demo: revoked key {key_id}")
    return 0


# --- entry point -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leaderboard", description="Real-time leaderboard service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, default=None,
                       help="where embedded Postgres/Valkey keep their data (default ./.leaderboard, "
                            "or LEADERBOARD_DATA_DIR)")  # fmt: skip
        return p

    p = with_data_dir(sub.add_parser("serve", help="run the API, WebSocket and UI server"))
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1, or LEADERBOARD_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000, or LEADERBOARD_PORT)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 1, or LEADERBOARD_WORKERS)")
    p.set_defaults(fn=serve)

    with_data_dir(sub.add_parser("migrate", help="apply pending SQL migrations")).set_defaults(fn=migrate)

    p = with_data_dir(sub.add_parser("keys", help="manage API keys"))
    p.add_argument("action", choices=["create", "list", "revoke"],
                   help="create a key (printed once), list keys, or revoke one")  # fmt: skip
    p.add_argument("--role", choices=["admin", "submit", "read"], default="submit",
                   help="create: what the key may do: admin (also create boards), submit (scores), read "
                        "(default submit)")  # fmt: skip
    p.add_argument("--name", default=None, help="create: what the key is for, e.g. game-server-eu")
    p.add_argument("--id", type=int, default=None, help="revoke: the key's id (see keys list)")
    p.set_defaults(fn=keys)

    p = with_data_dir(sub.add_parser("rebuild", help="reload boards from Postgres into Redis"))
    p.add_argument("--board", default=None, help="one board (default: all)")
    p.set_defaults(fn=rebuild)

    p = with_data_dir(sub.add_parser("void", help="void one submission and recompute its player's value"))
    p.add_argument("session_id", help="the submission's session_id")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.set_defaults(fn=moderate)
    p = with_data_dir(sub.add_parser("restore", help="undo a void: the submission counts again"))
    p.add_argument("session_id", help="the submission's session_id")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.set_defaults(fn=moderate)
    p = with_data_dir(sub.add_parser("remove", help="remove a player's entry from a board (voids its submissions)"))
    p.add_argument("user_id", help="the player")
    p.add_argument("--board", required=True, help="the board")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.set_defaults(fn=moderate)
    p = with_data_dir(sub.add_parser("ban", help="ban a player: removed from every board, submissions refused"))
    p.add_argument("user_id", help="the player")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.set_defaults(fn=moderate)
    p = with_data_dir(sub.add_parser("unban", help="lift a ban: entries restored from the player's log"))
    p.add_argument("user_id", help="the player")
    p.add_argument("--reason", default="ban lifted", help="why (kept in the audit log)")
    p.set_defaults(fn=moderate)
    p = with_data_dir(sub.add_parser("maintain", help="log partitions ahead and retention (run it daily from cron)"))
    p.add_argument("--detach", action="store_true",
                   help="detach the months past LEADERBOARD_LOG_RETENTION_MONTHS instead of dropping them (each "
                        "stays a table of its own, game_sessions_YYYY_MM, to archive and drop)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="say which months would be dropped; change nothing")
    p.set_defaults(fn=maintain)

    p = with_data_dir(sub.add_parser("demo", help="submit realistic demo traffic to a running server"))
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
    p.add_argument("--key", default=None,
                   help="a submit key (default: create one for this run and revoke it at the end)")  # fmt: skip
    p.add_argument("--players", type=int, default=1000, help="simulated players (default 1000)")
    p.add_argument("--rate", type=float, default=50.0, help="submissions per second (default 50)")
    p.add_argument("--board", default="global", help="board to play on (default global)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    p.add_argument("--connections", type=int, default=4, help="WebSocket connections (default 4)")
    p.set_defaults(fn=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "keys" and args.action == "revoke" and args.id is None:
        parser.error("keys revoke needs --id")
    for warning in unknown_variables():
        _say(warning)
    if args.command != "serve":  # serve installs its own handlers (it also catches SIGINT)
        signal.signal(signal.SIGTERM, _stop)
    try:
        code: int = args.fn(args)
    except (ConfigError, Unusable, DataDirInUse, DataDirError) as exc:
        _say(str(exc))
        return EXIT_CONFIG
    except EmbeddedError as exc:
        _say(str(exc))
        return 1
    except _Stopped:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return code


if __name__ == "__main__":
    sys.exit(main())
