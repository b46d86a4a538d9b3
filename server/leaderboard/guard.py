"""Connection guard: what one client can make a server process hold is bounded before the app sees a byte.

uvicorn's httptools protocol, subclassed (every place that serves the app uses `server_options()`):

    request head     a line over 8 KiB (MAX_LINE), more than MAX_FIELDS header fields, or a head over
                     `max_header_bytes` in all: 431 (414 for the request line). Counted on the raw bytes before
                     httptools buffers them, so an endless header costs at most the limit plus one socket read
                     (256 KiB). The WebSocket upgrade goes through the same parser first, so /ws is covered too.
    request read     a request (head and body) must have arrived `request_read_timeout_s` after its first byte
                     (or after the connection opened): 408 if a head was under way and nothing is being
                     answered; otherwise the connection is just closed.
    keep-alive idle  uvicorn's own timer (`keepalive_timeout_s`) after each response.
    pipelining       requests pipelined on one connection (HTTP/1.1) are served at once, up to PIPELINE_DEPTH in
                     flight (reading pauses past it), and answered in request order (`_Turn`). uvicorn serves
                     them one after the other, so a pipelined submit waited for the COMMIT of the one before.
    unread answers   reading pauses while the transport's write buffer is over its high-water mark (the client
                     does not read its answers; every request read would add one), and a connection whose
                     client reads nothing of them for `request_read_timeout_s` is aborted (a close would wait
                     for the buffer to drain, forever).
    trailers         a chunked body's trailer fields: the head's bounds, head and trailers together (431).
    malformed        bytes httptools cannot parse: 400 `bad_request` in its place among the answers (uvicorn's was
                     a text/plain 400 ahead of them, and a warning per request).
    handshake        a WebSocket upgrade websockets refuses (bad key or version, not GET) is a problem too
                     (`GuardedWs`; websockets answers a line of text/plain).
    connections      at most `max_connections` per server (= per process). Past it, OPS_RESERVE more are let in
                     for /healthz, /readyz and /metrics only (one request each, then closed), so a load
                     balancer's check still answers when legitimate clients fill the process. Past that a new
                     connection is answered 503 at once and closed.

Every refusal is an RFC 9457 problem (application/problem+json, with `code`) and a lingering close: we stop
writing, read and discard what the client still sends for at most LINGER_S, then close, so the client reads
the answer instead of a connection reset. See docs/operations.md, "Limits".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Response as WsResponse
from websockets.server import ServerProtocol

from .errors import CODES, problem_body
from .settings import Settings

log = logging.getLogger(__name__)

MAX_LINE = 8192  # = websockets' MAX_LINE_LENGTH (CRLF included): an upgrade request is parsed by it again
MAX_FIELDS = 100  # below websockets' MAX_NUM_HEADERS (128), for the same reason
OPS_RESERVE = 16  # connections past max_connections that may reach only OPS_PATHS
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LINGER_S = 1.0  # how long a refused connection is read (and discarded) before it is closed
MAX_LINGERING = 256  # refused connections lingering at once; past it a refusal closes at once
FD_OVERHEAD = 128  # listening socket, Redis clients, logs, the interpreter's own
PIPELINE_DEPTH = 32  # requests of one connection in flight at once; past it, reading pauses
PIPELINE_BUFFER = 1 << 20  # bytes of answers waiting for their turn on one connection; past it, reading pauses


Refusal = tuple[int, str, str]  # (status, code, detail) of a refused request head
_URI_TOO_LONG: Refusal = (414, "uri_too_long", f"the request line is longer than {MAX_LINE} bytes")
_LINE_TOO_LONG: Refusal = (431, "header_too_large", f"a header line is longer than {MAX_LINE} bytes")
_TOO_MANY_FIELDS: Refusal = (431, "header_too_large", f"more than {MAX_FIELDS} header fields")


@dataclass(frozen=True)
class Limits:
    """The per-connection and per-process bounds (from Settings)."""

    max_header_bytes: int = 32_768
    request_read_timeout_s: float = 5.0
    max_connections: int = 10_000

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_header_bytes, settings.request_read_timeout_s, settings.max_connections)


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of every server of the app: `uvicorn.run(app, **server_options(s), ...)`."""
    return {
        "http": functools.partial(GuardedHttp, limits=Limits.of(settings)),  # a partial pickles (--workers)
        "ws": GuardedWs,
        # Small JSON frames gain little from compression, and per-socket deflate contexts would defeat
        # "encode a snapshot once for every subscriber" and cost memory per connection.
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_frame_bytes,
        "timeout_keep_alive": settings.keepalive_timeout_s,
    }


