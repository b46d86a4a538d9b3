"""Layer: writer.py (group commit) over a real Store and Ranks: batching, order, refusals, close."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from leaderboard.errors import Conflict, OutOfRange, Unavailable
from leaderboard.protocol import Ack, Submission
from leaderboard.ranks import Ranks
from leaderboard.store import BatchResult, BoardInfo, Store, Write
from leaderboard.writer import Writer
from support.reference import MAX_VALUE, ranked
from support.services import Services
from support.stores import assert_cache_matches_pg, pg_values, session_count


class RecordingStore(Store):
    """A real Store that notes each batch it commits ((user, score) per submission); with `gate` cleared, a
    commit waits for it, so that submissions pile up behind a transaction in flight."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.batches: list[list[tuple[str, int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = asyncio.Event()

    async def commit_batch(self, batch: Sequence[Write]) -> BatchResult:
        self.batches.append([(w.sub.user_id, w.sub.score) for w in batch])
        self.in_flight.set()
        await self.gate.wait()
        return await super().commit_batch(batch)

    def hold(self) -> None:
        """From now on, commits wait for `gate`; `in_flight` tells when the next one has started."""
        self.gate.clear()
        self.in_flight.clear()


@pytest.fixture
def recording(pool: asyncpg.Pool, clean: None) -> RecordingStore:
    return RecordingStore(pool)


@pytest.fixture
async def board(recording: RecordingStore) -> BoardInfo:
    info = await recording.board("global")
    assert info is not None
    return info


def sub(user: str, score: int, sid: uuid.UUID | None = None) -> Submission:
    return Submission(user_id=user, score=score, session_id=sid)


async def test_concurrent_submissions_are_batched_and_acked_with_redis_ranks(
    make_writer: Callable[..., Writer],
    make_ranks: Callable[..., Ranks],
    recording: RecordingStore,
    board: BoardInfo,
    pool: asyncpg.Pool,
    rds: aioredis.Redis,
) -> None:
    ranks = make_ranks(store_=recording)
    assert await ranks.rebuild("global") == 0  # ready: acks carry ranks from Redis
    writer = make_writer(recording, ranks, concurrency=2)
    values = {f"u{i:02d}": (i * 7) % 23 for i in range(40)}  # ties
    acks = await asyncio.gather(*(writer.submit(sub(u, v), board) for u, v in values.items()))
    sizes = [len(b) for b in recording.batches]
    assert sum(sizes) == 40 and max(sizes) > 1 and len(sizes) < 40, sizes
    for (user, value), ack in zip(values.items(), acks, strict=True):
        assert (ack.user_id, ack.board, ack.score, ack.duplicate, ack.accepted) == (user, "global", value, False, True)
        assert ack.rank is not None and ack.rank >= 1
    assert await pg_values(pool) == values
    await assert_cache_matches_pg(pool, rds)
    # with the board complete, each ack's rank is the player's rank on it (+0: nothing changes)
    rank_of = {e["user_id"]: e["rank"] for e in ranked(values, "desc")}
    acks = await asyncio.gather(*(writer.submit(sub(u, 0), board) for u in values))
    assert {a.user_id: a.rank for a in acks} == rank_of


async def test_a_players_submissions_keep_their_order_across_lanes(
    make_writer: Callable[..., Writer], recording: RecordingStore, board: BoardInfo, pool: asyncpg.Pool
) -> None:
    writer = make_writer(recording, concurrency=4)
    players = [f"p{i}" for i in range(8)]
    tasks: dict[str, list[asyncio.Task[Ack]]] = {p: [] for p in players}
    for k in range(10):  # 2^k: each running total names exactly the submissions before it
        for p in players:
            tasks[p].append(asyncio.create_task(writer.submit(sub(p, 2**k), board)))
        await asyncio.sleep(0)  # let the lanes take what has arrived: later rounds ride in later batches
    for p in players:
        acks = [await t for t in tasks[p]]
        assert [a.score for a in acks] == [2 ** (k + 1) - 1 for k in range(10)], p
    assert await pg_values(pool) == dict.fromkeys(players, 2**10 - 1)
    assert len(recording.batches) > 1
    for batch in recording.batches:  # within a batch too, each player's scores are in submission order
        for p in players:
            mine = [s for u, s in batch if u == p]
            assert mine == sorted(mine), batch


