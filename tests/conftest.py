"""Fixtures: real Postgres + real Redis (embedded, or the servers named by LEADERBOARD_TEST_*), real uvicorn.

Session: one database (a fresh `lb_test_<random>` on a given server, or an embedded one), migrated once.
Each test that asks for `clean` (directly or through `make_server` or a layer fixture) starts from an empty
database (the `global` board only) and an empty Redis db.

Layers, built on the session pool and Redis, torn down after each test: `store`, `cache`, `ranks` (and
`make_ranks` for a Ranks on another Cache or Store), `make_writer` (a running Writer), `make_redis` (a client
of another Redis, e.g. `private_redis`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from loadtest import rediscluster

from leaderboard import redisconn
from leaderboard.cache import Cache
from leaderboard.ranks import Ranks
from leaderboard.store import Store
from leaderboard.writer import Writer
from support.processes import free_port
from support.services import SECRET, ApiKeys, ServerURL, Services, dsn_with_database

TRUNCATE = "TRUNCATE users, game_sessions, leaderboard, api_keys, seasons, cache_intents, bans, audit RESTART IDENTITY"


@pytest.fixture(scope="session")
def _tmp_root() -> Iterator[Path]:
    # Short path: the embedded Postgres puts its unix socket in here (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="lbt-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


# The layers and end-to-end suites that exercise Redis run twice: against a single Redis and against a Redis
# Cluster of three primaries (marked `cluster`; skipped, and said so at the end, without redis-server 7).
CLUSTER_MODULES = frozenset(
    {"test_api", "test_ws", "test_e2e_fanout", "test_faults", "test_integrity", "test_cache", "test_ranks",
     "test_fanout", "test_channels", "test_cluster", "test_moderation", "test_friends", "test_metadata"}
)  # fmt: skip
CLUSTER_ONLY = frozenset({"test_cluster"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module not in CLUSTER_MODULES or "services" not in metafunc.fixturenames:
        return
    why_not = rediscluster.available()
    cluster = pytest.param(
        "cluster", marks=[pytest.mark.cluster, *([pytest.mark.skip(reason=why_not)] if why_not else [])]
    )
    backends = [cluster] if module in CLUSTER_ONLY else [pytest.param("single"), cluster]
    metafunc.parametrize("redis_backend", backends, indirect=True, scope="session")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly whether the Redis Cluster suite ran."""
    ran = skipped = 0
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when == "call" or outcome == "skipped":
                if "[cluster" in getattr(report, "nodeid", "") or "-cluster" in getattr(report, "nodeid", ""):
                    skipped += outcome == "skipped"
                    ran += outcome != "skipped"
    why_not = rediscluster.available()
    if why_not and skipped:
        terminalreporter.write_line(f"Redis Cluster suite SKIPPED ({skipped} tests): {why_not}", yellow=True)
    elif ran:
        terminalreporter.write_line(f"Redis Cluster suite: {ran} tests ran against a 3-primary cluster")


@pytest.fixture(scope="session")
def redis_backend(request: pytest.FixtureRequest) -> str:
    """ "single" (the default) or "cluster" where a module is parametrized (pytest_generate_tests)."""
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[rediscluster.Cluster]:
    """A Redis Cluster of three primaries, started on first use, for the whole session."""
    cluster = rediscluster.Cluster(primaries=3).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
