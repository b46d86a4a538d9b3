"""Hostile clients (guard.py): oversized heads, slow and idle connections, the connection cap, open-file limit.

Raw sockets against a real uvicorn served with guard.server_options(), as `leaderboard serve` is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.clients import PROBLEM_FIELDS, ws_url
from support.metrics import exposed
from support.processes import spawned_server
from support.services import ApiKeys, ServerURL, Services, runtime_of
from support.stores import pg_values, session_count

WS_HEADERS = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
MiB = 1024 * 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self.headers
        body: dict[str, Any] = json.loads(self.body)
        assert PROBLEM_FIELDS <= body.keys() and body["status"] == self.status, body
        return body


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


async def read_answer(reader: asyncio.StreamReader, started: float, within: float = 5.0) -> Answer:
    """One HTTP/1.1 response with a Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    elapsed = time.monotonic() - started
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), within)
    return Answer(int(status_line.split()[1]), headers, body, elapsed)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `within` seconds."""
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True


@asynccontextmanager
async def tcp(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(*_address(url))
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def send_endless_header(url: str, head: bytes, size: int = MiB) -> tuple[Answer, bool]:
    """Send `head` and then a header value of `size` bytes (as fast as the server reads it); return the answer
    and whether the server closed the connection within 3 s of it."""
    async with tcp(url) as (reader, writer):
        started = time.monotonic()

        async def pump() -> None:
            chunk = b"a" * 65536
            with suppress(ConnectionError, OSError):
                writer.write(head + b"X-Big: ")
                for _ in range(size // len(chunk)):
                    writer.write(chunk)
                    await writer.drain()
                writer.write(b"\r\n\r\n")
                await writer.drain()

        task = asyncio.create_task(pump())
        try:
            answer = await read_answer(reader, started)
            closed = await closed_by_server(reader, 3)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    return answer, closed


# ---------------------------------------------------------------------------------------------------------
# request heads


@pytest.mark.parametrize(
    "head",
    [
        b"GET /api/leaderboard/top HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n",
        b"POST /api/leaderboard/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS,
        b"GET /no/such/route HTTP/1.1\r\nHost: x\r\n",
    ],
    ids=["top", "submit", "ws-upgrade", "unknown-route"],
)
async def test_a_megabyte_header_is_answered_431_at_once(server: ServerURL, head: bytes) -> None:
    answer, closed = await send_endless_header(server, head)
    assert answer.status == 431, answer
    assert answer.elapsed < 1.0, answer.elapsed
    assert answer.problem() == {
        "type": "/problems/header-too-large",
        "title": "Request header fields too large",
        "status": 431,
        "detail": "a header line is longer than 8192 bytes",
        "code": "header_too_large",
    }
    assert answer.headers["connection"] == "close"
    assert closed


async def test_megabyte_headers_do_not_grow_the_process(server: ServerURL) -> None:
    """Eight clients at once, three times over, each sending a 1 MiB header: the server holds none of it."""
    proc = psutil.Process()
    heads = [b"GET /api/leaderboard/top HTTP/1.1\r\nHost: x\r\n", b"GET /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS]
    await send_endless_header(server, heads[0])  # warm-up: first-use allocations are not what we measure
    base = proc.memory_info().rss
    peak = base
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    for _ in range(3):
        answers = await asyncio.gather(*(send_endless_header(server, heads[i % 2]) for i in range(8)))
        assert {a.status for a, _ in answers} == {431}
    stop.set()
    await sampler
    assert peak - base < 6 * MiB, f"RSS grew by {(peak - base) / MiB:.1f} MiB"


async def test_many_small_header_lines_over_the_total_are_431(server: ServerURL) -> None:
    line = b"X-Pad: " + b"p" * 4000 + b"\r\n"  # 9 lines of 4 KB: each fine, 36 KB in all
    for path, extra in ((b"/api/leaderboards", b""), (b"/ws", WS_HEADERS)):
        async with tcp(server) as (reader, writer):
            started = time.monotonic()
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + line * 9 + b"\r\n")
            answer = await read_answer(reader, started)
            assert answer.status == 431, answer
            assert answer.problem()["detail"] == "the request head is larger than 32768 bytes"
            assert await closed_by_server(reader, 3)


async def test_websocket_upgrade_with_an_over_long_line_is_answered(server: ServerURL) -> None:
    """Before the guard, a 9 KB header on /ws made websockets log a 431 that the client never received."""
    for extra in (b"X-Long: " + b"l" * 9000 + b"\r\n", b"".join(b"X-H%d: v\r\n" % i for i in range(130))):
        async with tcp(server) as (reader, writer):
            started = time.monotonic()
            writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS + extra + b"\r\n")
            answer = await read_answer(reader, started, within=3)
            assert answer.status == 431, answer
            assert answer.problem()["code"] == "header_too_large"
            assert await closed_by_server(reader, 3)


@pytest.mark.parametrize(
    ("request_head", "status", "code", "says"),
    [
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"bad"),
         400, "bad_request", "Sec-WebSocket-Key"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS.replace(b"Version: 13", b"Version: 8"),
         400, "bad_request", "Sec-WebSocket-Version"),
        (b"POST /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS, 405, "method_not_allowed", "POST"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n", 426, "upgrade_required", "WebSocket client"),
    ],
    ids=["bad-key", "old-version", "post", "no-upgrade"],
)  # fmt: skip
async def test_a_websocket_handshake_gone_wrong_is_a_problem(
    server: ServerURL, request_head: bytes, status: int, code: str, says: str
) -> None:
    """websockets refuses a bad handshake with a line of text/plain; ours are problems like every refusal, and
    a plain GET of /ws says it is the WebSocket endpoint instead of "no such route"."""
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(request_head + b"\r\n")
        answer = await read_answer(reader, started)
        assert (answer.status, answer.headers["content-type"]) == (status, "application/problem+json"), answer
        body = answer.problem()
        assert (body["status"], body["code"]) == (status, code) and says in body["detail"], body
        if status == 405:
            assert answer.headers["allow"] == "GET"
        if status == 426:
            assert answer.headers["upgrade"] == "websocket"
    assert len(runtime_of(server).sockets.open) == 0


async def test_an_over_long_request_line_is_414(server: ServerURL) -> None:
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(b"GET /api/leaderboard/top?board=" + b"b" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_answer(reader, started)
    assert answer.status == 414
    assert answer.problem()["code"] == "uri_too_long"


async def test_heads_within_the_limits_are_served(server: ServerURL, make_client: Any) -> None:
    """Up to the limits everything passes: lines of 8 KiB, 100 fields, 32 KiB in all, a body in the same
    packet as the head (it is not counted as head), several requests on one connection, a WebSocket."""
    pad = {f"x-pad-{i}": "p" * 7900 for i in range(3)} | {f"x-f{i}": "v" for i in range(90)}
    http = make_client(server)
    for _ in range(3):
        assert (await http.get("/healthz", headers=pad)).status_code == 200
    async with connect(ws_url(server), additional_headers=pad, open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "ping", "ref": 1}))
        assert json.loads(await ws.recv())["type"] in ("pong", "status")
    body = json.dumps({"user_id": "u", "score": 1, "display_name": "d" * 60}).encode() + b" " * 15000
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        head = b"POST /api/leaderboard/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += b"X-Pad: " + b"p" * 7000 + b"\r\n"
        writer.write(head * 1 + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = await read_answer(reader, started)
    assert answer.status == 401, answer  # no credential: refused by the app, not by the guard


# ---------------------------------------------------------------------------------------------------------
# slow and idle connections


async def test_slowloris_connections_are_closed_and_health_answers(
    make_server: Callable[..., Awaitable[ServerURL]], keys: ApiKeys, caplog: pytest.LogCaptureFixture
) -> None:
    """200 connections that never complete a request (50 each: a partial head, a partial WebSocket upgrade,
    nothing at all, a body that trickles in) are all closed within the read timeout (+ 2 s); partial heads get
    a 408; /healthz on fresh connections answers throughout."""
    timeout = 1.0
    server = await make_server(request_read_timeout_s=timeout, keepalive_timeout_s=1)
    kinds = {
        "partial head": b"GET /api/leaderboard/top HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "partial upgrade": b"GET /ws HTTP/1.1\r\nHost: x\r\n" + WS_HEADERS[:30],
        "idle": b"",
        "slow body": b"POST /api/leaderboard/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{" % keys.submit.encode(),
    }
    health_failures: list[str] = []
    healthy = 0
    done = asyncio.Event()

    async def check_health() -> None:
        nonlocal healthy
        async with httpx.AsyncClient(base_url=server, timeout=2) as fresh:
            while not done.is_set():
                try:
                    resp = await fresh.get("/healthz", headers={"Connection": "close"})
                    healthy += resp.status_code == 200
                    if resp.status_code != 200:
                        health_failures.append(str(resp.status_code))
                except httpx.HTTPError as exc:
                    health_failures.append(repr(exc))
                await asyncio.sleep(0.05)

    async def slow_client(kind: str) -> tuple[str, float | None, bytes]:
        """(kind, seconds until the server closed the connection or None, what it answered)."""
        async with tcp(server) as (reader, writer):
            started = time.monotonic()
            writer.write(kinds[kind])
            got = b""
            try:
                while time.monotonic() - started < timeout + 3:
                    writer.write(b"a" if kind != "idle" else b"")  # trickle a byte now and then
                    try:
                        chunk = await asyncio.wait_for(reader.read(4096), 0.3)
                    except TimeoutError:
                        continue
                    if not chunk:
                        return kind, time.monotonic() - started, got
                    got += chunk
            except (ConnectionError, OSError):
                return kind, time.monotonic() - started, got
            return kind, None, got

    health = asyncio.create_task(check_health())
    results = await asyncio.gather(*(slow_client(k) for k in list(kinds) * 50))
    done.set()
    await health
    for kind, lasted, got in results:
        assert lasted is not None and lasted < timeout + 2, (kind, lasted)
        if kind in ("partial head", "partial upgrade"):
            assert got.startswith(b"HTTP/1.1 408 "), (kind, got[:200])
            assert b'"code":"request_timeout"' in got
        else:
            assert got == b"", (kind, got[:200])  # idle / slow body: closed without an answer
    assert not health_failures, health_failures
    assert healthy >= 5, healthy
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []  # a body cut off by the timer is a client gone away, not a server error


async def test_idle_keep_alive_connection_is_closed(make_server: Callable[..., Awaitable[ServerURL]]) -> None:
    server = await make_server(keepalive_timeout_s=1, request_read_timeout_s=1)
    async with tcp(server) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader, time.monotonic())).status == 200
        started = time.monotonic()
        assert await closed_by_server(reader, 3)
        assert time.monotonic() - started < 2
    async with tcp(server) as (reader, writer):  # the next request on a kept-alive connection is timed too
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader, time.monotonic())).status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        started = time.monotonic()
        answer = await read_answer(reader, started, within=3)
        assert answer.status == 408 and answer.problem()["code"] == "request_timeout"
        assert 0.8 < answer.elapsed < 2


# ---------------------------------------------------------------------------------------------------------
# connection cap


async def test_connection_cap_refuses_new_connections_but_keeps_health_checks(
    make_server: Callable[..., Awaitable[ServerURL]],
) -> None:
    """max_connections=50: 60 idle connections fill the cap and part of the reserve; a fresh health check still
    answers (the reserve), a fresh API request gets 503, an established client goes on. Once the reserve is
    full too, a new connection is answered 503 at once; when the idle ones time out, everything answers."""
    from leaderboard.guard import OPS_RESERVE

    server = await make_server(max_connections=50, request_read_timeout_s=3)
    established = httpx.AsyncClient(base_url=server, timeout=5)  # one keep-alive connection, opened first
    idle: list[asyncio.StreamWriter] = []
    try:
        assert (await established.get("/healthz")).status_code == 200
        for _ in range(60):
            idle.append((await asyncio.open_connection(*_address(server)))[1])
        await asyncio.sleep(0.3)  # let the server accept them all

        async with httpx.AsyncClient(base_url=server, timeout=5) as fresh:
            assert (await fresh.get("/healthz")).status_code == 200
            assert (await fresh.get("/readyz")).status_code == 200
            resp = await fresh.get("/api/leaderboard/top")
            assert resp.status_code == 503, resp.text
            assert resp.json()["code"] == "too_many_connections"
            assert resp.headers["retry-after"] == "1"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server), open_timeout=5):
                pass
        assert refused.value.response.status_code == 503
        for _ in range(3):
            assert (await established.get("/healthz")).status_code == 200
            assert (await established.get("/api/leaderboard/top")).status_code == 200

        for _ in range(OPS_RESERVE):  # fill the reserve as well
            idle.append((await asyncio.open_connection(*_address(server)))[1])
        await asyncio.sleep(0.3)
        async with tcp(server) as (reader, _):  # answered at once, before it sends anything
            answer = await read_answer(reader, time.monotonic(), within=2)
            assert answer.status == 503 and answer.problem()["code"] == "too_many_connections"
            assert await closed_by_server(reader, 3)
        assert (await established.get("/healthz")).status_code == 200

        await asyncio.sleep(3 + 1)  # the idle connections sent no request: closed after request_read_timeout_s
        async with httpx.AsyncClient(base_url=server, timeout=5) as fresh:
            assert (await fresh.get("/api/leaderboard/top")).status_code == 200
    finally:
        await established.aclose()
        for w in idle:
            w.close()


# ---------------------------------------------------------------------------------------------------------
# settings, options, open-file limit


def test_limit_settings_and_their_defaults() -> None:
    from leaderboard.guard import GuardedWs, Limits, server_options
    from leaderboard.settings import Settings

    s = Settings()
    assert (s.max_header_bytes, s.request_read_timeout_s, s.keepalive_timeout_s, s.max_connections) == (
        32_768,
        5.0,
        5.0,
        10_000,
    )
    options = server_options(s)
    assert options["http"].keywords["limits"] == Limits(32_768, 5.0, 10_000)
    assert (options["ws"], options["ws_per_message_deflate"], options["ws_max_size"]) == (
        GuardedWs,  # uvicorn's websockets-sansio, with handshake refusals as problems
        False,
        s.max_frame_bytes,
    )
    assert options["timeout_keep_alive"] == 5.0
    # `serve --workers N` sends the config to spawned workers: the options must pickle
    assert pickle.loads(pickle.dumps(options))["http"].keywords == options["http"].keywords
    assert pickle.loads(pickle.dumps(options))["ws"] is GuardedWs


def test_open_file_limit_is_raised_and_a_short_one_is_reported() -> None:
    script = """