async def test_a_refused_submission_fails_only_its_submitter(
    make_writer: Callable[..., Writer], recording: RecordingStore, board: BoardInfo, pool: asyncpg.Pool
) -> None:
    writer = make_writer(recording, concurrency=1)
    sid = uuid.uuid4()
    await writer.submit(sub("a", 10, sid), board)
    await writer.submit(sub("big", MAX_VALUE), board)
    recording.hold()  # hold the next transaction until all five are queued behind it
    blocker = asyncio.create_task(writer.submit(sub("z", 1), board))
    await asyncio.wait_for(recording.in_flight.wait(), 5)
    results = [
        asyncio.create_task(writer.submit(s, board))
        for s in (sub("b", 1), sub("a", 11, sid), sub("c", 2), sub("big", 1), sub("a", 10, sid))
    ]
    await asyncio.sleep(0)
    recording.gate.set()
    await blocker
    got = await asyncio.gather(*results, return_exceptions=True)
    assert recording.batches[-1] == [("b", 1), ("a", 11), ("c", 2), ("big", 1), ("a", 10)]  # one batch
    ok_b, conflict, ok_c, too_big, dup = got
    assert isinstance(conflict, Conflict) and conflict.code == "idempotency_conflict", conflict
    assert isinstance(too_big, OutOfRange) and too_big.code == "out_of_range", too_big
    assert isinstance(ok_b, Ack) and (ok_b.user_id, ok_b.score) == ("b", 1)
    assert isinstance(ok_c, Ack) and (ok_c.user_id, ok_c.score) == ("c", 2)
    assert isinstance(dup, Ack) and (dup.duplicate, dup.score, dup.session_id) == (True, 10, sid)
    assert await pg_values(pool) == {"a": 10, "big": MAX_VALUE, "z": 1, "b": 1, "c": 2}


async def test_close_finishes_queued_submissions_and_refuses_new_ones(
    ranks: Ranks, recording: RecordingStore, board: BoardInfo, pool: asyncpg.Pool
) -> None:
    writer = Writer(recording, ranks, batch_max=7, concurrency=2)
    run = asyncio.create_task(writer.run())
    try:
        recording.hold()
        queued = [asyncio.create_task(writer.submit(sub(f"q{i:02d}", i), board)) for i in range(30)]
        await asyncio.wait_for(recording.in_flight.wait(), 5)  # a transaction in flight, the rest queued
        await writer.close()
        with pytest.raises(Unavailable):
            await writer.submit(sub("late", 1), board)
        recording.gate.set()
        acks = await asyncio.wait_for(asyncio.gather(*queued), 30)
        assert [a.score for a in acks] == list(range(30))
        await asyncio.wait_for(run, 10)  # run() ends once the lanes are empty
        assert max(len(b) for b in recording.batches) <= 7
        assert await session_count(pool) == 30
        assert "late" not in await pg_values(pool)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def test_a_batch_postgres_cannot_take_is_unavailable_and_the_writer_goes_on(
    make_writer: Callable[..., Writer], store: Store, services: Services, pool: asyncpg.Pool
) -> None:
    board = await store.board("global")
    assert board is not None
    writer = make_writer(store)
    closed = await asyncpg.create_pool(services.dsn, min_size=0, max_size=1)
    await closed.close()
    store.pool = closed  # a real pool that no longer answers
    with pytest.raises(Unavailable, match="database"):
        await writer.submit(sub("a", 1), board)
    store.pool = pool
    ack = await writer.submit(sub("a", 2), board)
    assert (ack.score, ack.duplicate) == (2, False)
    assert await pg_values(pool) == {"a": 2}


