"""Load-generator clients: WebSocket on picows, HTTP/1.1 as an ``asyncio.Protocol`` around httptools.

Why not the ``websockets`` asyncio client: a load generator holding 10k sockets must not pay for a task per
socket and a future per message. picows parses frames in C inside its protocol's ``data_received`` and calls
``WSListener.on_ws_frame``; ``WSClient`` hands each complete text message to a callback, so an idle socket costs
only its transport and two small objects. We never offer permessage-deflate.

The HTTP client is ours (~100 lines): keep-alive, ``Content-Length`` and chunked responses parsed by httptools
(the C parser uvicorn uses), requests answered in order (pipelining allowed), one future per request and no
task. Client libraries (aiohttp, httpx) add a task, a stream reader and header objects per request, which a
generator that must out-run the server cannot afford.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
import picows
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

# Close code we assign ourselves when the socket went away without a close frame.
CLOSE_ABNORMAL = 1006
_NO_STATUS = 1005  # close frame without a code

_TEXT, _BINARY, _CONT, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE
# An adapter, not a Logger: picows then logs through it as is instead of creating a child Logger per socket.
_LOG = logging.LoggerAdapter(logging.getLogger("loadtest.picows"), {})


class HandshakeError(Exception):
    """The server refused the WebSocket upgrade."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused: HTTP {status}: {body[:200]!r}")
        self.status = status


class WSClient(WSListener):  # type: ignore[misc]  # picows' base class is untyped Cython
    """One client WebSocket. ``on_message(client, payload_bytes)`` is called for every text/binary message."""

    __slots__ = ("_frag", "close_code", "inflight", "on_close", "on_message", "role", "tag", "transport")

    def __init__(
        self,
        on_message: Callable[[WSClient, bytes], None],
        on_close: Callable[[WSClient, int], None] | None = None,
        tag: Any = None,
    ) -> None:
        self.on_message = on_message
        self.on_close = on_close
        self.tag = tag
        self.transport: WSTransport | None = None
        self.close_code: int | None = None
        self._frag: bytearray | None = None
        self.inflight = 0  # submissions awaiting an ack (used by the generator)
        self.role = ""

    # -- picows callbacks -------------------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        op = frame.msg_type
        if op is _TEXT or op is _BINARY:
            if frame.fin:
                self.on_message(self, frame.get_payload_as_bytes())
            else:
                self._frag = bytearray(frame.get_payload_as_memoryview())
        elif op is _CONT:
            if self._frag is None:
                return
            self._frag += frame.get_payload_as_memoryview()
            if frame.fin:
                msg = bytes(self._frag)
                self._frag = None
                self.on_message(self, msg)
        elif op is _CLOSE:
            code = frame.get_close_code()
            if not transport.is_close_frame_sent:
                transport.send_close(code)
            transport.disconnect()
            self._finish(int(code) or _NO_STATUS)
        # PING is answered by picows itself (enable_auto_pong); PONG needs nothing.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._finish(CLOSE_ABNORMAL)

    def _finish(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            if self.on_close is not None:
                self.on_close(self, code)

    # -- API ----------------------------------------------------------------------------------------------
    def send(self, text: bytes) -> None:
        """Queue one text message (already UTF-8 encoded); never blocks."""
        t = self.transport
        if t is not None and self.close_code is None:
            t.send(_TEXT, text)

    @property
    def open(self) -> bool:
        return self.close_code is None and self.transport is not None and not self.transport.is_disconnected

    def close(self, code: int = 1000) -> None:
        t = self.transport
        if t is None or self.close_code is not None or t.is_disconnected:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode(code))
        # The server answers with its own close frame (we then disconnect); if it does not, abort after a grace.
        asyncio.get_running_loop().call_later(2.0, t.disconnect, False)

    async def aclose(self, code: int = 1000) -> None:
        """Close and wait until the socket is gone (at most the 2 s grace of ``close``)."""
        self.close(code)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.wait_disconnected()


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
    try:
        async with asyncio.timeout(connect_timeout):
            _, client = await picows.ws_connect(
                lambda: WSClient(on_message, on_close, tag),
                f"ws://{host}:{port}{path}",
                extra_headers=headers,
                websocket_handshake_timeout=connect_timeout,
                logger_name=_LOG,
                max_redirects=0,
            )
    except picows.WSHandshakeError as e:
        status = int(e.response.status) if e.response is not None else 0
        raise HandshakeError(status, e.raw_body or b"") from e
    assert isinstance(client, WSClient)
    return client


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
