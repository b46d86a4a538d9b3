"""Redis Cluster (issue #14): detection, boards spread over shards, failover and resharding under load.

The rest of the Redis suites also run against a cluster (tests/conftest.py: CLUSTER_MODULES); this module
holds what only a cluster has. The failover tests use a cluster of their own with one replica per primary
(cluster-node-timeout 1 s), since they kill nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from loadtest import rediscluster
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from leaderboard import redisconn
from leaderboard.cache import Keys, channel_of
from support.clients import bearer, create_board, submit, subscribe_top, top, ws_connect
from support.polling import eventually
from support.services import ApiKeys, ServerURL, Services, runtime_of
from support.stores import assert_cache_matches_pg

pytestmark = pytest.mark.timeout(180)


def test_every_key_of_a_board_and_its_channel_share_one_slot() -> None:
    for board in ("global", "weekly-2026-48", "a", "x" * 64, "ünïcode"):
        k = Keys(board)
        slots = {key_slot(getattr(k, part).encode()) for part in Keys.__slots__}
        assert slots == {key_slot(channel_of(board).encode())}, board


async def test_a_cluster_node_is_detected(services: Services, _base_services: Services) -> None:
    assert await redisconn.detect(services.redis_url, None) is True
    assert await redisconn.detect(_base_services.redis_url, None) is False
    assert await redisconn.detect(_base_services.redis_url, True) is True  # told: not asked
    with pytest.raises(ValueError, match="only database 0"):
        redisconn.connect(services.redis_url.rsplit("/", 1)[0] + "/3", True)


async def test_the_server_uses_the_cluster_client_and_boards_spread_over_shards(
    server: ServerURL, admin: httpx.AsyncClient, api: httpx.AsyncClient, redis_cluster: rediscluster.Cluster
) -> None:
    rt = runtime_of(server)
    assert isinstance(rt.redis, RedisCluster) and isinstance(rt.listener, RedisCluster)
    boards = [f"b{i}" for i in range(8)]
    for b in boards:
        await create_board(admin, b)
        for user, score in (("ann", 5), ("bob", 7)):
            await submit(api, user, score, b)
    for b in boards:
        assert [e["user_id"] for e in (await top(api, b))["entries"]] == ["bob", "ann"]
    owners = {redis_cluster.owner(Keys(b).z).port for b in boards}
    assert len(owners) >= 2, "eight boards on one shard: the hash tag does not spread them"


# ---------------------------------------------------------------------------------------------------------
# Failover and resharding, on a cluster with replicas


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[rediscluster.Cluster]:
    why_not = rediscluster.available()
    if why_not:
        pytest.skip(why_not)
    cluster = rediscluster.Cluster(primaries=3, replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
async def ha(ha_cluster: rediscluster.Cluster) -> AsyncIterator[Any]:
    """The replicated cluster, emptied, and a client of it."""
    await asyncio.to_thread(ha_cluster.wait_ok)
    await asyncio.to_thread(ha_cluster.flushall)
    client = redisconn.connect(ha_cluster.url, True, decode_responses=True)
    yield client
    await client.aclose()


@dataclass
class Load:
    """Submissions at a steady pace on one board until stopped; every one must be acknowledged."""

    http: httpx.AsyncClient
    board: str
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        i = 0
        while True:
            started = time.monotonic()
            resp = await self.http.post(
                "/api/leaderboard/submit", json={"user_id": f"p{i % 20}", "score": 1, "board": self.board}
            )
            self.statuses.append(resp.status_code)
            self.latencies.append(time.monotonic() - started)
            i += 1
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        assert self.statuses and set(self.statuses) == {200}, sorted(set(self.statuses))


async def _rebuilds(http: httpx.AsyncClient, board: str) -> float:
    text = (await http.get("/metrics")).text
    m = re.search(rf'^leaderboard_rebuilds_total{{board="{board}",result="ok"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def _survives(
    make_server: Any, keys: ApiKeys, pool: asyncpg.Pool, ha: Any, cluster: rediscluster.Cluster, fail: Any
) -> dict[str, float]:
    """Under load on `global` with a watcher, run `fail()` (which ends with a new primary for the board);
    then every submission was acknowledged, Redis agrees with Postgres again and pushes resume."""
    server = await make_server(redis_url=cluster.url, push_interval_ms=50)
    async with httpx.AsyncClient(base_url=server, headers=bearer(keys.submit), timeout=30) as api:
        for i in range(20):
            await submit(api, f"p{i}", 1)
        async with ws_connect(server) as ws:
            await subscribe_top(ws, limit=5)
            rebuilt_before = await _rebuilds(api, "global")
            load = Load(api, "global")
            load.start()
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await fail()
            await asyncio.to_thread(cluster.wait_ok)
            failed_over = time.monotonic() - started
            await asyncio.sleep(1.0)
            await load.stop()

            async def agrees() -> None:
                await assert_cache_matches_pg(pool, ha, "global")

            await eventually(agrees, within=15, interval=0.2)
            agreed = time.monotonic() - started

            async def rebuilt() -> None:  # on the new primary, once the watcher (every second) has seen it
                assert await _rebuilds(api, "global") > rebuilt_before

            await eventually(rebuilt, within=10, interval=0.2)
            # pushes resume on their own: a new leader reaches the watcher
            await submit(api, "leader", 10_000)
            pushed = await ws.recv_type("top", within=10, where=lambda m: m["entries"][0]["user_id"] == "leader")
            assert pushed["entries"][0]["score"] == 10_000
            assert runtime_of(server).hub.watching("global")
    return {"failover_s": failed_over, "agreed_s": agreed, "max_ack_s": max(load.latencies)}


async def test_a_failover_rebuilds_the_boards_of_that_shard_only(
    make_server: Any, keys: ApiKeys, ha: Any, ha_cluster: rediscluster.Cluster
) -> None:
    """No write in flight, so nothing is marked stale by a failed write: the new primary of the shard (its
    run_id) is what tells the service to rebuild that shard's boards, and only those."""
    server = await make_server(redis_url=ha_cluster.url)
    async with (
        httpx.AsyncClient(base_url=server, headers=bearer(keys.admin), timeout=30) as admin,
        httpx.AsyncClient(base_url=server, headers=bearer(keys.submit), timeout=30) as api,
    ):
        boards = ["global"] + [f"s{i}" for i in range(8)]
        for b in boards[1:]:
            await create_board(admin, b)
        for b in boards:
            await submit(api, "ann", 1, b)
        primary = ha_cluster.owner(Keys("global").z)
        ours = [b for b in boards if ha_cluster.owner(Keys(b).z) is primary]
        others = [b for b in boards if b not in ours]
        assert others, "every board on one shard"

        async def rebuild_counts() -> dict[str, float]:
            return {b: await _rebuilds(api, b) for b in boards}

        async with ws_connect(server) as ws:
            await subscribe_top(ws, limit=5)  # followed before the failover: its events must keep coming
            before = await rebuild_counts()
            replica = ha_cluster.replica_of(primary)
            assert await asyncio.to_thread(replica.cli, "CLUSTER", "FAILOVER") == "OK"

            async def rebuilt() -> None:
                now = await rebuild_counts()
                assert all(now[b] > before[b] for b in ours), (now, before)

            await eventually(rebuilt, within=20, interval=0.2)
            await asyncio.sleep(1.5)  # a later tick of the watch loop rebuilds nothing more
            now = await rebuild_counts()
            assert {b: now[b] for b in others} == {b: before[b] for b in others}
            await submit(api, "leader", 10_000)
            pushed = await ws.recv_type("top", within=10, where=lambda m: m["entries"][0]["user_id"] == "leader")
            assert pushed["entries"][0]["score"] == 10_000


