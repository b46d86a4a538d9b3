"""The read model: one policy for every rank read and every cache write after a commit, and the loops that
make Redis converge to Postgres by itself.

    Redis when the board is ready; otherwise Postgres (same semantics), and the board is rebuilt.
    A cache write that fails marks the board stale; stale boards are rebuilt once Redis answers again.

Convergence after any crash (the bound is in docs/operations.md):
    - a process that dies between COMMIT and its cache write leaves the batch's cache_intents rows behind
      (committed with the batch): `settle()` re-applies those players' committed rows after REPAIR_AFTER_S;
    - a retried submission writes its committed row to Redis again (store.py: duplicates);
    - Redis restarted or failed over (its run_id changed; its data may be older): every board is rebuilt (in
      a Redis Cluster, every board of the shard whose primary changed);
    - every board is checked against Postgres every verify interval (members and highest version, when no
      write is in flight) and rebuilt when they disagree.

`service.py` (REST and WebSocket reads, acks) and `fanout.py` (pushes) call only this for ranks; the writer
calls `record()` after each COMMIT. Nothing else touches the stale set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.exceptions import RedisError

from . import observability as obs
from . import ranking
from .cache import Cache, NotReady
from .errors import Unavailable
from .protocol import Entry, entries
from .ranking import Players, Position, Standing, TopSlice
from .redisconn import pause
from .store import DB_DOWN, BoardInfo, Store, Written

log = logging.getLogger(__name__)

NEITHER = "neither Redis nor Postgres can answer; retry"
REPAIR_AFTER_S = 5.0  # a cache debt older than this was not paid by its writer (it died or failed)
T = TypeVar("T")
REBUILDS_AT_ONCE = 2  # concurrent rebuilds per process (after a Redis restart every board is rebuilt)
CONNECTIONS_PER_REBUILD = 2  # a rebuild holds one pooled connection while it takes a second (Store.scan)


class Ranks:
    """Reads from Redis or Postgres; owns the stale set and the rebuilds of this process."""

    def __init__(self, cache: Cache, store: Store, rebuild_batch: int = 10_000) -> None:
        self.cache, self.store, self.rebuild_batch = cache, store, rebuild_batch
        self.stale: set[str] = set()  # boards that missed a write (Redis was away): rebuild when it is back
        self._rebuilds: dict[str, asyncio.Task[None]] = {}
        # Never more rebuilds than the pool can give both their connections: with a pool of 2, two rebuilds
        # holding one each and waiting for a second would wait forever, and every request with them.
        at_once = min(REBUILDS_AT_ONCE, store.pool.get_max_size() // CONNECTIONS_PER_REBUILD)
        self._rebuilding = asyncio.Semaphore(max(1, at_once))
        self._paid: list[int] = []  # cache_intents rows whose cache write is done, to delete
        # First pages of boards, kept between changes (see top()): valid only while events_live(board) holds.
        self._pages: dict[str, dict[int, TopSlice]] = {}
        self._generation: dict[str, int] = {}
        self.events_live: Callable[[str], bool] = lambda board_id: False
        self.reading: Callable[[str], None] = lambda board_id: None  # told of every first-page read

    def changed(self, board_id: str | None) -> None:
        """The board (None: any board) changed, or its changes may have gone unheard: forget its pages."""
        if board_id is None:
            self._pages.clear()
            self._generation = {b: g + 1 for b, g in self._generation.items()}
            return
        self._pages.pop(board_id, None)
        self._generation[board_id] = self._generation.get(board_id, 0) + 1

    # ---- reads --------------------------------------------------------------------------------------------

    async def top(self, board: BoardInfo, offset: int, limit: int, *, reader: bool = False) -> TopSlice:
        """A page of the board. The first pages are kept between changes while this process hears the board's
        change events (the fan-out's listener calls `changed()`; this process's own writes call it before
        their acks), so a read of an unchanged board costs no Redis round trip. `reader`: a client's read (the
        board's events are then followed for a while even if no socket here follows the board)."""
        if offset == 0 and reader:
            self.reading(board.id)
        live = offset == 0 and self.events_live(board.id)
        if live:
            page = self._pages.get(board.id, {}).get(limit)
            if page is not None:
                return page
        generation = self._generation.get(board.id, 0)
        seq = 0
        try:
            if board.id in self.stale:  # Redis missed a write acked here: Postgres until the rebuild
                raise NotReady(0)
            page = await self.cache.top(board.id, offset, limit)
            if live and self._generation.get(board.id, 0) == generation and self.events_live(board.id):
                self._pages.setdefault(board.id, {})[limit] = page  # nothing changed while it was read
            return page
        except NotReady as exc:
            seq = exc.seq
            self.ensure_rebuild(board.id)
        except RedisError:
            obs.count(obs.REDIS_FALLBACK, 1, "top")
        try:
            return await self.store.top(board, offset, limit, seq or await self.store.seq_floor())
        except DB_DOWN:
            raise Unavailable(NEITHER) from None

    async def _either(
        self, board: BoardInfo, op: str, cached: Callable[[], Awaitable[T]], stored: Callable[[int], Awaitable[T]]
    ) -> T:
        """The policy of a read: `cached()` (Redis) when the board is ready and has missed no write; otherwise
        `stored(seq)` (Postgres, same semantics; seq: what Redis last said, 0 if nothing) and the board is
        rebuilt. Neither answering: Unavailable."""
        seq = 0
        try:
            if board.id in self.stale:  # Redis missed a write acked here: Postgres until the rebuild
                raise NotReady(0)
            return await cached()
        except NotReady as exc:
            seq = exc.seq
            self.ensure_rebuild(board.id)
        except RedisError:
            obs.count(obs.REDIS_FALLBACK, 1, op)
        try:
            return await stored(seq)
        except DB_DOWN:
            raise Unavailable(NEITHER) from None

    async def standing(self, board: BoardInfo, user_id: str, around: int) -> Standing | None:
        """The player's rank and neighbours, or None when they have no entry."""
        return await self._either(
            board, "rank", lambda: self.cache.standing(board.id, user_id, around),
            lambda _: self.store.standing(board, user_id, around, 0),
        )  # fmt: skip

    async def players(self, board: BoardInfo, users: Sequence[str]) -> Players:
        """Some players (friends) in listing order with their ranks in the live season; absent ones left out."""

        async def stored(seq: int) -> Players:
            return await self.store.players(board, users, seq or await self.store.seq_floor())

        return await self._either(board, "players", lambda: self.cache.players(board.id, users), stored)

    async def follow(self, board: BoardInfo, users: Sequence[str]) -> tuple[int, dict[str, Position | None]]:
        """(seq, {user: position or None}) for followed players."""
        seq = 0
        try:
            return await self.cache.follow(board.id, users)
        except NotReady as exc:
            seq = exc.seq
            self.ensure_rebuild(board.id)
        except RedisError:
            obs.count(obs.REDIS_FALLBACK, 1, "follow")
        try:
            return seq or await self.store.seq_floor(), await self.store.follow(board.id, users)
        except DB_DOWN:
            raise Unavailable(NEITHER) from None

    async def final(self, board: BoardInfo, season: int, limit: int) -> list[Entry]:
        """The final standings of an ended season (from Postgres: Redis holds the live season only)."""
        try:
            page = await self.store.top(board, 0, limit, 0, season)
        except DB_DOWN:
            raise Unavailable(NEITHER) from None
        return entries(page, board.sort)

    async def seq(self, board: BoardInfo) -> int:
        try:
            return await self.cache.seq(board.id)
        except RedisError:
            try:
                return await self.store.seq_floor()
            except DB_DOWN:
                raise Unavailable(NEITHER) from None

    async def announce(self, board_id: str) -> None:
        """Tell every process that this board now exists (or changed)."""
        try:
            await self.cache.announce(board_id)
        except RedisError as exc:  # the others find it when their 5-second negative cache expires
            log.warning("could not announce board %s (%s)", board_id, exc)

    # ---- after a commit -----------------------------------------------------------------------------------

    async def record(
        self,
        board: BoardInfo,
        rows: Sequence[Written],
        users: dict[str, int],
        committed_at: float,
        intent: int | None = None,
        season: int = 1,
    ) -> dict[str, int | None]:
        """Store a batch's committed rows of one board and season in Redis and return the ranks of `users`
        (user -> committed value) in that season; the batch's cache debt `intent` is then paid. When the board
        is not ready, the season has ended or Redis fails, the ranks come from Postgres."""
        try:
            res = await self.cache.write(board.id, rows, list(users), committed_at, season)
            self.changed(board.id)  # before the ack: a read after it never gets a page from before
            if intent is not None:
                self._paid.append(intent)
            if res.ready:
                return {u: r or None for u, r in res.ranks.items()}
            self.ensure_rebuild(board.id)
        except RedisError as exc:
            log.warning("cache write for %s failed (%s); board marked stale", board.id, exc)
            self.stale.add(board.id)
            self.changed(board.id)  # no page kept from before this commit is served after its ack
            obs.count(obs.REDIS_FALLBACK, 1, "write")
        keys = [(board.id, u, ranking.sort_key(v, board.sort), season) for u, v in users.items()]
        try:
            found = await self.store.ranks(keys)
        except DB_DOWN as exc:
            log.warning("rank lookup in Postgres failed: %s", exc)
            return dict.fromkeys(users)
        return {u: found.get((board.id, u)) for u in users}

    # ---- rebuilds -----------------------------------------------------------------------------------------

    def ensure_rebuild(self, board_id: str) -> None:
        """Start a background rebuild of the board in this process unless one is running."""
        task = self._rebuilds.get(board_id)
        if task is None or task.done():
            self._rebuilds[board_id] = asyncio.create_task(self.rebuild_quietly(board_id), name=f"rebuild:{board_id}")

    def _floors(self, board_id: str) -> Callable[[], Awaitable[tuple[int, int]]]:
        async def floors() -> tuple[int, int]:
            return await self.store.seq_floor(), (await self.store.invariants(board_id))[1]

        return floors

    async def rebuild_quietly(self, board_id: str) -> None:
        try:
            async with self._rebuilding:
                await self.rebuild(board_id)
        except Exception as exc:  # Redis or Postgres away: the board stays stale and is retried
            log.warning("rebuild of %s failed: %s", board_id, exc)

    async def rebuild(self, board_id: str) -> int | None:
        """Reload a board in full from Postgres: its member count, or None if another process is at it."""
        if await self.store.board(board_id) is None:
            return 0
        try:
            return await self.cache.rebuild(
                board_id,
                lambda: self.store.scan(board_id, self.rebuild_batch),
                self._floors(board_id),
                # From here on the scan covers every earlier miss; a write that fails during the scan marks
                # the board stale again, and so does a failure of this rebuild (below).
                emptied=lambda: self.stale.discard(board_id),
            )
        except BaseException:
            self.stale.add(board_id)
            raise

    async def warm(self, boards: Sequence[BoardInfo]) -> None:
        """At start-up: rebuild every board that is not marked ready (a cold or lost Redis)."""
        try:
            for b in boards:
                ready = await self.cache.is_ready(b.id)
                obs.gauge(obs.CACHE_READY, int(ready), b.id)
                if not ready:
                    self.ensure_rebuild(b.id)
        except (RedisError, OSError) as exc:
            log.warning("Redis unreachable at start-up (%s): reads use Postgres until it is back", exc)
            self.stale.update(b.id for b in boards)

    # ---- convergence --------------------------------------------------------------------------------------

    async def watch(self, interval: float = 1.0) -> None:
        """Rebuild stale boards once Redis answers again; rebuild a shard's boards when its Redis restarted or
        failed over (a single Redis is one shard)."""
        known: dict[str, str] | None = None
        with contextlib.suppress(RedisError, OSError):  # from the start: a failover in the first second counts
            known = await self.cache.identities()
        while True:
            await pause(interval)
            try:
                shards = await self.cache.identities()
            except (RedisError, OSError):
                continue
            changed = {s for s, run_id in shards.items() if known is not None and known.get(s) != run_id}
            if changed:
                try:
                    boards = await self.store.boards()
                    self.stale.update(b.id for b in boards if self.cache.shard(b.id) in changed)
                except (*DB_DOWN, RedisError):
                    continue  # `known` stays as it was: noticed again next time
                log.warning("Redis restarted or failed over (%s): rebuilding its boards", ", ".join(sorted(changed)))
            known = shards
            for board_id in list(self.stale):
                self.ensure_rebuild(board_id)

    async def settle(self, interval: float = 1.0) -> None:
        """Delete the cache debts that were paid; repay the ones their writer left behind."""
        while True:
            await pause(interval)
            try:
                if self._paid:
                    paid, self._paid = self._paid, []
                    await self.store.delete_intents(paid)
                for intent, board_id, users in await self.store.old_intents(REPAIR_AFTER_S):
                    await self.repair(board_id, users)
                    await self.store.delete_intents([intent])
            except (*DB_DOWN, RedisError) as exc:
                log.warning("settling cache debts failed (%s); retrying", exc)

    async def repair(self, board_id: str, users: Sequence[str]) -> None:
        """Bring Redis to the board's live season and write these players' committed rows in it again
        (version-checked: never overwrites newer). A reset's debt has no players: only the season moves."""
        season = await self.store.live_season(board_id)
        if await self.cache.switch(board_id, season, await self.store.seq_floor()):
            log.warning("moved board %s to season %d in Redis (its reset's switch had not happened)", board_id, season)
        rows = await self.store.current(board_id, users)
        if rows:
            log.warning("repairing %d rows of board %s left unwritten by a failed or dead writer", len(rows), board_id)
            await self.cache.write(board_id, rows, [], time.time(), season)
        if len(rows) < len(set(users)):  # an entry removed (moderation) since: its tombstone's version is not
            log.warning("board %s owed the removal of an entry: rebuilding it", board_id)  # kept, so rebuild
            self.ensure_rebuild(board_id)
        self.changed(board_id)

    async def switch(self, board_id: str, season: int, debt: int) -> None:
        """Right after a reset committed: Redis drops the ended season and holds the new one (its debt is then
        paid; if this fails, settle() repays it)."""
        try:
            await self.cache.switch(board_id, season, await self.store.seq_floor())
            self.changed(board_id)
            self._paid.append(debt)
        except (*DB_DOWN, RedisError) as exc:
            log.warning("switching board %s to season %d in Redis failed (%s); it is retried", board_id, season, exc)

    async def verify(self, board: BoardInfo) -> bool:
        """Compare the board in Redis with Postgres while no write is in flight; rebuild it if they disagree.
        Returns False when it started a rebuild."""
        before = await self.cache.state(board.id)
        if not before.ready:
            return True  # being rebuilt, or cold: reads already go to Postgres
        members, version, owed, season = await self.store.invariants(board.id)
        after = await self.cache.state(board.id)
        if owed or after.seq != before.seq or not after.ready:
            return True  # writes in flight or debts unpaid: settle() covers those
        if (after.members, after.vmax, after.season) == (members, version, season):
            return True
        log.warning(
            "board %s disagrees with Postgres (Redis: %d members, version %d, season %d; Postgres: %d, %d, %d): "
            "rebuilding", board.id, after.members, after.vmax, after.season, members, version, season,
        )  # fmt: skip
        self.ensure_rebuild(board.id)
        return False

    async def verify_all(self, interval: float) -> None:
        """Every `interval` seconds, check each board (one process per board per interval, by lease)."""
        while True:
            try:
                for board in await self.store.boards():
                    if await self.cache.lease(board.id, interval):
                        await self.verify(board)
            except (*DB_DOWN, RedisError) as exc:
                log.debug("verification round failed: %s", exc)
            await pause(interval)

    async def close(self) -> None:
        for task in self._rebuilds.values():
            task.cancel()
        await asyncio.gather(*self._rebuilds.values(), return_exceptions=True)
        if self.cache.pipe is not None:
            await self.cache.pipe.close()
