"""Per-socket outbox: what one WebSocket still has to send, and the cheapest way to send it.

A push is encoded once per process into a ready-made WebSocket text frame; for every subscriber whose
transport is writable the same bytes are written straight to it, with no task switch and no per-socket
encoding (like websockets' broadcast()). Only a socket that cannot take bytes right now gets a sender task,
and its outbox keeps just the latest push per topic (latest wins) and a bounded queue of replies. A socket
that stays blocked longer than the slow-socket timeout is closed with 1013 by `watchdog()`.

The direct write needs uvicorn's sans-I/O WebSocket protocol (`leaderboard serve` runs it); behind any other
server every send simply takes the ASGI path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import observability as obs
from .errors import CLOSE_BEHIND

log = logging.getLogger(__name__)

MAX_REPLIES = 256  # queued replies per socket before we stop reading its frames (backpressure)
ABORT_AFTER = 5.0  # seconds a 1013 close may take to be written, then to be read, before the connection is cut
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and drops what the kernel still holds


class Encoded:
    """One message, encoded once: the unmasked server-to-client text frame (and, for the slow path, its
    JSON text, decoded only when asked for)."""

    __slots__ = ("data", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        n = len(payload)
        if n < 126:
            head = bytes((0x81, n))
        elif n < 65536:
            head = bytes((0x81, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x81, 127)) + n.to_bytes(8, "big")
        self.data = head + payload

    @property
    def text(self) -> str:
        return self.payload.decode()


def raw_protocol(send: Callable[..., Any]) -> Any | None:
    """uvicorn's sans-I/O protocol behind an ASGI `send`, unwrapping middleware closures; None if not found."""
    for _ in range(10):
        owner = getattr(send, "__self__", None)
        if owner is not None:
            needed = ("transport", "writable", "conn", "close_sent", "handshake_complete", "disconnected")
            return owner if all(hasattr(owner, a) for a in needed) else None
        code, cells = getattr(send, "__code__", None), getattr(send, "__closure__", None)
        if code is None or not cells or "send" not in code.co_freevars:
            return None
        send = cells[code.co_freevars.index("send")].cell_contents
    return None