def nofile_needed(settings: Settings) -> int:
    """File descriptors one process needs at its connection limit."""
    return settings.max_connections + OPS_RESERVE + MAX_LINGERING + settings.db_pool_size + FD_OVERHEAD


def raise_nofile(settings: Settings) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; warn when that is below what the limits need.
    Returns the soft limit now in force (worker processes inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # an infinite hard limit above the kernel's nr_open
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    needed = nofile_needed(settings)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is below the %d that LEADERBOARD_MAX_CONNECTIONS=%d needs per process: past %d "
            "connections accept() fails and the process stops answering, health checks included. Raise nofile "
            "(ulimit -n, LimitNOFILE=, docker --ulimit nofile=) or lower LEADERBOARD_MAX_CONNECTIONS",
            soft, needed, settings.max_connections, soft - (needed - settings.max_connections),
        )  # fmt: skip
    return soft


class _Refusals:
    """Counts refusals and logs them at most once per interval (a flood of bad clients is no flood of logs)."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval, self.counts, self.next_log = interval, Counter[str](), 0.0

    def add(self, what: str) -> None:
        self.counts[what] += 1
        now = time.monotonic()
        if now >= self.next_log:
            log.warning("refused: %s", ", ".join(f"{n} x {w}" for w, n in sorted(self.counts.items())))
            self.counts.clear()
            self.next_log = now + self.interval


REFUSALS = _Refusals()


class _Stop(Exception):
    """Raised from a parser callback to stop parsing a request that was refused."""


class OneWrite:
    """An HTTP connection's transport whose writes of one event-loop turn go out as one. uvicorn writes a
    response's head and its body separately, and each write to an idle socket is a send syscall: per cached read
    or submit, the two sends were a third of the server's CPU (py-spy, docs/performance.md). Here they are
    joined and sent at the end of the turn (`call_soon`), as are the responses to pipelined requests answered in
    that turn. `close()` sends what is pending first; a WebSocket upgrade takes the bare transport back
    (GuardedHttp.handle_websocket_upgrade): frames are written at once, by the fan-out among others."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self._loop = transport, loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self._pending or ()))

    def __getattr__(self, name: str) -> Any:  # everything else: the transport's own
        return getattr(self.transport, name)


class _Refused:
    """In the queue of pipelined requests, the place of a refused one (its answer is the guard's own)."""

    __slots__ = ("disconnected", "message_event")
    response_complete = True

    def __init__(self) -> None:
        self.disconnected = False
        self.message_event = asyncio.Event()


class _Turn:
    """The transport of a request pipelined behind others that are still being answered: what its cycle
    writes waits here until the responses before it are complete (HTTP/1.1 answers in request order), then
    goes to the connection's transport, and from then on everything goes straight through. A close (the
    response said `connection: close`, or failed half-way) waits for its turn as well."""

    __slots__ = ("_close", "_conn", "_parts", "_then", "ready")

    def __init__(self, conn: GuardedHttp, then: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self._parts: list[bytes] = []
        self._close = False
        self._then = then  # instead of a response: what to do in its turn (a refusal answers and closes)
        self.ready = False

    def write(self, data: bytes) -> None:
        if self.ready:
            self._conn.transport.write(data)
        else:
            self._parts.append(data)
            self._conn.waiting(len(data))

    def close(self) -> None:
        if self.ready:
            self._conn.transport.close()
        else:
            self._close = True

    def is_closing(self) -> bool:
        return bool(self._conn.transport.is_closing())

    def release(self) -> bool:
        """Its turn: write what waited (and close if it asked to). True when the connection is closing."""
        self.ready = True
        parts, self._parts = self._parts, []
        for data in parts:
            self._conn.transport.write(data)
        self._conn.waiting(-sum(map(len, parts)))
        if self._then is not None:
            self._then()
            return True
        if self._close:
            self._conn.transport.close()
        return self.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn.transport, name)


class _Flow(FlowControl):
    """uvicorn's flow control, whose `resume_reading` asks the connection first. uvicorn resumes reading after
    each response and whenever an app waits for its request body, which undid the guard's pauses (requests
    in flight, answers waiting for their turn, answers the client does not read)."""

    def __init__(self, transport: asyncio.Transport, conn: GuardedHttp) -> None:
        super().__init__(transport)
        self._conn = conn

    def resume_reading(self) -> None:
        if self.read_paused and self._conn.may_read():
            super().resume_reading()


