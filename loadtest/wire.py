"""Minimal, fast WebSocket and HTTP/1.1 clients built on ``asyncio.Protocol``.

Why not the ``websockets`` asyncio client: a load generator holding 10k sockets must not pay for a task per
socket and a future per message. These protocols parse frames inside ``data_received`` and hand each complete
text message to a callback, so an idle socket costs only its transport and this object.

Scope: RFC 6455 client side, no extensions (we never offer permessage-deflate), text/binary messages with
fragmentation, ping -> pong, close handshake. HTTP: keep-alive, ``Content-Length`` and chunked responses,
requests answered in order (pipelining allowed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
from websockets.speedups import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Close codes we assign ourselves for failures that never carried a close frame.
CLOSE_ABNORMAL = 1006


class HandshakeError(Exception):
    """The server refused the WebSocket upgrade."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused: HTTP {status}: {body[:200]!r}")
        self.status = status


def _encode_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


class WSClient(asyncio.Protocol):
    """One client WebSocket. ``on_message(client, payload_bytes)`` is called for every text message."""

    __slots__ = (
        "_buf",
        "_close_sent",
        "_frag",
        "_frag_op",
        "_headers",
        "_host",
        "_key",
        "_path",
        "_upgraded",
        "close_code",
        "closed",
        "handshake",
        "inflight",
        "on_close",
        "on_message",
        "role",
        "tag",
        "transport",
    )

    def __init__(
        self,
        host: str,
        path: str,
        headers: dict[str, str] | None,
        on_message: Callable[[WSClient, bytes], None],
        on_close: Callable[[WSClient, int], None] | None = None,
        tag: Any = None,
    ) -> None:
        self._host = host
        self._path = path
        self._headers = headers or {}
        self._key = base64.b64encode(os.urandom(16))
        self._buf = bytearray()
        self._frag: bytearray | None = None
        self._frag_op = 0
        self._close_sent = False
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self._upgraded = False
        self.on_message = on_message
        self.on_close = on_close
        self.tag = tag
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.closed = loop.create_future()
        self.inflight = 0  # submissions awaiting an ack (used by the generator)
        self.role = ""

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        lines = [
            f"GET {self._path} HTTP/1.1",
            f"Host: {self._host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in self._headers.items()]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            fut = self.handshake
            self._upgraded = True
            status_line, *header_lines = head.split("\r\n")
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            hdrs = {}
            for line in header_lines:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
            if status != 101 or hdrs.get("sec-websocket-accept") != expected:
                if not fut.done():
                    fut.set_exception(HandshakeError(status, bytes(buf)))
                self._finish(CLOSE_ABNORMAL)
                if self.transport is not None:
                    self.transport.close()
                return
            if not fut.done():
                fut.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            masked = b1 & 0x80
            if masked:
                hl += 4
            if n - pos < hl + ln:
                break
            payload = bytes(buf[pos + hl : pos + hl + ln])
            if masked:  # servers must not mask, but tolerate it
                payload = apply_mask(payload, bytes(buf[pos + hl - 4 : pos + hl]))
            pos += hl + ln
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.transport is None:
                return
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, op: int, payload: bytes) -> None:
        if op == OP_TEXT or op == OP_BINARY:
            if fin:
                self.on_message(self, payload)
            else:
                self._frag = bytearray(payload)
                self._frag_op = op
        elif op == OP_CONT:
            if self._frag is None:
                return
            self._frag += payload
            if fin:
                msg = bytes(self._frag)
                self._frag = None
                self.on_message(self, msg)
        elif op == OP_PING:
            self._write(OP_PONG, payload)
        elif op == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self._close_sent:
                self._close_sent = True
                self._write(OP_CLOSE, payload[:2])
            self._finish(code)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during handshake"))
        self._finish(CLOSE_ABNORMAL)
        self.transport = None

    def _finish(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            if not self.closed.done():
                self.closed.set_result(code)
            if self.on_close is not None:
                self.on_close(self, code)

    # -- API ----------------------------------------------------------------------------------------------
    def _write(self, op: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_encode_frame(op, payload))

    def send(self, text: bytes) -> None:
        """Queue one text message (already UTF-8 encoded); never blocks."""
        self._write(OP_TEXT, text)

    @property
    def open(self) -> bool:
        return self.close_code is None and self.transport is not None

    def close(self, code: int = 1000) -> None:
        if self.transport is None or self.close_code is not None:
            return
        if not self._close_sent:
            self._close_sent = True
            self._write(OP_CLOSE, struct.pack("!H", code))
        # The server answers with its own close frame; if it does not, abort after a short grace.
        asyncio.get_running_loop().call_later(2.0, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def ws_connect(
    host: str,
    port: int,
    path: str,
    on_message: Callable[[WSClient, bytes], None],
    *,
    headers: dict[str, str] | None = None,
    on_close: Callable[[WSClient, int], None] | None = None,
    tag: Any = None,
    connect_timeout: float = 30.0,
) -> WSClient:
    """Open a WebSocket and complete the upgrade; raises ``HandshakeError``/``OSError`` on failure."""
    loop = asyncio.get_running_loop()
    hostport = f"{host}:{port}"

    def factory() -> WSClient:
        return WSClient(hostport, path, headers, on_message, on_close, tag)

    async with asyncio.timeout(connect_timeout):
        _, proto = await loop.create_connection(factory, host, port)
        await proto.handshake
    return proto


class HTTPResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class HTTPClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection. Responses are matched to requests in order."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._parser = httptools.HttpResponseParser(self)
        self._waiters: deque[asyncio.Future[HTTPResponse]] = deque()
        self._body: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self.transport: asyncio.Transport | None = None
        self.lost = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        resp = HTTPResponse(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._body = []
        self._headers = {}
        if self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(resp)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"bad HTTP response: {e}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        self._fail(exc or ConnectionResetError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    @property
    def inflight(self) -> int:
        return len(self._waiters)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> asyncio.Future[HTTPResponse]:
        fut: asyncio.Future[HTTPResponse] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            fut.set_exception(ConnectionResetError("connection closed"))
            return fut
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        if headers:
            head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head.append("Content-Type: application/json")
            head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode()
        self._waiters.append(fut)
        self.transport.write(data + body if body is not None else data)
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def http_connect(host: str, port: int, connect_timeout: float = 30.0) -> HTTPClient:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        _, proto = await loop.create_connection(lambda: HTTPClient(f"{host}:{port}"), host, port)
    return proto
