"""Layer: channels.py: subscribed to exactly what is wanted, on the right node; a lost connection is noticed
and subscribed again (a single Redis and a Redis Cluster alike)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from leaderboard.cache import channel_of
from leaderboard.channels import Channels
from leaderboard.redisconn import pubsub_client_name
from support.polling import eventually


class Recorder:
    def __init__(self, client: Any) -> None:
        self.messages: list[tuple[str, str]] = []
        self.joins: list[str] = []
        self.channels = Channels(client, lambda c, d: self.messages.append((c, d)), self.joins.append)
        self.task = asyncio.create_task(self.channels.run())

    async def active(self, channel: str, yes: bool = True) -> None:
        async def check() -> None:
            assert self.channels.active(channel) is yes

        await eventually(check, within=10, interval=0.01)


@pytest.fixture
async def recorder(rds: Any, clean: None) -> AsyncIterator[Recorder]:
    r = Recorder(rds)
    yield r
    r.task.cancel()
    await asyncio.gather(r.task, return_exceptions=True)


async def publish(rds: Any, channel: str, data: str) -> None:
    if isinstance(rds, RedisCluster):
        await rds.spublish(channel, data)
    else:
        await rds.publish(channel, data)


async def subscribers(rds: Any, channel: str) -> int:
    if isinstance(rds, RedisCluster):
        found = await rds.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=rds.get_node_from_key(channel))
    else:
        found = await rds.execute_command("PUBSUB NUMSUB", channel)
    return int(dict(found)[channel])


async def test_only_wanted_channels_are_received_and_dropped_ones_left(recorder: Recorder, rds: Any) -> None:
    a, b = channel_of(f"ch-{uuid.uuid4().hex[:8]}"), channel_of(f"ch-{uuid.uuid4().hex[:8]}")
    recorder.channels.want(a)
    await recorder.active(a)
    assert recorder.joins == [a] and not recorder.channels.active(b)
    await publish(rds, b, "not ours")
    await publish(rds, a, "1")

    async def got() -> None:
        assert recorder.messages == [(a, "1")]

    await eventually(got, within=5, interval=0.01)
    recorder.channels.drop(a)
    await recorder.active(a, False)

    async def left() -> None:
        assert await subscribers(rds, a) == 0

    await eventually(left, within=5, interval=0.02)


async def test_a_lost_connection_is_subscribed_again(recorder: Recorder, rds: Any) -> None:
    a = channel_of(f"ch-{uuid.uuid4().hex[:8]}")
    recorder.channels.want(a)
    await recorder.active(a)
    # Redis drops our pub/sub connections (as a restart or a network cut would)
    nodes = rds.get_primaries() if isinstance(rds, RedisCluster) else [None]
    killed = 0
    for node in nodes:
        kw = {"target_nodes": node} if node is not None else {}
        for client in await rds.client_list(**kw):
            if client["name"] == pubsub_client_name():
                killed += await rds.execute_command("CLIENT KILL", "ID", client["id"], "SKIPME", "yes", **kw)
    assert killed >= 1

    async def rejoined() -> None:
        assert recorder.joins == [a, a] and recorder.channels.active(a)

    await eventually(rejoined, within=10, interval=0.01)  # joined again: the owner re-reads what it missed
    await publish(rds, a, "after")

    async def got() -> None:
        assert recorder.messages == [(a, "after")]

    await eventually(got, within=5, interval=0.01)
