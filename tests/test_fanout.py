"""Layer: fanout.py (the Hub): subscriptions, a real Redis pub/sub listener, debounced flushes, rank pushes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from leaderboard import fanout, redisconn
from leaderboard.cache import Cache
from leaderboard.fanout import Hub
from leaderboard.outbox import Encoded, Outbox
from leaderboard.protocol import BoardCreate, Submission
from leaderboard.ranking import Position
from leaderboard.ranks import Ranks
from leaderboard.store import BoardInfo, Store, Write
from support.polling import eventually
from support.reference import ranked
from support.services import Services

_boards = itertools.count()


class Socket:
    """The far end of an Outbox: records every frame sent; with `blocked`, sends wait until `unblock()`."""

    def __init__(self, *, blocked: bool = False, outbox: type[Outbox] = Outbox) -> None:
        self.frames: list[dict[str, Any]] = []
        self._open = asyncio.Event()
        if not blocked:
            self._open.set()
        self.outbox = outbox(self._send, self._close, None)

    @property
    def reading(self) -> bool:
        return self._open.is_set()

    def drained(self) -> bool:
        box = self.outbox
        return box.blocked_since is None and not box.pending and not box.replies

    async def _send(self, text: str) -> None:
        self.frames.append(json.loads(text))
        await self._open.wait()

    async def _close(self, code: int) -> None:
        raise AssertionError(f"closed with {code}")

    def unblock(self) -> None:
        self._open.set()

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == type_]


class RecordingRanks(Ranks):
    """A real Ranks that notes which players each follow() asks about."""

    def __init__(self, cache: Cache, store: Store) -> None:
        super().__init__(cache, store)
        self.asked: list[list[str]] = []

    async def follow(self, board: BoardInfo, users: Sequence[str]) -> tuple[int, dict[str, Position | None]]:
        self.asked.append(sorted(users))
        return await super().follow(board, users)


class RecordingHub(Hub):
    """A real Hub that notes when each flush starts (loop time) and counts finished flushes."""

    def __init__(self, client: redisconn.Client, ranks: Ranks, push_interval: float) -> None:
        super().__init__(client, ranks, push_interval, ranks.store.forget)
        self.started: list[float] = []
        self.done = 0

    async def _flush(self, board_id: str) -> None:
        self.started.append(asyncio.get_running_loop().time())
        try:
            await super()._flush(board_id)
        finally:
            self.done += 1


@dataclass
class Env:
    store: Store
    ranks: RecordingRanks
    hub: RecordingHub
    board: BoardInfo
    sockets: list[Socket]
    listener: asyncio.Task[None] | None = None

    def socket(self, *, blocked: bool = False, outbox: type[Outbox] = Outbox) -> Socket:
        s = Socket(blocked=blocked, outbox=outbox)
        self.sockets.append(s)
        return s

    async def listen(self) -> None:
        """Start the pub/sub listener; return once it is subscribed (on connect it re-reads every board)."""
        assert self.hub.boards, "subscribe first: the listener's first flush is the sign it is subscribed"
        done = self.hub.done
        self.listener = asyncio.create_task(self.hub.listen())
        await self.flushed(done + 1)

    async def flushed(self, count: int, within: float = 10.0) -> None:
        """Wait until `count` flushes have finished and every socket that reads has taken what they pushed."""

        async def check() -> None:
            assert self.hub.done >= count, (self.hub.done, count)
            assert all(s.drained() for s in self.sockets if s.reading)

        await eventually(check, within, interval=0.005)

    async def play(self, scores: dict[str, int]) -> None:
        """Commit a batch and record it in Redis, as the writer does: the cache write publishes the change."""
        subs = [Submission(user_id=u, score=s, board=self.board.id) for u, s in scores.items()]
        batch = [Write(sub, uuid.uuid4(), self.board) for sub in subs]
        result = await self.store.commit_batch(batch)
        values = {w.sub.user_id: o.value for w, o in zip(batch, result.outcomes, strict=True)}
        await self.ranks.record(self.board, result.written, values, time.time())

    async def step(self, scores: dict[str, int]) -> None:
        """play() one change and wait for the flush it causes (pushes included)."""
        done = self.hub.done
        await self.play(scores)
        await self.flushed(done + 1)


@pytest.fixture
async def make_env(services: Services, store: Store, cache: Cache, clean: None) -> AsyncIterator[Any]:
    made: list[Env] = []
    # the listener's connection idles by design: a client without a read timeout, as the app's lifespan makes
    client = redisconn.connect(services.redis_url, services.cluster, decode_responses=True)

    async def factory(interval: float = 0.02, sort: str = "desc") -> Env:
        # a board of its own: pub/sub channels are shared by every db of a Redis server
        spec = BoardCreate(id=f"hub{next(_boards)}-{uuid.uuid4().hex[:8]}", sort=sort)  # type: ignore[arg-type]
        board = await store.create_board(spec)
        assert board is not None
        ranks = RecordingRanks(cache, store)
        assert await ranks.rebuild(board.id) == 0  # ready: reads and pushes come from Redis
        env = Env(store, ranks, RecordingHub(client, ranks, interval), board, [])
        made.append(env)
        return env

    yield factory
    for env in made:
        for s in env.sockets:
            env.hub.detach(s.outbox)  # no board left: a flush still scheduled finds nothing to do
            s.outbox.cancel()
        if env.listener is not None:
            env.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await env.listener
        await env.hub.close()
        await env.ranks.close()
    await client.aclose()


def top_of(values: dict[str, int], limit: int, sort: str = "desc") -> list[dict[str, Any]]:
    return [{**e, "display_name": None} for e in ranked(values, sort)[:limit]]


# ---------------------------------------------------------------------------------------------------------


async def test_subscribing_pushes_the_current_top_and_rank_at_once(make_env: Any) -> None:
    env = await make_env()
    values = {"alice": 30, "bob": 20, "carol": 20}
    await env.play(values)
    seq = await env.ranks.cache.seq(env.board.id)
    top, follower, absent = env.socket(), env.socket(), env.socket()
    await env.hub.subscribe_top(top.outbox, env.board, 2)
    await env.hub.subscribe_rank(follower.outbox, env.board, "carol")
    await env.hub.subscribe_rank(absent.outbox, env.board, "nobody")
    await eventually(lambda: _drained(top, follower, absent))
    assert top.frames == [{"type": "top", "board": env.board.id, "seq": seq, "total": 3, "entries": top_of(values, 2)}]
    assert follower.frames == [
        {"type": "rank", "board": env.board.id, "user_id": "carol", "rank": 2, "previous_rank": None,
         "score": 20, "seq": seq}
    ]  # fmt: skip
    assert (absent.frames[0]["rank"], absent.frames[0]["score"]) == (None, None)
    assert top.outbox.subs == {("top", env.board.id, "")}
    assert follower.outbox.subs == {("rank", env.board.id, "carol")}


async def _drained(*sockets: Socket) -> None:
    assert all(s.frames and s.drained() for s in sockets)


async def test_a_committed_change_reaches_every_subscriber_through_pubsub(make_env: Any) -> None:
    env = await make_env()
    await env.play({"alice": 10})
    a, b = env.socket(), env.socket()
    await env.hub.subscribe_top(a.outbox, env.board, 10)
    await env.hub.subscribe_top(b.outbox, env.board, 10)
    await env.listen()
    before = a.of("top")[-1]["seq"]
    await env.step({"bob": 50})
    await eventually(lambda: _total(a, 2))
    await eventually(lambda: _total(b, 2))
    pushed = a.of("top")[-1]
    assert pushed == b.of("top")[-1]  # one snapshot for every subscriber
    assert pushed["entries"] == top_of({"alice": 10, "bob": 50}, 10)
    assert pushed["seq"] > before and pushed["seq"] == await env.ranks.cache.seq(env.board.id)


async def _total(s: Socket, n: int) -> None:
    assert s.of("top") and s.of("top")[-1]["total"] == n


async def test_flushes_are_debounced_and_the_latest_snapshot_wins(make_env: Any) -> None:
    interval = 0.25
    env = await make_env(interval=interval)
    watcher, stalled = env.socket(), env.socket(blocked=True)
    await env.hub.subscribe_top(watcher.outbox, env.board, 10)
    await env.hub.subscribe_top(stalled.outbox, env.board, 10)
    await env.listen()
    for i in range(12):  # each one changes the top
        await env.play({f"u{i:02d}": i + 1})
    await eventually(lambda: _total(watcher, 12))
    gaps = [b - a for a, b in itertools.pairwise(env.hub.started)]
    assert gaps and min(gaps) >= interval - 0.01, gaps  # at most one flush per board per interval
    assert len(watcher.of("top")) < 12
    final = watcher.of("top")[-1]
    assert final["entries"] == top_of({f"u{i:02d}": i + 1 for i in range(12)}, 10)
    # the stalled socket is still on its first snapshot; once it reads, it gets only the latest one
    assert len(stalled.frames) == 1
    stalled.unblock()
    await eventually(lambda: _total(stalled, 12))
    assert stalled.frames[1:] == [final]


async def test_rank_pushes_only_for_the_followed_players_a_change_affects(make_env: Any) -> None:
    env = await make_env()
    await env.play({"alice": 100, "bob": 50, "carol": 10})
    bob, carol = env.socket(), env.socket()
    await env.hub.subscribe_rank(bob.outbox, env.board, "bob")
    await env.hub.subscribe_rank(carol.outbox, env.board, "carol")
    await env.listen()
    assert [(f["rank"], f["score"]) for f in bob.frames] == [(2, 50)]
    env.ranks.asked.clear()

    await env.step({"alice": 10})  # above both, stays above both: nobody's rank moves
    await env.step({"dave": 5})  # a newcomer below both
    assert env.ranks.asked == []  # not even asked about
    assert len(bob.frames) == len(carol.frames) == 1

    await env.step({"eve": 60})  # passes bob and carol
    assert env.ranks.asked == [["bob", "carol"]]
    assert [(f["rank"], f["previous_rank"], f["score"]) for f in bob.frames[1:]] == [(3, 2, 50)]
    assert [(f["rank"], f["previous_rank"], f["score"]) for f in carol.frames[1:]] == [(4, 3, 10)]

    await env.step({"bob": 5})  # bob's own score: carol, far below, is not affected
    assert env.ranks.asked[1:] == [["bob"]]
    assert [(f["rank"], f["previous_rank"], f["score"]) for f in bob.frames[2:]] == [(3, 3, 55)]
    assert len(carol.frames) == 2
    assert bob.frames[2]["seq"] > bob.frames[1]["seq"] > bob.frames[0]["seq"]


async def test_each_top_limit_is_pushed_only_when_its_own_page_changes(make_env: Any) -> None:
    env = await make_env()
    values = {f"p{i}": 100 - i * 10 for i in range(6)}  # p0 100 ... p5 50
    await env.play(values)
    short, long = env.socket(), env.socket()
    await env.hub.subscribe_top(short.outbox, env.board, 2)
    await env.hub.subscribe_top(long.outbox, env.board, 5)
    await env.listen()  # (the listener's first flush pushes both pages once more)
    counts = len(short.frames), len(long.frames)

    await env.step({"p4": 15})  # 75: moves within the top 5, below the top 2
    values["p4"] += 15
    assert len(short.frames) == counts[0]
    assert [e["user_id"] for e in long.frames[-1]["entries"]] == ["p0", "p1", "p2", "p4", "p3"]
    assert len(long.frames) == counts[1] + 1

    await env.step({"p5": 1000})  # to the top of both
    values["p5"] += 1000
    assert short.frames[-1]["entries"] == top_of(values, 2)
    assert long.frames[-1]["entries"] == top_of(values, 5)
    assert short.frames[-1]["seq"] == long.frames[-1]["seq"]

    await env.step({"zed": 1})  # far below both cuts: nothing pushed
    assert (len(short.frames), len(long.frames)) == (counts[0] + 1, counts[1] + 2)


async def test_unsubscribed_and_detached_outboxes_get_nothing_more(make_env: Any) -> None:
    env = await make_env()
    await env.play({"alice": 1})
    gone, left, stays = env.socket(), env.socket(), env.socket()
    for s in (gone, left, stays):
        await env.hub.subscribe_top(s.outbox, env.board, 10)
    await env.hub.subscribe_rank(left.outbox, env.board, "alice")
    await env.listen()
    env.hub.unsubscribe(gone.outbox, "top", env.board.id)
    env.hub.detach(left.outbox)
    assert gone.outbox.subs == left.outbox.subs == set()
    counts = len(gone.frames), len(left.frames)
    await env.step({"alice": 5})
    assert stays.frames[-1]["entries"][0]["score"] == 6
    assert (len(gone.frames), len(left.frames)) == counts
    env.hub.detach(stays.outbox)
    assert env.board.id not in env.hub.boards  # nothing subscribed: the board is forgotten


async def test_a_big_flush_lets_the_loop_run_between_slices_and_skips_sockets_that_left(
    make_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush writes FLUSH_SLICE pushes, then lets the event loop run (acks are not held behind 10,000 sends);
    a socket that unsubscribed during the pause gets nothing more of it."""
    monkeypatch.setattr(fanout, "FLUSH_SLICE", 2)
    env = await make_env()
    await env.play({"alice": 1})
    pushed: list[Outbox] = []
    left: list[Outbox] = []
    armed = False

    def leave() -> None:  # runs at the flush's first pause: every socket not pushed yet unsubscribes
        for box in (s.outbox for s in sockets):
            if box not in pushed:
                env.hub.unsubscribe(box, "top", env.board.id)
                left.append(box)

    class Noted(Outbox):
        def push(self, key: tuple[str, str, str], frame: Encoded, seq: int) -> None:
            if armed:
                if not pushed:
                    asyncio.get_running_loop().call_soon(leave)
                pushed.append(self)
            super().push(key, frame, seq)

    sockets = [env.socket(outbox=Noted) for _ in range(7)]
    for s in sockets:
        await env.hub.subscribe_top(s.outbox, env.board, 10)
    await env.listen()
    before = {s.outbox: len(s.of("top")) for s in sockets}
    armed = True
    await env.step({"alice": 5})
    assert len(pushed) == 2 and len(left) == 5  # one slice, then the pause
    for s in sockets:
        new = s.of("top")[before[s.outbox] :]
        if s.outbox in left:
            assert new == []
        else:
            assert [f["entries"][0]["score"] for f in new] == [6]


