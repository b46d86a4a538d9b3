"""Redis clients: a single Redis or a Redis Cluster, chosen for a URL; the one place that knows the difference
in how to reach a node.

    LEADERBOARD_REDIS_URL        any node of a cluster, or the one Redis
    LEADERBOARD_REDIS_CLUSTER    unset: ask that node (INFO cluster: cluster_enabled); true / false: as told

On a cluster the client is redis-py's `RedisCluster`: it routes each command (and each Lua script, by its
KEYS) to the primary of the key's slot and follows MOVED/ASK redirections and failovers itself. Every key of
a board carries the `{board}` hash tag (cache.py), so everything the service does to one board is single-slot.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

Client: TypeAlias = "aioredis.Redis | RedisCluster"


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


async def detect(url: str, told: bool | None) -> bool:
    """Whether `url` is a node of a Redis Cluster: `told` when set, else the node's own answer. A node that
    cannot be reached is taken for a single Redis (and said so): set LEADERBOARD_REDIS_CLUSTER to be sure."""
    if told is not None:
        return told
    probe = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
    try:
        info = await probe.info("cluster")
        return bool(int(info.get("cluster_enabled", 0)))
    except (RedisError, OSError) as exc:
        log.warning(
            "could not ask Redis whether it is a cluster node (%s): assuming a single Redis; "
            "set LEADERBOARD_REDIS_CLUSTER=true or false to skip this check",
            exc,
        )
        return False
    finally:
        await probe.aclose()


def connect(url: str, cluster: bool, **options: Any) -> Client:
    """A client of the Redis (or Redis Cluster) at `url`; `options` are connection options (timeouts...)."""
    if not cluster:
        return aioredis.from_url(url, **options)
    db = urlsplit(url).path.strip("/")
    if db not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0; LEADERBOARD_REDIS_URL names database {db}")
    # require_full_coverage=False: while one shard fails over, the client keeps serving the other shards.
    return RedisCluster.from_url(url, require_full_coverage=False, **options)


def owner(cluster: RedisCluster, key: str) -> ClusterNode:
    """The primary that serves `key`'s slot, from the client's slot map (the client must be initialized)."""
    node = cluster.get_node_from_key(key)
    if node is None:
        raise RedisConnectionError(f"no primary serves the slot of {key} (the cluster is failing over?)")
    return node


def pubsub_client_name() -> str:
    """What this process's pub/sub connections are called in CLIENT LIST."""
    return f"leaderboard-pubsub-{os.getpid()}"


def node_client(client: Client, node: ClusterNode | None = None) -> aioredis.Redis:
    """A plain client of one node (the Redis itself, or a cluster node) with `client`'s connection settings
    (credentials, TLS, timeouts), for a pub/sub connection that must stay on that node. It does not retry:
    a lost connection is the caller's to notice (its subscriptions are gone with it)."""
    if node is None:
        assert isinstance(client, aioredis.Redis)
        cls, kwargs = client.connection_pool.connection_class, client.connection_pool.connection_kwargs
    else:
        cls, kwargs = node.connection_class, node.connection_kwargs
    kwargs = {**kwargs, "retry": Retry(NoBackoff(), 0), "client_name": pubsub_client_name()}
    return aioredis.Redis.from_pool(ConnectionPool(connection_class=cls, **kwargs))


def honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop. redis-py can swallow a cancellation that arrives
    while it (re)connects (redis/redis-py#2028, #2551), which would leave a loop that retries Redis calls running
    after it was cancelled (a shutdown, or a test waiting on it, then waits forever). Every loop that calls Redis
    and retries (ranks, channels, health, the season schedule) calls this each turn."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """asyncio.sleep for the loops that retry Redis calls, honouring a cancellation a call swallowed."""
    honour_cancel()
    await asyncio.sleep(seconds)
