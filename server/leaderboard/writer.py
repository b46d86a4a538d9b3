"""Group commit: the write path of every submission, REST or WebSocket.

    submit() -> lane queue -> one transaction per batch (Postgres COMMIT) -> Ranks.record: cache write of the
             committed values, change event published, ranks -> ack

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

import asyncpg

from . import observability as obs
from .errors import Invalid, Unavailable
from .protocol import Ack, Submission
from .ranks import Ranks
from .store import DB_DOWN, BatchResult, BoardInfo, Outcome, Store, Write, Written

log = logging.getLogger(__name__)

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


@dataclass(slots=True)
class Pending(Write):
    """A submission waiting in a lane; `done` resolves to its Ack or raises its refusal."""

    done: asyncio.Future[Ack]


class _Lane:
    """A queue with at most one transaction in flight."""

    def __init__(self) -> None:
        self.queue: list[Pending] = []
        self.wake = asyncio.Event()


class Writer:
    """One per process. `submit()` is the only entry point; `run()` is the background task.

    Submissions are spread over `concurrency` lanes by (board, user): each lane commits one batch at a time, so
    concurrent transactions never wait on each other's row locks and one player's submissions stay in order.
    """

    def __init__(self, store: Store, ranks: Ranks, batch_max: int = 500, concurrency: int = 4) -> None:
        self.store, self.ranks, self.batch_max = store, ranks, batch_max
        self._lanes = [_Lane() for _ in range(concurrency)]
        self._closing = False

    async def submit(self, sub: Submission, board: BoardInfo) -> Ack:
        """Commit one submission (batched with its neighbours) and return its ack, or raise its refusal."""
        if self._closing:
            raise Unavailable("server is shutting down; retry on another instance")
        done: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        pending = Pending(sub, sub.session_id or uuid.uuid4(), board, done)
        lane = self._lanes[hash((board.id, sub.user_id)) % len(self._lanes)]
        lane.queue.append(pending)
        lane.wake.set()
        return await done

    async def run(self) -> None:
        await asyncio.gather(*(self._run(lane) for lane in self._lanes))

    async def _run(self, lane: _Lane) -> None:
        while not (self._closing and not lane.queue):
            await lane.wake.wait()
            lane.wake.clear()
            while lane.queue:
                batch, lane.queue = lane.queue[: self.batch_max], lane.queue[self.batch_max :]
                await self._guarded(batch)

    async def _guarded(self, batch: list[Pending]) -> None:
        with obs.background_task("writer.batch"):
            try:
                await self._commit(batch)
            except Exception:  # one failed batch must not stop the writer; retries are idempotent
                log.exception("batch of %d failed", len(batch))
                _fail(batch, Unavailable("internal error; retry"))

    async def close(self) -> None:
        """Refuse new submissions; the run() task finishes (commits and acks) what was already received."""
        self._closing = True
        for lane in self._lanes:
            lane.wake.set()

    async def _commit(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            result = await self._transaction(batch)
        except (*DB_DOWN, RuntimeError) as exc:
            # The COMMIT may or may not have happened: nothing is acknowledged, a retry is answered by the
            # log (duplicate or new), and a batch that did commit reaches Redis through its cache_intents rows.
            log.error("batch of %d not acknowledged, its commit outcome is unknown: %s", len(batch), exc)
            obs.count(obs.SUBMISSIONS, len(batch), "rejected")
            _fail(batch, Unavailable("the database is unavailable; retry"))
            return
        except asyncpg.PostgresError as exc:
            # About the data of some submission (validation should have caught it): find it, commit the rest.
            if len(batch) == 1:
                log.warning("Postgres refused a submission (%s): %s", type(exc).__name__, exc)
                obs.count(obs.SUBMISSIONS, 1, "rejected")
                _fail(batch, Invalid(f"the database refused this submission ({type(exc).__name__})"))
                return
            await self._commit(batch[: len(batch) // 2])
            await self._commit(batch[len(batch) // 2 :])
            return
        committed_at = time.time()
        obs.observe(obs.BATCH_SIZE, len(batch))
        obs.observe(obs.BATCH_SECONDS, time.perf_counter() - started)
        ranks = await self._record(batch, result, committed_at)
        counts = dict.fromkeys(("accepted", "duplicate", "rejected"), 0)
        for p, o in zip(batch, result.outcomes, strict=True):
            counts[_kind(o)] += 1
            if p.done.done():  # the submitter went away; its row is committed all the same
                continue
            if o.error is not None:
                p.done.set_exception(o.error)
            else:
                user = p.sub.user_id
                p.done.set_result(
                    Ack(o.duplicate, p.board.id, user, o.value, ranks.get((p.board.id, user)), p.session_id)
                )
        for kind, n in counts.items():
            if n:
                obs.count(obs.SUBMISSIONS, n, kind)

    async def _transaction(self, batch: list[Pending]) -> BatchResult:
        for attempt in range(4):
            try:
                return await self.store.commit_batch(batch)
            except _RETRYABLE:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _record(
        self, batch: list[Pending], result: BatchResult, committed_at: float
    ) -> dict[tuple[str, str], int | None]:
        """Hand each board's committed rows to the read model (after COMMIT); collect each user's new rank."""
        boards: dict[str, BoardInfo] = {}
        written: dict[str, list[Written]] = defaultdict(list)
        for w in result.written:
            written[w.board].append(w)
        asked: dict[str, dict[str, int]] = defaultdict(dict)  # board -> user -> committed value
        for p, o in zip(batch, result.outcomes, strict=True):
            if o.error is None:
                boards[p.board.id] = p.board
                asked[p.board.id][p.sub.user_id] = o.value
        started = time.perf_counter()
        ranks: dict[tuple[str, str], int | None] = {}
        for board_id, users in asked.items():
            found = await self.ranks.record(
                boards[board_id], written[board_id], users, committed_at, result.intents.get(board_id)
            )
            ranks.update(((board_id, u), r) for u, r in found.items())
        obs.observe(obs.CACHE_WRITE_SECONDS, time.perf_counter() - started)
        return ranks


def _fail(batch: list[Pending], error: Exception) -> None:
    for p in batch:
        if not p.done.done():
            p.done.set_exception(error)


def _kind(o: Outcome) -> str:
    return "rejected" if o.error else "duplicate" if o.duplicate else "accepted"