class Outbox:
    __slots__ = ("_close", "_full", "_raw", "_send", "_sender", "_soon", "blocked_since", "closed", "pending",
                 "replies", "seqs", "subs")  # fmt: skip

    def __init__(
        self, send: Callable[[str], Awaitable[None]], close: Callable[[int], Awaitable[None]], raw: Any | None
    ) -> None:
        self._send, self._close, self._raw = send, close, raw
        self.pending: dict[tuple[str, str, str], Encoded] = {}
        self.replies: list[Encoded] = []  # (a list: empty on all but blocked sockets, and small then)
        self._full: asyncio.Event | None = None  # exists while too many replies wait: stop reading frames
        self.blocked_since: float | None = None
        self.subs: set[tuple[str, str, str]] = set()  # ("top", board, "") / ("rank", board, user_id)
        self.seqs: dict[tuple[str, str, str], int] = {}  # the seq last pushed per subscription
        self.closed = False
        self._sender: asyncio.Task[None] | None = None
        self._soon: list[Encoded] | None = None  # replies to write together at the end of this loop turn

    def _write_now(self, data: bytes) -> bool:
        """Write frame bytes to the transport at once if nothing is queued and it can take bytes.

        A flush to 10,000 sockets runs this 10,000 times, so it reads as few objects as it can (each one a
        likely cache miss): uvicorn sets `close_sent` whenever it sends a close, and closes the transport when
        the connection is lost or the peer closes, so those two cover the protocol's `disconnected` and the
        connection state (docs/performance.md, "Fewer objects per push")."""
        p = self._raw
        if p is None or self._sender is not None or self.closed or p.close_sent or not p.handshake_complete:
            return False
        t = p.transport
        if t.is_closing() or not p.writable.is_set():
            return False
        t.write(data)
        return True

    def reply_soon(self, frame: Encoded) -> None:
        """A reply that goes out with the others given at this moment (the acks of one committed batch) in one
        write, at the end of this turn of the event loop."""
        if self._soon is None:
            self._soon = [frame]
            asyncio.get_running_loop().call_soon(self._write_soon)
        else:
            self._soon.append(frame)

    def _write_soon(self) -> None:
        frames, self._soon = self._soon or [], None
        if len(frames) > 1 and self._write_now(b"".join(f.data for f in frames)):
            return
        for frame in frames:
            self.reply(frame)

    def push(self, key: tuple[str, str, str], frame: Encoded, seq: int) -> None:
        """A push for one subscription; one whose seq this socket has already been sent for it is dropped (a
        new subscriber can get a page fresher than the last flush, which then carries the same seq)."""
        if seq <= self.seqs.get(key, -1):
            return
        self.seqs[key] = seq
        if self._write_now(frame.data) or self.closed:
            return
        self.pending.pop(key, None)  # latest wins, and goes to the back of the line
        self.pending[key] = frame
        self._wake()

    def reply(self, frame: Encoded) -> None:
        if self._write_now(frame.data) or self.closed:
            return
        self.replies.append(frame)
        if len(self.replies) >= MAX_REPLIES and self._full is None:
            self._full = asyncio.Event()
        self._wake()

    def _wake(self) -> None:
        if self._sender is None:
            self.blocked_since = asyncio.get_running_loop().time()
            self._sender = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        """The slow path: send through ASGI (waiting for the peer to read), replies first, then pushes."""
        try:
            while self.replies or self.pending:
                if self.replies:
                    frame = self.replies.pop(0)
                    if len(self.replies) < MAX_REPLIES // 2:
                        self._room()
                else:
                    frame = self.pending.pop(next(iter(self.pending)))
                await self._send(frame.text)
                self.blocked_since = asyncio.get_running_loop().time() if (self.replies or self.pending) else None
        except Exception:  # the peer went away; the receive loop sees the disconnect
            self.closed = True
            self.replies.clear()
            self._room()  # a receive loop held back by wait_room() must go on to see it
        finally:
            self._sender = None
            self.blocked_since = None

    async def wait_room(self) -> None:
        """Return when the socket may read its next frame (not too many of its replies still unsent)."""
        if self._full is not None:
            await self._full.wait()

    def _room(self) -> None:
        if self._full is not None:
            self._full.set()
            self._full = None

    def behind(self, now: float, limit: float) -> bool:
        return self.blocked_since is not None and now - self.blocked_since > limit

    async def close_behind(self) -> None:
        """Close with 1013 a socket that stopped reading; cut it if even the close cannot get through."""
        self.closed = True
        if self._sender is not None:
            self._sender.cancel()
        self.pending.clear()
        self.replies.clear()
        self._room()
        try:
            await asyncio.wait_for(self._close(CLOSE_BEHIND), ABORT_AFTER)
            await asyncio.wait_for(self._gone(), ABORT_AFTER)  # the peer read the close and the socket ended
        except Exception:  # timed out, or the transport is gone already
            self._cut()

    async def _gone(self) -> None:
        while self._raw is not None and not self._raw.disconnected:
            await asyncio.sleep(0.1)

    def _cut(self) -> None:
        """End the connection now, and everything queued for it. A plain close would leave the kernel holding
        the unread bytes (megabytes) in an orphaned socket for as long as the peer keeps its end open without
        reading: outside our file descriptors, outside the connection cap. A reset frees them at once."""
        raw = self._raw
        if raw is None or raw.disconnected:
            return
        sock = raw.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        raw.transport.abort()

    def cancel(self) -> None:
        if self._sender is not None:
            self._sender.cancel()


async def watchdog(outboxes: Callable[[], Iterable[Outbox]], limit: float) -> None:
    """Close sockets whose outbox has been blocked longer than `limit` seconds (a stalled reader)."""
    loop = asyncio.get_running_loop()
    closing: set[asyncio.Task[None]] = set()
    while True:
        await asyncio.sleep(min(limit / 4, 0.5))
        now = loop.time()
        behind = [box for box in outboxes() if not box.closed and box.behind(now, limit)]
        if behind:  # one line per round, however many (a network blip can stall thousands at once)
            log.warning("closing %d socket(s) that stopped reading their pushes (1013)", len(behind))
            obs.count(obs.SLOW_SOCKETS, len(behind))
        for box in behind:
            task = asyncio.create_task(box.close_behind())
            closing.add(task)
            task.add_done_callback(closing.discard)
