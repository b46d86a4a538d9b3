"""Layer: cache.py (Redis): key names, versioned writes, change events, NotReady, reads against a reference."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from leaderboard.cache import Cache, Keys, NotReady, board_of_channel, channel_of
from leaderboard.channels import Channels
from leaderboard.protocol import Submission
from leaderboard.ranking import Position, TopSlice
from leaderboard.store import Store, Write, Written
from support.polling import eventually
from support.reference import ranked


async def _no_pages() -> AsyncGenerator[tuple[bytes, int, bytes], None]:
    return
    yield  # an async generator with nothing in it: an empty board


async def _zero() -> tuple[int, int]:
    return 0, 0  # the seq and version floors


async def mark_ready(cache: Cache, board: str) -> None:
    """Make the board ready through the cache's own API: a rebuild from an empty board."""
    assert await cache.rebuild(board, _no_pages, _zero, lambda: None) == 0
    assert await cache.is_ready(board)


def row(user: str, key: int, version: int, name: str | None = None, board: str = "global") -> Written:
    return Written(board, user, -key, key, version, name)


class Events:
    """Change events of the boards followed, received as the fan-out receives them (channels.py: SUBSCRIBE on
    a single Redis, SSUBSCRIBE on the board's shard of a cluster)."""

    def __init__(self, client: Any) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.channels = Channels(client, lambda channel, data: self.queue.put_nowait((channel, data)), lambda _: None)
        self.task = asyncio.create_task(self.channels.run())

    async def follow(self, *boards: str) -> None:
        """Subscribe to the boards' channels; return once every subscription is confirmed."""
        for board in boards:
            self.channels.want(channel_of(board))

        async def confirmed() -> None:
            assert all(self.channels.active(channel_of(b)) for b in boards)

        await eventually(confirmed, within=5, interval=0.01)

    async def next(self, boards: set[str], within: float = 5.0) -> tuple[str, dict[str, Any]]:
        """The next change event of one of `boards`."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                channel, data = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            if board_of_channel(channel) in boards:
                return channel, json.loads(data)
        raise AssertionError(f"no change event within {within}s")


@pytest.fixture
async def events(rds: Any) -> AsyncIterator[Events]:
    ev = Events(rds)
    yield ev
    ev.task.cancel()
    await asyncio.gather(ev.task, return_exceptions=True)


async def next_event(events: Events, boards: set[str], within: float = 5.0) -> tuple[str, dict[str, Any]]:
    return await events.next(boards, within)


def changes(event: dict[str, Any]) -> list[tuple[str, float | None, float]]:
    return [(u, None if old is False else float(old), float(new)) for u, old, new in event["c"]]


# ---------------------------------------------------------------------------------------------------------


def test_keys_name_every_key_of_a_board() -> None:
    k = Keys("my-board")
    names = {slot: getattr(k, slot) for slot in Keys.__slots__}
    assert names == {
        "z": "lb:{my-board}:z",
        "v": "lb:{my-board}:v",
        "n": "lb:{my-board}:n",
        "m": "lb:{my-board}:m",
        "m_new": "lb:{my-board}:m~",
        "season": "lb:{my-board}:season",
        "seq": "lb:{my-board}:seq",
        "vmax": "lb:{my-board}:vmax",
        "verify": "lb:{my-board}:verify",
        "ready": "lb:{my-board}:ready",
        "lock": "lb:{my-board}:lock",
        "ev": "lb:{my-board}:ev",
        "z_new": "lb:{my-board}:z~",
        "v_new": "lb:{my-board}:v~",
        "n_new": "lb:{my-board}:n~",
    }
    assert board_of_channel(k.ev) == "my-board"
    assert Keys("a").z != Keys("b").z


async def test_write_stores_committed_values_and_returns_ranks(cache: Cache, rds: aioredis.Redis) -> None:
    await mark_ready(cache, "global")
    res = await cache.write("global", [row("a", -10, 1, "Ann"), row("b", -20, 2), row("c", -10, 3)], ["x", "a"], 1.5, 1)
    assert res.ready
    assert res.ranks == {"a": 2, "b": 1, "c": 2, "x": 0}  # competition ranks; x has no entry
    k = Keys("global")
    assert await rds.zrange(k.z, 0, -1, withscores=True) == [("b", -20.0), ("a", -10.0), ("c", -10.0)]
    assert await rds.hgetall(k.v) == {"a": "1", "b": "2", "c": "3"}
    assert await rds.hgetall(k.n) == {"a": "Ann"}  # no name given: none stored


async def test_an_older_version_never_overwrites_a_newer_one(cache: Cache, rds: aioredis.Redis) -> None:
    await mark_ready(cache, "global")
    await cache.write("global", [row("a", -10, 5, "New")], [], 0.0, 1)
    seq = await cache.seq("global")
    for stale in (row("a", -99, 3, "Old"), row("a", -50, 5, "Same")):  # older, and the same version again
        res = await cache.write("global", [stale], [], 0.0, 1)
        assert res.ranks == {"a": 1} and res.seq == seq
    k = Keys("global")
    assert await rds.zscore(k.z, "a") == -10
    assert await rds.hget(k.v, "a") == "5"
    assert await rds.hget(k.n, "a") == "New"
    assert await cache.seq("global") == seq


async def test_a_write_publishes_one_event_with_its_changes(cache: Cache, events: Events) -> None:
    board, other = f"ev-{uuid.uuid4().hex[:8]}", f"ev-{uuid.uuid4().hex[:8]}"
    ours = {board, other}
    await events.follow(board, other)
    await mark_ready(cache, board)
    channel, reset = await next_event(events, ours)  # the rebuild's swap announces itself
    assert channel == Keys(board).ev and reset.get("reset") is True
    await cache.write(board, [row("a", -10, 1), row("b", -5, 2)], [], 100.25, 1)
    res = await cache.write(board, [row("a", -15, 3), row("c", -1, 4), row("b", -5, 5)], [], 101.5, 1)
    channel, first = await next_event(events, ours)
    assert channel == Keys(board).ev and board_of_channel(channel) == board
    assert changes(first) == [("a", None, -10.0), ("b", None, -5.0)]
    assert float(first["t"]) == 100.25
    channel, second = await next_event(events, ours)  # the very next message: one event per write
    assert changes(second) == [("a", -10.0, -15.0), ("c", None, -1.0)]  # b: newer version, same key
    assert second["s"] == res.seq > first["s"]
    # a write that changes no key publishes nothing: the next event is the one after it
    await cache.write(board, [row("a", -15, 6)], [], 102.0, 1)
    await cache.write(other, [row("z", -1, 7, board=other)], [], 103.0, 1)
    channel, third = await next_event(events, ours)
    assert board_of_channel(channel) == other and changes(third) == [("z", None, -1.0)]


async def test_reads_raise_not_ready_until_the_board_is_ready(cache: Cache, rds: aioredis.Redis) -> None:
    res = await cache.write("global", [row("a", -10, 2)], ["a"], 0.0, 1)
    assert not res.ready and res.ranks == {"a": 1}  # stored (versioned) all the same
    assert not await cache.is_ready("global")
    with pytest.raises(NotReady) as top:
        await cache.top("global", 0, 10)
    assert top.value.seq == res.seq == await cache.seq("global") > 0
    with pytest.raises(NotReady):
        await cache.standing("global", "a", 1)
    with pytest.raises(NotReady) as follow:
        await cache.follow("global", ["a"])
    assert follow.value.seq == res.seq
    await rds.set(Keys("global").ready, "1")  # the flag alone decides; the rebuild is what sets it
    assert (await cache.top("global", 0, 10)).total == 1
    assert (await cache.follow("global", ["a"]))[1] == {"a": Position(-10, 1)}


VALUES = {"a": 5, "B": 7, "b": 7, "c.d": -3, "e@x": 7, "Z-9": 0, "u_1": 5, "u:2": 12}  # ties; mixed-case ids
NAMED = {"a": "Ann", "b": "Bo", "u:2": "Ute"}


def listing(page: TopSlice) -> list[tuple[int, str, int]]:
    return [(r, m.user_id, -m.key) for r, m in zip(page.ranks(), page.members, strict=True)]


async def test_reads_equal_the_reference(cache: Cache) -> None:
    await mark_ready(cache, "global")
    rows = [row(u, -v, i + 1, NAMED.get(u)) for i, (u, v) in enumerate(VALUES.items())]
    await cache.write("global", rows, [], 0.0, 1)
    seq = await cache.seq("global")
    want = [(e["rank"], e["user_id"], e["score"]) for e in ranked(VALUES, "desc")]
    for limit in (1, 3, 8, 20):
        got: list[tuple[int, str, int]] = []
        for offset in range(0, len(VALUES), limit):
            page = await cache.top("global", offset, limit)
            assert (page.seq, page.total, page.offset) == (seq, len(VALUES), offset)
            got += listing(page)
        assert got == want, limit
    page = await cache.top("global", 0, 20)
    assert {m.user_id: m.display_name for m in page.members} == {u: NAMED.get(u) for u in VALUES}
    assert (await cache.top("global", 8, 5)).members == []
    for i, (rank, user, _) in enumerate(want):
        for around in (0, 1, 3):
            found = await cache.standing("global", user, around)
            assert found is not None
            assert (found.seq, found.total, found.rank, found.user_id) == (seq, len(VALUES), rank, user)
            start = max(i - around, 0)
            assert found.page.offset == start
            assert listing(found.page) == want[start : i + around + 1], (user, around)
    assert await cache.standing("global", "nobody", 1) is None
    rank_of = {u: r for r, u, _ in want}
    assert await cache.follow("global", ["u:2", "nobody", "b"]) == (
        seq,
        {"u:2": Position(-12, rank_of["u:2"]), "nobody": None, "b": Position(-7, rank_of["b"])},
    )


async def test_seq_only_grows(cache: Cache) -> None:
    await mark_ready(cache, "global")
    seen = [await cache.seq("global")]
    steps = [
        (row("a", -1, 3), True),  # a change: seq jumps to version * 1024
        (row("a", -2, 2), False),  # older version: ignored
        (row("b", -1, 4), True),
        (row("b", -1, 9), False),  # newer version, same key: no change
        (row("c", -3, 1), True),  # an old version of a new member (a write delayed in flight): seq + 1
    ]
    for written, changed in steps:
        res = await cache.write("global", [written], [], 0.0, 1)
        assert res.seq == await cache.seq("global")
        if changed:
            assert res.seq == max(seen[-1] + 1, written.version * 1024), (written, seen)
        else:
            assert res.seq == seen[-1], written
        seen.append(res.seq)
    assert seen == sorted(seen)
    # a rebuild's swap never takes seq back, even with a floor below it
    await mark_ready(cache, "global")
    assert await cache.seq("global") == seen[-1] + 1
    assert await cache.seq("never-written") == 0


async def test_seq_stays_within_the_floor_postgres_vouches_for(cache: Cache, store: Store) -> None:
    board = await store.board("global")
    assert board is not None
    await mark_ready(cache, "global")
    for i in range(5):
        sub = Submission(user_id=f"p{i % 3}", score=i + 1)
        result = await store.commit_batch([Write(sub, uuid.uuid4(), board)])
        res = await cache.write("global", result.written, [], 0.0, 1)
        assert res.seq <= await store.seq_floor()
