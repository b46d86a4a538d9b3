"""Layer: outbox.py (per-socket mailbox): latest wins, bounded replies, watchdog, and uvicorn's fast path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from leaderboard.errors import CLOSE_BEHIND
from leaderboard.outbox import MAX_REPLIES, Encoded, Outbox, raw_protocol, watchdog
from support.clients import subscribe_top, ws_connect
from support.polling import eventually
from support.services import ServerURL, runtime_of

TOP = ("top", "global", "")
RANK = ("rank", "global", "alice")


class Peer:
    """The send and close callables behind an Outbox. Records every frame as its send starts; when
    `blocking`, each send then waits for a permit (`release(n)`), as a socket whose reader stalled."""

    def __init__(self, *, blocking: bool = False) -> None:
        self.sent: list[str] = []
        self.closes: list[int] = []
        self._permits = asyncio.Semaphore(0) if blocking else None

    async def send(self, text: str) -> None:
        self.sent.append(text)
        if self._permits is not None:
            await self._permits.acquire()

    async def close(self, code: int) -> None:
        self.closes.append(code)

    def release(self, n: int = 1) -> None:
        assert self._permits is not None
        for _ in range(n):
            self._permits.release()


def frame(n: int) -> Encoded:
    return Encoded(b'{"n":%d}' % n)


def text(n: int) -> str:
    return f'{{"n":{n}}}'


async def settle(condition: Callable[[], bool], within: float = 5.0) -> None:
    async def check() -> None:
        assert condition()

    await eventually(check, within, interval=0.001)


@pytest.mark.parametrize("size", [5, 125, 126, 65535, 65536, 70000])
def test_encoded_is_one_unmasked_text_frame(size: int) -> None:
    payload = b'"' + b"x" * (size - 2) + b'"'
    enc = Encoded(payload)
    assert enc.text == payload.decode()
    reader = StreamReader()
    reader.feed_data(enc.data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    with pytest.raises(StopIteration) as done:
        next(parser)
    parsed: Frame = done.value.value
    assert (parsed.opcode, parsed.fin, parsed.data) == (Opcode.TEXT, True, payload)
    assert reader.at_eof()


async def test_pushes_are_latest_wins_per_topic() -> None:
    peer = Peer(blocking=True)
    box = Outbox(peer.send, peer.close, None)
    box.push(TOP, frame(1), 1)
    await settle(lambda: peer.sent == [text(1)])  # in flight, and the socket is not reading
    box.push(TOP, frame(2), 2)
    box.push(RANK, frame(3), 3)
    box.push(TOP, frame(4), 4)  # replaces 2, and goes to the back of the line
    assert list(box.pending) == [RANK, TOP]
    peer.release(10)
    await settle(lambda: peer.sent == [text(1), text(3), text(4)] and box.blocked_since is None)
    assert box.pending == {} and not box.closed


async def test_replies_are_never_dropped_and_go_before_pushes() -> None:
    peer = Peer(blocking=True)
    box = Outbox(peer.send, peer.close, None)
    box.push(TOP, frame(0), 0)
    await settle(lambda: len(peer.sent) == 1)
    box.push(TOP, frame(1), 1)
    box.reply(frame(10))
    box.reply(frame(11))
    box.reply(frame(11))  # an identical reply is still a reply of its own
    box.push(RANK, frame(2), 2)
    peer.release(10)
    await settle(lambda: len(peer.sent) == 6)
    assert peer.sent == [text(0), text(10), text(11), text(11), text(1), text(2)]


async def test_a_full_reply_queue_holds_the_reader_until_half_of_it_is_sent() -> None:
    peer = Peer(blocking=True)
    box = Outbox(peer.send, peer.close, None)
    await asyncio.wait_for(box.wait_room(), 1)  # room while nothing waits
    box.reply(frame(0))
    await settle(lambda: len(peer.sent) == 1)
    for i in range(1, MAX_REPLIES + 1):
        box.reply(frame(i))
    assert len(box.replies) == MAX_REPLIES
    room = asyncio.create_task(box.wait_room())
    opened_at: int | None = None
    while opened_at is None:
        for _ in range(3):
            await asyncio.sleep(0)
        if room.done():
            opened_at = len(box.replies)
            break
        assert len(box.replies) >= MAX_REPLIES // 2, "still held with fewer than half the replies left"
        sent = len(peer.sent)
        peer.release()
        await settle(lambda sent=sent: len(peer.sent) == sent + 1)  # type: ignore[misc]
    assert opened_at == MAX_REPLIES // 2 - 1
    peer.release(MAX_REPLIES)
    await settle(lambda: len(peer.sent) == MAX_REPLIES + 1)
    assert peer.sent == [text(i) for i in range(MAX_REPLIES + 1)]  # every reply, in order


async def test_closing_a_blocked_outbox_releases_its_reader() -> None:
    peer = Peer(blocking=True)
    box = Outbox(peer.send, peer.close, None)
    for i in range(MAX_REPLIES + 1):
        box.reply(frame(i))
    box.push(TOP, frame(-1), 0)
    room = asyncio.create_task(box.wait_room())
    await asyncio.sleep(0)
    assert not room.done()
    await box.close_behind()
    await asyncio.wait_for(room, 1)
    assert peer.closes == [CLOSE_BEHIND]
    assert box.closed and box.replies == [] and box.pending == {}
    box.push(TOP, frame(5), 5)
    box.reply(frame(6))
    assert box.replies == [] and box.pending == {}  # a closed outbox takes nothing more


async def test_a_send_that_fails_closes_the_outbox() -> None:
    sent: list[str] = []

    async def send(text_: str) -> None:
        sent.append(text_)
        raise ConnectionResetError("peer went away")

    async def close(code: int) -> None:
        raise AssertionError("not closed by the outbox: the receive loop sees the disconnect")

    box = Outbox(send, close, None)
    box.push(TOP, frame(1), 1)
    await settle(lambda: box.closed)
    box.push(TOP, frame(2), 2)
    await asyncio.sleep(0)
    assert sent == [text(1)] and box.pending == {}


async def test_a_send_that_fails_releases_a_reader_waiting_for_room() -> None:
    gone = asyncio.Event()

    async def send(text_: str) -> None:
        await gone.wait()  # a peer that stopped reading ...
        raise ConnectionResetError("peer went away")  # ... and then disconnected

    box = Outbox(send, Peer().close, None)
    for i in range(MAX_REPLIES + 1):
        box.reply(frame(i))
    room = asyncio.create_task(box.wait_room())  # ws.Connection's receive loop, waiting for room
    try:
        await asyncio.sleep(0)
        assert not room.done()
        gone.set()
        await settle(lambda: box.closed)
        # the loop must wake up to see `closed` (or the disconnect); nothing else will release it: the
        # watchdog skips closed outboxes
        await asyncio.wait_for(room, 2)
    finally:
        room.cancel()


def test_behind_counts_from_when_the_outbox_blocked() -> None:
    box = Outbox(Peer().send, Peer().close, None)
    assert not box.behind(1e9, 1.0)  # never blocked
    box.blocked_since = 100.0
    assert not box.behind(100.5, 1.0)
    assert box.behind(101.5, 1.0)


async def test_watchdog_closes_only_the_outbox_that_stays_blocked() -> None:
    stalled, reading = Peer(blocking=True), Peer()
    slow = Outbox(stalled.send, stalled.close, None)
    fine = Outbox(reading.send, reading.close, None)
    dog = asyncio.create_task(watchdog(lambda: [slow, fine], limit=0.2))
    try:
        slow.push(TOP, frame(1), 1)
        n = 0
        while not stalled.closes:  # the healthy socket keeps getting pushes all along
            n += 1
            fine.push(TOP, frame(n), n)
            slow.push(TOP, frame(n), n)
            await asyncio.sleep(0.01)
            assert n < 1000, "the stalled outbox was never closed"
        assert stalled.closes == [CLOSE_BEHIND]
        assert slow.closed and slow.pending == {}
        await settle(lambda: len(reading.sent) == n)
        assert reading.closes == [] and not fine.closed
    finally:
        dog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dog


async def test_watchdog_logs_one_line_for_many_stalled_sockets(caplog: pytest.LogCaptureFixture) -> None:
    """A network blip can stall thousands of sockets at once: one warning with the count, not one each."""
    peers = [Peer(blocking=True) for _ in range(50)]
    boxes = [Outbox(p.send, p.close, None) for p in peers]
    for box in boxes:
        box.push(TOP, frame(1), 1)
    dog = asyncio.create_task(watchdog(lambda: boxes, limit=0.2))
    try:
        with caplog.at_level(logging.WARNING, logger="leaderboard.outbox"):
            await settle(lambda: all(p.closes == [CLOSE_BEHIND] for p in peers))
        lines = [r.getMessage() for r in caplog.records if "stopped reading" in r.getMessage()]
        assert lines == ["closing 50 socket(s) that stopped reading their pushes (1013)"]
    finally:
        dog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dog


# ---------------------------------------------------------------------------------------------------------
# the fast path behind uvicorn (make_server runs ws="websockets-sansio", as `leaderboard serve` does)


async def test_a_socket_served_by_uvicorn_gets_the_raw_protocol_and_the_fast_path(server: ServerURL) -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    rt = runtime_of(server)
    async with ws_connect(server) as ws:
        await subscribe_top(ws)
        await settle(lambda: len(rt.sockets.open) == 1)
        (conn,) = rt.sockets.open
        raw: Any = raw_protocol(conn.ws._send)
        assert raw is not None, "outbox.raw_protocol no longer finds uvicorn's protocol behind Starlette's send"
        assert isinstance(raw, WebSocketsSansIOProtocol)
        assert conn.outbox._raw is raw
        # a push to a reading socket is written at once, with no sender task, and arrives intact
        conn.outbox.push(("top", "probe", ""), Encoded(b'{"type":"pong","ref":"fast-path"}'), 1)
        assert conn.outbox._sender is None and conn.outbox.pending == {}
        assert await ws.recv_type("pong", where=lambda m: m.get("ref") == "fast-path")


async def test_a_push_no_newer_than_what_the_socket_has_is_dropped() -> None:
    peer = Peer(blocking=False)
    box = Outbox(peer.send, peer.close, None)
    box.push(TOP, frame(5), 5)
    box.push(TOP, frame(4), 4)  # older: a subscriber that got a fresher page before the flush
    box.push(TOP, frame(5), 5)  # the same seq again
    box.push(RANK, frame(1), 1)  # another subscription has its own seqs
    await settle(lambda: len(peer.sent) == 2)
    await asyncio.sleep(0.05)
    assert peer.sent == [text(5), text(1)]


@pytest.mark.parametrize("who", ["peer", "server"])
async def test_nothing_is_written_straight_to_a_socket_once_a_close_is_under_way(server: ServerURL, who: str) -> None:
    """`_write_now` reads only `close_sent`, `handshake_complete`, the transport and `writable` (a push to
    10,000 sockets reads as few objects as it can): a close from either side must still end the fast path."""
    from websockets.frames import Close, CloseCode

    rt = runtime_of(server)
    async with ws_connect(server) as ws:
        await subscribe_top(ws)
        await settle(lambda: len(rt.sockets.open) == 1)
        (conn,) = rt.sockets.open
        raw: Any = conn.outbox._raw
        assert conn.outbox._write_now(Encoded(b'{"type":"pong","ref":"before"}').data)
        assert await ws.recv_type("pong", where=lambda m: m.get("ref") == "before")
        if who == "peer":  # the peer's close frame, as the server reads it: uvicorn answers it
            close = Frame(Opcode.CLOSE, Close(CloseCode.NORMAL_CLOSURE, "").serialize())
            raw.data_received(close.serialize(mask=True, extensions=[]))
        else:  # our close: sent, and the transport stays open for the peer's answer
            await conn.ws.close(1000)
            assert raw.close_sent and not raw.transport.is_closing()
        assert raw.conn.state.name != "OPEN"
        assert not conn.outbox._write_now(Encoded(b'{"type":"pong","ref":"after"}').data)
