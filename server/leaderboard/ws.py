"""WebSocket transport: one receive loop and one sender task per socket; frames are parsed by protocol.py."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import observability as obs
from .auth import Principal
from .outbox import Encoded, Outbox, raw_protocol
from .protocol import (
    CLOSE_ERROR,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
    AuthFrame,
    ClientFrame,
    FrameError,
    PingFrame,
    Refused,
    SubmitFrame,
    SubscribeFrame,
    encode,
    error_frame,
    parse_frame,
)

if TYPE_CHECKING:
    from .app import Services

log = logging.getLogger(__name__)

MAX_INFLIGHT = 64  # submissions one socket may have waiting for their ack; more and we stop reading frames


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Connection:
    """One client socket: authenticate, dispatch frames, keep its subscriptions in the hub."""

    def __init__(self, ws: WebSocket, svc: Services) -> None:
        self.ws, self.svc = ws, svc
        self.principal: Principal = Principal("anonymous")
        self.outbox = Outbox(self._send, self._close, raw_protocol(ws._send))
        self.inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_INFLIGHT)

    async def _send(self, text: str) -> None:
        await self.ws.send_text(text)

    async def _close(self, code: int, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except (RuntimeError, OSError):
                pass  # the peer is gone already

    async def serve(self) -> None:
        settings = self.svc.settings
        try:
            self.principal = await self.svc.auth.from_header(self.ws.headers.get("authorization"))
        except Refused as exc:
            await self.ws.accept()
            await self._close(CLOSE_POLICY, exc.detail[:120])
            return
        await self.ws.accept()
        if self.svc.draining:
            await self._close(CLOSE_RESTART, "server restarting")
            return
        obs.ws_connected(1)
        self.svc.connections.add(self)
        try:
            while not self.outbox.closed:
                await self.outbox.wait_room()
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("text")
                if data is None:
                    data = (msg.get("bytes") or b"").decode("utf-8", "replace")
                if len(data) > settings.max_frame_bytes:
                    raise _Close(CLOSE_TOO_BIG, "frame too large")
                await self._dispatch(data)
        except _Close as exc:
            await self._drain_replies()
            await self._close(exc.code, exc.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("websocket handler failed")
            await self._close(CLOSE_ERROR, "internal error")
        finally:
            self.svc.connections.discard(self)
            self.svc.hub.detach(self.outbox)
            for task in self.inflight:
                task.cancel()
            self.outbox.cancel()
            obs.ws_connected(-1)

    async def _drain_replies(self, timeout: float = 2.0) -> None:
        """Give the sender a moment to deliver queued replies (acks) before a close."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.outbox.replies and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def _dispatch(self, data: str) -> None:
        try:
            frame = parse_frame(data)
        except FrameError as exc:
            obs.ws_message_in("invalid")
            self.outbox.reply(Encoded(error_frame(exc.code, exc.detail, exc.ref)))
            return
        kind = getattr(frame, "type", "?")
        obs.ws_message_in(kind)
        try:
            with obs.background_task(f"ws.{kind}"):
                await self._handle(frame)
        except Refused as exc:
            self.outbox.reply(Encoded(error_frame(exc.code, exc.detail, frame.ref)))

    async def _handle(self, frame: ClientFrame) -> None:
        svc = self.svc
        if isinstance(frame, AuthFrame):
            try:
                self.principal = await svc.auth.principal(frame.token)
            except Refused as exc:
                raise _Close(CLOSE_POLICY, exc.detail[:120]) from None
            self._reply(frame, "auth", ok=True, role=self.principal.role, user_id=self.principal.user_id)
        elif isinstance(frame, SubmitFrame):
            if not self.principal.can_submit:
                raise _Close(CLOSE_POLICY, "submitting needs an API key or a player token")
            if svc.draining:
                raise Refused(503, "unavailable", "server restarting; submit again after reconnecting")
            await self._slots.acquire()
            task = asyncio.create_task(self._submit(frame))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        elif isinstance(frame, SubscribeFrame):
            if not self.principal.can_read(svc.settings.public_read):
                raise Refused(401, "unauthorized", "reads need an API key or a player token on this server")
            await self._subscribe(frame)
        elif isinstance(frame, PingFrame):
            self._reply(frame, "pong")

    async def _submit(self, frame: SubmitFrame) -> None:
        try:
            ack = await self.svc.lb.submit(self.principal, frame)
            self._reply(frame, "ack", **ack)
            obs.ws_message_out("ack")
        except Refused as exc:
            self.outbox.reply(Encoded(error_frame(exc.code, exc.detail, frame.ref)))
        finally:
            self._slots.release()

    async def _subscribe(self, frame: SubscribeFrame) -> None:
        hub, mb = self.svc.hub, self.outbox
        board = await self.svc.lb.board(frame.board)
        if frame.type == "unsubscribe":
            for topic in frame.topics:
                hub.unsubscribe(mb, topic, board.id, (frame.user_id or "") if topic == "rank" else "")
            self._reply(frame, "unsubscribed", board=board.id, topics=frame.topics, user_id=frame.user_id)
            return
        wanted = {(t, board.id, (frame.user_id or "") if t == "rank" else "") for t in frame.topics}
        if len(mb.subs | wanted) > self.svc.settings.max_subscriptions:
            raise Refused(429, "too_many_subscriptions", "this socket has too many subscriptions")
        self._reply(frame, "subscribed", board=board.id, topics=frame.topics, user_id=frame.user_id)
        if "top" in frame.topics:
            await hub.subscribe_top(mb, board, frame.limit)
        if "rank" in frame.topics and frame.user_id is not None:
            await hub.subscribe_rank(mb, board, frame.user_id)

    def _reply(self, frame: ClientFrame, kind: str, **fields: Any) -> None:
        self.outbox.reply(Encoded(encode({"type": kind, "ref": frame.ref, **fields})))

    async def shutdown(self, timeout: float) -> None:
        """Graceful drain: let in-flight submissions commit and be acked, then close with 1012."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=timeout)
        await self._drain_replies(timeout)
        await self._close(CLOSE_RESTART, "server restarting")


async def websocket_endpoint(ws: WebSocket) -> None:
    await Connection(ws, ws.app.state.services).serve()
