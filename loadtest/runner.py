"""Orchestrates one load run: create the board, start worker processes, print progress, aggregate, verify."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue as queue_mod
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil

from loadtest import analysis, procstat
from loadtest.verify import verify
from loadtest.wire import http_connect
from loadtest.worker import WorkerConfig, raise_nofile, worker_main

_QUIET = {"watchers": 0, "rank_watchers": 0, "rate": 0.0, "batch": 0}
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    # submit: durable write load only
    "submit": {**_QUIET, "conns": 8, "inflight": 8},
    # closed: 100 concurrent clients, one submission in flight each (a game server per connection)
    "closed": {**_QUIET, "conns": 100, "inflight": 1},
    # pipelined: few connections, many submissions in flight on each
    "pipelined": {**_QUIET, "conns": 32, "inflight": 32},
    # batch: submissions in batches of 100 items (POST /api/leaderboard/submit/batch or a submit frame with items)
    "batch": {**_QUIET, "conns": 8, "inflight": 2, "batch": 100},
    # read: 100 closed-loop REST clients reading top-N or a random player's rank on a seeded board
    "read": {**_QUIET, "conns": 100, "inflight": 1},
    # watch: many readers while a moderate, paced submit load runs
    "watch": {"conns": 4, "inflight": 8, "watchers": 100, "rank_watchers": 10, "rate": 1000.0, "batch": 0},
    # mixed: the full submit load and the readers at once
    "mixed": {"conns": 8, "inflight": 8, "watchers": 100, "rank_watchers": 10, "rate": 0.0, "batch": 0},
}


@dataclass
class RunOptions:
    url: str
    scenario: str = "submit"
    watch_url: str | None = None  # watchers connect here instead of `url` (another process of the deployment)
    key: str | None = None
    admin_key: str | None = None
    board: str | None = None
    transport: str = "ws"
    conns: int | None = None
    users: int = 10_000
    rate: float | None = None
    inflight: int | None = None
    batch: int | None = None  # items per submission request/frame (0 = single submissions)
    read: str = "top"  # read scenario: "top" (GET /top?limit=LIMIT) or "rank" (GET /rank/{random member})
    duration: float = 10.0
    procs: int = 2
    retry_fraction: float = 0.01
    watchers: int | None = None
    rank_watchers: int | None = None
    watch_mode: str = "push"
    poll_interval: float = 1.0
    limit: int = 10
    server_pids: list[int] = field(default_factory=list)
    postgres_pids: list[int] = field(default_factory=list)  # the postmaster: its tree's CPU is reported as Postgres
    redis_pids: list[int] = field(default_factory=list)  # its CPU is reported as Redis
    verify_dsn: str | None = None
    verify_tables: str = "core"
    out: str | None = None
    quiet: bool = False
    seed: int = 0
    keep_raw: bool = False  # return the workers' raw results under "raw" (not written to --out)

    def resolved(self) -> RunOptions:
        d = SCENARIO_DEFAULTS[self.scenario]
        o = RunOptions(**asdict(self))
        o.conns = d["conns"] if o.conns is None else o.conns
        o.watchers = d["watchers"] if o.watchers is None else o.watchers
        o.rank_watchers = d["rank_watchers"] if o.rank_watchers is None else o.rank_watchers
        o.rate = d["rate"] if o.rate is None else o.rate
        o.inflight = d["inflight"] if o.inflight is None else o.inflight
        o.batch = d["batch"] if o.batch is None else o.batch
        if self.scenario == "read":
            o.transport = "rest"
            o.batch = 0
        return o

    @property
    def unit(self) -> str:
        """What one acknowledged operation is in this run."""
        if self.scenario == "read":
            return f"read {self.read}"
        return "batch item" if self.batch else "submission"


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _proc_tree(pids: list[int]) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The server's own processes (the pids and their same-program children, e.g. uvicorn workers) and the
    other children (an embedded Valkey), so the report can tell the app's CPU from its backends'."""
    own: list[psutil.Process] = []
    other: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            own.append(p)
            exe = p.exe()
            for c in p.children(recursive=True):
                try:
                    (own if c.exe() == exe else other).append(c)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
    return own, other


def _cpu_rss_of(procs: list[psutil.Process]) -> tuple[float, int]:
    cpu = 0.0
    rss = 0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    return cpu, rss


