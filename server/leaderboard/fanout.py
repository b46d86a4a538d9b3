"""Fan-out: one Redis pub/sub listener per process, a debouncer per board, a mailbox per socket.

    writer (any process) --(S)PUBLISH lb:{b}:ev--> listener (each process whose sockets follow b) --> dirty
    subscriptions: a process subscribes to a board's channel when its first socket follows the board and
        unsubscribes `grace` seconds after the last one left (channels.py: SSUBSCRIBE on the shard that owns
        the board in a Redis Cluster); a process with no follower of a board receives nothing of it.
        After any (re)subscription the board is re-read in full (events may have been missed meanwhile).
    debouncer: at most one flush per board per push interval:
        top:  one Redis read for the largest limit subscribed; each changed snapshot is encoded once and the
              same string goes to every subscriber's mailbox, FLUSH_SLICE at a time; at each pause a change
              that reached the top is read, and the sockets not written yet get the newer page
        rank: only followed players whose key some change crossed are re-read (one Redis call per board);
              pushed at the top pass's first pause (or after it, when it has one slice or none)
    outbox: the frame bytes go straight to every writable socket; a blocked one keeps the latest push per
            topic (outbox.py) and is closed with 1013 if it stays blocked.

Redis work per flush depends on boards and followed players in this process, never on the number of sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from . import observability as obs
from . import ranking
from .cache import BOARDS_CHANNEL, board_of_channel, channel_of
from .channels import Channels
from .errors import Refused
from .outbox import Encoded, Outbox
from .protocol import Entry, encode, entries
from .ranks import Ranks
from .redisconn import Client
from .store import BoardInfo

log = logging.getLogger(__name__)

# A flush writes this many pushes, then lets the event loop run (acks, commits, change events) before the next
# slice: a flush to 10,000 sockets is ~100-150 ms of sends, which submissions would otherwise wait behind, and a
# change that arrives meanwhile reaches the sockets not written yet in this flush (docs/performance.md).
FLUSH_SLICE = 100

READ_WATCH_S = 60.0  # a board read over REST is subscribed this long after its last read

RESUBSCRIBED = '{"reset":true}'  # the event on_event gets when a board's subscription is (re)confirmed


PODIUM = 3  # the final standings a socket that follows players only is sent when a season ends


@dataclass(slots=True)
class _Follow:
    key: int | None = None
    rank: int | None = None
    mailboxes: set[Outbox] = field(default_factory=set)


@dataclass(slots=True)
class _Board:
    info: BoardInfo
    top: dict[int, set[Outbox]] = field(default_factory=dict)  # limit -> subscribers
    follows: dict[str, _Follow] = field(default_factory=dict)
    last_top: dict[int, list[Entry]] = field(default_factory=dict)  # limit -> entries last pushed
    last_msg: dict[int, Encoded] = field(default_factory=dict)  # limit -> the frame last pushed
    last_seq: dict[int, int] = field(default_factory=dict)  # limit -> its seq
    unsent: set[int] = field(default_factory=set)  # limits whose last_msg some subscriber may not have been sent
    cut: tuple[int, float] = (0, 0.0)  # (entries, key of the last) in the last snapshot read
    changes: list[tuple[str, float | None, float]] = field(default_factory=list)
    oldest_commit: float | None = None
    full: bool = False
    scheduled: bool = False
    last_flush: float = -1e9


class Hub:
    """Per-process subscription registry, pub/sub listener and debounced flusher."""

    def __init__(
        self, client: Client, ranks: Ranks, push_interval: float, board_changed: Callable[[str | None], None],
        grace: float = 5.0,
    ) -> None:  # fmt: skip
        self.r, self.ranks, self.interval, self.board_changed = client, ranks, push_interval, board_changed
        self.boards: dict[str, _Board] = {}
        self.grace = grace  # seconds a board stays subscribed after its last follower left
        self.channels = Channels(client, self._message, self._joined)
        self.channels.want(BOARDS_CHANNEL)
        self._leaving: dict[str, asyncio.TimerHandle] = {}
        # The read model keeps first pages only while their board's events arrive here; a board read but not
        # followed here is subscribed for READ_WATCH_S after its last read (see reading()).
        ranks.events_live = self.watching
        ranks.reading = self.reading
        self._read_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def watching(self, board_id: str) -> bool:
        """Whether this process receives the board's change events right now (a snapshot may be reused)."""
        return self.channels.active(channel_of(board_id))

    def reading(self, board_id: str) -> None:
        """A board is read here (REST): follow its events for a while, so its first pages can be kept."""
        now = time.monotonic()
        if board_id not in self._read_at and board_id not in self.boards:
            self.channels.want(channel_of(board_id))
            leaving = self._leaving.pop(board_id, None)
            if leaving is not None:
                leaving.cancel()
            if not self._read_at:
                asyncio.get_running_loop().call_later(READ_WATCH_S, self._stop_reading)
        self._read_at[board_id] = now

    def _stop_reading(self) -> None:
        """Drop the boards nobody has read for READ_WATCH_S and no socket here follows."""
        cutoff = time.monotonic() - READ_WATCH_S
        for board_id, at in list(self._read_at.items()):
            if at < cutoff:
                del self._read_at[board_id]
                if board_id not in self.boards:
                    self.channels.drop(channel_of(board_id))
        if self._read_at:
            asyncio.get_running_loop().call_later(READ_WATCH_S, self._stop_reading)

    # ---- subscriptions ------------------------------------------------------------------------------------

    def _follow(self, board: BoardInfo) -> _Board:
        b = self.boards.get(board.id)
        if b is None:
            b = self.boards[board.id] = _Board(board)
            leaving = self._leaving.pop(board.id, None)
            if leaving is not None:
                leaving.cancel()
            self.channels.want(channel_of(board.id))
        return b

    def _unfollow(self, board_id: str) -> None:
        del self.boards[board_id]
        loop = asyncio.get_running_loop()
        self._leaving[board_id] = loop.call_later(self.grace, self._leave, board_id)

    def _leave(self, board_id: str) -> None:
        self._leaving.pop(board_id, None)
        if board_id not in self.boards and board_id not in self._read_at:
            self.channels.drop(channel_of(board_id))

    async def subscribe_top(self, mb: Outbox, board: BoardInfo, limit: int) -> None:
        b = self._follow(board)
        for subs in b.top.values():
            subs.discard(mb)
        key = ("top", board.id, "")
        mb.seqs.pop(key, None)  # a subscribe is answered with a snapshot, even one it had (a flush may answer it)
        first = limit not in b.top
        b.top.setdefault(limit, set()).add(mb)
        mb.subs.add(("top", board.id, ""))
        obs.gauge(obs.SUBSCRIBERS, _count(b, "top"), board.id, "top")
        cached = b.last_msg.get(limit)
        if cached is not None and self.watching(board.id) and not (b.changes or b.full or b.scheduled):
            mb.push(key, cached, b.last_seq[limit])  # what every subscriber of this limit has, nothing changed since
            return
        seq, entries, total = await self._snapshot(b, limit)
        message = _top_message(board.id, seq, total, entries)
        if first:  # the only subscriber of this limit: what it got is what the next flush compares with
            b.last_top[limit], b.last_msg[limit], b.last_seq[limit] = entries, message, seq
        mb.push(key, message, seq)

    async def subscribe_rank(self, mb: Outbox, board: BoardInfo, user_id: str) -> None:
        await self.subscribe_ranks(mb, board, [user_id])

    async def subscribe_ranks(self, mb: Outbox, board: BoardInfo, users: list[str]) -> None:
        """Follow these players (friends): one read for those no socket here follows yet, then each one's
        current rank is pushed."""
        b = self._follow(board)
        new = [u for u in users if u not in b.follows]
        if new:
            seq, found = await self.ranks.follow(board, new)
            for user in new:
                if user not in b.follows:  # (another socket may have started following it meanwhile)
                    f = b.follows[user] = _Follow()
                    _place(f, found[user])
        else:
            seq = await self.ranks.seq(board)
        for user in users:
            f = b.follows.setdefault(user, _Follow())
            f.mailboxes.add(mb)
            key = ("rank", board.id, user)
            mb.subs.add(key)
            mb.seqs.pop(key, None)
            mb.push(key, _rank_message(b.info, user, f, None, seq), seq)
        obs.gauge(obs.SUBSCRIBERS, _count(b, "rank"), board.id, "rank")

    def unsubscribe(self, mb: Outbox, topic: str, board_id: str, user_id: str = "") -> None:
        mb.subs.discard((topic, board_id, user_id))
        mb.seqs.pop((topic, board_id, user_id), None)
        b = self.boards.get(board_id)
        if b is None:
            return
        if topic == "top":
            for limit, subs in list(b.top.items()):
                subs.discard(mb)
                if not subs:
                    del b.top[limit]
                    b.last_top.pop(limit, None)
                    b.last_msg.pop(limit, None)
                    b.unsent.discard(limit)
        else:
            f = b.follows.get(user_id)
            if f is not None:
                f.mailboxes.discard(mb)
                if not f.mailboxes:
                    del b.follows[user_id]
        obs.gauge(obs.SUBSCRIBERS, _count(b, topic), board_id, topic)
        if not b.top and not b.follows:
            self._unfollow(board_id)

    def detach(self, mb: Outbox) -> None:
        for topic, board_id, user_id in list(mb.subs):
            self.unsubscribe(mb, topic, board_id, user_id)

    # ---- the listener -------------------------------------------------------------------------------------

    async def listen(self) -> None:
        """Receive the change events of the boards followed here, and board announcements, until cancelled."""
        await self.channels.run()

    def _message(self, channel: str, data: str) -> None:
        if channel == BOARDS_CHANNEL:
            self.board_changed(data)
        else:
            self.on_event(channel, data)

    def _joined(self, channel: str) -> None:
        """A (re)confirmed subscription: what was published before it went unseen here."""
        if channel == BOARDS_CHANNEL:
            self.board_changed(None)  # announcements missed while not subscribed
        else:
            self.on_event(channel, RESUBSCRIBED)  # as after a rebuild: whatever is known of the board is old

    def on_event(self, channel: str, data: str) -> None:
        """Every event of a subscribed board. `{"reset": true, ...}` (a rebuild, or a (re)subscription after
        which earlier events may be missing; that one has no `s`) means: forget what is known of the board."""
        board_id = board_of_channel(channel)
        self.ranks.changed(board_id)
        b = self.boards.get(board_id)
        if b is None:
            return
        ev = orjson.loads(data)
        if "season" in ev:  # a reset: the ended season's final standings go out first, then the new season
            self._spawn_task(self._season_ended(b, ev["ended"], ev["season"]), f"season:{board_id}")
            return
        if ev.get("reset"):
            self._dirty(board_id, full=True)
            return
        b.changes += [(c[0], None if c[1] is False else float(c[1]), float(c[2])) for c in ev["c"]]
        t = float(ev["t"])
        b.oldest_commit = t if b.oldest_commit is None else min(b.oldest_commit, t)
        self._dirty(board_id)

    # ---- debounced flushing -------------------------------------------------------------------------------

    def _dirty(self, board_id: str, full: bool = False) -> None:
        b = self.boards.get(board_id)
        if b is None:
            return
        b.full = b.full or full
        if b.scheduled:
            return
        b.scheduled = True
        loop = asyncio.get_running_loop()
        delay = max(0.0, b.last_flush + self.interval - loop.time())
        loop.call_later(delay, self._spawn, board_id)

    def _spawn(self, board_id: str) -> None:
        self._spawn_task(self._flush(board_id), f"flush:{board_id}")

    def _spawn_task(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _season_ended(self, b: _Board, ended: int, season: int) -> None:
        """Tell every subscriber of the board that `ended` is over, with its final standings (up to a top
        subscriber's limit; the podium for a socket that follows players only), then push the new season: an
        empty top, and every followed player's rank (none yet)."""
        try:
            if ended > 0 and (b.top or b.follows):
                try:
                    final = await self.ranks.final(b.info, ended, max([*b.top, PODIUM if b.follows else 0]))
                except (RedisError, OSError, Refused) as exc:  # the season still ended: say so, standings or not
                    log.warning("final standings of %s season %d could not be read (%s)", b.info.id, ended, exc)
                    final = []
                told: set[Outbox] = set()
                audiences = [*b.top.items(), (PODIUM, {mb for f in b.follows.values() for mb in f.mailboxes})]
                for limit, mailboxes in audiences:
                    frame = Encoded(encode({"type": "season", "board": b.info.id, "ended": ended, "season": season,
                                            "final": final[:limit]}))  # fmt: skip
                    for mb in mailboxes - told:
                        mb.reply(frame)
                    obs.count(obs.WS_OUT, len(mailboxes - told), "season")
                    told |= mailboxes
        finally:
            b.last_top.clear()
            b.last_msg.clear()
            self._dirty(b.info.id, full=True)

    async def _flush(self, board_id: str) -> None:
        b = self.boards.get(board_id)
        if b is None:
            return
        b.last_flush = asyncio.get_running_loop().time()
        changes, b.changes = b.changes, []
        full, b.full = b.full, False
        oldest, b.oldest_commit = b.oldest_commit, None
        sent = 0
        users: list[str] = []
        if b.follows:
            users = (
                list(b.follows) if full else list(ranking.affected({u: f.key for u, f in b.follows.items()}, changes))
            )

        async def ranks() -> None:
            """The rank pushes of this flush, once: a few sockets follow a player, so they go out at the top
            pass's first pause (after its first slice) rather than after all of it (10,000 sockets: ~130 ms);
            a socket that follows the top and a player still gets the top first while the top has few
            subscribers."""
            nonlocal sent, users
            if users:
                todo, users = users, []
                sent += await self._flush_ranks(b, todo)

        try:
            with obs.background_task("fanout.flush"):
                if b.top and (full or b.unsent or _touches_top(b, changes)):
                    pushed = await self._flush_top(b, ranks)  # (not `sent += await`: ranks() adds to it meanwhile)
                    sent += pushed
                elif changes:
                    b.last_msg.clear()  # the total moved: the next subscriber reads afresh
                await ranks()
        except (RedisError, OSError, Refused) as exc:
            log.warning("flush of %s failed (%s); will retry in full", board_id, exc)
            b.full = True
        finally:
            b.scheduled = False
            if oldest is not None and sent:
                obs.observe(obs.PUSH_SECONDS, max(0.0, time.time() - oldest))
            if b.full or b.changes:
                self._dirty(board_id)

    async def _flush_top(self, b: _Board, at_first_pause: Callable[[], Awaitable[None]]) -> int:
        """Push every changed top-N page to its subscribers, FLUSH_SLICE sockets at a time. Between slices the
        event loop runs (acks, reads); if changes that reach the top arrived meanwhile, the page is read again
        and the sockets not reached yet get the newer one, so a change waits for at most one pass over the
        sockets instead of the rest of this pass and then its turn in the next (docs/performance.md). The
        sockets reached before it get it from the next flush; the ones that already have it skip it (same seq)."""
        seen = len(b.changes)  # (a change that arrives during a read may be missing from it: read again)
        await self._read_top(b)
        limits, b.unsent = sorted(b.unsent), set()  # these pages go to every subscriber in this pass
        key = ("top", b.info.id, "")
        sent = 0
        try:
            for limit in limits:
                boxes = list(b.top.get(limit, ()))
                for start in range(0, len(boxes), FLUSH_SLICE):
                    if start:
                        await asyncio.sleep(0)
                        await at_first_pause()
                        if limit not in b.top:
                            break  # its last subscriber left during the pause
                        fresh, seen = b.changes[seen:], len(b.changes)
                        if fresh and _touches_top(b, fresh):
                            await self._read_top(b)
                    mailboxes, frame, seq = b.top[limit], b.last_msg[limit], b.last_seq[limit]
                    for mb in boxes[start : start + FLUSH_SLICE]:
                        if not start or mb in mailboxes:  # (one that left during a pause gets nothing more)
                            mb.push(key, frame, seq)
                            sent += 1
        except BaseException:  # (a failed re-read, a cancellation): the next flush offers these pages again
            b.unsent.update(limit for limit in limits if limit in b.top)
            raise
        finally:
            obs.count(obs.WS_OUT, sent, "top")
        return sent

    async def _read_top(self, b: _Board) -> None:
        """Read the largest top-N subscribed; each limit whose page changed gets a new frame, to be offered to
        every subscriber of that limit (`unsent`). An unchanged page keeps the frame its subscribers are being
        sent; once it has reached them all, it is refreshed (total, seq) for the next new subscriber."""
        seq, entries, total = await self._snapshot(b, max(b.top))
        for limit in b.top:
            page = entries[:limit]
            if page != b.last_top.get(limit):
                b.last_top[limit] = page
                b.unsent.add(limit)
            elif limit in b.unsent and limit in b.last_msg:
                continue
            b.last_msg[limit], b.last_seq[limit] = _top_message(b.info.id, seq, total, page), seq

    async def _flush_ranks(self, b: _Board, users: list[str]) -> int:
        seq, found = await self.ranks.follow(b.info, users)
        sent, pause = 0, FLUSH_SLICE
        for user in users:
            f = b.follows.get(user)
            if f is None:
                continue
            previous = (f.key, f.rank)
            _place(f, found.get(user))
            if (f.key, f.rank) == previous:
                continue
            text = _rank_message(b.info, user, f, previous[1], seq)
            for mb in f.mailboxes:
                mb.push(("rank", b.info.id, user), text, seq)
            sent += len(f.mailboxes)
            if sent >= pause:  # as in _flush_top: acks and reads run between slices
                pause = sent + FLUSH_SLICE
                await asyncio.sleep(0)
        obs.count(obs.WS_OUT, sent, "rank")
        return sent

    async def _snapshot(self, b: _Board, limit: int) -> tuple[int, list[Entry], int]:
        """(seq, entries, total) of the board's top `limit`: the same read GET /api/leaderboard/top serves."""
        page = await self.ranks.top(b.info, 0, limit)
        if limit == max(b.top, default=limit):
            b.cut = (len(page.members), float(page.members[-1].key) if page.members else 0.0)
        return page.seq, entries(page, b.info.sort), page.total

    async def close(self) -> None:
        for handle in self._leaving.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _count(b: _Board, topic: str) -> int:
    if topic == "top":
        return sum(len(s) for s in b.top.values())
    return sum(len(f.mailboxes) for f in b.follows.values())


def _touches_top(b: _Board, changes: list[tuple[str, float | None, float]]) -> bool:
    """Could any change have altered the largest top-N subscribed? (Entering, leaving or moving within it.)"""
    count, cut = b.cut
    if count < max(b.top):
        return bool(changes)
    return any(new <= cut or (old is not None and old <= cut) for _, old, new in changes)


def _place(f: _Follow, at: ranking.Position | None) -> None:
    f.key, f.rank = (at.key, at.rank) if at is not None else (None, None)


def _top_message(board: str, seq: int, total: int, page: list[Entry]) -> Encoded:
    return Encoded(encode({"type": "top", "board": board, "seq": seq, "total": total, "entries": page}))


def _rank_message(info: BoardInfo, user: str, f: _Follow, previous: int | None, seq: int) -> Encoded:
    score = None if f.key is None else ranking.value_of(f.key, info.sort)
    return Encoded(encode(
        {"type": "rank", "board": info.id, "user_id": user, "rank": f.rank, "previous_rank": previous,
         "score": score, "seq": seq}
    ))  # fmt: skip
