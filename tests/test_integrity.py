"""Integrity: Redis converges to Postgres by itself after a crash or a Redis that comes back older; poisoned
input never fails the submissions beside it."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from leaderboard.protocol import Submission
from leaderboard.store import Store, Write
from support.clients import create_board, full_listing, rank, submit, ws_connect
from support.polling import eventually
from support.reference import ranked
from support.services import ApiKeys
from support.stores import assert_cache_matches_pg, cache_key, pg_values

REPAIR_BOUND_S = 10  # docs/operations.md: after any crash, Redis agrees with Postgres within 10 s


async def _commit_without_cache_write(pool: asyncpg.Pool, user: str, score: int, session: uuid.UUID) -> None:
    """What a writer that dies right after COMMIT leaves behind: the rows in Postgres, nothing in Redis."""
    store = Store(pool)
    board = await store.board("global")
    assert board is not None
    await store.commit_batch([Write(Submission(user_id=user, score=score, session_id=session), session, board)])


async def _listing_matches_postgres(api: Any, pool: asyncpg.Pool) -> None:
    listing = await full_listing(api)
    want = ranked(await pg_values(pool), "desc")
    assert [(e["rank"], e["user_id"], e["score"]) for e in listing] == [
        (e["rank"], e["user_id"], e["score"]) for e in want
    ]


async def test_a_crash_between_commit_and_cache_write_is_repaired(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    server = await make_server()
    api = make_client(server, keys.submit)
    for i in range(5):
        await submit(api, f"p{i}", 100 + i)
    await _commit_without_cache_write(pool, "ghost", 1000, uuid.uuid4())  # the "dead" writer's batch
    await _commit_without_cache_write(pool, "p0", 50, uuid.uuid4())  # an existing player's update
    assert await rds.zscore(cache_key("global"), "ghost") is None  # Redis does not know yet
    # Nobody retries: the cache debt committed with the batch is repaid by the running server.
    await eventually(lambda: assert_cache_matches_pg(pool, rds), within=REPAIR_BOUND_S)
    assert (await rank(api, "ghost"))["rank"] == 1
    assert (await rank(api, "p0"))["score"] == 150
    await _listing_matches_postgres(api, pool)
    assert await pool.fetchval("SELECT count(*) FROM cache_intents") == 0


async def test_a_retry_after_a_lost_cache_write_writes_redis_at_once(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    server = await make_server()
    api = make_client(server, keys.submit)
    await submit(api, "a", 10)
    session = uuid.uuid4()
    await _commit_without_cache_write(pool, "b", 500, session)
    ack = await submit(api, "b", 500, session_id=str(session))  # the client's retry of its unacked submission
    assert ack["duplicate"] is True and ack["score"] == 500
    assert ack["rank"] == 1
    # At once, not after the repair interval.
    assert await rds.zscore(cache_key("global"), "b") == -500
    assert (await rank(api, "b"))["rank"] == 1


async def test_redis_restarted_with_older_data_is_rebuilt(
    make_server: Any, private_redis: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    server = await make_server(redis_url=private_redis.url)
    api = make_client(server, keys.submit)
    for i in range(50):
        await submit(api, f"u{i:02d}", i)
    cache = aioredis.from_url(private_redis.url, decode_responses=True)
    try:
        await cache.execute_command("BGREWRITEAOF")
        await asyncio.sleep(1.5)  # the rewrite and the next everysec fsync
        older = Path(private_redis.dir).parent / "older"
        shutil.copytree(private_redis.dir, older)
        for i in range(50):  # 50 more acknowledged submissions the older copy does not have
            await submit(api, f"u{i:02d}", 100)
        await cache.aclose()
        private_redis.stop()
        shutil.rmtree(private_redis.dir)
        shutil.copytree(older, private_redis.dir)
        private_redis.start()
        cache = aioredis.from_url(private_redis.url, decode_responses=True)
        assert await cache.zscore(cache_key("global"), "u49") == -49.0  # it did come back older

        await eventually(lambda: assert_cache_matches_pg(pool, cache), within=REPAIR_BOUND_S)
        await _listing_matches_postgres(api, pool)
    finally:
        await cache.aclose()


async def test_a_quiet_board_that_disagrees_with_postgres_is_rebuilt(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    server = await make_server(verify_interval_s=1)
    api = make_client(server, keys.submit)
    for i in range(20):
        await submit(api, f"q{i:02d}", i)
    await eventually(lambda: _no_debts(pool), within=5)
    # Something outside our control drops a member (a partial restore, a stray command).
    await rds.zrem(cache_key("global"), "q07")
    await rds.hdel(cache_key("global", "v"), "q07")
    await eventually(lambda: assert_cache_matches_pg(pool, rds), within=REPAIR_BOUND_S)
    assert (await rank(api, "q07"))["score"] == 7


async def _no_debts(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT count(*) FROM cache_intents") == 0


async def test_poisoned_names_are_refused_and_their_neighbours_commit(
    server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    api = make_client(server, keys.submit)
    bad_names = ["a\x00b", "\u202eevil Admin", "tab\there", "x\u2066y"]
    for name in bad_names:
        resp = await api.post("/api/leaderboard/submit", json={"user_id": "z", "score": 1, "display_name": name})
        assert resp.status_code == 422, resp.text
        assert "control" in resp.json()["detail"]
    assert await pool.fetchval("SELECT count(*) FROM game_sessions") == 0
    async with ws_connect(server, keys.submit) as ws:
        frames = [
            {"type": "submit", "ref": i, "user_id": f"n{i}", "score": i,
             "display_name": bad_names[i % 4] if i % 150 == 7 else f"Name {i}"}
            for i in range(300)
        ]  # fmt: skip
        for f in frames:
            await ws.send(f)
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < 300:
            msg = await ws.recv(30)
            if msg["type"] in ("ack", "error"):
                replies[msg["ref"]] = msg
    refused = sorted(ref for ref, m in replies.items() if m["type"] == "error")
    assert refused == [7, 157]
    assert all(replies[r]["code"] == "validation_error" for r in refused)
    assert await pool.fetchval("SELECT count(*) FROM game_sessions") == 298
    names = await pool.fetch("SELECT display_name FROM users WHERE display_name IS NOT NULL")
    assert all(n[0].isprintable() for n in names)


async def test_a_row_postgres_refuses_fails_alone(
    services: Any, clean: None, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    """Validation is the first line; the writer is the second: a data error refuses its own row only."""
    from leaderboard.cache import Cache
    from leaderboard.errors import Invalid
    from leaderboard.ranks import Ranks
    from leaderboard.writer import Writer

    store = Store(pool)
    writer = Writer(store, Ranks(Cache(rds), store))
    runner = asyncio.create_task(writer.run())
    board = await store.board("global")
    assert board is not None
    try:
        subs = [Submission(user_id=f"w{i}", score=i) for i in range(10)]
        poisoned = Submission.model_construct(user_id="w-bad", score=1, board="global", display_name="a\x00b")
        results = await asyncio.gather(
            *(writer.submit(s, board) for s in [*subs[:5], poisoned, *subs[5:]]), return_exceptions=True
        )
    finally:
        await writer.close()
        await runner
    assert isinstance(results[5], Invalid), results[5]
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 5), results
    assert await pool.fetchval("SELECT count(*) FROM game_sessions") == 10
    assert await pool.fetchval("SELECT count(*) FROM leaderboard WHERE user_id = 'w-bad'") == 0


async def test_each_board_converges_independently(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    server = await make_server()
    admin = make_client(server, keys.admin)
    api = make_client(server, keys.submit)
    await create_board(admin, "speedrun", sort="asc", operator="best")
    await submit(api, "r1", 9000, "speedrun")
    store = Store(pool)
    board = await store.board("speedrun")
    assert board is not None
    sid = uuid.uuid4()
    await store.commit_batch([Write(Submission(user_id="r2", score=8000, board="speedrun"), sid, board)])
    await eventually(lambda: assert_cache_matches_pg(pool, rds, "speedrun"), within=REPAIR_BOUND_S)
    assert (await rank(api, "r2", "speedrun"))["rank"] == 1


async def test_postgres_away_keys_known_before_keep_working_unknown_ones_get_503(
    services: Any, make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    from support.netcut import Proxy

    proxy = Proxy(services.dsn)
    await proxy.start()
    try:
        server = await make_server(database_url=proxy.dsn)
        api = make_client(server, keys.submit)
        await submit(api, "a", 10)  # the submit key is verified (and known) before the outage
        late_key = await _create_key(pool)
        await proxy.cut()
        # Reads with the known key are served by Redis; a submission cannot commit: 503, never 500.
        page = await api.get("/api/leaderboard/top")
        assert page.status_code == 200, page.text
        resp = await api.post("/api/leaderboard/submit", json={"user_id": "a", "score": 1})
        assert resp.status_code == 503 and resp.json()["code"] == "unavailable", resp.text
        # A key created meanwhile cannot be verified: 503 (retry later), not 401 and not 500.
        late = make_client(server, late_key)
        for path in ("/api/leaderboard/top", "/api/leaderboard/rank/a"):
            resp = await late.get(path)
            assert resp.status_code == 503, resp.text
        async with ws_connect(server, keys.submit) as ws:
            reply = await ws.reply_to({"type": "auth", "token": late_key})
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        await proxy.start()  # back
        await eventually(lambda: _answers(late, 200), within=10)
    finally:
        await proxy.cut()


async def _create_key(pool: asyncpg.Pool) -> str:
    from leaderboard.auth import create_api_key

    return await create_api_key(pool, "read", "late")


async def _answers(client: Any, status: int) -> None:
    resp = await client.get("/api/leaderboard/top")
    assert resp.status_code == status, resp.text


# ---- cheap ways to make us do expensive work ----------------------------------------------------------------


async def test_an_unknown_board_is_remembered_for_a_moment(pool: asyncpg.Pool, clean: None, services: Any) -> None:
    private = await asyncpg.create_pool(services.dsn, min_size=1, max_size=1)
    store = Store(private)
    assert await store.board("no-such-board") is None
    await private.close()  # a second look-up that reached Postgres would now fail
    assert await store.board("no-such-board") is None
    store.forget("no-such-board")
    try:
        await store.board("no-such-board")
        raise AssertionError("the forgotten miss should have asked Postgres")
    except asyncpg.InterfaceError:
        pass


async def test_a_board_created_on_one_process_is_seen_at_once_by_another(
    make_server: Any, keys: ApiKeys, make_client: Any
) -> None:
    one, two = await make_server(), await make_server()
    reader = make_client(two)
    resp = await reader.get("/api/leaderboard/top", params={"board": "fresh"})
    assert resp.status_code == 404  # `two` now remembers that `fresh` does not exist
    await create_board(make_client(one, keys.admin), "fresh")

    async def found() -> None:
        assert (await reader.get("/api/leaderboard/top", params={"board": "fresh"})).status_code == 200

    await eventually(found, within=1)  # the announcement, not the 5-second expiry


async def _script_calls(rds: Any) -> int:
    if isinstance(rds, RedisCluster):  # every shard's count (INFO alone asks one node)
        nodes = list((await rds.info("commandstats", target_nodes=RedisCluster.PRIMARIES)).values())
    else:
        nodes = [await rds.info("commandstats")]
    return sum(int(v["calls"]) for stats in nodes for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_repeated_subscribes_are_answered_without_reading_redis_again(
    server: Any, keys: ApiKeys, make_client: Any, rds: Any
) -> None:
    api = make_client(server, keys.submit)
    for i in range(30):
        await submit(api, f"s{i}", i)
    async with ws_connect(server) as ws:
        first = await ws.reply_to({"type": "subscribe", "topics": ["top"], "limit": 100})
        assert first["type"] == "subscribed"
        snapshot = await ws.recv_type("top")
        await asyncio.sleep(0.3)  # any flush of the submissions above is over
        before = await _script_calls(rds)
        for _ in range(40):
            await ws.send({"type": "subscribe", "topics": ["top"], "limit": 100})
        snaps = [await ws.recv_type("top") for _ in range(40)]
        assert all(s["entries"] == snapshot["entries"] for s in snaps)
        assert await _script_calls(rds) - before <= 1


async def test_a_socket_without_a_key_is_rate_limited_then_closed(make_server: Any) -> None:
    server = await make_server(ws_frame_rate=20)
    async with ws_connect(server) as ws:
        for i in range(60):  # a burst of 40 is allowed; the rest is refused
            await ws.send({"type": "ping", "ref": i})
        got = [await ws.recv() for _ in range(60)]
        limited = [m for m in got if m["type"] == "error"]
        assert limited and all(m["code"] == "rate_limited" for m in limited)
        assert 15 <= len(limited) <= 25, len(limited)
        for i in range(200):  # keeps going: closed with 1008
            try:
                await ws.send({"type": "ping", "ref": i})
            except Exception:
                break
        assert await ws.expect_close(within=5) == 1008


async def test_a_game_server_key_is_not_rate_limited(make_server: Any, keys: ApiKeys) -> None:
    server = await make_server(ws_frame_rate=5)
    async with ws_connect(server, keys.submit) as ws:
        for i in range(100):
            await ws.send({"type": "ping", "ref": i})
        got = [await ws.recv() for _ in range(100)]
        assert all(m["type"] == "pong" for m in got)


async def test_status_subscribers_hear_when_postgres_goes_and_comes_back(
    services: Any, make_server: Any, keys: ApiKeys
) -> None:
    from support.netcut import Proxy

    proxy = Proxy(services.dsn)
    await proxy.start()
    try:
        server = await make_server(database_url=proxy.dsn)
        async with ws_connect(server) as ws:
            reply = await ws.reply_to({"type": "subscribe", "topics": ["status"]})
            assert reply["type"] == "subscribed", reply
            first = await ws.recv_type("status")
            assert (first["state"], first["checks"]) == ("ok", {"postgres": "ok", "redis": "ok"})
            await proxy.cut()
            down = await ws.recv_type("status", within=10)
            assert (down["state"], down["checks"]["postgres"]) == ("degraded", "unavailable")
            assert "database" in down["detail"]
            await proxy.start()
            up = await ws.recv_type("status", within=10)
            assert up["state"] == "ok"
        async with ws_connect(server) as quiet:  # a socket that did not subscribe gets no status frame
            await quiet.send({"type": "ping", "ref": 1})
            assert (await quiet.recv())["type"] == "pong"
    finally:
        await proxy.cut()
