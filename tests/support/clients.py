"""Clients of a running server: credentials, HTTP helpers (RFC 9457 problems), and a JSON WebSocket client."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from support.services import SECRET

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


# ---------------------------------------------------------------------------------------------------------
# Credentials


def bearer(credential: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def player_token(sub: str, *, secret: str = SECRET, ttl: float = 600, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(payload, secret, "HS256")


# ---------------------------------------------------------------------------------------------------------
# HTTP


def assert_problem(resp: httpx.Response, status: int, code: str | Iterable[str]) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with the given status and `code`; return the body."""
    codes = {code} if isinstance(code, str) else set(code)
    assert resp.status_code == status, (resp.status_code, resp.text)
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", ctype
    body = resp.json()
    assert isinstance(body, dict), body
    assert PROBLEM_FIELDS <= body.keys(), body
    assert body["status"] == status, body
    assert body["code"] in codes, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["type"], str) and body["type"], body
    return body


async def submit(
    http: httpx.AsyncClient,
    user_id: str,
    score: int,
    board: str | None = None,
    *,
    expect: int = 200,
    **extra: Any,
) -> dict[str, Any]:
    """POST a submission and check the status; return the JSON body."""
    body: dict[str, Any] = {"user_id": user_id, "score": score, **extra}
    if board is not None:
        body["board"] = board
    resp = await http.post("/api/leaderboard/submit", json=body)
    assert resp.status_code == expect, (resp.status_code, resp.text)
    return resp.json()  # type: ignore[no-any-return]


async def top(http: httpx.AsyncClient, board: str = "global", limit: int = 10, offset: int = 0) -> dict[str, Any]:
    resp = await http.get("/api/leaderboard/top", params={"board": board, "limit": limit, "offset": offset})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def full_listing(http: httpx.AsyncClient, board: str = "global") -> list[dict[str, Any]]:
    """Every entry of a board, read through /top in pages of 100."""
    entries: list[dict[str, Any]] = []
    while True:
        page = await top(http, board, limit=100, offset=len(entries))
        entries.extend(page["entries"])
        if len(page["entries"]) < 100:
            assert len(entries) == page["total"], (len(entries), page["total"])
            return entries


async def rank(http: httpx.AsyncClient, user_id: str, board: str = "global", around: int = 0) -> dict[str, Any]:
    resp = await http.get(f"/api/leaderboard/rank/{user_id}", params={"board": board, "around": around})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def create_board(
    http: httpx.AsyncClient,
    board_id: str,
    sort: str = "desc",
    operator: str = "incr",
    title: str | None = None,
) -> dict[str, Any]:
    body = {"id": board_id, "title": title or board_id.title(), "sort": sort, "operator": operator}
    resp = await http.post("/api/leaderboards", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------------
# WebSocket


def assert_seq_order(frames: list[dict[str, Any]]) -> None:
    """Pushes of one topic/board as a client sees them: seq never goes back, and a repeated seq repeats the
    same content (a client drops it; the contract allows nothing else)."""
    for prev, cur in itertools.pairwise(frames):
        assert cur["seq"] >= prev["seq"], [(f["seq"], f.get("total"), f.get("rank")) for f in frames]
        if cur["seq"] == prev["seq"]:
            strip = {"ref"}
            assert {k: v for k, v in cur.items() if k not in strip} == {
                k: v for k, v in prev.items() if k not in strip
            }, ("same seq, different content", prev, cur)


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws"


class WS:
    """A thin JSON wrapper over a websockets client connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []  # everything received, in order

    def max_seq(self) -> int:
        return max((f["seq"] for f in self.frames if isinstance(f.get("seq"), int)), default=0)

    async def send(self, frame: Any) -> None:
        await self.conn.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, within: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), within)
        msg = json.loads(raw)
        assert isinstance(msg, dict) and "type" in msg, msg
        self.frames.append(msg)
        return msg

    async def recv_type(self, type_: str, within: float = 5.0, where: Any = None) -> dict[str, Any]:
        """Receive until a frame of `type_` (matching `where(frame)` if given); skip other frames."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {type_!r} frame within {within}s")
            try:
                msg = await self.recv(left)
            except TimeoutError:
                raise AssertionError(f"no {type_!r} frame within {within}s") from None
            if msg["type"] == type_ and (where is None or where(msg)):
                return msg

    async def reply_to(self, frame: dict[str, Any], within: float = 5.0) -> dict[str, Any]:
        """Send a frame with a ref and return the first non-push frame that echoes it."""
        ref = frame.setdefault("ref", uuid.uuid4().hex[:12])
        await self.send(frame)
        deadline = time.monotonic() + within
        while True:
            msg = await self.recv(max(deadline - time.monotonic(), 0.01))
            if msg.get("ref") == ref:
                return msg

    async def expect_close(self, within: float = 5.0) -> int | None:
        """Read (and drop) frames until the server closes; return the close code received."""
        deadline = time.monotonic() + within
        try:
            while True:
                await asyncio.wait_for(self.conn.recv(), max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        except TimeoutError:
            raise AssertionError(f"socket not closed within {within}s") from None

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Collect whatever arrives within `seconds`."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got


async def ws_submit_many(ws: WS, subs: Iterable[dict[str, Any]], within: float = 60) -> list[dict[str, Any]]:
    """Pipeline submit frames on one socket (much cheaper than HTTP requests); return the acks in order."""
    frames = [{"type": "submit", "ref": f"s{i}", **sub} for i, sub in enumerate(subs)]
    for frame in frames:
        await ws.send(frame)
    acks: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    while len(acks) < len(frames):
        msg = await ws.recv(max(deadline - time.monotonic(), 0.01))
        if msg["type"] in ("ack", "error") and isinstance(msg.get("ref"), str) and msg["ref"].startswith("s"):
            assert msg["type"] == "ack", msg
            acks[msg["ref"]] = msg
    return [acks[f["ref"]] for f in frames]


@asynccontextmanager
async def ws_connect(base_url: str, credential: str | None = None, **kwargs: Any) -> AsyncIterator[WS]:
    async with connect(
        ws_url(base_url),
        additional_headers=bearer(credential),
        max_size=None,
        ping_interval=None,
        open_timeout=10,
        close_timeout=2,
        **kwargs,
    ) as conn:
        yield WS(conn)


async def subscribe_top(ws: WS, board: str = "global", limit: int = 10) -> dict[str, Any]:
    """Subscribe to `top`; check the `subscribed` reply and return the immediate snapshot."""
    reply = await ws.reply_to({"type": "subscribe", "board": board, "topics": ["top"], "limit": limit})
    assert reply["type"] == "subscribed", reply
    assert reply["board"] == board and reply["topics"] == ["top"], reply
    snap = await ws.recv_type("top", where=lambda m: m["board"] == board)
    return snap