async def services(
    _base_services: Services, redis_backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[Services]:
    """The test database and the Redis of this test's backend (a single Redis, or a cluster's URL)."""
    if redis_backend == "cluster":
        cluster: rediscluster.Cluster = request.getfixturevalue("redis_cluster")
        yield dataclasses.replace(_base_services, redis_url=cluster.url, cluster=True)
    else:
        yield _base_services


@pytest.fixture(scope="session")
async def _base_services(_tmp_root: Path) -> AsyncIterator[Services]:
    from leaderboard.embedded import EmbeddedPostgres, EmbeddedRedis
    from leaderboard.migrations import apply_migrations

    stops: list[Callable[[], Any]] = []
    db_url = os.environ.get("LEADERBOARD_TEST_DATABASE_URL")
    redis_url = os.environ.get("LEADERBOARD_TEST_REDIS_URL")
    try:
        if db_url:
            admin_dsn = db_url
            name = f"lb_test_{secrets.token_hex(6)}"
            con = await asyncpg.connect(admin_dsn)
            try:
                await con.execute(f'CREATE DATABASE "{name}"')
            finally:
                await con.close()

            async def drop() -> None:
                con = await asyncpg.connect(admin_dsn)
                try:
                    await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await con.close()

            stops.append(drop)
            dsn = dsn_with_database(admin_dsn, name)
        else:
            pg = EmbeddedPostgres(_tmp_root / "pg")
            admin_dsn = await asyncio.to_thread(pg.start)
            stops.append(pg.stop)
            con = await asyncpg.connect(admin_dsn)
            try:
                await con.execute('CREATE DATABASE "lb_test"')
            finally:
                await con.close()
            dsn = dsn_with_database(admin_dsn, "lb_test")
        if not redis_url:
            rd = EmbeddedRedis(_tmp_root / "redis", port=free_port())
            redis_url = await asyncio.to_thread(rd.start)
            stops.append(rd.stop)
        await apply_migrations(dsn)
        yield Services(dsn=dsn, redis_url=redis_url, admin_dsn=admin_dsn, embedded=not db_url)
    finally:
        for stop in reversed(stops):
            result = stop()
            if asyncio.iscoroutine(result):
                await result


@pytest.fixture(scope="session")
async def pool(services: Services) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(services.dsn, min_size=1, max_size=4)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def rds(services: Services) -> AsyncIterator[Any]:
    client = redisconn.connect(services.redis_url, services.cluster, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def scratch_db(services: Services) -> AsyncIterator[str]:
    """The DSN of a new, empty database on the test server (dropped afterwards)."""
    name = f"lb_scratch_{secrets.token_hex(6)}"
    con = await asyncpg.connect(services.admin_dsn)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    yield dsn_with_database(services.admin_dsn, name)
    con = await asyncpg.connect(services.admin_dsn)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


@pytest.fixture
async def clean(pool: asyncpg.Pool, rds: Any, services: Services) -> None:
    """An empty database (only the `global` board) and an empty Redis db."""
    async with pool.acquire() as con:
        await con.execute(TRUNCATE)
        await con.execute("DELETE FROM leaderboards WHERE id <> 'global'")
        await con.execute(
            "UPDATE leaderboards SET season = 1, season_started_at = now(), removed_version = 0 WHERE id = 'global'"
        )
    await rds.flushdb()
    # servers forget what they knew of global's season (a cluster carries the announcement on a shard channel)
    await (rds.spublish if services.cluster else rds.publish)("lb:boards", "global")


# ---------------------------------------------------------------------------------------------------------
# Layers, without a server


@pytest.fixture
def store(pool: asyncpg.Pool, clean: None) -> Store:
    return Store(pool)


@pytest.fixture
def cache(rds: Any, clean: None) -> Cache:
    return Cache(rds)


@pytest.fixture
async def make_redis() -> AsyncIterator[Callable[[str], aioredis.Redis]]:
    """Clients of other Redis servers, with the app's timeouts (a stopped server fails fast); closed after."""
    clients: list[aioredis.Redis] = []

    def factory(url: str) -> aioredis.Redis:
        client = aioredis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=1.0)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def make_ranks(cache: Cache, store: Store) -> AsyncIterator[Callable[..., Ranks]]:
    """Ranks(cache, store) by default; its background rebuilds are cancelled after the test."""
    made: list[Ranks] = []

    def factory(cache_: Cache | None = None, store_: Store | None = None, rebuild_batch: int = 100) -> Ranks:
        r = Ranks(cache_ or cache, store_ or store, rebuild_batch)
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.close()


@pytest.fixture
def ranks(make_ranks: Callable[..., Ranks]) -> Ranks:
    return make_ranks()


@pytest.fixture
async def make_writer(store: Store, ranks: Ranks) -> AsyncIterator[Callable[..., Writer]]:
    """A Writer whose run() task is running; closed (queued submissions finished) after the test."""
    running: list[tuple[Writer, asyncio.Task[None]]] = []

    def factory(
        store_: Store | None = None, ranks_: Ranks | None = None, batch_max: int = 500, concurrency: int = 4
    ) -> Writer:
        writer = Writer(store_ or store, ranks_ or ranks, batch_max, concurrency)
        running.append((writer, asyncio.create_task(writer.run(), name="test-writer")))
        return writer

    yield factory
    for writer, task in running:
        await writer.close()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()
            raise


# ---------------------------------------------------------------------------------------------------------
# In-process servers


@pytest.fixture
async def make_server(
    services: Services, clean: None, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[ServerURL]]]:
    import uvicorn

    from leaderboard.app import create_app
    from leaderboard.guard import server_options
    from leaderboard.settings import Settings

    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:
            server.force_exit = True
            await asyncio.wait_for(task, 10)

    async def factory(*, send_buffer: int | None = None, **overrides: Any) -> ServerURL:
        """Start create_app(Settings(**overrides)) on uvicorn, port 0. `send_buffer` pins SO_SNDBUF of
        accepted sockets (inherited from the listener), i.e. a narrow network path instead of 4 MB buffers."""
        kwargs: dict[str, Any] = {
            "database_url": services.dsn,
            "redis_url": services.redis_url,
            "player_token_secret": SECRET,
            "data_dir": tmp_path / f"server{len(running)}",
            "push_interval_ms": 50,
            "drain_timeout_s": 1,
        }
        kwargs.update(overrides)
        settings = Settings(**kwargs)
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=3,
            **server_options(settings),  # the same protocol and limits as `leaderboard serve`
        )
        server = uvicorn.Server(config)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if send_buffer is not None:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        listener.bind(("127.0.0.1", 0))
        task = asyncio.create_task(server.serve(sockets=[listener]))
        running.append((server, task))
        for _ in range(600):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if not server.started:
            if task.done():
                task.result()
            raise RuntimeError("server did not start (lifespan failed?)")
        port = listener.getsockname()[1]
        url = ServerURL(f"http://127.0.0.1:{port}")
        url.settings = settings
        url.app = app

        async def stop_this() -> None:
            await stop(server, task)

        url.stop = stop_this
        return url

    yield factory
    for server, task in reversed(running):
        if not task.done():
            await stop(server, task)


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[ServerURL]]) -> ServerURL:
    return await make_server()


