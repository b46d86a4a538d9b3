"""Faults: Redis going away and coming back, a cold (flushed) Redis rebuilt in full while serving."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from support.clients import (
    assert_problem,
    create_board,
    full_listing,
    rank,
    submit,
    subscribe_top,
    top,
    ws_connect,
)
from support.polling import eventually
from support.reference import percentile, ranked
from support.services import ApiKeys, runtime_of
from support.stores import assert_cache_matches_pg, cache_key, pg_values


async def check_reads(api: httpx.AsyncClient, expected: dict[str, int], *probe: str) -> None:
    """Every listing and the given players' ranks agree with the reference ranking of `expected`."""
    want = ranked(expected, "desc")
    listing = await full_listing(api)
    assert [(e["rank"], e["user_id"], e["score"]) for e in listing] == [
        (e["rank"], e["user_id"], e["score"]) for e in want
    ]
    by_user = {e["user_id"]: e for e in want}
    for user in probe:
        r = await rank(api, user, around=1)
        assert (r["rank"], r["score"], r["total"]) == (by_user[user]["rank"], expected[user], len(expected))
        assert r["percentile"] == percentile(r["rank"], len(expected))


async def test_redis_outage_degrades_then_recovers(
    make_server: Any, private_redis: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    server = await make_server(redis_url=private_redis.url)
    api = make_client(server, keys.submit)
    anon = make_client(server)
    expected = {f"u{i:02d}": i * 10 for i in range(20)}
    await asyncio.gather(*(submit(api, u, v) for u, v in expected.items()))
    cache = aioredis.from_url(private_redis.url, decode_responses=True)
    try:
        async with ws_connect(server) as ws:
            await subscribe_top(ws)
            seen_seq = max(ws.max_seq(), (await top(api))["seq"])

            private_redis.stop()
            # submissions still commit and ack with a correct rank
            ack = await submit(api, "u00", 1000)
            expected["u00"] += 1000
            assert (ack["score"], ack["rank"]) == (1000, 1)
            ack = await submit(api, "newbie", 95)
            expected["newbie"] = 95
            assert ack["rank"] == next(e["rank"] for e in ranked(expected, "desc") if e["user_id"] == "newbie")
            assert await pg_values(pool) == expected
            # reads still answer, from Postgres
            await check_reads(api, expected, "newbie", "u00", "u05")
            # a client (re)subscribing now gets the current board
            async with ws_connect(server) as late:
                snap = await subscribe_top(late)
                assert [e["user_id"] for e in snap["entries"][:2]] == ["u00", "u19"]
                assert snap["total"] == len(expected)
                seen_seq = max(seen_seq, snap["seq"])
            # not ready, and says why
            problem = assert_problem(await anon.get("/readyz"), 503, "unavailable")
            assert "redis" in (problem["detail"] + str(problem.get("checks", ""))).lower(), problem
            assert (await anon.get("/healthz")).status_code == 200

            private_redis.start()  # same port; its AOF still holds the pre-outage (now stale) board

            async def ready() -> None:
                assert (await anon.get("/readyz")).status_code == 200

            await eventually(ready, within=30)
            await eventually(lambda: assert_cache_matches_pg(pool, cache), within=30)
            await check_reads(api, expected, "newbie", "u00", "u05")

            # pushes resume on the same socket, and seq never went back
            ack = await submit(api, "late", 5000)
            expected["late"] = 5000
            assert ack["rank"] == 1
            push = await ws.recv_type("top", within=10, where=lambda m: m["entries"][0]["user_id"] == "late")
            assert push["seq"] > seen_seq
            assert push["total"] == len(expected)
    finally:
        await cache.aclose()


async def test_seq_does_not_go_back_while_redis_is_down(
    make_server: Any, private_redis: Any, keys: ApiKeys, make_client: Any
) -> None:
    """Clients drop any snapshot whose seq is not greater than the last one they applied, so a snapshot of a
    changed board must carry a greater seq, also while Redis is away (docs/protocol.md, `top`)."""
    server = await make_server(redis_url=private_redis.url)
    api = make_client(server, keys.submit)
    await submit(api, "a", 10)
    async with ws_connect(server) as ws:
        before = (await subscribe_top(ws))["seq"]
    private_redis.stop()
    await submit(api, "b", 20)  # the board changed
    async with ws_connect(server) as ws:
        snap = await subscribe_top(ws)
    assert [e["user_id"] for e in snap["entries"]] == ["b", "a"]
    assert snap["seq"] > before, (snap["seq"], before)
    page = await top(api)
    assert page["seq"] > before, (page["seq"], before)


async def test_submissions_during_outage_are_not_lost_across_restart(
    make_server: Any, private_redis: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool
) -> None:
    server = await make_server(redis_url=private_redis.url)
    api = make_client(server, keys.submit)
    await submit(api, "a", 10)
    await submit(api, "b", 20)
    private_redis.stop()
    # b overtakes nobody, a overtakes b: the restarted Redis must not keep the old order
    await submit(api, "a", 15)
    private_redis.start()
    cache = aioredis.from_url(private_redis.url, decode_responses=True)
    try:
        await eventually(lambda: assert_cache_matches_pg(pool, cache), within=30)
        page = await top(api)
        assert [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]] == [
            (1, "a", 25),
            (2, "b", 20),
        ]
    finally:
        await cache.aclose()