async def test_one_transaction_at_a_time_until_a_full_batch_waits(
    make_writer: Callable[..., Writer], make_ranks: Callable[..., Ranks], recording: RecordingStore, board: BoardInfo
) -> None:
    """Small batches cost Postgres a fixed price each: a second transaction starts only when a full batch
    waits, and it never takes a player whose earlier submission is still in flight."""
    writer = make_writer(recording, make_ranks(store_=recording), batch_max=10, concurrency=3)
    recording.hold()
    first = asyncio.ensure_future(writer.submit(sub("a0", 1), board))
    await recording.in_flight.wait()
    recording.in_flight.clear()
    queued = [asyncio.ensure_future(writer.submit(sub(f"b{i}", 1), board)) for i in range(9)]
    await asyncio.sleep(0.05)
    assert recording.batches == [[("a0", 1)]]  # 9 waiting, less than a batch: no second transaction
    queued.append(asyncio.ensure_future(writer.submit(sub("a0", 5), board)))  # 10 waiting now
    await recording.in_flight.wait()
    assert recording.batches[1] == [(f"b{i}", 1) for i in range(9)]  # a0 is in flight: its second one waits
    recording.gate.set()
    acks = await asyncio.gather(first, *queued)
    assert recording.batches[2] == [("a0", 5)]
    assert (acks[-1].user_id, acks[-1].score) == ("a0", 6)  # committed after the first


class HeldRanks(Ranks):
    """Real Ranks whose cache writes wait for `gate` while it is cleared; `writing` tells one has begun."""

    def __init__(self, ranks: Ranks) -> None:
        super().__init__(ranks.cache, ranks.store, ranks.rebuild_batch)
        self.gate, self.writing = asyncio.Event(), asyncio.Event()
        self.gate.set()

    async def record(self, *args: Any, **kwargs: Any) -> dict[str, int | None]:
        self.writing.set()
        await self.gate.wait()
        return await super().record(*args, **kwargs)


async def test_the_next_transaction_starts_at_commit_while_the_last_batch_writes_redis(
    make_writer: Callable[..., Writer],
    ranks: Ranks,
    recording: RecordingStore,
    board: BoardInfo,
    pool: asyncpg.Pool,
    rds: aioredis.Redis,
) -> None:
    """The cache write and acks of a committed batch overlap the next transaction; a player of that batch
    waits for it to be answered, so its next submission commits after, and each ack's rank is of its value."""
    held = HeldRanks(ranks)
    assert await held.rebuild("global") == 0  # ready: acks carry ranks from Redis
    writer = make_writer(recording, held, concurrency=1)
    held.gate.clear()
    first = asyncio.ensure_future(writer.submit(sub("a", 10), board))
    await asyncio.wait_for(held.writing.wait(), 5)  # committed; its cache write waits
    second = asyncio.ensure_future(writer.submit(sub("b", 20), board))
    again = asyncio.ensure_future(writer.submit(sub("a", 30), board))
    for _ in range(200):  # b's transaction runs with one lane, while a's batch is still unanswered
        if (await pg_values(pool, "global")).get("b") == 20:
            break
        await asyncio.sleep(0.01)
    assert recording.batches == [[("a", 10)], [("b", 20)]]  # a's second submission waits for a's ack
    assert not first.done() and not again.done()
    held.gate.set()
    acks = await asyncio.wait_for(asyncio.gather(first, second, again), 5)
    assert recording.batches[2] == [("a", 30)]
    assert [(a.user_id, a.score) for a in acks] == [("a", 10), ("b", 20), ("a", 40)]
    # Each rank is read after its own value is stored: a's 10 and b's 20 may be read before or after the others.
    assert acks[0].rank in (1, 2) and acks[1].rank in (1, 2) and acks[2].rank == 1
    await assert_cache_matches_pg(pool, rds, "global")
