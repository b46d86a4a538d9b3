"""The operations both transports share: submit, top, rank, boards. HTTP and WebSocket only parse and map."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from .auth import Principal
from .errors import Conflict, Forbidden, Invalid, NotFound, Refused, Unavailable
from .protocol import (
    Ack,
    BatchAck,
    BoardCreate,
    ItemResult,
    PlayerRank,
    Submission,
    TopPage,
    encode,
    entries,
    item_result,
)
from .ranking import TopSlice, percentile
from .ranks import Ranks
from .store import DB_DOWN, BoardInfo, Store
from .writer import Done, Writer


def _may_submit(who: Principal, user_id: str) -> None:
    if not who.can_submit_for(user_id):
        if not who.can_submit:
            raise Forbidden(f"role {who.role!r} may not submit scores")
        raise Forbidden("a player may submit only its own scores")


class Service:
    def __init__(self, store: Store, ranks: Ranks, writer: Writer) -> None:
        self.store, self.ranks, self.writer = store, ranks, writer
        self._bodies: dict[tuple[str, int], tuple[TopSlice, bytes]] = {}  # (board, limit) -> first page encoded

    async def board(self, board_id: str) -> BoardInfo:
        try:
            info = await self.store.board(board_id)
        except DB_DOWN:
            raise Unavailable("the database is unavailable; retry") from None
        if info is None:
            raise NotFound(f"board {board_id!r} does not exist")
        return info

    async def submit(self, who: Principal, sub: Submission) -> Ack:
        _may_submit(who, sub.user_id)
        return await self.writer.submit(sub, await self.board(sub.board))

    async def enqueue(self, who: Principal, sub: Submission, done: Done) -> None:
        """Queue a submission; `done` gets its ack or its refusal (a refusal here raises instead)."""
        _may_submit(who, sub.user_id)
        self.writer.enqueue(sub, await self.board(sub.board), done)

    async def enqueue_batch(
        self, who: Principal, items: list[Submission | Invalid], done: Callable[[BatchAck], None]
    ) -> None:
        """Queue each valid item on its own; `done` gets the results, in item order, once all are known."""
        results: list[ItemResult | None] = [None] * len(items)
        left = [len(items)]

        def finish(index: int, outcome: Ack | Refused) -> None:
            results[index] = item_result(index, outcome)
            left[0] -= 1
            if not left[0]:
                done(BatchAck([r for r in results if r is not None]))

        for index, item in enumerate(items):
            if isinstance(item, Refused):
                finish(index, item)
                continue
            try:
                _may_submit(who, item.user_id)
                board = await self.board(item.board)
            except Refused as exc:
                finish(index, exc)
                continue
            self.writer.enqueue(item, board, partial(finish, index))

    async def submit_batch(self, who: Principal, items: list[Submission | Invalid]) -> BatchAck:
        future: asyncio.Future[BatchAck] = asyncio.get_running_loop().create_future()

        def done(ack: BatchAck) -> None:
            if not future.done():  # the client may have gone; its items are committed all the same
                future.set_result(ack)

        await self.enqueue_batch(who, items, done)
        return await future

    async def top(self, board_id: str, limit: int, offset: int) -> TopPage:
        info = await self.board(board_id)
        page = await self.ranks.top(info, offset, limit, reader=True)
        return TopPage(info.id, page.total, page.seq, entries(page, info.sort))

    async def top_json(self, board_id: str, limit: int, offset: int) -> bytes:
        """GET /top's body. An unchanged first page (the read model hands back the same slice) is not encoded
        again."""
        info = await self.board(board_id)
        page = await self.ranks.top(info, offset, limit, reader=True)
        key = (info.id, limit)
        known = self._bodies.get(key) if offset == 0 else None
        if known is not None and known[0] is page:
            return known[1]
        body = encode(TopPage(info.id, page.total, page.seq, entries(page, info.sort)))
        if offset == 0:
            self._bodies[key] = (page, body)
        return body

    async def rank(self, board_id: str, user_id: str, around: int) -> PlayerRank:
        info = await self.board(board_id)
        found = await self.ranks.standing(info, user_id, around)
        if found is None:
            raise NotFound(f"{user_id!r} has no entry on board {info.id!r}")
        window = entries(found.page, info.sort)
        me = next(e for e in window if e.user_id == user_id)
        return PlayerRank(
            info.id, user_id, me.display_name, found.rank, me.score, found.total,
            percentile(found.rank, found.total), window,
        )  # fmt: skip

    async def boards(self) -> list[BoardInfo]:
        try:
            return await self.store.boards()
        except DB_DOWN:
            raise Unavailable("the database is unavailable; retry") from None

    async def create_board(self, who: Principal, spec: BoardCreate) -> BoardInfo:
        if who.role != "admin":
            raise Forbidden("creating boards needs an admin key")
        try:
            info = await self.store.create_board(spec)
        except DB_DOWN:
            raise Unavailable("the database is unavailable; retry") from None
        if info is None:
            raise Conflict(f"board {spec.id!r} already exists")
        self.store.forget_missing(info.id)
        await self.ranks.announce(info.id)
        await self.ranks.rebuild_quietly(info.id)  # an empty board: marks it ready at once
        return info

    async def board_total(self, info: BoardInfo) -> int:
        return (await self.ranks.top(info, 0, 1)).total