async def test_a_change_during_a_flush_reaches_the_sockets_not_reached_yet_in_that_flush(
    make_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that reaches the top while a flush is under way is read at the flush's next pause: the sockets
    not reached yet get the newer page at once (not the stale one, then the new one a pass later); the ones
    reached before get it from the next flush; nobody gets the same snapshot twice."""
    monkeypatch.setattr(fanout, "FLUSH_SLICE", 2)
    env = await make_env()
    await env.play({"alice": 1})
    armed = False
    hub = env.hub
    read_top = hub._read_top

    async def read_then_change(b: Any) -> None:  # the flush's first read, then bob commits and his event arrives
        nonlocal armed
        await read_top(b)
        if armed:
            armed = False
            events = len(b.changes)
            await env.play({"bob": 50})
            await eventually(lambda: _grew(b.changes, events))

    monkeypatch.setattr(hub, "_read_top", read_then_change)
    sockets = [env.socket() for _ in range(6)]
    for s in sockets:
        await hub.subscribe_top(s.outbox, env.board, 10)
    await env.listen()
    before = [len(s.of("top")) for s in sockets]
    armed = True
    done = hub.done
    await env.play({"alice": 4})
    await env.flushed(done + 2)
    stale, fresh = top_of({"alice": 5}, 10), top_of({"alice": 5, "bob": 50}, 10)
    got = [[f["entries"] for f in s.of("top")[n:]] for s, n in zip(sockets, before, strict=True)]
    assert got.count([stale, fresh]) == 2  # the first slice, before bob; then the next flush
    assert got.count([fresh]) == 4  # after the pause: the newer page, and only once
    for s in sockets:
        seqs = [f["seq"] for f in s.of("top")]
        assert seqs == sorted(set(seqs))


async def test_a_flush_that_fails_midway_offers_its_page_again(make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-read that fails during a flush (Redis away) leaves the sockets not reached yet without the page: the
    next flush offers that page to every subscriber again (even though it reads the same page), and only those
    without it get it."""
    monkeypatch.setattr(fanout, "FLUSH_SLICE", 2)
    env = await make_env()
    await env.play({"alice": 1})
    hub = env.hub
    read_top = hub._read_top
    reads = 0

    async def second_read_fails(b: Any) -> None:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise RedisConnectionError("Redis went away")
        await read_top(b)
        if reads == 1:  # an event that could touch the top (nothing behind it): the flush reads again at its pause
            b.changes.append(("nobody", None, 1.0))

    sockets = [env.socket() for _ in range(6)]
    for s in sockets:
        await hub.subscribe_top(s.outbox, env.board, 10)
    await env.listen()
    before = [len(s.of("top")) for s in sockets]
    monkeypatch.setattr(hub, "_read_top", second_read_fails)
    done = hub.done
    await env.play({"alice": 4})
    await env.flushed(done + 2)
    assert reads == 3
    got = [[f["entries"] for f in s.of("top")[n:]] for s, n in zip(sockets, before, strict=True)]
    assert got == [[top_of({"alice": 5}, 10)]] * 6  # each once: the first slice in the failed flush, the rest after


async def test_rank_pushes_go_out_at_the_first_pause_of_a_long_top_pass(
    make_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that moves a followed player and the top: the follower's rank push is written after the top
    pass's first slice, not after all of it (10,000 sockets take ~130 ms); with fewer top subscribers than a
    slice, the top goes first and the rank right after, as a small deployment always saw them."""
    monkeypatch.setattr(fanout, "FLUSH_SLICE", 2)
    env = await make_env()
    await env.play({"alice": 10, "bob": 5})
    order: list[str] = []

    class Noted(Outbox):
        def push(self, key: tuple[str, str, str], frame: Encoded, seq: int) -> None:
            order.append(key[0])
            super().push(key, frame, seq)

    watchers = [env.socket(outbox=Noted) for _ in range(6)]
    for s in watchers:
        await env.hub.subscribe_top(s.outbox, env.board, 10)
    bob = env.socket(outbox=Noted)
    await env.hub.subscribe_rank(bob.outbox, env.board, "bob")
    await env.listen()
    order.clear()
    await env.step({"carol": 50})  # to the top, and past bob
    assert order == ["top", "top", "rank", "top", "top", "top", "top"]
    assert [(f["rank"], f["previous_rank"]) for f in bob.of("rank")][-1] == (3, 2)

    for s in watchers[1:]:
        env.hub.unsubscribe(s.outbox, "top", env.board.id)
    order.clear()
    await env.step({"dave": 60})  # to the top, and past bob again
    assert order == ["top", "rank"]
    assert [(f["rank"], f["previous_rank"]) for f in bob.of("rank")][-1] == (4, 3)


async def _grew(items: list[Any], n: int) -> None:
    assert len(items) > n


async def test_a_rebuild_makes_the_hub_reread_every_followed_player(make_env: Any) -> None:
    env = await make_env()
    await env.play({"alice": 3, "bob": 2, "carol": 1})
    sockets = {u: env.socket() for u in ("alice", "bob", "carol")}
    for user, s in sockets.items():
        await env.hub.subscribe_rank(s.outbox, env.board, user)
    await env.listen()
    env.ranks.asked.clear()
    done = env.hub.done
    assert await env.ranks.rebuild(env.board.id) == 3  # the swap publishes a reset
    await env.flushed(done + 1)
    assert env.ranks.asked == [["alice", "bob", "carol"]]
    assert all(len(s.frames) == 1 for s in sockets.values())  # same ranks, same scores: nothing to push