import logging, resource, sys
from leaderboard import guard
from leaderboard.settings import Settings
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
now = guard.raise_nofile(Settings(max_connections=100))
print("raised", now == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0])
guard.raise_nofile(Settings(max_connections=hard + 1))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "raised True" in out.stdout
    warnings = [ln for ln in out.stdout.splitlines() if "open-file limit" in ln]
    assert len(warnings) == 1 and "LEADERBOARD_MAX_CONNECTIONS" in warnings[0], out.stdout


async def test_leaderboard_serve_is_guarded_with_workers(services: Services, clean: None, tmp_path: Path) -> None:
    """`leaderboard serve --workers 2` runs the guarded protocol in each worker (the options pickle)."""
    async with spawned_server(tmp_path, services.dsn, services.redis_url, "--workers", "2") as (url, _):
        for _ in range(4):  # the kernel spreads connections over both workers
            answer, closed = await send_endless_header(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert answer.status == 431 and closed, answer
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_one_write_sends_a_turns_writes_together_in_order_and_before_a_close_or_eof() -> None:
    """guard.OneWrite (a response's head and body in one send): nothing is lost, reordered or sent after the
    close, whether the connection is closed, half-closed (write_eof) or aborted."""
    from leaderboard.guard import OneWrite

    loop = asyncio.get_running_loop()
    peers: list[asyncio.StreamWriter] = []
    for ending in ("close", "write_eof", "abort"):
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def accepted(r: asyncio.StreamReader, w: asyncio.StreamWriter, got: asyncio.Queue[bytes] = got) -> None:
            peers.append(w)
            got.put_nowait(b"")
            while chunk := await r.read(65536):
                got.put_nowait(chunk)
            got.put_nowait(b"")  # EOF

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        out = OneWrite(transport, loop)  # type: ignore[arg-type]
        await got.get()  # connected
        out.write(b"HTTP/1.1 200 OK\r\n\r\n")
        out.write(b"body")
        assert out.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
        await asyncio.sleep(0)  # the end of the turn: one write
        out.write(b"+second")
        getattr(out, ending)()
        received = b""
        while (chunk := await asyncio.wait_for(got.get(), 5)) != b"":
            received += chunk
        expected = b"HTTP/1.1 200 OK\r\n\r\nbody" + (b"" if ending == "abort" else b"+second")
        assert received == expected, ending
        transport.close()
        for w in peers:
            w.close()
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------------------------------------
# pipelining (HTTP/1.1): served at once, answered in order


def submit_request(key: str, user: str, score: int, sid: str, *, close: bool = False) -> bytes:
    body = json.dumps({"user_id": user, "score": score, "session_id": sid}).encode()
    return (
        b"POST /api/leaderboard/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n%s\r\n%s"
        % (key.encode(), len(body), b"Connection: close\r\n" if close else b"", body)
    )


def batches_committed() -> float:
    return exposed().get(("leaderboard_batch_size_count", ()), 0.0)


async def test_pipelined_requests_are_served_at_once_and_answered_in_order(
    server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool
) -> None:
    """100 submissions (and health checks between them) written at once on one connection, the last one asking
    to close: every answer comes back, in request order, and the connection closes after the last. They are
    served together (a few group commits), not one COMMIT after the other as uvicorn alone would, and reading
    pauses at PIPELINE_DEPTH requests in flight and goes on."""
    from leaderboard.guard import PIPELINE_DEPTH

    n = 100
    assert n > 2 * PIPELINE_DEPTH
    sids = [str(uuid.uuid4()) for _ in range(n)]
    expected: list[tuple[int, str]] = []
    wire = b""
    for i, sid in enumerate(sids):
        wire += submit_request(keys.submit, f"p{i}", i + 1, sid, close=i == n - 1)
        expected.append((200, f"p{i}"))
        if i % 10 == 3:
            wire += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            expected.append((200, "health"))
    before = batches_committed()
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(wire)
        answers = [await read_answer(reader, started, within=30) for _ in expected]
        assert await closed_by_server(reader, 5)
    got = []
    for answer in answers:
        body = json.loads(answer.body)
        got.append((answer.status, body["user_id"] if "user_id" in body else "health"))
    assert got == expected
    assert [json.loads(a.body)["score"] for a in answers if b"user_id" in a.body] == list(range(1, n + 1))
    assert answers[-1].headers.get("connection") == "close"
    assert await pg_values(pool) == {f"p{i}": i + 1 for i in range(n)}
    assert await session_count(pool) == n
    # one after the other, each submission would be a group commit of its own
    assert batches_committed() - before <= n / 4


async def test_a_client_gone_mid_pipeline_loses_nothing_and_counts_nothing_twice(
    server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool, make_client: Any
) -> None:
    """A client writes 60 submissions at once, reads one answer and goes away. What the server had read is
    committed (it is acknowledged nowhere, so the client retries it all): the retries are duplicates or new,
    each player ends with exactly one submission, and the server goes on serving."""
    n = 60
    sids = [str(uuid.uuid4()) for _ in range(n)]
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(b"".join(submit_request(keys.submit, f"g{i}", i + 1, sid) for i, sid in enumerate(sids)))
        assert (await read_answer(reader, started, within=30)).status == 200
    api = make_client(server, keys.submit)
    retried = await asyncio.gather(*(
        api.post("/api/leaderboard/submit", json={"user_id": f"g{i}", "score": i + 1, "session_id": sid})
        for i, sid in enumerate(sids)
    ))  # fmt: skip
    assert [r.status_code for r in retried] == [200] * n
    assert json.loads(retried[0].content)["duplicate"] is True  # answered on the first connection: committed
    assert await pg_values(pool) == {f"g{i}": i + 1 for i in range(n)}
    assert await session_count(pool) == n


async def test_a_refused_head_behind_pipelined_requests_closes_after_their_answers(
    server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool
) -> None:
    """Five submissions and then a request whose head is over the limit, in one write (so the head is counted
    as the parser reads it, not as it arrives): the five are answered in order, then the refusal, then the
    connection is closed; nothing of the refused request is served."""
    sids = [str(uuid.uuid4()) for _ in range(5)]
    wire = b"".join(submit_request(keys.submit, f"r{i}", i + 1, sid) for i, sid in enumerate(sids))
    wire += b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(5))
    wire += b"\r\n"  # a head of 40 KB: over max_header_bytes (32 KiB)
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(wire)
        answers = [await read_answer(reader, started, within=30) for _ in sids]
        refusal = await read_answer(reader, started)
        assert await closed_by_server(reader, 3)
    assert [(a.status, json.loads(a.body)["user_id"]) for a in answers] == [(200, f"r{i}") for i in range(5)]
    assert refusal.status == 431 and refusal.problem()["code"] == "header_too_large", refusal
    assert refusal.headers.get("connection") == "close"
    assert await pg_values(pool) == {f"r{i}": i + 1 for i in range(5)}


