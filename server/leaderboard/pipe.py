"""One pipelined Redis connection for the hot path (cache writes after each commit, rank and top reads).

redis-py spends ~50 µs of CPU per command on this machine (pool checkout, retry and health-check wrappers,
Python-side encoding); the hot path makes one or two commands per request. Here a command is packed by hiredis,
written at once, and its reply matched in order (Redis answers in order) from one `data_received`: ~12 µs,
and any number of requests share the connection without waiting on each other. It speaks only what the hot
path needs: commands in, replies out, errors as redis-py's exception classes (so callers catch RedisError as
for every other call). Everything else (pub/sub, rebuilds, cluster mode) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError


class _Protocol(asyncio.Protocol):
    def __init__(self, lost: asyncio.Future[None]) -> None:
        self.reader = hiredis.Reader(notEnoughData=False, encoding="utf-8", errors="strict")
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: Any = None  # an asyncio or uvloop transport (uvloop's are not asyncio.Transport)
        self.lost = lost
        self.unsent: list[bytes] = []  # commands of this event-loop turn, written by flush() at its end

    def flush(self) -> None:
        unsent, self.unsent = self.unsent, []
        if unsent and not self.transport.is_closing():  # closing: connection_lost fails what waits
            self.transport.write(b"".join(unsent))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future, _ = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                future.set_exception(
                    NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
                )
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def fail(self, exc: Exception) -> None:
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class Pipe:
    """`await pipe.call("EVALSHA", sha, 2, k1, k2, arg)`: connects on first use and again after a loss."""

    def __init__(self, url: str, timeout: float = 2.0, connect_timeout: float = 1.0) -> None:
        self.options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.tls = url.startswith("rediss://")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._watch: asyncio.TimerHandle | None = None

    async def call(self, *args: Any) -> Any:
        proto = self._proto
        if proto is None or proto.transport.is_closing():
            proto = await self._connect()
        return await self._send(proto, args)

    def _send(self, proto: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command; the commands of one event-loop turn are written at its end, in one write (one
        syscall instead of one per command: at 100 concurrent reads, ~15 % of the server's CPU; py-spy)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not proto.unsent:
            loop.call_soon(proto.flush)
        proto.unsent.append(hiredis.pack_command(args))
        proto.waiting.append((future, loop.time() + self.timeout))
        if self._watch is None:
            self._watch = loop.call_later(self.timeout / 2, self._check)
        return future

    def _check(self) -> None:
        """Fail everything waiting when the oldest command has waited past the timeout (a hung Redis)."""
        self._watch = None
        proto = self._proto
        if proto is None or not proto.waiting:
            return
        loop = asyncio.get_running_loop()
        if proto.waiting[0][1] < loop.time():
            proto.fail(TimeoutError(f"Redis did not answer within {self.timeout:g}s"))
            if proto.transport is not None:
                proto.transport.abort()
            self._proto = None
            return
        self._watch = loop.call_later(self.timeout / 2, self._check)

    async def _connect(self) -> _Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        o = self.options
        lost: asyncio.Future[None] = loop.create_future()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if o.get("path"):
                    _, proto = await loop.create_unix_connection(lambda: _Protocol(lost), o["path"])
                else:
                    context = ssl.create_default_context() if self.tls else None
                    _, proto = await loop.create_connection(
                        lambda: _Protocol(lost), o.get("host", "localhost"), o.get("port", 6379), ssl=context
                    )
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc}") from None
        hello: list[list[Any]] = []
        if o.get("password"):
            hello.append(["AUTH", *([o["username"]] if o.get("username") else []), o["password"]])
        if o.get("db"):
            hello.append(["SELECT", o["db"]])
        # Commands of other callers may follow at once: Redis runs them after these, in order.
        self._proto = proto
        for command in hello:
            await self._send(proto, tuple(command))
        return proto

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            await proto.lost
