"""The operations both transports share: submit, top, rank, boards. HTTP and WebSocket only parse and map."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from .auth import Principal
from .errors import Conflict, Forbidden, Invalid, NotFound, Refused, Unavailable
from .moderation import Change, Moderation
from .moderation import Outcome as Moderated
from .protocol import (
    Ack,
    AuditPage,
    BanReply,
    BatchAck,
    BoardCreate,
    BoardSeasons,
    ItemResult,
    PlayerRank,
    PlayersPage,
    PlayerSubmissions,
    RemoveReply,
    ResetReply,
    SeasonInfo,
    Submission,
    TopPage,
    VoidReply,
    encode,
    entries,
    item_result,
    player_entries,
)
from .ranking import TopSlice, percentile
from .ranks import Ranks
from .redisconn import pause
from .store import DB_DOWN, BoardInfo, EndedSeason, Store
from .writer import Done, Writer

log = logging.getLogger(__name__)
T = TypeVar("T")


def _may_submit(who: Principal, user_id: str) -> None:
    if not who.can_submit_for(user_id):
        if not who.can_submit:
            raise Forbidden(f"role {who.role!r} may not submit scores")
        raise Forbidden("a player may submit only its own scores")


class Service:
    def __init__(self, store: Store, ranks: Ranks, writer: Writer) -> None:
        self.store, self.ranks, self.writer = store, ranks, writer
        self.moderator = Moderator(Moderation(store.pool), ranks)
        self._bodies: dict[tuple[str, int], tuple[TopSlice, bytes]] = {}  # (board, limit) -> first page encoded

    async def board(self, board_id: str, *, fresh: bool = False) -> BoardInfo:
        """The board (404 if none); `fresh`: not from this process's cache (its live season may have moved)."""
        if fresh:
            self.store.forget(board_id)
        info = await _from_postgres(self.store.board(board_id))
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

    async def top_json(self, board_id: str, limit: int, offset: int, season: int | None = None) -> bytes:
        """GET /top's body, of the live season or an ended one. An unchanged first page of the live season (the
        read model hands back the same slice) is not encoded again."""
        info = await self.board(board_id)
        ended = await self._ended(info, season)
        if ended is not None:
            page = await _from_postgres(self.store.top(info, offset, limit, 0, ended.season, ended.total))
            return encode(TopPage(info.id, page.total, page.seq, entries(page, info.sort)))
        page = await self.ranks.top(info, offset, limit, reader=True)
        key = (info.id, limit)
        known = self._bodies.get(key) if offset == 0 else None
        if known is not None and known[0] is page:
            return known[1]
        body = encode(TopPage(info.id, page.total, page.seq, entries(page, info.sort)))
        if offset == 0:
            self._bodies[key] = (page, body)
        return body

    async def rank(self, board_id: str, user_id: str, around: int, season: int | None = None) -> PlayerRank:
        info = await self.board(board_id)
        ended = await self._ended(info, season)
        if ended is not None:
            found = await _from_postgres(self.store.standing(info, user_id, around, 0, ended.season, ended.total))
        else:
            found = await self.ranks.standing(info, user_id, around)
        if found is None:
            raise NotFound(f"{user_id!r} has no entry on board {info.id!r}")
        window = entries(found.page, info.sort)
        me = next(e for e in window if e.user_id == user_id)
        return PlayerRank(
            info.id, user_id, me.display_name, found.rank, me.score, found.total,
            percentile(found.rank, found.total), window,
        )  # fmt: skip

    async def players(self, board_id: str, user_ids: list[str], season: int | None = None) -> PlayersPage:
        """Friends: these players' entries in listing order with their ranks on the whole board (the live
        season from the read model; an ended one from Postgres). Players without an entry are left out."""
        info = await self.board(board_id)
        ended = await self._ended(info, season)
        if ended is not None:
            found = await _from_postgres(self.store.players(info, user_ids, 0, ended.season, ended.total))
            return PlayersPage(info.id, ended.season, found.total, player_entries(found, info.sort))
        found = await self.ranks.players(info, user_ids)
        return PlayersPage(info.id, info.season, found.total, player_entries(found, info.sort))

    # ---- seasons ------------------------------------------------------------------------------------------

    async def _ended(self, info: BoardInfo, season: int | None) -> EndedSeason | None:
        """The ended season a read asks for; None for the live one; 404 for one that does not exist."""
        if season is None:
            return None
        # An explicit season is checked against Postgres: a reset elsewhere may not have reached this process.
        if season == (await self.board(info.id, fresh=True)).season:
            return None
        ended = await _from_postgres(self.store.season(info.id, season)) if season >= 1 else None
        if ended is None:
            raise NotFound(f"board {info.id!r} has no season {season}")
        return ended

    async def reset(self, who: Principal, board_id: str, season: int | None = None) -> ResetReply:
        """End the live season now (admin), whatever the schedule; with `season`, only if that one is still
        live, so a retry after a lost answer never ends the next season too."""
        if who.role != "admin":
            raise Forbidden("resetting a board needs an admin key")
        info = await self.board(board_id)
        ended = await _from_postgres(self.store.reset_board(info.id, expect=season))
        if ended is None and season is not None:
            live = (await self.board(info.id, fresh=True)).season
            raise Conflict(
                f"season {season} of board {info.id!r} is not the live one (the live season is {live}): "
                "nothing was reset", code="season_ended" if season < live else "not_live",
            )  # fmt: skip
        if ended is None:
            raise NotFound(f"board {board_id!r} does not exist")
        await self._after_reset(ended)
        return ResetReply(info.id, ended.summary(), ended.next_season)

    async def _after_reset(self, ended: EndedSeason) -> None:
        log.info("board %s: season %d ended (%d entries), season %d started", ended.board, ended.season,
                 ended.total, ended.next_season)  # fmt: skip
        self.store.forget(ended.board)
        await self.ranks.switch(ended.board, ended.next_season, ended.debt)
        await self.ranks.announce(ended.board)

    async def seasons(self, board_id: str, limit: int, before: int | None) -> BoardSeasons:
        """A page of a board's seasons, newest first: `limit` of them, the live one first on the first page
        (`before` None), then the ended ones numbered below `before`; `next` is the `before` of the next page."""
        info = await self.board(board_id, fresh=True)
        page: list[SeasonInfo] = []
        if before is None:
            live = await self.ranks.top(info, 0, 3)
            started = info.public().season_started_at
            page.append(SeasonInfo(info.season, started, None, live.total, entries(live, info.sort)))
        room = limit - len(page)
        ended = await _from_postgres(self.store.seasons(info.id, room + 1, info.season if before is None else before))
        page += (e.public() for e in ended[:room])
        return BoardSeasons(info.id, page, page[-1].season if len(ended) > room else None)

    async def run_schedule(self, tick: float = 0.5) -> None:
        """Reset every board whose time has come, within `tick` of it, exactly once across processes (the
        reset is conditional on the season it ends)."""
        while True:
            try:
                for board_id, season in await self.store.due_resets():
                    ended = await self.store.reset_board(board_id, expect=season)
                    if ended is not None:
                        await self._after_reset(ended)
            except DB_DOWN as exc:
                log.debug("scheduled resets: Postgres unavailable (%s)", exc)
            except Exception:  # the schedule must outlive any one failure; the next tick tries again
                log.exception("scheduled resets failed; retrying")
            await pause(tick)

    async def boards(self) -> list[BoardInfo]:
        return await _from_postgres(self.store.boards())

    async def create_board(self, who: Principal, spec: BoardCreate) -> BoardInfo:
        if who.role != "admin":
            raise Forbidden("creating boards needs an admin key")
        info = await _from_postgres(self.store.create_board(spec))
        if info is None:
            raise Conflict(f"board {spec.id!r} already exists")
        self.store.forget(info.id)
        await self.ranks.announce(info.id)
        await self.ranks.rebuild_quietly(info.id)  # an empty board: marks it ready at once
        return info

    async def board_total(self, info: BoardInfo) -> int:
        return (await self.ranks.top(info, 0, 1)).total