async def test_pipelined_requests_whose_answers_are_not_read_are_bounded_and_cut(
    make_server: Callable[..., Awaitable[ServerURL]],
) -> None:
    """A client writes small requests as fast as the server reads them and reads none of the answers. A 256 KiB
    read holds thousands of them: the server starts no more of them than PIPELINE_DEPTH, stops reading while its
    answers are not read, holds no more than a few MiB for it (it held 77 MiB of tasks and answers before), and
    once nothing of them has been read for request_read_timeout_s the connection is aborted."""
    server = await make_server(request_read_timeout_s=1, send_buffer=65536)
    proc = psutil.Process()
    requests = b"GET /api/leaderboard/no-such-thing HTTP/1.1\r\nHost: x\r\n\r\n" * 2000  # 404 problems
    await send_endless_header(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # warm-up
    base = peak = proc.memory_info().rss
    async with tcp(server) as (reader, writer):
        sent, started = 0, time.monotonic()
        with suppress(ConnectionError, OSError):
            while time.monotonic() - started < 4:
                writer.write(requests)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    break  # the server stopped reading
                sent += len(requests)
                peak = max(peak, proc.memory_info().rss)
        assert time.monotonic() - started < 4, "the server read everything it was sent"
        for _ in range(20):
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.1)
        assert peak - base < 8 * MiB, f"RSS grew by {(peak - base) / MiB:.1f} MiB for {sent / MiB:.1f} MiB sent"
        # nothing read for a whole second (request_read_timeout_s): the connection is reset (a TimeoutError here
        # is a connection left hanging, holding its answers)
        with pytest.raises(ConnectionResetError):
            while await asyncio.wait_for(reader.read(1 << 20), 10):
                pass
    async with httpx.AsyncClient(base_url=server) as fresh:
        assert (await fresh.get("/healthz")).status_code == 200