async def test_a_manual_failover_keeps_serving(
    make_server: Any, keys: ApiKeys, pool: asyncpg.Pool, ha: Any, ha_cluster: rediscluster.Cluster
) -> None:
    primary = ha_cluster.owner(Keys("global").z)
    replica = ha_cluster.replica_of(primary)

    async def failover() -> None:
        assert await asyncio.to_thread(replica.cli, "CLUSTER", "FAILOVER") == "OK"

        async def promoted() -> None:
            assert replica.info("replication").get("role") == "master"

        await eventually(promoted, within=15, interval=0.1)

    took = await _survives(make_server, keys, pool, ha, ha_cluster, failover)
    assert ha_cluster.owner(Keys("global").z) is replica
    print(f"\nCLUSTER FAILOVER: {took}")


async def test_a_killed_primary_fails_over_with_every_submission_acknowledged(
    make_server: Any, keys: ApiKeys, pool: asyncpg.Pool, ha: Any, ha_cluster: rediscluster.Cluster
) -> None:
    primary = ha_cluster.owner(Keys("global").z)
    ha_cluster.replica_of(primary)  # there is one to take over

    async def kill() -> None:
        await asyncio.to_thread(ha_cluster.kill, primary)

    took = await _survives(make_server, keys, pool, ha, ha_cluster, kill)
    assert ha_cluster.owner(Keys("global").z) is not primary
    print(f"\nkilled primary: {took}")


async def test_a_board_moved_to_another_shard_keeps_serving_and_pushing(
    make_server: Any, keys: ApiKeys, pool: asyncpg.Pool, ha: Any, ha_cluster: rediscluster.Cluster
) -> None:
    """MOVED and ASK while the board's slot migrates are the client's business: no submission fails, and the
    process follows the board's channel to its new shard (Redis unsubscribes it from the old one)."""
    server = await make_server(redis_url=ha_cluster.url, push_interval_ms=50)
    async with httpx.AsyncClient(base_url=server, headers=bearer(keys.submit), timeout=30) as api:
        for i in range(20):
            await submit(api, f"p{i}", 1)
        async with ws_connect(server) as ws:
            await subscribe_top(ws, limit=5)
            source = ha_cluster.owner(Keys("global").z)
            target = next(n for n in ha_cluster.primary_nodes() if n is not source)
            load = Load(api, "global")
            load.start()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(ha_cluster.move_slot, ha_cluster.slot(Keys("global").z), target, 0.1)
            await asyncio.sleep(1.0)
            await load.stop()
            assert ha_cluster.owner(Keys("global").z) is target

            async def agrees() -> None:
                await assert_cache_matches_pg(pool, ha, "global")

            await eventually(agrees, within=15, interval=0.2)
            hub = runtime_of(server).hub

            async def followed() -> None:
                assert hub.watching("global")

            await eventually(followed, within=10, interval=0.05)
            await submit(api, "leader", 10_000)
            pushed = await ws.recv_type("top", within=10, where=lambda m: m["entries"][0]["user_id"] == "leader")
            assert pushed["entries"][0]["score"] == 10_000