async def _from_postgres(work: Awaitable[T]) -> T:
    """Postgres' answer, or 503 when it does not answer."""
    try:
        return await work
    except DB_DOWN:
        raise Unavailable("the database is unavailable; retry") from None


def _admin(who: Principal, what: str) -> str:
    """The actor the audit log names, or 403."""
    if who.role != "admin":
        raise Forbidden(f"{what} needs an admin key")
    return who.name or f"key {who.key_id}"


class Moderator:
    """Void, remove, ban, unban (admin): the transaction in Postgres (moderation.py), then the changed rows to
    Redis through the read model, which publishes them like a batch's (pushes on every process)."""

    def __init__(self, moderation: Moderation, ranks: Ranks) -> None:
        self.moderation, self.ranks = moderation, ranks

    async def void(self, who: Principal, session_id: uuid.UUID, reason: str) -> VoidReply:
        actor = _admin(who, "voiding a submission")
        out = await self._run(self.moderation.void(session_id, reason, actor))
        log.info("%s voided submission %s of %s on %s (%s)", actor, session_id, out.user, out.board, reason)
        return VoidReply(out.board, out.user, session_id, out.values.get(out.board), out.season)

    async def restore(self, who: Principal, session_id: uuid.UUID, reason: str) -> VoidReply:
        actor = _admin(who, "restoring a submission")
        out = await self._run(self.moderation.restore(session_id, reason, actor))
        log.info("%s restored submission %s of %s on %s (%s)", actor, session_id, out.user, out.board, reason)
        return VoidReply(out.board, out.user, session_id, out.values.get(out.board), out.season)

    async def remove(self, who: Principal, board_id: str, user_id: str, reason: str) -> RemoveReply:
        actor = _admin(who, "removing an entry")
        out = await self._run(self.moderation.remove(board_id, user_id, reason, actor))
        log.info("%s removed %s from %s (%s)", actor, user_id, board_id, reason)
        return RemoveReply(board_id, user_id, out.season, out.voided)

    async def ban(self, who: Principal, user_id: str, reason: str) -> BanReply:
        actor = _admin(who, "banning a player")
        out = await self._run(self.moderation.ban(user_id, reason, actor))
        log.info("%s banned %s (%s): removed from %d boards", actor, user_id, reason, len(out.values))
        return BanReply(user_id, True, out.values)

    async def unban(self, who: Principal, user_id: str, reason: str) -> BanReply:
        actor = _admin(who, "lifting a ban")
        out = await self._run(self.moderation.unban(user_id, reason, actor))
        log.info("%s lifted the ban of %s (%s): restored on %d boards", actor, user_id, reason, len(out.values))
        return BanReply(user_id, False, out.values)

    async def audit(self, who: Principal, limit: int, before: int | None, user_id: str | None) -> AuditPage:
        _admin(who, "reading the audit log")
        return await _from_postgres(self.moderation.audit(limit, before, user_id))

    async def submissions(self, who: Principal, user_id: str, board: str | None, limit: int) -> PlayerSubmissions:
        if who.role not in ("admin", "read"):
            raise Forbidden("a player's submissions are for admin and read keys")
        return await _from_postgres(self.moderation.submissions(user_id, board, limit))

    async def _run(self, action: Awaitable[Moderated]) -> Moderated:
        """Run the transaction, then write what it changed to Redis (a failure there leaves the board stale
        and its debt behind: settle() and the rebuild converge it)."""
        result = await _from_postgres(action)
        await self.publish(result.changes)
        return result

    async def publish(self, changes: list[Change]) -> None:
        for c in changes:
            await self.ranks.record(c.board, [c.row], {}, time.time(), c.intent, c.row.season)