async def test_cold_redis_is_rebuilt_in_full_while_serving(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    server = await make_server(rebuild_batch=100)
    api = make_client(server, keys.submit)
    expected = {f"p{i:03d}": (i * 7) % 250 for i in range(300)}  # ties included
    users = list(expected)
    for chunk in range(0, 300, 50):
        await asyncio.gather(*(submit(api, u, expected[u]) for u in users[chunk : chunk + 50]))
    seq_before = (await top(api))["seq"]
    await assert_cache_matches_pg(pool, rds)

    await rds.flushdb()
    # reads during the rebuild are correct, whichever store answers them
    await asyncio.gather(check_reads(api, expected, "p250", "p001"), check_reads(api, expected, "p299"))
    ack = await submit(api, "p007", 1000)
    expected["p007"] += 1000
    assert ack["rank"] == 1

    await eventually(lambda: assert_cache_matches_pg(pool, rds), within=30)
    assert await rds.zcard(cache_key("global")) == 300  # every member, not just the top 10
    await check_reads(api, expected, "p250", "p007", "p100")
    page = await top(api)
    assert page["seq"] > seq_before  # seq survives the lost Redis


async def test_cold_redis_at_start_is_warmed(
    make_server: Any, keys: ApiKeys, make_client: Any, pool: asyncpg.Pool, rds: aioredis.Redis
) -> None:
    first = await make_server()
    api = make_client(first, keys.submit)
    expected = {f"w{i:02d}": i for i in range(30)}
    await asyncio.gather(*(submit(api, u, v) for u, v in expected.items()))
    seq_before = (await top(api))["seq"]
    await first.stop()
    await rds.flushdb()
    second = await make_server()
    api2 = make_client(second, keys.submit)
    await eventually(lambda: assert_cache_matches_pg(pool, rds), within=30)
    await check_reads(api2, expected, "w00", "w29")
    assert (await top(api2))["seq"] > seq_before


async def test_a_read_after_an_ack_whose_cache_write_failed_shows_it(
    make_server: Any, private_redis: Any, keys: ApiKeys, make_client: Any
) -> None:
    """Found by probing: with Redis paused (its connections open, its replies gone), a first page kept in
    memory outlived an ack whose Redis write had failed."""
    server = await make_server(redis_url=private_redis.url)
    api = make_client(server, keys.submit)
    await submit(api, "old", 10)
    async with ws_connect(server) as ws:
        await subscribe_top(ws)  # this process follows the board's events: its first page is kept
        assert [e["user_id"] for e in (await top(api))["entries"]] == ["old"]
        assert [e["user_id"] for e in (await top(api))["entries"]] == ["old"]  # from memory
        assert private_redis._pid is not None
        os.kill(private_redis._pid, signal.SIGSTOP)
        try:
            ack = await submit(api, "new", 20)  # its Redis write times out; the rank comes from Postgres
            assert ack["rank"] == 1
            page = await top(api)
            assert [(e["user_id"], e["score"]) for e in page["entries"]] == [("new", 20), ("old", 10)]
        finally:
            os.kill(private_redis._pid, signal.SIGCONT)
        page = await top(api)
        assert [(e["user_id"], e["score"]) for e in page["entries"]] == [("new", 20), ("old", 10)]
        assert (await rank(api, "new"))["rank"] == 1


async def test_a_pool_busy_with_work_is_not_a_postgres_outage(make_server: Any, make_client: Any) -> None:
    """Under a flood every pooled connection can be busy for seconds while Postgres answers: the health probe
    must not queue behind them and call Postgres unavailable (a `degraded` status to every socket, and /readyz
    503 taking a working instance out of its load balancer exactly when it is busiest)."""
    from leaderboard.health import PROBE_TIMEOUT

    server = await make_server(db_pool_size=2)
    rt = runtime_of(server)
    anon = make_client(server)
    flood = [asyncio.create_task(rt.pool.execute("SELECT pg_sleep(4)")) for _ in range(2)]  # every connection
    try:
        await eventually(lambda: _busy(rt.pool), within=10)
        started = asyncio.get_running_loop().time()
        assert await rt.health.probe() == {"postgres": "ok", "migrations": "ok", "redis": "ok"}
        ready = await anon.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "migrations": "ok"}
        assert asyncio.get_running_loop().time() - started < PROBE_TIMEOUT
        assert not any(task.done() for task in flood)  # (the pool was busy all along)
    finally:
        await asyncio.gather(*flood)


async def _busy(pool: asyncpg.Pool) -> None:
    assert pool.get_idle_size() == 0 and pool.get_size() == pool.get_max_size()


async def test_rebuilds_on_the_smallest_pool_do_not_wait_for_each_other_forever(
    make_server: Any, keys: ApiKeys, make_client: Any
) -> None:
    """A rebuild holds one pooled connection while it takes a second (ranks and names read at once): with a
    pool of 2, two rebuilds at once (after a Redis wipe every board is rebuilt) each held one and waited for
    the other's, and every request after them waited too."""
    server = await make_server(db_pool_size=2)
    rt = runtime_of(server)
    admin, api = make_client(server, keys.admin), make_client(server, keys.submit)
    boards = ["global", "second", "third"]
    for board in boards[1:]:
        await create_board(admin, board)
    for board in boards:
        await submit(api, "alice", 10, board)
    for board in boards:
        rt.ranks.ensure_rebuild(board)
    await asyncio.wait_for(asyncio.gather(*(rt.ranks._rebuilds[b] for b in boards)), 20)
    assert (await submit(api, "alice", 5))["score"] == 15
    for board in boards:
        assert (await rank(api, "alice", board))["rank"] == 1
