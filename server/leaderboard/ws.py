"""WebSocket transport: one receive loop per socket, frames parsed by protocol.py, errors mapped here.

`Sockets` is the registry of this process's open sockets: it drains them on shutdown (1012), closes the ones
whose API key was revoked (1008), broadcasts `status` frames when Postgres or Redis comes or goes, and tells
collector.py of every socket opened and closed (their objects are kept out of the cyclic GC's way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import observability as obs
from .auth import Authenticator, Principal
from .collector import Collector
from .errors import (
    CLOSE_ERROR,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
    Close,
    Invalid,
    Refused,
    TooMany,
    Unauthorized,
    Unavailable,
)
from .fanout import Hub
from .health import Health
from .http import problem
from .outbox import Encoded, Outbox, raw_protocol
from .protocol import (
    Ack,
    AuthFrame,
    BatchAck,
    BatchFrame,
    ClientFrame,
    FrameError,
    PingFrame,
    Ref,
    SubmitFrame,
    SubscribeFrame,
    error_frame,
    parse_frame,
    parse_items,
    reply,
)
from .service import Service
from .settings import Settings

log = logging.getLogger(__name__)

MAX_INFLIGHT = 2048  # submissions one socket may have waiting for their ack; more and we stop reading frames
STRIKES = 100  # frames refused in a row for the rate limit before the socket is closed (1008)


class Budget:
    """How many submissions a socket may have in flight: `take` waits for room, `give` returns it; `idle`
    tells when none is in flight (a drain waits for that)."""

    def __init__(self, size: int) -> None:
        self.size, self.used = size, 0
        self._room = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    async def take(self, n: int) -> None:
        while self.used and self.used + n > self.size:  # a batch bigger than the budget goes alone
            self._room.clear()
            await self._room.wait()
        self.used += n
        self.idle.clear()

    def give(self, n: int) -> None:
        self.used -= n
        self._room.set()
        if not self.used:
            self.idle.set()


class Bucket:
    """A token bucket: `rate` per second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, 2 * rate, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(2 * self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Sockets:
    """The open sockets of this process."""

    open: set[Connection] = field(default_factory=set)
    draining: bool = False
    collector: Collector = field(default_factory=Collector)  # the GC kept off open sockets (collector.py)

    def joined(self, c: Connection) -> None:
        self.open.add(c)
        self.collector.opened(len(self.open))

    def left(self, c: Connection) -> None:
        if c in self.open:
            self.open.discard(c)
            self.collector.closed_one(len(self.open))

    def outboxes(self) -> Iterator[Outbox]:
        return (c.outbox for c in self.open)

    def broadcast_status(self, frame: bytes) -> None:
        """To every socket subscribed to the `status` topic."""
        encoded = Encoded(frame)
        for c in list(self.open):
            if c.wants_status:
                c.outbox.reply(encoded)

    def revoked(self, key_ids: set[int]) -> None:
        """Close (1008) every socket authenticated with one of these API keys."""
        for c in list(self.open):
            if c.principal.key_id in key_ids:
                c.end(Close(CLOSE_POLICY, "API key revoked"))

    async def drain(self, timeout: float) -> None:
        """Stop taking work, let received submissions commit and be acked, close sockets with 1012."""
        self.draining = True
        log.info("draining: %d sockets", len(self.open))
        conns = list(self.open)
        if conns:
            await asyncio.wait([asyncio.create_task(c.shutdown(timeout)) for c in conns], timeout=timeout)


class Context(Protocol):
    """What a socket needs from the app's lifespan."""

    @property
    def settings(self) -> Settings: ...
    @property
    def service(self) -> Service: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def health(self) -> Health: ...
    @property
    def sockets(self) -> Sockets: ...


class Connection:
    """One client socket: authenticate, dispatch frames, keep its subscriptions in the hub."""

    def __init__(self, ws: WebSocket, ctx: Context) -> None:
        self.ws, self.ctx = ws, ctx
        self.principal: Principal = Principal("anonymous")
        self.outbox = Outbox(self._send, self._close, raw_protocol(ws._send))
        self._budget = Budget(MAX_INFLIGHT)  # submissions waiting for their acks
        self._task: asyncio.Task[None] | None = None
        self.wants_status = False
        self._ended: Close | None = None
        self.engaged = False  # authenticated or subscribed: not closed for idling (ws_idle_timeout_s)

    async def _send(self, text: str) -> None:
        await self.ws.send_text(text)

    async def _close(self, code: int, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except (RuntimeError, OSError):
                pass  # the peer is gone already

    def end(self, why: Close) -> None:
        """Close this socket from outside its receive loop (revoked key)."""
        self._ended = why
        if self._task is not None:
            self._task.cancel()

    async def serve(self) -> None:
        ctx = self.ctx
        try:
            self.principal = await ctx.auth.from_header(
                self.ws.headers.get("authorization"), self.ws.headers.get("x-api-key"), self._address()
            )
        except Unauthorized as exc:
            await self.ws.accept()
            await self._close(CLOSE_POLICY, exc.detail[:120])
            return
        except Refused as exc:  # Postgres away and the key not known yet: 503, try again
            await self.ws.send_denial_response(problem(exc))
            return
        await self.ws.accept()
        if ctx.sockets.draining:
            await self._close(CLOSE_RESTART, "server restarting")
            return
        obs.count(obs.WS_CONNECTIONS, 1)
        ctx.sockets.joined(self)
        self._task = asyncio.current_task()
        self.engaged = self.principal.role != "anonymous"
        idle = asyncio.get_running_loop().call_later(ctx.settings.ws_idle_timeout_s, self._idle)
        try:
            await self._receive_loop()
        except Close as exc:
            await self._drain_replies()
            await self._close(exc.code, exc.reason)
        except asyncio.CancelledError:
            if self._ended is None:
                raise
            await self._close(self._ended.code, self._ended.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("websocket handler failed")
            await self._close(CLOSE_ERROR, "internal error")
        finally:
            idle.cancel()
            ctx.sockets.left(self)
            ctx.hub.detach(self.outbox)
            self.outbox.cancel()
            obs.count(obs.WS_CONNECTIONS, -1)

    def _address(self) -> str | None:
        return self.ws.client.host if self.ws.client else None

    def _idle(self) -> None:
        """A socket that neither authenticated nor subscribed within ws_idle_timeout_s is closed (1008)."""
        if not self.engaged:
            self.end(Close(CLOSE_POLICY, f"no auth or subscribe within {self.ctx.settings.ws_idle_timeout_s:g} s"))

    async def _receive_loop(self) -> None:
        limit, rate = self.ctx.settings.max_frame_bytes, self.ctx.settings.ws_frame_rate
        bucket, strikes = Bucket(rate), 0
        while not self.outbox.closed:
            await self.outbox.wait_room()
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("text")
            if data is None:
                data = (msg.get("bytes") or b"").decode("utf-8", "replace")
            if len(data) > limit:
                raise Close(CLOSE_TOO_BIG, "frame too large")
            if self.principal.key_id is None and not bucket.take():  # API keys (game servers) are not limited
                strikes += 1
                if strikes > STRIKES:
                    raise Close(CLOSE_POLICY, "rate limit exceeded")
                detail = f"at most {rate:g} frames per second (bursts of {2 * rate:g}); this frame was dropped"
                self.outbox.reply(Encoded(error_frame("rate_limited", detail)))
                continue
            strikes = 0
            await self._dispatch(data)

    async def _drain_replies(self, timeout: float = 2.0) -> None:
        """Give the sender a moment to deliver queued replies (acks) before a close."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.outbox.replies and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def _dispatch(self, data: str) -> None:
        try:
            frame = parse_frame(data)
        except FrameError as exc:
            obs.count(obs.WS_IN, 1, "invalid")
            self.outbox.reply(Encoded(error_frame(exc.code, exc.detail, exc.ref)))
            return
        obs.count(obs.WS_IN, 1, frame.type)
        try:
            with obs.background_task(f"ws.{frame.type}"):
                await self._handle(frame)
        except Refused as exc:
            self.outbox.reply(Encoded(_error(exc, frame.ref)))

    async def _handle(self, frame: ClientFrame) -> None:
        ctx = self.ctx
        if isinstance(frame, SubmitFrame | BatchFrame):
            if not self.principal.can_submit:
                raise Close(CLOSE_POLICY, "submitting needs an API key or a player token")
            if ctx.sockets.draining:
                raise Unavailable("server restarting; submit again after reconnecting")
            if isinstance(frame, BatchFrame):
                await self._submit_batch(frame)
            else:
                await self._submit(frame)
        elif isinstance(frame, SubscribeFrame):
            if not self.principal.can_read(ctx.settings.public_read):
                raise Unauthorized("reads need an API key or a player token on this server")
            await self._subscribe(frame)
        elif isinstance(frame, AuthFrame):
            try:
                self.principal = await ctx.auth.principal(frame.token, self._address())
            except Unauthorized as exc:
                raise Close(CLOSE_POLICY, exc.detail) from None
            self.engaged = True
            p = self.principal
            self.outbox.reply(Encoded(reply("auth", frame.ref, {"ok": True, "role": p.role, "user_id": p.user_id})))
        elif isinstance(frame, PingFrame):
            self.outbox.reply(Encoded(reply("pong", frame.ref, {})))

    async def _submit(self, frame: SubmitFrame) -> None:
        """Queue it, no task of its own: the writer calls back with the ack after COMMIT."""
        await self._budget.take(1)
        ref = frame.ref

        def done(outcome: Ack | Refused) -> None:
            self._budget.give(1)
            if isinstance(outcome, Ack):
                self.outbox.reply_soon(Encoded(reply("ack", ref, outcome)))
                obs.count(obs.WS_OUT, 1, "ack")
            else:
                self.outbox.reply_soon(Encoded(_error(outcome, ref)))

        try:
            await self.ctx.service.enqueue(self.principal, frame, done)
        except Refused as exc:
            done(exc)

    async def _submit_batch(self, frame: BatchFrame) -> None:
        limit = self.ctx.settings.batch_items_max
        if len(frame.items) > limit:
            raise Invalid(f"items: at most {limit} in one frame, got {len(frame.items)}")
        items = parse_items(frame.items)
        await self._budget.take(len(items))
        ref = frame.ref

        def done(ack: BatchAck) -> None:
            self._budget.give(len(items))
            self.outbox.reply_soon(Encoded(reply("ack", ref, ack)))
            obs.count(obs.WS_OUT, 1, "ack")

        await self.ctx.service.enqueue_batch(self.principal, items, done)

    async def _subscribe(self, frame: SubscribeFrame) -> None:
        hub, mb = self.ctx.hub, self.outbox
        if frame.topics == ["status"]:  # the server's health: not about a board
            self.engaged = True
            self.wants_status = frame.type == "subscribe"
            mb.reply(Encoded(reply(frame.type + "d", frame.ref, {"topics": frame.topics})))
            if self.wants_status:
                mb.reply(Encoded(self.ctx.health.status()))
            return
        if "status" in frame.topics:
            raise Invalid("topics: subscribe to status on its own, without a board topic")
        board = await self.ctx.service.board(frame.board)
        players = frame.players() if "rank" in frame.topics else []
        fields: dict[str, object] = {"board": board.id, "topics": frame.topics, "user_id": frame.user_id}
        if frame.user_ids is not None:
            fields["user_ids"] = players
        wanted = {("top", board.id, "")} if "top" in frame.topics else set()
        wanted |= {("rank", board.id, u) for u in players}
        if frame.type == "unsubscribe":
            for topic, board_id, user in wanted:
                hub.unsubscribe(mb, topic, board_id, user)
            mb.reply(Encoded(reply("unsubscribed", frame.ref, fields)))
            return
        _check_room(mb.subs | wanted, self.ctx.settings)
        self.engaged = True  # (a refused subscribe does not count: a bad one cannot keep an idle socket open)
        mb.reply(Encoded(reply("subscribed", frame.ref, fields)))
        if "top" in frame.topics:
            await hub.subscribe_top(mb, board, frame.limit)
        if players:
            await hub.subscribe_ranks(mb, board, players)

    async def shutdown(self, timeout: float) -> None:
        """Graceful drain: let in-flight submissions commit and be acked, then close with 1012."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._budget.idle.wait(), timeout)
        await self._drain_replies(timeout)
        await self._close(CLOSE_RESTART, "server restarting")


def _error(exc: Refused, ref: Ref) -> bytes:
    """The `error` frame of a refusal (with `retry_after` when it is a rate's and knows its wait)."""
    return error_frame(exc.code, exc.detail, ref, exc.retry_after if isinstance(exc, TooMany) else None)


def _check_room(subs: set[tuple[str, str, str]], settings: Settings) -> None:
    """What one socket may follow: `top` of at most max_subscriptions boards, at most max_followed players."""
    followed = sum(1 for topic, _, _ in subs if topic == "rank")
    if len(subs) - followed > settings.max_subscriptions:
        raise Refused(
            f"this socket may subscribe to the top of at most {settings.max_subscriptions} boards",
            status=429, code="too_many_subscriptions",
        )  # fmt: skip
    if followed > settings.max_followed:
        raise Refused(
            f"this socket may follow at most {settings.max_followed} players (LEADERBOARD_MAX_FOLLOWED); this "
            f"subscribe would make it {followed}: unsubscribe some first",
            status=429, code="too_many_subscriptions",
        )  # fmt: skip


def endpoint(context: Callable[[], Context]) -> Callable[[WebSocket], Awaitable[None]]:
    """The endpoint of /ws; `context()` gives what the lifespan started."""

    async def serve(ws: WebSocket) -> None:
        await Connection(ws, context()).serve()

    return serve