def _cpu_rss(pids: list[int]) -> tuple[float, int]:
    return _cpu_rss_of(_proc_tree(pids)[0])


class ServerSampler(threading.Thread):
    """Samples the server's CPU (all its processes) and RSS once per second."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, float, int]] = []  # (t, cpu % of one core, rss bytes)
        self._stop_evt = threading.Event()

    def run(self) -> None:
        last_t = time.monotonic()
        last_cpu, _ = _cpu_rss(self.pids)
        while not self._stop_evt.wait(1.0):
            now = time.monotonic()
            cpu, rss = _cpu_rss(self.pids)
            self.samples.append((now, 100.0 * (cpu - last_cpu) / (now - last_t), rss))
            last_t, last_cpu = now, cpu

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=3)


class WindowCpu(threading.Thread):
    """Reads every process group's CPU seconds (``procstat``) at the measured window's start and end."""

    def __init__(self, start: float, end: float, server: list[int], trees: dict[str, list[int]], gen: list[int]):
        super().__init__(daemon=True)
        self.start_t, self.end_t = start, end
        self.args = (server, trees, gen)
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.window = 0.0

    def run(self) -> None:
        time.sleep(max(0.0, self.start_t - time.monotonic()))
        t0 = time.monotonic()
        self.first = procstat.sample(*self.args)
        time.sleep(max(0.0, self.end_t - time.monotonic()))
        self.last = procstat.sample(*self.args)
        self.window = time.monotonic() - t0

    def report(self, ops: int) -> dict[str, Any]:
        """CPU µs per acknowledged operation and % of one core, per group, over the window."""
        server, trees, _ = self.args
        names = ["generator", *trees]
        if server:
            names += ["server", "server_other"]
        out: dict[str, Any] = {"ops": ops, "window_s": round(self.window, 3)}
        if not self.last:
            return out
        for name in names:
            cpu = self.last[name] - self.first[name]
            out[name] = {
                "us_per_op": round(1e6 * cpu / ops, 1) if ops else None,
                "cpu_seconds": round(cpu, 3),
                "percent_of_one_core": round(100 * cpu / self.window, 1) if self.window else None,
            }
        return out


async def probe_batch(host: str, port: int, key: str | None, transport: str) -> str | None:
    """None if the target takes batch submissions, else the note to report (see ``batch.unsupported_note``)."""
    from loadtest import batch as batch_wire
    from loadtest.wire import ws_connect

    item = {"user_id": "probe", "score": 1, "board": "loadtest-probe-no-such-board"}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if transport == "rest":
        c = await http_connect(host, port)
        try:
            resp = await c.request("POST", batch_wire.REST_PATH, batch_wire.encode_rest([item]), headers)
        finally:
            c.close()
        answer = None
        if resp.status == 200:
            answer = orjson.loads(resp.body)
        return batch_wire.unsupported_note("rest", resp.status, answer)
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_message(_c: Any, payload: bytes) -> None:
        msg = orjson.loads(payload)
        if msg.get("ref") == "probe" and not got.done():
            got.set_result(msg)

    ws = await ws_connect(host, port, "/ws", on_message, headers=headers)
    try:
        ws.send(batch_wire.encode_ws("probe", [item]))
        answer = await asyncio.wait_for(got, 10)
    finally:
        await ws.aclose()
    return batch_wire.unsupported_note("ws", None, answer)


async def seed_board(host: str, port: int, key: str | None, board: str, users: int, prefix: str = "u") -> float:
    """Give every user ``{prefix}0..{prefix}{users-1}`` an entry on ``board`` with single REST submissions
    (the shape every target serves), 16 keep-alive connections pipelining 8 each. Returns seconds taken."""
    import random

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    rng = random.Random(board)
    t = time.monotonic()
    conns = [await http_connect(host, port) for _ in range(16)]
    try:

        async def one_conn(i: int) -> None:
            c = conns[i]
            for start in range(i * 8, users, 16 * 8):
                futs = []
                for u in range(start, min(start + 8, users)):
                    body = orjson.dumps({"user_id": f"{prefix}{u}", "score": rng.randint(1, 1_000_000), "board": board})
                    futs.append(c.request("POST", "/api/leaderboard/submit", body, headers))
                for resp in await asyncio.gather(*futs):
                    if resp.status != 200:
                        raise RuntimeError(f"seeding {board}: HTTP {resp.status}: {resp.body[:200]!r}")

        await asyncio.gather(*(one_conn(i) for i in range(16)))
    finally:
        for c in conns:
            c.close()
    return time.monotonic() - t


async def create_board(host: str, port: int, key: str | None, board: str) -> int:
    c = await http_connect(host, port)
    try:
        body = orjson.dumps({"id": board, "title": board, "sort": "desc", "operator": "incr"})
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = await c.request("POST", "/api/leaderboards", body, headers)
        if resp.status not in (200, 201, 409):
            raise RuntimeError(f"creating board {board!r}: HTTP {resp.status}: {resp.body[:300]!r}")
        return resp.status
    finally:
        c.close()


async def fetch_top(host: str, port: int, board: str, limit: int = 100) -> list[dict[str, Any]]:
    c = await http_connect(host, port)
    try:
        resp = await c.request("GET", f"/api/leaderboard/top?board={board}&limit={limit}")
        if resp.status != 200:
            raise RuntimeError(f"GET top: HTTP {resp.status}")
        entries: list[dict[str, Any]] = orjson.loads(resp.body)["entries"]
        return entries
    finally:
        c.close()


def _log(opts: RunOptions, msg: str) -> None:
    if not opts.quiet:
        print(msg, file=sys.stderr, flush=True)


def run(opts_in: RunOptions) -> dict[str, Any]:
    """Run one scenario end to end; returns the report dict (also written to ``opts.out`` if set)."""
    opts = opts_in.resolved()
    assert opts.conns is not None and opts.watchers is not None and opts.rank_watchers is not None
    assert opts.rate is not None and opts.inflight is not None and opts.batch is not None
    nofile = raise_nofile()
    u = urlsplit(opts.url)
    host, port = u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
    w = urlsplit(opts.watch_url or opts.url)
    watch_host, watch_port = w.hostname or "127.0.0.1", w.port or (443 if w.scheme == "https" else 80)
    if opts.batch:
        note = asyncio.run(probe_batch(host, port, opts.key, opts.transport))
        if note is not None:
            _log(opts, f"skipped: {note}")
            return {"scenario": opts.scenario, "skipped": note, "options": _public_options(opts)}
    board = opts.board or f"bench-{secrets.token_hex(4)}"
    status = asyncio.run(create_board(host, port, opts.admin_key or opts.key, board))
    if status == 409 and not opts.board:
        raise RuntimeError(f"fresh board {board} already exists")
    _log(opts, f"board {board} ({'created' if status != 409 else 'existing'}); nofile limit {nofile}")
    seeded_s = None
    if opts.scenario == "read" and status != 409:
        seeded_s = asyncio.run(seed_board(host, port, opts.admin_key or opts.key, board, opts.users))
        _log(opts, f"seeded {opts.users} members in {seeded_s:.1f}s")

    procs_n = max(1, opts.procs)
    conns = _split(opts.conns, procs_n)
    watchers = _split(opts.watchers, procs_n)
    rank_users = [f"u{i % opts.users}" for i in range(opts.rank_watchers)]
    rank_split = _split(len(rank_users), procs_n)
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    go = ctx.Event()
    t0 = ctx.Value("d", 0.0)
    cfgs = []
    ri = 0
    for i in range(procs_n):
        rate_i = opts.rate * conns[i] / opts.conns if opts.conns else 0.0
        cfgs.append(
            WorkerConfig(
                index=i,
                host=host,
                port=port,
                key=opts.key,
                board=board,
                watch_host=watch_host,
                watch_port=watch_port,
                transport=opts.transport,
                submit_conns=conns[i],
                batch=opts.batch,
                read=opts.read if opts.scenario == "read" else "",
                rate=rate_i,
                inflight=opts.inflight,
                users=opts.users,
                retry_fraction=0.0 if opts.scenario == "read" else opts.retry_fraction,
                watchers=watchers[i],
                rank_users=rank_users[ri : ri + rank_split[i]],
                watch_mode=opts.watch_mode,
                poll_interval=opts.poll_interval,
                top_limit=opts.limit,
                duration=opts.duration,
                seed=opts.seed,
            )
        )
        ri += rank_split[i]
    server_rss0 = _cpu_rss(opts.server_pids)[1] if opts.server_pids else None
    workers = [ctx.Process(target=worker_main, args=(c, q, go, t0), daemon=True) for c in cfgs]
    for w in workers:
        w.start()
    ready: dict[int, Any] = {}
    connect_errors: list[dict[str, int]] = []
    t_connect = time.monotonic()
    deadline = t_connect + 60 + opts.watchers / 100
    failures: list[str] = []
    while len(ready) < procs_n and time.monotonic() < deadline:
        try:
            msg = q.get(timeout=0.5)
        except queue_mod.Empty:
            dead = [w for w in workers if w.exitcode is not None]
            if dead:
                failures.append(f"worker exited with code {dead[0].exitcode} before it was ready")
                break
            continue
        if msg[0] == "ready":
            ready[msg[1]] = msg[2]
            connect_errors.append(msg[3])
        elif msg[0] == "failed":
            failures.append(msg[2])
            break
    if len(ready) < procs_n:
        for w in workers:
            w.kill()
        raise RuntimeError(f"workers did not get ready: {failures or 'timeout'}")
    open_before = {k: sum(r[k] for r in ready.values()) for k in ("submit", "watch", "rank")}
    _log(opts, f"connected in {time.monotonic() - t_connect:.1f}s: {open_before}")
    idle: dict[str, Any] = {}
    if opts.server_pids:
        time.sleep(1.0)
        rss_idle = _cpu_rss(opts.server_pids)[1]
        sockets = sum(open_before.values())
        idle = {
            "server_rss_before_bytes": server_rss0,
            "server_rss_connected_idle_bytes": rss_idle,
            "sockets": sockets,
            "rss_per_connection_bytes": (rss_idle - server_rss0) / sockets if sockets and server_rss0 else None,
        }
    sampler = ServerSampler(opts.server_pids) if opts.server_pids else None
    if sampler:
        sampler.start()
    machine0 = psutil.cpu_times()
    start = time.monotonic() + 0.2
    trees = {"postgres": opts.postgres_pids} if opts.postgres_pids else {}
    if opts.redis_pids:
        trees["redis"] = opts.redis_pids
    gen_pids = [os.getpid(), *(w.pid for w in workers if w.pid)]
    window_cpu = WindowCpu(start, start + opts.duration, opts.server_pids, trees, gen_pids)
    window_cpu.start()
    t0.value = start
    go.set()
    results: dict[int, dict[str, Any]] = {}
    ticks: dict[int, list[dict[str, Any]]] = {}
    tick_no: dict[int, int] = {}
    machine1 = None
    while len(results) < procs_n:
        try:
            msg = q.get(timeout=opts.duration + 60)
        except queue_mod.Empty:
            break
        kind, idx, payload = msg
        if kind == "tick":
            n = tick_no.get(idx, 0) + 1
            tick_no[idx] = n
            ticks.setdefault(n, []).append(payload)
            if len(ticks[n]) == procs_n:
                _progress(opts, n, ticks.pop(n))
        elif kind == "result":
            if machine1 is None:
                machine1 = psutil.cpu_times()
            results[idx] = payload
        elif kind == "failed":
            failures.append(payload)
            break
    if sampler:
        sampler.stop()
    window_cpu.join(timeout=opts.duration + 5)
    for w in workers:
        w.join(timeout=10)
        if w.is_alive():
            w.kill()
    if failures or len(results) < procs_n:
        raise RuntimeError(f"workers failed: {failures or 'timeout'}")
    res = [results[i] for i in sorted(results)]
    report = _report(opts, board, res, open_before, idle, sampler)
    report["seeded_s"] = round(seeded_s, 2) if seeded_s is not None else None
    cpu = window_cpu.report(sum(r["acked_in_window"] for r in res))
    msgs = sum(r["msgs_in_window"] for r in res)
    if "generator" in cpu and msgs:
        # every frame or HTTP message the generator sent or received in the window: what its clients cost
        cpu["generator"]["messages"] = msgs
        cpu["generator"]["us_per_message"] = round(1e6 * cpu["generator"]["cpu_seconds"] / msgs, 2)
    report["cpu"] = cpu
    assert machine1 is not None
    busy = (sum(machine1) - machine1.idle - machine1.iowait) - (sum(machine0) - machine0.idle - machine0.iowait)
    report["generator"]["machine_cpu_busy_percent_of_all_cores"] = round(
        100 * busy / (sum(machine1) - sum(machine0) or 1), 1
    )
    report["generator"]["cpu_avg_percent_of_one_core"] = cpu.get("generator", {}).get("percent_of_one_core")
    if opts.server_pids:
        report["server"]["cpu_avg_percent_of_one_core"] = cpu.get("server", {}).get("percent_of_one_core")
    if opts.verify_dsn and opts.scenario != "read":
        top = asyncio.run(fetch_top(host, port, board)) if opts.verify_tables == "core" else None
        report["verify"] = asyncio.run(verify(opts.verify_dsn, board, res, opts.verify_tables, top))
    if opts.out:
        with open(opts.out, "wb") as f:
            f.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if not opts.quiet:
        print(format_table(report))
    if opts.keep_raw:
        report["raw"] = res
    return report


def _public_options(opts: RunOptions) -> dict[str, Any]:
    return {k: v for k, v in asdict(opts).items() if k not in ("key", "admin_key", "verify_dsn")}


def _progress(opts: RunOptions, n: int, ticks: list[dict[str, Any]]) -> None:
    p99s = [t["p99"] for t in ticks if t["p99"] is not None]
    opened = {k: sum(t["open"][k] for t in ticks) for k in ("submit", "watch", "rank")}
    _log(
        opts,
        f"[{n:3d}s] sent {sum(t['sent'] for t in ticks):6d}/s  acked {sum(t['acked'] for t in ticks):6d}/s  "
        f"ack p99 {max(p99s) * 1000 if p99s else float('nan'):7.1f} ms  "
        f"snapshots {sum(t['snaps'] for t in ticks):7d}/s  errors {sum(t['errors'] for t in ticks)}  "
        f"closes {sum(t['closes'] for t in ticks)}  open {opened}",
    )


def _report(
    opts: RunOptions,
    board: str,
    res: list[dict[str, Any]],
    open_before: dict[str, int],
    idle: dict[str, Any],
    sampler: ServerSampler | None,
) -> dict[str, Any]:
    import numpy as np

    acked = sum(r["acked"] for r in res)
    in_window = sum(r["acked_in_window"] for r in res)
    dups = sum(r["dups"] for r in res)
    measured = max(r["measured"] for r in res)
    lat = np.concatenate([np.frombuffer(r["ack_lat"], dtype=np.float64) for r in res])
    watch_counts = [n for r in res for n in r["watch_count"]]
    push = analysis.push_latency(res) if (opts.watchers or opts.rank_watchers) else None
    report: dict[str, Any] = {
        "scenario": opts.scenario,
        "board": board,
        "options": _public_options(opts),
        "duration_s": round(measured, 3),
        "sockets": open_before,
        # one acknowledged operation: a submission, a batch item, or a read (then "submissions" counts reads)
        "unit": opts.unit,
        "submissions": {
            "sent": sum(r["sent"] for r in res),
            "replays_sent": sum(r["retries_sent"] for r in res),
            "acked": acked,
            "acked_duplicate": dups,
            # acks received inside the measured window; in-flight acks drained afterwards are not counted
            "acked_per_s": round(in_window / measured, 1) if measured else None,
            "offered_per_s": opts.rate or None,
            "not_sent_backlog": sum(r["backlog_dropped"] for r in res),
            "unacked_at_end": sum(r["unacked"] for r in res),
            "lost_in_flight": sum(r["lost_in_flight"] for r in res),
            "ack_latency_ms": analysis.summarize(lat),
            "idempotency": analysis.idempotency_check(res),
        },
        "watch": {
            "mode": opts.watch_mode,
            "watchers": len(watch_counts),
            "snapshots_per_watcher": {
                "min": min(watch_counts) if watch_counts else None,
                "mean": round(sum(watch_counts) / len(watch_counts), 1) if watch_counts else None,
                "max": max(watch_counts) if watch_counts else None,
            },
            "seq_regressions": sum(r["seq_regressions"] for r in res),
            "rank_notifications": sum(r["rank_msgs"] for r in res),
            "push_latency_ms": push["top"] if push else None,
            "rank_push_latency_ms": push["rank"] if push else None,
            "snapshots_distinct": push["snapshots_distinct"] if push else None,
            "changes_unattributed": push["changes_unattributed"] if push else None,
        },
        "errors": analysis.merge_counters([r["errors"] for r in res]),
        "closes": analysis.merge_counters([r["closes"] for r in res]),
        "generator": {"procs": len(res), "machine_cores": os.cpu_count()},
    }
    if sampler is not None:
        cpu = [s[1] for s in sampler.samples]
        rss = [s[2] for s in sampler.samples]
        report["server"] = {
            "pids": opts.server_pids,
            "cpu_max_percent_of_one_core": round(max(cpu), 1) if cpu else None,
            "rss_max_bytes": max(rss) if rss else None,
            "samples": [(round(s[0] - sampler.samples[0][0], 2), round(s[1], 1), s[2]) for s in sampler.samples],
            **idle,
        }
    return report


def fmt_number(v: Any, digits: int = 1, missing: str = "-") -> str:
    """Thousands separators, `digits` decimals for floats; `missing` for None."""
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _fmt(v: Any) -> str:
    return fmt_number(v)


def format_table(r: dict[str, Any]) -> str:
    s = r["submissions"]
    a = s["ack_latency_ms"]
    w = r["watch"]
    rows = [
        ("scenario / board", f"{r['scenario']} / {r['board']}"),
        ("duration (s)", r["duration_s"]),
        ("sockets", " ".join(f"{k}={v}" for k, v in r["sockets"].items())),
        (f"acked ops/s (op = {r['unit']})", s["acked_per_s"]),
        ("offered/s (0=max)", s["offered_per_s"] or "max"),
        ("sent / acked / duplicates", f"{s['sent']:,} / {s['acked']:,} / {s['acked_duplicate']:,}"),
        (
            "ack latency p50/p95/p99/max ms",
            f"{_fmt(a['p50'])} / {_fmt(a['p95'])} / {_fmt(a['p99'])} / {_fmt(a['max'])}",
        ),
    ]
    if w["watchers"] or w["rank_notifications"]:
        p = w["push_latency_ms"] or {}
        rp = w["rank_push_latency_ms"] or {}
        spw = w["snapshots_per_watcher"]
        rows += [
            (
                f"push latency ({w['mode']}) p50/p95/p99/max ms",
                f"{_fmt(p.get('p50'))} / {_fmt(p.get('p95'))} / {_fmt(p.get('p99'))} / {_fmt(p.get('max'))}",
            ),
            ("snapshots per watcher min/mean/max", f"{_fmt(spw['min'])} / {_fmt(spw['mean'])} / {_fmt(spw['max'])}"),
            ("rank notifications", w["rank_notifications"]),
            ("rank push p50/p99 ms", f"{_fmt(rp.get('p50'))} / {_fmt(rp.get('p99'))}"),
            ("seq regressions", w["seq_regressions"]),
        ]
    rows.append(("errors", ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"))
    rows.append(("closes", ", ".join(f"{k}={v}" for k, v in r["closes"].items()) or "none"))
    if "server" in r:
        sv = r["server"]
        per = sv.get("rss_per_connection_bytes")
        rows += [
            (
                "server CPU avg/max % of a core",
                f"{_fmt(sv.get('cpu_avg_percent_of_one_core'))} / {_fmt(sv['cpu_max_percent_of_one_core'])}",
            ),
            ("server RSS max MiB", _fmt((sv["rss_max_bytes"] or 0) / 2**20)),
            ("server RSS per connection KiB", _fmt(per / 1024 if per is not None else None)),
        ]
    g = r["generator"]
    rows.append(("generator CPU avg % of a core", f"{_fmt(g['cpu_avg_percent_of_one_core'])} ({g['procs']} procs)"))
    cpu = r.get("cpu", {})
    names = [n for n in ("server", "postgres", "redis", "server_other", "generator") if n in cpu]
    if names:
        rows.append(
            (
                "CPU µs per acked op: " + " / ".join(names),
                " / ".join(_fmt(cpu[n]["us_per_op"]) for n in names),
            )
        )
        rows.append(
            ("CPU % of a core: " + " / ".join(names), " / ".join(_fmt(cpu[n]["percent_of_one_core"]) for n in names))
        )
    rows.append(("machine CPU busy % (all cores)", g.get("machine_cpu_busy_percent_of_all_cores")))
    if "verify" in r:
        v = r["verify"]
        rows.append(("verify", "OK" if v["ok"] else "FAILED: " + "; ".join(v["problems"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)