CHUNKED = b"POST /api/leaderboard/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("tail", "status", "code"),
    [
        (b"0\r\nX-Trailer: " + b"a" * (64 * 1024), 431, "header_too_large"),  # a trailer line that never ends
        (b"0\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(150)), 431, "header_too_large"),
        (b"zz\r\n", 400, "bad_request"),  # not a chunk size
    ],
    ids=["endless-trailer-line", "too-many-trailer-fields", "bad-chunk-size"],
)
async def test_a_chunked_body_gone_wrong_is_answered_and_closed(
    server: ServerURL, keys: ApiKeys, pool: asyncpg.Pool, tail: bytes, status: int, code: str
) -> None:
    """The body's first chunk is a whole submission; what follows it is refused: the request is answered with a
    problem (not left waiting for a body that cannot end), the connection is closed and nothing is written."""
    body = json.dumps({"user_id": "chunky", "score": 5, "session_id": str(uuid.uuid4())}).encode()
    head = CHUNKED + b"Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % keys.submit.encode()
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(head + b"%x\r\n%s\r\n" % (len(body), body) + tail)
        answer = await read_answer(reader, started)
        assert answer.status == status and answer.problem()["code"] == code, answer
        assert answer.headers.get("connection") == "close"
        assert await closed_by_server(reader, 3)
    assert await pg_values(pool) == {}


async def test_a_malformed_request_is_a_problem_after_the_answers_before_it(server: ServerURL) -> None:
    """A request httptools cannot parse behind one it can: the first is answered, then a 400 problem (uvicorn's
    own was text/plain), then the connection is closed."""
    async with tcp(server) as (reader, writer):
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost x\r\n\r\n")
        assert (await read_answer(reader, started)).status == 200
        answer = await read_answer(reader, started)
        assert answer.status == 400 and answer.problem()["code"] == "bad_request", answer
        assert "HTTP/1.1" in answer.problem()["detail"]
        assert await closed_by_server(reader, 3)
