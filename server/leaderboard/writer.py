"""Group commit: the write path of every submission, REST or WebSocket.

    submit() -> queue -> one transaction per batch (Postgres COMMIT) -> cache write of the committed values
             -> change event published -> ack

Submissions that arrive while their lane's transaction is in flight ride in the lane's next one; a lone
submission at low load is committed at once, with no timer. Nothing is acknowledged before its COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from . import observability as obs
from . import ranking
from .cache import Cache
from .protocol import Refused, Submission
from .store import DB_DOWN, BatchResult, BoardInfo, Outcome, Store

log = logging.getLogger(__name__)

Ack = dict[str, Any]

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


@dataclass(slots=True)
class _Pending:
    sub: Submission
    session_id: uuid.UUID
    board: BoardInfo
    done: asyncio.Future[Ack]  # the ack body (protocol.Ack's fields)


class _Lane:
    """A queue with at most one transaction in flight."""

    def __init__(self) -> None:
        self.queue: list[_Pending] = []
        self.wake = asyncio.Event()


class Writer:
    """One per process. `submit()` is the only entry point; `run()` is the background task.

    Submissions are spread over `concurrency` lanes by (board, user): each lane commits one batch at a time, so
    concurrent transactions never wait on each other's row locks and one player's submissions stay in order.
    """

    def __init__(self, store: Store, cache: Cache, batch_max: int = 500, concurrency: int = 4) -> None:
        self.store, self.cache, self.batch_max = store, cache, batch_max
        self._lanes = [_Lane() for _ in range(concurrency)]
        self._closing = False

    async def submit(self, sub: Submission, board: BoardInfo) -> Ack:
        """Commit one submission (batched with its neighbours) and return its ack, or raise Refused."""
        if self._closing:
            raise Refused(503, "unavailable", "server is shutting down; retry on another instance")
        pending = _Pending(sub, sub.session_id or uuid.uuid4(), board, asyncio.get_running_loop().create_future())
        lane = self._lanes[hash((board.id, sub.user_id)) % len(self._lanes)]
        lane.queue.append(pending)
        lane.wake.set()
        return await pending.done

    async def run(self) -> None:
        await asyncio.gather(*(self._run(lane) for lane in self._lanes))

    async def _run(self, lane: _Lane) -> None:
        while not (self._closing and not lane.queue):
            await lane.wake.wait()
            lane.wake.clear()
            while lane.queue:
                batch, lane.queue = lane.queue[: self.batch_max], lane.queue[self.batch_max :]
                await self._guarded(batch)

    async def _guarded(self, batch: list[_Pending]) -> None:
        with obs.background_task("writer.batch"):
            try:
                await self._commit(batch)
            except Exception:  # one failed batch must not stop the writer; retries are idempotent
                log.exception("batch of %d failed", len(batch))
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(Refused(503, "unavailable", "internal error; retry"))

    async def close(self) -> None:
        """Refuse new submissions; the run() task finishes (commits and acks) what was already received."""
        self._closing = True
        for lane in self._lanes:
            lane.wake.set()

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            result = await self._transaction(batch)
        except (*DB_DOWN, RuntimeError) as exc:
            log.error("batch of %d not committed: %s", len(batch), exc)
            obs.submissions("rejected", len(batch))
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(Refused(503, "unavailable", "the database is unavailable; retry"))
            return
        committed_at = time.time()
        obs.batch_committed(len(batch), time.perf_counter() - started)
        ranks = await self._publish(batch, result, committed_at)
        counts = dict.fromkeys(("accepted", "duplicate", "rejected"), 0)
        for p, o in zip(batch, result.outcomes, strict=True):
            counts[_kind(o)] += 1
            if p.done.done():  # the submitter went away; its row is committed all the same
                continue
            if o.error is not None:
                p.done.set_exception(Refused(*o.error))
            else:
                p.done.set_result(
                    {"accepted": True, "duplicate": o.duplicate, "board": p.board.id, "user_id": p.sub.user_id,
                     "score": o.value, "rank": ranks.get((p.board.id, p.sub.user_id)),
                     "session_id": str(p.session_id)}
                )  # fmt: skip
        for kind, n in counts.items():
            if n:
                obs.submissions(kind, n)

    async def _transaction(self, batch: list[_Pending]) -> BatchResult:
        rows = [(p.sub, p.session_id, p.board) for p in batch]
        for attempt in range(4):
            try:
                return await self.store.commit_batch(rows)
            except _RETRYABLE:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _publish(
        self, batch: list[_Pending], result: BatchResult, committed_at: float
    ) -> dict[tuple[str, str], int | None]:
        """Write committed values to the cache (after COMMIT) and collect each user's new rank.

        Ranks come from Redis when the board is ready; otherwise (cold, rebuilding, or Redis away) from
        Postgres, so an ack always carries a correct rank."""
        written = defaultdict(list)
        for w in result.written:
            written[w.board].append(w)
        asked: dict[str, dict[str, int]] = defaultdict(dict)  # board -> user -> committed value
        for p, o in zip(batch, result.outcomes, strict=True):
            if o.error is None:
                asked[p.board.id][p.sub.user_id] = o.value
        ranks: dict[tuple[str, str], int | None] = {}
        fallback: list[tuple[str, str, int]] = []
        started = time.perf_counter()
        for board, users in asked.items():
            try:
                res = await self.cache.write(board, written[board], list(users), committed_at)
            except RedisError as exc:
                log.warning("cache write for %s failed (%s); board marked stale", board, exc)
                self.cache.stale.add(board)
                obs.redis_fallback("write")
                res = None
            if res is not None and res.ready:
                ranks.update(((board, u), r or None) for u, r in res.ranks.items())
                continue
            if res is not None:
                self.cache.ensure_rebuild(board)
            sort = next(p.board.sort for p in batch if p.board.id == board)
            fallback += [(board, u, ranking.sort_key(v, sort)) for u, v in users.items()]
        obs.cache_written(time.perf_counter() - started)
        if fallback:
            try:
                ranks.update(await self.store.ranks(fallback))
            except DB_DOWN as exc:
                log.warning("rank lookup in Postgres failed: %s", exc)
        return ranks


def _kind(o: Outcome) -> str:
    return "rejected" if o.error else "duplicate" if o.duplicate else "accepted"