@pytest.fixture
async def keys(pool: asyncpg.Pool, clean: None) -> ApiKeys:
    from leaderboard.auth import create_api_key

    return ApiKeys(
        admin=await create_api_key(pool, "admin", "test-admin"),
        submit=await create_api_key(pool, "submit", "test-submit"),
        read=await create_api_key(pool, "read", "test-read"),
    )


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def factory(base_url: str, credential: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def api(server: ServerURL, keys: ApiKeys, make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    """A game server's client: submit key."""
    return make_client(server, keys.submit)


@pytest.fixture
def admin(server: ServerURL, keys: ApiKeys, make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return make_client(server, keys.admin)


@pytest.fixture
def anon(server: ServerURL, make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return make_client(server)


@pytest.fixture
def private_redis(tmp_path: Path, redis_backend: str) -> Iterator[Any]:
    """A Redis of this test's own (even in system-services mode), which the test may stop and restart."""
    from leaderboard.embedded import EmbeddedRedis

    if redis_backend == "cluster":  # it would repeat the single-Redis run: the cluster's faults are test_cluster's
        pytest.skip("a fault test of a single Redis (tests/test_cluster.py has the cluster's)")

    rd = EmbeddedRedis(tmp_path / "private-redis", port=free_port())
    rd.start()
    yield rd
    rd.stop()


@pytest.fixture(autouse=True)
async def _dump_tasks_before_timeout(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """pytest-timeout shows the threads, which for an asyncio test is only an idle event loop: a few seconds
    before the timeout, print what every task is waiting on, so a hang says where it hangs."""
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout") or 0)
    if not limit:
        yield
        return

    def dump() -> None:
        import sys

        print(f"\n--- asyncio tasks {limit - 5:.0f}s into {request.node.nodeid} ---", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(limit=12, file=sys.stderr)

    handle = asyncio.get_running_loop().call_later(max(limit - 5, 1), dump)
    yield
    handle.cancel()
