"""Group commit: the write path of every submission, REST or WebSocket.

    enqueue() -> queue -> one transaction per batch (lb_submit: one round trip, COMMIT) -> Ranks.record: cache
              write of the committed values, change event published, ranks -> done(ack) per submission

Submissions that arrive while a transaction is in flight ride in the next one; a lone submission at low load
is committed at once, with no timer. Nothing is acknowledged before its COMMIT. Normally one transaction is
in flight (big batches: a batch costs Postgres a fixed ~0.4 ms plus ~35 µs per submission); when a full batch
waits behind it, up to `concurrency` run at once. The next transaction starts at COMMIT: the cache write and
the acks of a batch overlap the next batch's transaction. A player whose batch is not yet answered waits for a
later one, so one player's submissions commit in order, concurrent batches never share a player, and a rank
in an ack is the rank of the value it acknowledges.

With a per-player submission rate (limits.py), a batch is first checked against it: one Redis call per board
of the batch; the submissions over their player's rate are refused there and never reach the transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from . import observability as obs
from .errors import Invalid, Refused, Unavailable
from .limits import SubmitLimit
from .protocol import Ack, Submission
from .ranks import Ranks
from .store import DB_DOWN, BatchResult, BoardInfo, Outcome, Store, Write, Written

log = logging.getLogger(__name__)

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

Done = Callable[[Ack | Refused], None]  # told once: the ack, or why the submission was refused


@dataclass(slots=True)
class Pending(Write):
    """A submission waiting for its transaction; `done` is called once with its Ack or its refusal."""

    done: Done


class Writer:
    """One per process. `enqueue()` (a callback) or `submit()` (awaitable) take submissions; `run()` lasts
    until `close()` has been called and everything received is committed and acknowledged."""

    def __init__(
        self, store: Store, ranks: Ranks, batch_max: int = 500, concurrency: int = 4, limit: SubmitLimit | None = None
    ) -> None:
        self.store, self.ranks, self.batch_max, self.concurrency = store, ranks, batch_max, concurrency
        self.limit = limit  # the per-player submission rate (limits.py); None: no limit
        self._queue: list[Pending] = []
        self._busy: set[tuple[str, str]] = set()  # players with a submission in a batch not yet answered
        self._active = 0  # transactions in flight
        self._batches = 0  # batches not yet answered (a committed one is still writing Redis and its acks)
        self._closing = False
        self._drained = asyncio.Event()

    def enqueue(self, sub: Submission, board: BoardInfo, done: Done) -> None:
        """Queue one submission for the next transaction; `done` gets its ack or its refusal."""
        if self._closing:
            done(Unavailable("server is shutting down; retry on another instance"))
            return
        self._queue.append(Pending(sub, sub.session_id or uuid.uuid4(), board, done))
        self._pump()

    async def submit(self, sub: Submission, board: BoardInfo) -> Ack:
        """Commit one submission (batched with its neighbours) and return its ack, or raise its refusal."""
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()

        def done(outcome: Ack | Refused) -> None:
            if future.done():  # the submitter went away; its row is committed all the same
                return
            if isinstance(outcome, Ack):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

        self.enqueue(sub, board, done)
        return await future

    def _pump(self) -> None:
        """Start transactions while there is work and room: a second one only for a full batch."""
        while self._queue and self._active < self.concurrency:
            if self._active and len(self._queue) < self.batch_max:
                return  # the queue rides in the next transaction
            batch: list[Pending] = []
            rest: list[Pending] = []
            held: set[tuple[str, str]] = set()  # players waiting: their later submissions wait behind them
            for p in self._queue:
                key = (p.board.id, p.sub.user_id)
                if len(batch) < self.batch_max and key not in self._busy and key not in held:
                    batch.append(p)
                else:
                    rest.append(p)
                    held.add(key)
            if not batch:
                return
            self._queue = rest
            keys = {(p.board.id, p.sub.user_id) for p in batch}
            self._busy |= keys
            self._active += 1
            self._batches += 1
            asyncio.get_running_loop().create_task(self._run_batch(batch, keys))

    async def _run_batch(self, batch: list[Pending], keys: set[tuple[str, str]]) -> None:
        in_flight = True

        def committed() -> None:
            """The transaction is over: the next one may start while this batch's cache write and acks go on
            (its players stay busy until then, so the next one never shares a player with it)."""
            nonlocal in_flight
            if in_flight:
                in_flight = False
                self._active -= 1
                self._pump()

        try:
            await self._guarded(batch, committed)
        finally:
            committed()
            self._busy -= keys
            self._batches -= 1
            self._pump()
            if self._closing and not self._batches and not self._queue:
                self._drained.set()

    async def run(self) -> None:
        await self._drained.wait()

    async def _guarded(self, batch: list[Pending], committed: Callable[[], None]) -> None:
        with obs.background_task("writer.batch"):
            try:
                if self.limit is not None:
                    batch = await self._admit(batch)
                parts = await self._commit(batch) if batch else []
                committed()
                for part, result, committed_at in parts:
                    await self._acknowledge(part, result, committed_at)
            except Exception:  # one failed batch must not stop the writer; retries are idempotent
                log.exception("batch of %d failed", len(batch))
                _fail(batch, Unavailable("internal error; retry"))

    async def _admit(self, batch: list[Pending]) -> list[Pending]:
        """The batch without the submissions over their player's rate: those are answered now, write nothing."""
        assert self.limit is not None
        refused = await self.limit.refused(batch)
        if not refused:
            return batch
        for i, error in refused.items():
            batch[i].done(error)
        obs.count(obs.SUBMISSIONS, len(refused), "rejected")
        return [p for i, p in enumerate(batch) if i not in refused]

    async def close(self) -> None:
        """Refuse new submissions; run() returns once what was already received is committed and acked."""
        self._closing = True
        if not self._batches and not self._queue:
            self._drained.set()

    async def _commit(self, batch: list[Pending]) -> list[tuple[list[Pending], BatchResult, float]]:
        """Commit the batch: its parts with their results and commit times (one part, unless Postgres refused
        some submission: that one is answered now and the rest committed without it). Nothing is acked here."""
        started = time.perf_counter()
        try:
            result = await self._transaction(batch)
        except (*DB_DOWN, RuntimeError) as exc:
            # The COMMIT may or may not have happened: nothing is acknowledged, a retry is answered by the
            # log (duplicate or new), and a batch that did commit reaches Redis through its cache_intents rows.
            log.error("batch of %d not acknowledged, its commit outcome is unknown: %s", len(batch), exc)
            obs.count(obs.SUBMISSIONS, len(batch), "rejected")
            _fail(batch, Unavailable("the database is unavailable; retry"))
            return []
        except asyncpg.PostgresError as exc:
            # About the data of some submission (validation should have caught it): find it, commit the rest.
            if len(batch) == 1:
                log.warning("Postgres refused a submission (%s): %s", type(exc).__name__, exc)
                obs.count(obs.SUBMISSIONS, 1, "rejected")
                _fail(batch, Invalid(f"the database refused this submission ({type(exc).__name__})"))
                return []
            return await self._commit(batch[: len(batch) // 2]) + await self._commit(batch[len(batch) // 2 :])
        committed_at = time.time()
        obs.observe(obs.BATCH_SIZE, len(batch))
        obs.observe(obs.BATCH_SECONDS, time.perf_counter() - started)
        return [(batch, result, committed_at)]

    async def _acknowledge(self, batch: list[Pending], result: BatchResult, committed_at: float) -> None:
        """Write the committed rows to Redis, then answer every submission: its ack (with its rank) or refusal."""
        ranks = await self._record(batch, result, committed_at)
        counts = dict.fromkeys(("accepted", "duplicate", "rejected"), 0)
        for p, o in zip(batch, result.outcomes, strict=True):
            counts[_kind(o)] += 1
            if o.error is not None:
                p.done(o.error)
            else:
                user = p.sub.user_id
                rank = ranks.get((p.board.id, o.season, user))
                p.done(Ack(o.duplicate, p.board.id, user, o.value, rank, p.session_id, o.season))
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
    ) -> dict[tuple[str, int, str], int | None]:
        """Hand the committed rows to the read model (after COMMIT), per board and season; collect each user's
        new rank in the season the submission counted in."""
        boards: dict[str, BoardInfo] = {}
        written: dict[tuple[str, int], list[Written]] = defaultdict(list)
        for w in result.written:
            written[(w.board, w.season)].append(w)
        asked: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)  # -> user -> committed value
        for p, o in zip(batch, result.outcomes, strict=True):
            if o.error is None:
                boards[p.board.id] = p.board
                if o.value is not None:  # (None: a duplicate whose player's entry is gone: no rank)
                    asked[(p.board.id, o.season)][p.sub.user_id] = o.value
        started = time.perf_counter()
        ranks: dict[tuple[str, int, str], int | None] = {}
        for (board_id, season), users in asked.items():
            rows, intent = written[(board_id, season)], result.intents.get((board_id, season))
            found = await self.ranks.record(boards[board_id], rows, users, committed_at, intent, season)
            ranks.update(((board_id, season, u), r) for u, r in found.items())
        obs.observe(obs.CACHE_WRITE_SECONDS, time.perf_counter() - started)
        return ranks


def _fail(batch: list[Pending], error: Refused) -> None:
    for p in batch:
        p.done(error)


def _kind(o: Outcome) -> str:
    return "rejected" if o.error else "duplicate" if o.duplicate else "accepted"
