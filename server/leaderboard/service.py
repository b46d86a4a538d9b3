"""The operations both transports share: submit, top, rank, boards. HTTP and WebSocket only parse and map."""

from __future__ import annotations

from redis.exceptions import RedisError

from . import observability as obs
from . import ranking
from .auth import Principal
from .cache import Cache
from .protocol import BoardCreate, Entry, PlayerRank, Refused, Submission, TopPage
from .store import DB_DOWN, BoardInfo, Store
from .writer import Ack, Writer


class Leaderboard:
    def __init__(self, store: Store, cache: Cache, writer: Writer) -> None:
        self.store, self.cache, self.writer = store, cache, writer

    async def board(self, board_id: str) -> BoardInfo:
        try:
            info = await self.store.board(board_id)
        except DB_DOWN:
            raise Refused(503, "unavailable", "the database is unavailable; retry") from None
        if info is None:
            raise Refused(404, "not_found", f"board {board_id!r} does not exist")
        return info

    async def submit(self, who: Principal, sub: Submission) -> Ack:
        if not who.can_submit_for(sub.user_id):
            if not who.can_submit:
                raise Refused(403, "forbidden", f"role {who.role!r} may not submit scores")
            raise Refused(403, "forbidden", "a player may submit only its own scores")
        return await self.writer.submit(sub, await self.board(sub.board))

    async def top(self, board_id: str, limit: int, offset: int) -> TopPage:
        info = await self.board(board_id)
        seq, page = 0, None
        try:
            seq, page = await self.cache.top(info.id, offset, limit)
            if page is None:
                self.cache.ensure_rebuild(info.id)
        except RedisError:
            obs.redis_fallback("top")
        try:
            if page is None:
                seq = seq or await self.store.seq_floor()
                total, first, rows = await self.store.top(info, limit, offset)
                page = total, first, [(u, n, k) for u, n, _, k in rows]
        except DB_DOWN:
            raise Refused(503, "unavailable", "neither Redis nor Postgres can answer; retry") from None
        total, first, items = page
        ranks = ranking.page_ranks(first, offset, [k for _, _, k in items])
        entries = [
            Entry(rank=r, user_id=u, display_name=n, score=ranking.value_of(k, info.sort))
            for r, (u, n, k) in zip(ranks, items, strict=True)
        ]
        return TopPage(board=info.id, total=total, seq=seq, entries=entries)

    async def rank(self, board_id: str, user_id: str, around: int) -> PlayerRank:
        info = await self.board(board_id)
        res = None
        try:
            res = await self.cache.rank(info.id, user_id, around)
            if res is None:
                self.cache.ensure_rebuild(info.id)
        except RedisError:
            obs.redis_fallback("rank")
        if res is None:
            try:
                found = await self.store.rank(info, user_id, around)
            except DB_DOWN:
                raise Refused(503, "unavailable", "neither Redis nor Postgres can answer; retry") from None
            if found is not None:
                total, rank, _me, first, rows = found
                start = 0 if not around else await self.store.position(info, rows[0][3], rows[0][0])
                res = (True, total, rank, start, first, [(u, n, k) for u, n, _, k in rows], 0)
        if res is None or not res[0]:
            raise Refused(404, "not_found", f"{user_id!r} has no entry on board {info.id!r}")
        _, total, rank, start, first, items, _seq = res
        ranks = ranking.page_ranks(first, start, [k for _, _, k in items])
        entries = [
            Entry(rank=r, user_id=u, display_name=n, score=ranking.value_of(k, info.sort))
            for r, (u, n, k) in zip(ranks, items, strict=True)
        ]
        me_entry = next(e for e in entries if e.user_id == user_id)
        return PlayerRank(
            board=info.id, user_id=user_id, display_name=me_entry.display_name, rank=rank, score=me_entry.score,
            total=total, percentile=ranking.percentile(rank, total), around=entries,
        )  # fmt: skip

    async def boards(self) -> list[BoardInfo]:
        try:
            return await self.store.boards()
        except DB_DOWN:
            raise Refused(503, "unavailable", "the database is unavailable; retry") from None

    async def create_board(self, who: Principal, spec: BoardCreate) -> BoardInfo:
        if who.role != "admin":
            raise Refused(403, "forbidden", "creating boards needs an admin key")
        info = await self.store.create_board(spec)
        if info is None:
            raise Refused(409, "conflict", f"board {spec.id!r} already exists")
        try:
            await self.cache.rebuild(info.id)  # an empty board: marks it ready at once
        except RedisError:
            self.cache.stale.add(info.id)
        return info

    async def board_total(self, info: BoardInfo) -> int:
        page = await self.top(info.id, 1, 0)
        return page.total
