"""One generator process: submit or read connections, top-10 watchers and rank watchers, all callback driven.

A worker never creates a task per socket. Submissions (single or ``batch`` items per request) and reads are sent
from answer callbacks (closed loop, pipelined up to ``inflight`` per connection) or from one pacing task per
process (``rate``). Watchers only react to frames.
Clock: ``time.monotonic()`` is CLOCK_MONOTONIC, shared by every process on the machine, so send times taken
here and receive times taken in another worker are comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest import batch as batch_wire
from loadtest.wire import HandshakeError, HTTPClient, HTTPResponse, WSClient, http_connect, ws_connect


@dataclass
class WorkerConfig:
    index: int
    host: str
    port: int
    key: str | None
    board: str
    watch_host: str = ""  # watchers (top and rank) connect here; "" = host/port
    watch_port: int = 0
    transport: str = "ws"  # ws | rest
    submit_conns: int = 0  # submit connections, or read connections when ``read`` is set
    batch: int = 0  # items per submission request/frame (0 = one submission per request, the classic shape)
    read: str = ""  # "top" | "rank": the connections GET /top?limit=top_limit or /rank/{random user} instead
    rate: float = 0.0  # submissions/s for this worker; 0 = as fast as acks allow
    inflight: int = 8
    users: int = 10_000
    user_prefix: str = "u"
    score_max: int = 100
    retry_fraction: float = 0.01
    watchers: int = 0
    rank_users: list[str] = field(default_factory=list)
    watch_mode: str = "push"  # push | poll
    poll_interval: float = 1.0
    top_limit: int = 10
    duration: float = 10.0
    drain_timeout: float = 5.0
    settle: float = 1.0
    connect_concurrency: int = 64
    seed: int = 0
    ws_path: str = "/ws"
    submit_path: str = "/api/leaderboard/submit"
    top_path: str = "/api/leaderboard/top"
    rank_path: str = "/api/leaderboard/rank"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Worker:
    def __init__(self, cfg: WorkerConfig, queue: Any, go: Any, t0: Any) -> None:
        self.cfg = cfg
        self.queue = queue
        self.go = go
        self.t0 = t0
        self.rng = random.Random(cfg.seed * 7919 + cfg.index)
        self.headers = {"Authorization": f"Bearer {cfg.key}"} if cfg.key else {}
        self.running = False
        self.errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        # submissions
        self.ref = 0
        # ref -> (t_send, user, score, sid, kind: 0 first send / 1 replay, client)
        self.pending: dict[int, tuple[float, str, int, str, int, Any]] = {}
        self.lost_in_flight = 0
        self.stopping = False
        self.sent = 0
        self.retries_sent = 0
        self.acked = 0
        self.acked_in_window = 0  # acks that arrived inside the measured window (throughput)
        self.dups = 0
        self.ack_lat = array("d")
        self.acks: list[tuple[str, str, int, bool]] = []  # (sid, user, score, duplicate)
        self.sent_sids: dict[str, tuple[str, int]] = {}  # sid -> (user, score): everything ever sent
        self.value_sent: dict[tuple[str, int], float] = {}  # (user, board value from ack) -> send time
        self.deferred_retries: list[bytes] = []
        self.batch_meta: dict[int, list[tuple[str, int, str, int]]] = {}  # ref -> (user, score, sid, kind) per item
        self.reads_inflight = 0
        self.msgs_in = 0  # frames/responses received inside the measured window (the generator's CPU per message)
        self.msgs_out = 0  # frames/requests sent inside the measured window
        self._issue = self._send_read if cfg.read else self._send_batch if cfg.batch else self._send_one
        self._replay_p = cfg.retry_fraction if cfg.batch else cfg.retry_fraction / 2
        self.raced: set[str] = set()  # session_ids sent twice at once
        self.backlog_dropped = 0
        self.sub_clients: list[Any] = []
        # watchers
        self.snap_cache: dict[bytes, Any] = {}
        self.snap_info: dict[Any, tuple[int | None, float, tuple[tuple[str, int], ...]]] = {}
        self.snap_recv: dict[tuple[Any, Any], array[float]] = {}  # (prev key, key) -> receive times
        self.watch_count: list[int] = []
        self.watch_last_seq: list[int] = []
        self.seq_regressions = 0
        self.rank_msgs = 0
        self.rank_events: list[tuple[str, int, float]] = []  # (user, score, recv time) where score changed
        self.rank_last: dict[int, int | None] = {}
        self.watch_clients: list[Any] = []
        self.recording = False
        # per-second progress
        self.tick_lat = array("d")
        self.tick_snaps = 0

    # -- submissions ----------------------------------------------------------------------------------------
    def _next_frame(self) -> tuple[int, bytes, tuple[float, str, int, str, int]]:
        cfg = self.cfg
        self.ref += 1
        user = f"{cfg.user_prefix}{self.rng.randrange(cfg.users)}"
        score = self.rng.randint(1, cfg.score_max)
        sid = str(uuid.uuid4())
        self.sent_sids[sid] = (user, score)
        body = {"user_id": user, "score": score, "board": cfg.board, "session_id": sid}
        return self.ref, self._encode(self.ref, body), (0.0, user, score, sid, 0)

    def _encode(self, ref: int, body: dict[str, Any]) -> bytes:
        if self.cfg.transport == "ws":
            return orjson.dumps({"type": "submit", "ref": ref, **body})
        return orjson.dumps(body)

    def _send_one(self, client: Any, retry_of: tuple[str, int, str] | None = None) -> None:
        if retry_of is None:
            ref, frame, meta = self._next_frame()
            kind = 0
        else:
            user, score, sid = retry_of
            self.ref += 1
            ref = self.ref
            frame = self._encode(ref, {"user_id": user, "score": score, "board": self.cfg.board, "session_id": sid})
            meta = (0.0, user, score, sid, 1)
            kind = 1
            self.retries_sent += 1
        now = time.monotonic()
        self.pending[ref] = (now, meta[1], meta[2], meta[3], kind, client)
        self.sent += kind == 0
        self._write(client, ref, frame)
        if kind == 0 and self.rng.random() < self.cfg.retry_fraction / 2:
            # Half of the deliberate replays race the original: the same session_id sent at once on another
            # connection, before either is acked. Exactly one of the two may be accepted.
            other = self.sub_clients[self.rng.randrange(len(self.sub_clients))]
            if self._capacity(other) > 0:
                self.raced.add(meta[3])
                self.ref += 1
                body = {"user_id": meta[1], "score": meta[2], "board": self.cfg.board, "session_id": meta[3]}
                self.pending[self.ref] = (now, meta[1], meta[2], meta[3], 1, other)
                self.retries_sent += 1
                self._write(other, self.ref, self._encode(self.ref, body))

    def _write(self, client: Any, ref: int, frame: bytes) -> None:
        self.msgs_out += self.running
        if self.cfg.transport == "ws":
            client.inflight += 1
            client.send(frame)
        else:
            fut = client.request("POST", self.cfg.submit_path, frame, self.headers)
            fut.add_done_callback(lambda f, r=ref, c=client: self._on_rest_done(c, r, f))

    def _send_batch(self, client: Any) -> None:
        """One request/frame of ``batch`` items: deferred replays first, then new submissions. Replays in batch
        mode all come after the original's ack (none race it), and each must be answered duplicate."""
        cfg = self.cfg
        items: list[dict[str, Any]] = []
        metas: list[tuple[str, int, str, int]] = []
        while self.deferred_retries and len(items) < cfg.batch:
            user, score, sid = orjson.loads(self.deferred_retries.pop())
            items.append({"user_id": user, "score": score, "board": cfg.board, "session_id": sid})
            metas.append((user, score, sid, 1))
            self.retries_sent += 1
        rng = self.rng
        while len(items) < cfg.batch:
            user = f"{cfg.user_prefix}{rng.randrange(cfg.users)}"
            score = rng.randint(1, cfg.score_max)
            sid = str(uuid.uuid4())
            self.sent_sids[sid] = (user, score)
            items.append({"user_id": user, "score": score, "board": cfg.board, "session_id": sid})
            metas.append((user, score, sid, 0))
            self.sent += 1
        self.ref += 1
        ref = self.ref
        self.pending[ref] = (time.monotonic(), "", 0, "", 2, client)
        self.batch_meta[ref] = metas
        self.msgs_out += self.running
        if cfg.transport == "ws":
            client.inflight += 1
            client.send(batch_wire.encode_ws(ref, items))
        else:
            fut = client.request("POST", batch_wire.REST_PATH, batch_wire.encode_rest(items), self.headers)
            fut.add_done_callback(lambda f, r=ref, c=client: self._on_rest_done(c, r, f))

    def _send_read(self, client: HTTPClient) -> None:
        cfg = self.cfg
        if cfg.read == "top":
            path = f"{cfg.top_path}?board={cfg.board}&limit={cfg.top_limit}"
        else:
            path = f"{cfg.rank_path}/{cfg.user_prefix}{self.rng.randrange(cfg.users)}?board={cfg.board}"
        t = time.monotonic()
        self.sent += 1
        self.reads_inflight += 1
        self.msgs_out += self.running
        fut = client.request("GET", path, None, self.headers)
        fut.add_done_callback(lambda f, c=client, t=t: self._on_read_done(c, t, f))

    def _on_read_done(self, client: HTTPClient, t_send: float, fut: asyncio.Future[HTTPResponse]) -> None:
        self.msgs_in += self.running
        self.reads_inflight -= 1
        if fut.cancelled() or (self.stopping and fut.exception() is not None):
            return
        exc = fut.exception()
        if exc is not None:
            self.errors[f"http_conn:{type(exc).__name__}"] += 1
            return
        resp = fut.result()
        if resp.status != 200:
            self.errors[f"http_{resp.status}"] += 1
        else:
            # Parse as a client would, and check the answer has the shape asked for.
            body = orjson.loads(resp.body)
            if ("entries" if self.cfg.read == "top" else "rank") not in body:
                self.errors["read_bad_body"] += 1
            else:
                lat = time.monotonic() - t_send
                if self.recording:
                    self.ack_lat.append(lat)
                    self.tick_lat.append(lat)
                self.acked += 1
                if self.running:
                    self.acked_in_window += 1
        self._refill(client)

    def _on_rest_done(self, client: HTTPClient, ref: int, fut: asyncio.Future[HTTPResponse]) -> None:
        self.msgs_in += self.running
        if fut.cancelled() or (self.stopping and fut.exception() is not None):
            return  # we closed the connection ourselves at the end of the run
        exc = fut.exception()
        if exc is not None:
            self.pending.pop(ref, None)
            self.batch_meta.pop(ref, None)
            self.errors[f"http_conn:{type(exc).__name__}"] += 1
            return
        resp = fut.result()
        if resp.status == 200:
            self._on_ack(ref, orjson.loads(resp.body), client)
        else:
            self.pending.pop(ref, None)
            self.batch_meta.pop(ref, None)
            code = ""
            with contextlib.suppress(Exception):
                code = orjson.loads(resp.body).get("code", "")
            self.errors[f"http_{resp.status}:{code}"] += 1
            self._refill(client)

    def _on_ack(self, ref: int, msg: dict[str, Any], client: Any) -> None:
        p = self.pending.pop(ref, None)
        if p is None:
            self.errors["ack_unknown_ref"] += 1
            return
        t_send, user, score, sid, kind, _ = p
        lat = time.monotonic() - t_send
        if kind == 2:
            metas = self.batch_meta.pop(ref)
            try:
                results = batch_wire.decode_results(msg, len(metas))
            except batch_wire.BatchFormatError:
                self.errors["batch_bad_results"] += 1
            else:
                for (user, score, sid, k), r in zip(metas, results, strict=True):
                    if r.ack is None:
                        self.errors[f"item_error:{r.error_code}"] += 1
                    else:
                        self._acked(t_send, lat, user, score, sid, k, r.ack)
        else:
            self._acked(t_send, lat, user, score, sid, kind, msg)
        self._refill(client)

    def _acked(
        self, t_send: float, lat: float, user: str, score: int, sid: str, kind: int, msg: dict[str, Any]
    ) -> None:
        dup = bool(msg.get("duplicate"))
        if self.recording:
            self.ack_lat.append(lat)
            self.tick_lat.append(lat)
        self.acked += 1
        if self.running:
            self.acked_in_window += 1
        self.acks.append((sid, user, score, dup))
        if msg.get("session_id") not in (None, sid):
            self.errors["ack_session_id_mismatch"] += 1
        if dup:
            self.dups += 1
            if kind == 0 and sid not in self.raced:
                self.errors["unexpected_duplicate"] += 1
        else:
            value = msg.get("score")
            if isinstance(value, int) and (user, value) not in self.value_sent:
                self.value_sent[(user, value)] = t_send
            if kind == 0 and sid not in self.raced and self.rng.random() < self._replay_p:
                # The other half: a replay after the ack (a client that missed it). It must come back duplicate.
                self.deferred_retries.append(orjson.dumps((user, score, sid)))

    def _refill(self, client: Any) -> None:
        if not self.running:
            return
        if self.cfg.batch or self.cfg.read:  # batches carry their replays along
            if self.cfg.rate <= 0:
                while self._capacity(client) > 0:
                    self._issue(client)
            return
        while self.deferred_retries and self._capacity(client) > 0:
            user, score, sid = orjson.loads(self.deferred_retries.pop())
            self._send_one(client, (user, score, sid))
        if self.cfg.rate <= 0:
            while self._capacity(client) > 0:
                self._issue(client)

    def _capacity(self, client: Any) -> int:
        if self.cfg.transport == "ws":
            if not client.open:
                return 0
            return self.cfg.inflight - client.inflight
        if client.lost:
            return 0
        return self.cfg.inflight - client.inflight

    def _on_submit_ws_message(self, client: WSClient, payload: bytes) -> None:
        self.msgs_in += self.running
        msg = orjson.loads(payload)
        t = msg.get("type")
        if t == "ack":
            client.inflight -= 1
            self._on_ack(msg.get("ref"), msg, client)
        elif t == "error":
            ref = msg.get("ref")
            if ref in self.pending:
                client.inflight -= 1
                self.pending.pop(ref, None)
                self.batch_meta.pop(ref, None)
            self.errors[f"ws_error:{msg.get('code')}"] += 1
            self._refill(client)
        elif t == "auth":
            pass
        else:
            self.errors[f"unexpected_frame:{t}"] += 1

    def _on_close(self, client: WSClient, code: int) -> None:
        if not self.stopping:
            self.closes[f"{client.role}:{code}"] += 1
        if client.role == "submit":
            # Whatever was in flight on this socket will never be acked: stop waiting for it.
            lost = [r for r, p in self.pending.items() if p[5] is client]
            for r in lost:
                del self.pending[r]
                self.batch_meta.pop(r, None)
            self.lost_in_flight += len(lost)

    async def _pace(self) -> None:
        """Open-loop pacing: one task per process hands due submissions to connections with capacity."""
        cfg = self.cfg
        start = time.monotonic()
        issued = 0
        rr = 0
        clients = self.sub_clients
        per_issue = cfg.batch or 1
        while self.running and clients:
            await asyncio.sleep(0.002)
            due = int((time.monotonic() - start) * cfg.rate) - issued
            if due > cfg.rate:  # more than one second behind: the offered load is not being met
                self.backlog_dropped += due - int(cfg.rate)
                issued += due - int(cfg.rate)
                due = int(cfg.rate)
            n = len(clients)
            stalled = 0
            while due > 0 and stalled < n:
                c = clients[rr % n]
                rr += 1
                if self._capacity(c) > 0:
                    if self.deferred_retries and not cfg.batch:
                        user, score, sid = orjson.loads(self.deferred_retries.pop())
                        self._send_one(c, (user, score, sid))
                    else:
                        self._issue(c)
                        issued += per_issue
                        due -= per_issue
                    stalled = 0
                else:
                    stalled += 1

    # -- watchers --------------------------------------------------------------------------------------------
    def _snapshot(self, payload: bytes, now: float, rest: bool = False) -> Any:
        key = self.snap_cache.get(payload)
        if key is None:
            msg = orjson.loads(payload)
            if not rest and msg.get("type") != "top":
                return msg
            seq = msg.get("seq")
            pairs = tuple((e["user_id"], e["score"]) for e in msg.get("entries", ()))
            key = ("s", seq) if seq is not None else ("c", hash(pairs))
            if key not in self.snap_info:
                self.snap_info[key] = (seq, now, pairs)
            if len(self.snap_cache) > 50_000:
                self.snap_cache.clear()
            self.snap_cache[payload] = key
        return key

    def _on_watch_message(self, client: WSClient, payload: bytes) -> None:
        self.msgs_in += self.running
        now = time.monotonic()
        key = self._snapshot(payload, now)
        if isinstance(key, dict):
            t = key.get("type")
            if t == "rank":
                self._on_rank(client.tag, key, now)
            elif t == "error":
                self.errors[f"ws_error:{key.get('code')}"] += 1
            elif t not in ("subscribed", "auth", "pong", "unsubscribed"):
                self.errors[f"unexpected_frame:{t}"] += 1
            return
        w = client.tag
        seq = key[1] if key[0] == "s" else None
        if seq is not None:
            if seq <= self.watch_last_seq[w]:
                self.seq_regressions += 1
            self.watch_last_seq[w] = seq
        self._delivered(w, key, now)

    def _delivered(self, w: int, key: Any, now: float) -> None:
        self.watch_count[w] += 1
        prev = self.watch_last_key[w]
        self.watch_last_key[w] = key
        if self.recording:
            self.tick_snaps += 1
            if prev is not None and prev != key:
                # Samples are grouped by (previous, current) snapshot of the socket: the changes a watcher
                # sees are what differs from the last snapshot *it* applied.
                arr = self.snap_recv.get((prev, key))
                if arr is None:
                    arr = self.snap_recv[(prev, key)] = array("d")
                arr.append(now)

    def _on_rank(self, slot: int, msg: dict[str, Any], now: float) -> None:
        self.rank_msgs += 1
        score = msg.get("score")
        prev = self.rank_last.get(slot)
        self.rank_last[slot] = score
        if self.recording and score is not None and score != prev:
            self.rank_events.append((msg.get("user_id", ""), score, now))

    def _on_poll_done(self, w: int, fut: asyncio.Future[HTTPResponse]) -> None:
        self.msgs_in += self.running
        if fut.cancelled() or (self.stopping and fut.exception() is not None):
            return  # we closed the connection ourselves at the end of the run
        exc = fut.exception()
        if exc is not None:
            self.errors[f"http_conn:{type(exc).__name__}"] += 1
            return
        resp = fut.result()
        if resp.status != 200:
            self.errors[f"http_{resp.status}"] += 1
            return
        now = time.monotonic()
        self._delivered(w, self._snapshot(resp.body, now, rest=True), now)

    async def _poll(self) -> None:
        """One task polls every watcher once per interval, spread evenly over the interval."""
        cfg = self.cfg
        n = len(self.watch_clients)
        if n == 0:
            return
        path = f"{cfg.top_path}?board={cfg.board}&limit={cfg.top_limit}"
        start = time.monotonic()
        done = 0
        while not self.stopping:
            await asyncio.sleep(0.005)
            due = int((time.monotonic() - start) / cfg.poll_interval * n) - done
            for _ in range(max(0, due)):
                w = done % n
                done += 1
                c = self.watch_clients[w]
                if c.lost or c.inflight > 0:
                    continue  # previous poll still outstanding: skip, as a browser timer would
                self.msgs_out += self.running
                fut = c.request("GET", path, None, self.headers)
                fut.add_done_callback(lambda f, w=w: self._on_poll_done(w, f))

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def _connect_all(self) -> None:
        cfg = self.cfg
        sem = asyncio.Semaphore(cfg.connect_concurrency)

        watch_at = (cfg.watch_host or cfg.host, cfg.watch_port or cfg.port)

        async def connect_ws(role: str, tag: Any, on_message: Any) -> WSClient | None:
            host, port = watch_at if role != "submit" else (cfg.host, cfg.port)
            async with sem:
                for attempt in range(3):
                    try:
                        c = await ws_connect(
                            host,
                            port,
                            cfg.ws_path,
                            on_message,
                            headers=self.headers,
                            on_close=self._on_close,
                            tag=tag,
                        )
                        c.role = role
                        return c
                    except HandshakeError as e:
                        self.errors[f"connect:http_{e.status}"] += 1
                        return None
                    except (OSError, TimeoutError) as e:
                        if attempt == 2:
                            self.errors[f"connect:{type(e).__name__}"] += 1
                            return None
                        await asyncio.sleep(0.2 * (attempt + 1))
                return None

        async def connect_http(watch: bool = False) -> HTTPClient | None:
            async with sem:
                try:
                    return await http_connect(*(watch_at if watch else (cfg.host, cfg.port)))
                except (OSError, TimeoutError) as e:
                    self.errors[f"connect:{type(e).__name__}"] += 1
                    return None

        jobs: list[Any] = []
        for _ in range(cfg.submit_conns):
            if cfg.transport == "ws" and not cfg.read:
                jobs.append(connect_ws("submit", None, self._on_submit_ws_message))
            else:
                jobs.append(connect_http())
        subs = await asyncio.gather(*jobs)
        self.sub_clients = [c for c in subs if c is not None]
        self.watch_count = [0] * cfg.watchers
        self.watch_last_seq = [-(1 << 62)] * cfg.watchers
        self.watch_last_key: list[Any] = [None] * cfg.watchers
        if cfg.watch_mode == "push":
            wjobs = [connect_ws("watch", w, self._on_watch_message) for w in range(cfg.watchers)]
        else:
            wjobs = [connect_http(watch=True) for _ in range(cfg.watchers)]
        rjobs = [connect_ws("rank", 1_000_000 + i, self._on_watch_message) for i in range(len(cfg.rank_users))]
        watchers = await asyncio.gather(*wjobs)
        ranks = await asyncio.gather(*rjobs)
        if cfg.watch_mode == "push":
            sub = {"type": "subscribe", "board": cfg.board, "topics": ["top"], "limit": cfg.top_limit}
            frame = orjson.dumps(sub)
            for c in watchers:
                if c is not None:
                    c.send(frame)
        self.watch_clients = [c for c in watchers if c is not None]
        if cfg.watch_mode == "poll":
            # keep watcher index == position for the poll loop
            self.watch_count = [0] * len(self.watch_clients)
        self.rank_clients = []
        for i, c in enumerate(ranks):
            if c is None:
                continue
            user = cfg.rank_users[i]
            c.send(orjson.dumps({"type": "subscribe", "board": cfg.board, "topics": ["rank"], "user_id": user}))
            self.rank_clients.append(c)
        # Give subscriptions a moment to be answered with their initial snapshot.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and cfg.watch_mode == "push" and self.watch_clients:
            got = sum(1 for n in self.watch_count if n > 0)
            if got >= len(self.watch_clients):
                break
            await asyncio.sleep(0.05)

    def _open_counts(self) -> dict[str, int]:
        def n_open(cs: list[Any]) -> int:
            return sum(1 for c in cs if (c.open if isinstance(c, WSClient) else not c.lost))

        return {
            "submit": n_open(self.sub_clients),
            "watch": n_open(self.watch_clients),
            "rank": n_open(getattr(self, "rank_clients", [])),
        }

    async def run(self) -> None:
        cfg = self.cfg
        await self._connect_all()
        self.queue.put(("ready", cfg.index, self._open_counts(), dict(self.errors)))
        poll_task = None
        if cfg.watch_mode == "poll" and self.watch_clients:
            poll_task = asyncio.ensure_future(self._poll())
        while not self.go.is_set():
            await asyncio.sleep(0.01)
        start = self.t0.value
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        self.running = True
        self.recording = True
        pace_task = None
        if cfg.rate > 0:
            pace_task = asyncio.ensure_future(self._pace())
        else:
            for c in self.sub_clients:
                self._refill(c)
        end = start + cfg.duration
        next_tick = start + 1.0
        last_sent = last_acked = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(next_tick, end) - now)
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                lat = sorted(self.tick_lat)
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
                self.queue.put(
                    (
                        "tick",
                        cfg.index,
                        {
                            "sent": self.sent - last_sent,
                            "acked": self.acked - last_acked,
                            "p99": p99,
                            "snaps": self.tick_snaps,
                            "errors": sum(self.errors.values()),
                            "closes": sum(self.closes.values()),
                            "open": self._open_counts(),
                        },
                    )
                )
                last_sent, last_acked = self.sent, self.acked
                self.tick_lat = array("d")
                self.tick_snaps = 0
        measured_end = time.monotonic()
        self.running = False
        if pace_task is not None:
            pace_task.cancel()
        # Drain: wait for acks still in flight, then let the last pushes land.
        deadline = time.monotonic() + cfg.drain_timeout
        while (self.pending or self.reads_inflight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        unacked = len(self.pending) + self.reads_inflight
        await asyncio.sleep(cfg.settle)
        self.recording = False
        if poll_task is not None:
            poll_task.cancel()
        self.stopping = True
        for c in [*self.sub_clients, *self.watch_clients, *getattr(self, "rank_clients", [])]:
            c.close()
        await asyncio.sleep(0.2)
        result = {
            "index": cfg.index,
            "measured": measured_end - start,
            "sent": self.sent,
            "retries_sent": self.retries_sent,
            "acked": self.acked,
            "acked_in_window": self.acked_in_window,
            "msgs_in_window": self.msgs_in + self.msgs_out,
            "dups": self.dups,
            "unacked": unacked,
            "lost_in_flight": self.lost_in_flight,
            "backlog_dropped": self.backlog_dropped,
            "ack_lat": self.ack_lat,
            "acks": self.acks,
            "sent_sids": self.sent_sids,
            "value_sent": self.value_sent,
            "errors": dict(self.errors),
            "closes": dict(self.closes),
            "snap_info": self.snap_info,
            "snap_recv": dict(self.snap_recv),
            "watch_count": self.watch_count[: len(self.watch_clients)],
            "seq_regressions": self.seq_regressions,
            "rank_msgs": self.rank_msgs,
            "rank_events": self.rank_events,
            "open_at_end": self._open_counts(),
        }
        self.queue.put(("result", cfg.index, result))


def worker_main(cfg: WorkerConfig, queue: Any, go: Any, t0: Any) -> None:
    """Process entry point (multiprocessing target)."""
    raise_nofile()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        run = asyncio.run
    try:
        run(Worker(cfg, queue, go, t0).run())
    except BaseException as e:
        queue.put(("failed", cfg.index, f"{type(e).__name__}: {e}"))
        raise
