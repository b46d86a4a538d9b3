"""Channels: keeps this process subscribed to exactly the pub/sub channels it wants, each on the node that
serves it, and says which ones are live.

    single Redis    one connection: SUBSCRIBE / UNSUBSCRIBE, messages `message`
    Redis Cluster   one connection per primary that owns a wanted channel's slot: SSUBSCRIBE / SUNSUBSCRIBE
                    (sharded pub/sub: an SPUBLISH reaches only that shard, never the whole cluster)

`want()` and `drop()` only record the wish; one task (`run()`) makes the subscriptions match it, level-
triggered: after a lost connection, a failover, a slot that moved (Redis unsubscribes us itself) or a failed
subscribe, it re-reads the cluster's slot map and subscribes again on the node that now owns the channel,
with a backoff while that fails. `joined(channel)` is called each time a channel's subscription is confirmed
(the first time and after every such gap: messages may have been missed), `deliver(channel, data)` for every
message. `active(channel)` is true only between a confirmation and the loss of that subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from .redisconn import Client, honour_cancel, node_client, owner, pause

log = logging.getLogger(__name__)

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 2.0
SINGLE = ""  # the node name of a single Redis


@dataclass(eq=False)
class _Link:
    """One pub/sub connection to one node and its reader task."""

    node: str
    client: aioredis.Redis
    pubsub: PubSub
    confirmed: set[str] = field(default_factory=set)
    leaving: set[str] = field(default_factory=set)  # unsubscribed by us, not yet acknowledged
    reader: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


class Channels:
    """The channels this process listens to (see the module docstring)."""

    def __init__(self, client: Client, deliver: Callable[[str, str], None], joined: Callable[[str], None]) -> None:
        self.client, self.deliver, self.joined = client, deliver, joined
        self.sharded = isinstance(client, RedisCluster)
        self.wanted: set[str] = set()
        self._route: dict[str, str] = {}  # channel -> node it is subscribed on (or being subscribed on)
        self._links: dict[str, _Link] = {}  # node name -> link
        self._wake = asyncio.Event()
        self._refresh = False  # the cluster's slot map may be stale: re-read it before routing

    def want(self, channel: str) -> None:
        if channel not in self.wanted:
            self.wanted.add(channel)
            self._wake.set()

    def drop(self, channel: str) -> None:
        if channel in self.wanted:
            self.wanted.discard(channel)
            self._wake.set()

    def active(self, channel: str) -> bool:
        """Messages of `channel` are arriving: its subscription is confirmed and its connection is up."""
        link = self._links.get(self._route.get(channel, "\0"))
        return link is not None and channel in link.confirmed

    # ---- the task -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the subscriptions in step with `wanted` until cancelled."""
        backoff = BACKOFF_MIN_S
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if await self._reconcile():
                    backoff = BACKOFF_MIN_S
                    continue
                self._refresh = True
                await pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self._wake.set()
        finally:
            links, self._links = list(self._links.values()), {}
            self._route.clear()
            for link in links:
                await link.close()

    async def _reconcile(self) -> bool:
        """Subscribe what is wanted where it belongs, unsubscribe the rest. False when something failed."""
        try:
            owners = await self._owners(self.wanted)
        except (RedisError, OSError) as exc:
            log.warning("pub/sub: cannot read the cluster's slot map (%s); retrying", exc)
            return False
        ok = True
        # Leave what is no longer wanted here, or no longer served by the node we subscribed on.
        leaving: dict[str, list[str]] = {}
        for channel, node in list(self._route.items()):
            if owners.get(channel) != node:
                del self._route[channel]
                leaving.setdefault(node, []).append(channel)
        for node, channels in leaving.items():
            link = self._links.get(node)
            if link is not None:
                link.confirmed.difference_update(channels)
                link.leaving.update(channels)
                try:
                    await self._command(link, "unsubscribe", channels)
                except (RedisError, OSError):
                    self._forget(link)
        joining: dict[str, list[str]] = {}
        for channel, node in owners.items():
            if channel not in self._route:
                joining.setdefault(node, []).append(channel)
        for node, channels in joining.items():
            try:
                link = self._links.get(node) or await self._open(node)
                for channel in channels:
                    self._route[channel] = node
                await self._command(link, "subscribe", channels)
            except (RedisError, OSError) as exc:
                log.warning("pub/sub: cannot subscribe on %s (%s); retrying", node or "redis", exc)
                for channel in channels:
                    self._route.pop(channel, None)
                if node in self._links:
                    self._forget(self._links[node])
                ok = False
        for node, link in list(self._links.items()):
            if node not in self._route.values():
                del self._links[node]
                await link.close()
        return ok

    async def _owners(self, channels: set[str]) -> dict[str, str]:
        """channel -> name of the node that serves it."""
        if not self.sharded:
            return dict.fromkeys(channels, SINGLE)
        cluster = self.client
        assert isinstance(cluster, RedisCluster)
        if self._refresh:
            await cluster.nodes_manager.initialize()
            self._refresh = False
        else:
            await cluster.initialize()
        return {c: owner(cluster, c).name for c in channels}

    async def _open(self, node: str) -> _Link:
        if self.sharded:
            assert isinstance(self.client, RedisCluster)
            target = self.client.get_node(node_name=node)
            if target is None:
                raise RedisError(f"no node {node} in the slot map")
            client = node_client(self.client, target)
        else:
            assert isinstance(self.client, aioredis.Redis)
            client = node_client(self.client)
        link = _Link(node, client, client.pubsub())
        self._links[node] = link
        return link

    async def _command(self, link: _Link, verb: str, channels: list[str]) -> None:
        if not self.sharded:
            await (link.pubsub.subscribe if verb == "subscribe" else link.pubsub.unsubscribe)(*channels)
        else:  # one SSUBSCRIBE per slot: Redis refuses channels of several slots in one (CROSSSLOT)
            by_slot: dict[int, list[str]] = {}
            for channel in channels:
                by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
            for group in by_slot.values():
                if verb == "subscribe":
                    await link.pubsub.ssubscribe(*group)
                else:
                    await link.pubsub.sunsubscribe(*group)
        if link.reader is None:
            link.reader = asyncio.create_task(self._read(link), name=f"pubsub:{link.node or 'redis'}")

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                honour_cancel()
                msg = await link.pubsub.get_message(timeout=None)
                if msg is not None:
                    self._on_message(link, msg)
        except (RedisError, OSError) as exc:
            if self._links.get(link.node) is link:
                log.warning("pub/sub: lost %s (%s); subscribing again", link.node or "redis", exc)
                self._forget(link)

    def _on_message(self, link: _Link, msg: dict[str, Any]) -> None:
        kind, channel = msg["type"], msg["channel"]
        if kind in ("message", "smessage"):
            self.deliver(channel, msg["data"])
        elif kind in ("subscribe", "ssubscribe"):
            if self._route.get(channel) == link.node and channel not in link.confirmed:
                link.confirmed.add(channel)
                self.joined(channel)
        elif kind in ("unsubscribe", "sunsubscribe"):
            link.confirmed.discard(channel)
            if channel in link.leaving:
                link.leaving.discard(channel)
            elif self._route.get(channel) == link.node:  # not asked for: the slot moved away from this node
                del self._route[channel]
                self._refresh = True
                self._wake.set()

    def _forget(self, link: _Link) -> None:
        """The link's connection is gone, and every subscription on it: route its channels afresh."""
        link.confirmed.clear()
        if self._links.get(link.node) is link:
            del self._links[link.node]
        for channel, node in list(self._route.items()):
            if node == link.node:
                del self._route[channel]
        self._refresh = True
        self._wake.set()
        task = asyncio.create_task(link.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