class GuardedHttp(HttpToolsProtocol):
    """HttpToolsProtocol with bounded request heads, a request read timer and a connection cap."""

    lingering = 0  # refused connections of this process still being read before the close

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: Limits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.state: Literal["idle", "head", "body"] = "idle"
        self.reserve = False  # admitted past max_connections: operational paths only
        self.refused = False  # answered by the guard: discard input until the close
        self._head = 0  # bytes of the current request head so far
        self._line = 0  # bytes of its current line so far
        self._lines = 0  # its complete lines
        self._start = b""  # the first two bytes of the current line (to tell an empty line)
        self._timer: asyncio.TimerHandle | None = None
        self._linger = False
        self._parsed = [0, 0, 0]
        # requests started while an earlier one was being answered, in order, with the transport each writes to
        self._ahead: deque[tuple[RequestResponseCycle | _Refused, _Turn]] = deque()
        self._capped = False  # reading paused: PIPELINE_DEPTH requests in flight or PIPELINE_BUFFER bytes waiting
        self._waiting = 0  # bytes of answers waiting for their turn
        self._close_after = False  # close once every response in flight is out (a refusal, a shutdown)
        self._unread: asyncio.TimerHandle | None = None  # while the write buffer is over its high-water mark
        self._unread_size = 0  # the write buffer's size when last looked at
        self._held = b""  # read, not yet parsed: requests pipelined behind a stall (see data_received)
        self._waking: asyncio.Handle | None = None  # _go_on, scheduled
        self._trailer = False  # a chunk's size line parsed and none of its data yet: maybe the trailer section
        self._trailer_line = 0  # bytes of the trailer line under way

    # ---- connection -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        open_ = len(self.connections)
        if open_ >= self.limits.max_connections + OPS_RESERVE:
            self.transport = transport
            self._refuse(503, "too_many_connections", "this server is at its connection limit; retry", retry=True)
            return
        super().connection_made(OneWrite(transport, self.loop))  # type: ignore[arg-type]
        self.flow = _Flow(self.transport, self)
        self.reserve = open_ >= self.limits.max_connections
        self._arm()

    def handle_websocket_upgrade(self) -> None:
        if isinstance(self.transport, OneWrite):  # a socket's frames go out at once (see OneWrite)
            self.transport.flush()
            self.transport = self.transport.transport
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        for handle in (self._unread, self._waking):
            if handle is not None:
                handle.cancel()
        self._unread = self._waking = None
        self._held = b""
        for cycle, _ in self._ahead:  # uvicorn tells the latest request only
            cycle.disconnected = True
            cycle.message_event.set()
        self._ahead.clear()
        if self._linger:
            self._linger = False
            GuardedHttp.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self._held:  # (reading is paused while something is held; a read already under way keeps the order)
            self._held += data
            return
        if data.count(b"\r\n\r\n") < 2:  # at most one request starts in it: as it is (the common case)
            self._feed(data)
            return
        # Many pipelined requests in one read (a 256 KiB read holds thousands of small ones): a head at a time,
        # so that what stalls the connection (_stalled) stops the next one from starting; the rest is held.
        pos, end = 0, len(data)
        while pos < end and not self.refused:
            if self.state == "idle" and self._stalled():
                self._held = data[pos:]
                self.flow.pause_reading()
                return
            cut = data.find(b"\r\n\r\n", pos)
            cut = end if cut < 0 else cut + 4
            if not self._feed(data[pos:cut]):
                return
            pos = cut

    def _feed(self, data: bytes) -> bool:
        """Hand `data` to the parser; False when the connection is no longer HTTP/1.1 or is refused."""
        if self.state != "body" and (refusal := self._count(data)) is not None:
            self._refuse(*refusal)
            return False
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.refused:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as exc:
            if not self.refused:  # (a callback's refusal raised _Stop: answered already)
                reason = str(exc).removeprefix("Invalid ").strip() or "malformed"
                self._refuse_now(400, "bad_request", f"not an HTTP/1.1 request ({reason})")
            return False
        if self._trailer:
            self._trailer_read(data)
            if self.refused:
                return False
        if self.flow.write_paused and self.state != "body":  # the client does not read: see pause_writing
            self.flow.pause_reading()
        return True

    def _refuse_now(self, status: int, code: str, detail: str) -> None:
        """Refuse what is being parsed (malformed bytes, a trailer over the limits). A request whose body was
        under way gets no more of it (its app reads a disconnect, its answer is dropped) and the refusal takes its
        place among the answers; if it had begun answering (before its body), the connection just closes."""
        cycle = self.cycle
        if self.state == "body" and cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.refused = True
                REFUSALS.add(f"{status} {code}: closed")
                self.transport.close()
                return
            cycle.response_complete = True  # nothing of it goes out: the refusal answers in its place
            if self._ahead and self._ahead[-1][0] is cycle:
                self._ahead.pop()
        self._refuse(status, code, detail)

    def _stalled(self) -> bool:
        """No further request is started: PIPELINE_DEPTH / PIPELINE_BUFFER hold (`_cap`), the client does not
        read its answers (pause_writing), or the connection closes after the answers in flight."""
        return self._capped or self.flow.write_paused or self._close_after

    def _wake(self) -> None:
        """What stalled the connection is over: go on with what was held, from the loop (not from inside a
        response's callback or the parser's)."""
        if self._waking is None and (self._held or self.flow.read_paused):
            self._waking = self.loop.call_soon(self._go_on)

    def _go_on(self) -> None:
        self._waking = None
        if self.refused or self._stalled() or self.transport.is_closing():
            return
        if self._held:
            held, self._held = self._held, b""
            self.data_received(held)
        self.flow.resume_reading()

    # ---- parser callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.state = "head"
        self._arm()
        self._parsed = [0, 0, 0]  # request line, header fields, head bytes, as the parser hands them over

    # The same bounds once more, on what the parser hands over: _count sees a read's bytes up to the end of its
    # first head only, and pipelined requests can follow it in the same read (at most a socket read: 256 KiB).
    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed[0] += len(url)
        if self._parsed[0] > MAX_LINE:
            self._refuse(*_URI_TOO_LONG)
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        size = len(name) + len(value) + 4
        self._parsed[1] += 1
        self._parsed[2] += size
        if size > MAX_LINE:
            refusal = _LINE_TOO_LONG
        elif self._parsed[1] > MAX_FIELDS:
            refusal = _TOO_MANY_FIELDS
        elif self._parsed[2] > self.limits.max_header_bytes:
            refusal = self._head_too_large()
        else:
            return
        if self.state == "body":  # a chunked body's trailer section: the head's bounds hold for both together
            self._refuse_now(*refusal)
        else:
            self._refuse(*refusal)
        raise _Stop

    def on_headers_complete(self) -> None:
        self.state = "body"
        upgrade = bool(self.parser.should_upgrade()) and self._should_upgrade()
        if upgrade:
            self._disarm()  # the socket belongs to the WebSocket protocol from here on
        if self.reserve and (upgrade or httptools.parse_url(self.url).path.decode("ascii", "replace") not in OPS_PATHS):
            self._refuse(
                503, "too_many_connections",
                "this server is at its connection limit; only /healthz, /readyz and /metrics answer; retry",
                retry=True,
            )  # fmt: skip
            raise _Stop
        behind = not upgrade and self._answering()
        super().on_headers_complete()
        if self.reserve and self.cycle is not None:
            self.cycle.keep_alive = False
        if behind:
            self._pipelined()

    # A chunked body ends in a trailer section: header fields, which httptools buffers whole like a head's but
    # which _count does not see (it counts heads). Complete fields are bounded by on_header; a field line that
    # never ends is bounded here: between a chunk's size line and its data (none, for the last chunk), the bytes
    # after the last line feed of each read are the line under way.
    def on_chunk_header(self) -> None:
        self._trailer, self._trailer_line = True, 0

    def on_chunk_complete(self) -> None:
        self._trailer = False

    def on_body(self, body: bytes) -> None:
        self._trailer = False
        super().on_body(body)

    def _trailer_read(self, data: bytes) -> None:
        nl = data.rfind(b"\n")
        self._trailer_line = len(data) - nl - 1 if nl >= 0 else self._trailer_line + len(data)
        if self._trailer_line > MAX_LINE:
            self._refuse_now(431, "header_too_large", f"a trailer field line is longer than {MAX_LINE} bytes")

    def on_message_complete(self) -> None:
        self._trailer = False
        super().on_message_complete()
        self.state = "idle"
        self._disarm()
        self._head = self._line = self._lines = 0
        self._start = b""

    # ---- pipelining -------------------------------------------------------------------------------------------

    def _pipelined(self) -> None:
        """The request just parsed came while an earlier one is being answered: serve it now (uvicorn queued it
        and paused reading, or started it when the one before it was complete but not yet written), with a
        `_Turn` for transport so that its answer keeps its place."""
        cycle = self.cycle
        if self.pipeline:
            queued, app = self.pipeline.pop()
            assert queued is cycle
            self._start_asgi_task(cycle, app)  # the task's first step runs on a later turn of the loop
        turn = _Turn(self)
        cycle.transport = turn  # type: ignore[assignment]
        cycle.on_response = self._turn_done
        self._ahead.append((cycle, turn))
        self._cap()
        if not self._capped:
            self.flow.resume_reading()  # uvicorn paused it when it queued the request

    def waiting(self, size: int) -> None:
        """Bytes of answers that wait for their turn (`_Turn`), so many more (or fewer, when released)."""
        self._waiting += size
        self._cap()

    def _cap(self) -> None:
        """Pause reading while PIPELINE_DEPTH requests are in flight or PIPELINE_BUFFER bytes of answers wait
        for their turn; go on when both are below (what one client can make us hold is bounded)."""
        full = len(self._ahead) >= PIPELINE_DEPTH or self._waiting > PIPELINE_BUFFER
        if full and not self._capped:
            self._capped = True
            self.flow.pause_reading()
        elif self._capped and not full:
            self._capped = False
            self._wake()

    def may_read(self) -> bool:
        """Whether reading may go on (`_Flow`): while lingering, always (to discard); the body of the request being
        received, always (its app waits for it; uvicorn bounds what it buffers); a new request, not while
        PIPELINE_DEPTH / PIPELINE_BUFFER hold (`_cap`), the client does not read its answers, or we close after
        the answers in flight."""
        if self._linger:
            return True
        if self.refused or self._held:
            return False
        return self.state == "body" or not self._stalled()

    # ---- answers the client does not read ---------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The transport's write buffer is over its high-water mark: stop reading new requests (each would add an
        answer) until it drains, and abort the connection if nothing of it is read for request_read_timeout_s."""
        super().pause_writing()
        if self.state != "body":
            self.flow.pause_reading()
        if self._unread is None:
            self._unread_size = self.transport.get_write_buffer_size()
            self._unread = self.loop.call_later(self.limits.request_read_timeout_s, self._unread_check)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._unread is not None:
            self._unread.cancel()
            self._unread = None
        self._wake()

    def _unread_check(self) -> None:
        self._unread = None
        size = self.transport.get_write_buffer_size()
        if size and size >= self._unread_size:  # nothing read in a whole interval: a close would wait forever
            REFUSALS.add("answers not read: aborted")
            self.transport.abort()
            return
        self._unread_size = size
        self._unread = self.loop.call_later(self.limits.request_read_timeout_s, self._unread_check)

    def on_response_complete(self) -> None:
        if not self._ahead:
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        self._next_turn()

    def _turn_done(self) -> None:
        if self._ahead and self._ahead[0][1].ready:  # the response going out straight is complete
            self._next_turn()

    def _next_turn(self) -> None:
        """The response that was going out is complete: let the next ones out, in order."""
        while self._ahead:
            cycle, turn = self._ahead[0]
            if not turn.ready and turn.release():
                return  # it closed the connection: connection_lost tells the others
            if not cycle.response_complete:
                return  # it writes straight through now; its end calls _turn_done
            self._ahead.popleft()
            self.server_state.total_requests += 1
            self._cap()
        # nothing in flight any more: as uvicorn after a response
        if self.transport.is_closing():
            return
        if self._close_after:
            self.transport.close()
            return
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def shutdown(self) -> None:
        if self._ahead:  # close once the responses in flight are out
            self._close_after = True
            self.cycle.keep_alive = False
            return
        super().shutdown()

    # ---- request head ---------------------------------------------------------------------------------------

    def _head_too_large(self) -> Refusal:
        return 431, "header_too_large", f"the request head is larger than {self.limits.max_header_bytes} bytes"

    def _count(self, data: bytes) -> Refusal | None:
        """Count the head bytes in `data` (up to the empty line that ends the head); a refusal or None."""
        pos, end = 0, len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            if self._line < 2:
                self._start += data[pos : min(stop, pos + 2 - self._line)]
            self._line += stop - pos
            self._head += stop - pos
            if self._line > MAX_LINE:
                return _URI_TOO_LONG if self._lines == 0 else _LINE_TOO_LONG
            if self._head > self.limits.max_header_bytes:
                return self._head_too_large()
            if nl < 0:
                return None
            empty = self._start in (b"\r\n", b"\n")
            self._line, self._start = 0, b""
            pos = stop
            if not empty:
                self._lines += 1
                if self._lines > MAX_FIELDS + 1:
                    return _TOO_MANY_FIELDS
            elif self._lines or self.state == "head":  # the end of the head; the body follows
                self._head = self._lines = 0
                return None
        return None

    # ---- timer ------------------------------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.limits.request_read_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answering(self) -> bool:
        return bool(self._ahead) or (self.cycle is not None and not self.cycle.response_complete)

    def _expired(self) -> None:
        self._timer = None
        if self.refused or self.transport.is_closing():
            return
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._arm()  # we are the ones not reading (pipelining, 100-continue): not the client's delay
            return
        if self.state == "idle":  # connected and sent nothing
            REFUSALS.add("idle connection closed")
            self.transport.close()
        elif self.state == "head" and not self._answering():
            self._refuse(408, "request_timeout", f"no complete request within {self.limits.request_read_timeout_s:g} s")
        elif self.state == "head" or (self.cycle is not None and self.cycle.response_started and self._answering()):
            # the app is answering (an earlier request, or this one already): let it finish, then close
            REFUSALS.add("slow request: closed after the response")
            assert self.cycle is not None
            self.cycle.keep_alive = False
            self._close_after = True
            self.flow.pause_reading()
        else:  # a slow body: the app waits for it (or has answered already)
            REFUSALS.add("slow request body: closed")
            self.transport.close()

    # ---- refusals ---------------------------------------------------------------------------------------------

    def _refuse(self, status: int, code: str, detail: str, *, retry: bool = False) -> None:
        """Answer a problem and close (lingering); when responses are under way (pipelining), after them."""
        self.refused = True
        self._disarm()
        self._unset_keepalive_if_required()
        REFUSALS.add(f"{status} {code}")
        if self._answering():
            self.flow.pause_reading()
            self._ahead.append((_Refused(), _Turn(self, then=lambda: self._answer(status, code, detail, retry))))
            return
        self._answer(status, code, detail, retry)

    def _answer(self, status: int, code: str, detail: str, retry: bool) -> None:
        body = problem_body(status, code, detail)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/problem+json\r\ncontent-length: ", str(len(body)).encode(), b"\r\n",
            b"retry-after: 1\r\n" if retry else b"", b"connection: close\r\n\r\n", body,
        ]  # fmt: skip
        transport = self.transport
        transport.write(b"".join(head))
        if GuardedHttp.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # FIN after the answer; keep reading so the close is not a reset
        if self.flow is not None:
            self.flow.resume_reading()
        else:
            transport.resume_reading()
        self._linger = True
        GuardedHttp.lingering += 1
        self._timer = self.loop.call_later(LINGER_S, transport.close)


# ---- the WebSocket handshake ------------------------------------------------------------------------------------


class _ProblemHandshake(ServerProtocol):
    """websockets' server handshake, refusing with a problem document instead of a line of plain text."""

    def reject(self, status: Any, text: str) -> WsResponse:
        response = super().reject(status, text)  # (the caller may add headers: Allow, Upgrade)
        code = CODES.get(response.status_code, "bad_request")
        reason = text.strip().removeprefix("Failed to open a WebSocket connection:").strip().rstrip(".")
        if response.status_code >= 500:
            reason = "unexpected server error; it has been logged"
        elif response.status_code == 403 and not reason:  # uvicorn: the app closed before accepting
            reason = "the WebSocket was refused before it opened"
        else:
            reason = f"not a WebSocket handshake: {reason}"
        response.body = problem_body(response.status_code, code, reason)
        del response.headers["Content-Length"], response.headers["Content-Type"]
        response.headers["Content-Length"] = str(len(response.body))
        response.headers["Content-Type"] = "application/problem+json"
        return response


class GuardedWs(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (the outbox writes straight to it) whose refused handshakes are
    problems: a bad Sec-WebSocket-Key or version (400), another method than GET (405), a missing upgrade (426)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conn = self.conn  # uvicorn's, with its settings: the same handshake, another refusal
        self.conn = _ProblemHandshake(
            extensions=conn.available_extensions,
            max_size=(conn.max_message_size, conn.max_fragment_size),
            logger=conn.logger,
        )
