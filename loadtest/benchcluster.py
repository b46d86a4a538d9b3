"""The Redis Cluster part of ``make bench`` (issue #14): the same runs against the single-node server and
against a second ``leaderboard serve`` on a Redis Cluster of three primaries on this machine (same embedded
Postgres, a database of its own), back to back, with the Redis CPU of each shard.

``python -m loadtest.bench --cluster-only`` runs this part alone and prints its table.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from loadtest import rediscluster

# (label, scenario, options): what runs on both servers
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("submit, WebSocket pipelined 32 × 32", "submit", dict(transport="ws", conns=32, inflight=32, rate=0.0)),
    ("submit, REST 100 closed-loop", "submit", dict(transport="rest", conns=100, inflight=1, rate=0.0)),
    (
        "1000 watchers @ 2000/s",
        "watch",
        dict(transport="ws", conns=16, inflight=16, rate=2000.0, watchers=1000, rank_watchers=100),
    ),
]


def with_database(dsn: str, database: str) -> str:
    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, "/" + database, p.query, p.fragment))


async def create_database(dsn: str, name: str) -> str:
    """A new, empty database `name` on `dsn`'s server (one of that name is dropped first); its DSN."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return with_database(dsn, name)


async def drop_database(dsn: str, name: str) -> None:
    con = await asyncpg.connect(dsn, timeout=5)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


def _cpu_seconds(cluster: rediscluster.Cluster) -> dict[int, float]:
    """CPU seconds of each primary's process so far, by port."""
    out = {}
    for node in cluster.primary_nodes():
        assert node.proc is not None
        t = psutil.Process(node.proc.pid).cpu_times()
        out[node.port] = t.user + t.system
    return out


def _pubsub_ceiling(cluster: rediscluster.Cluster, subscribers: tuple[int, ...] = (1, 10, 100)) -> list[dict[str, Any]]:
    """SPUBLISH of 150-byte events (the size of a small change event) to one shard channel with N subscribed
    connections (redis-cli), pipelined by redis-benchmark: published/s and delivered/s on one shard."""
    bench_exe = shutil.which("redis-benchmark")
    if bench_exe is None:
        return []
    channel = "lb:{bench}:ev"
    node = cluster.owner(channel)
    out = []
    for n in subscribers:
        subs = [
            subprocess.Popen(
                [rediscluster.REDIS_CLI, "-p", str(node.port), "SSUBSCRIBE", channel], stdout=subprocess.DEVNULL
            )
            for _ in range(n)
        ]
        try:
            deadline = time.monotonic() + 10
            while node.cli("PUBSUB", "SHARDNUMSUB", channel).split()[-1:] != [str(n)] and time.monotonic() < deadline:
                time.sleep(0.05)
            res = subprocess.run(
                [bench_exe, "-p", str(node.port), "-n", "200000", "-P", "16", "-c", "4", "-q", "SPUBLISH", channel,
                 "x" * 150],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            per_s = float(res.split("requests per second")[0].rsplit(":", 1)[1].replace(",", ""))
            out.append({"subscribers": n, "published_per_s": round(per_s), "delivered_per_s": round(per_s * n)})
        finally:
            for p in subs:
                p.terminate()
            for p in subs:
                p.wait(10)
    return out


def _start_server(
    leaderboard: str, env: dict[str, str], data_dir: Path, port: int, repo: Path
) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "wb")
    cmd = [leaderboard, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo)


def cluster_suite(bench: Any, plan: Any, srv: Any, tmp: Path) -> dict[str, Any]:
    """`bench` is loadtest.bench (its helpers); `srv` the running single-node server."""
    why_not = rediscluster.available()
    if why_not:
        bench._log(f"skipping the Redis Cluster runs: {why_not}")
        return {"skipped": why_not}
    cluster = rediscluster.Cluster(primaries=3, root=tmp / "cluster").start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        dsn = asyncio.run(create_database(srv.pg_dsn, "lb_cluster_bench"))
        env = {**bench._clean_env(), "LEADERBOARD_DATABASE_URL": dsn, "LEADERBOARD_REDIS_URL": cluster.url}
        port = bench._free_port()
        proc = _start_server(bench.LEADERBOARD, env, tmp / "cluster-server", port, bench.REPO)
        deadline = time.monotonic() + 120
        while bench._http_status(port, "/readyz") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the cluster server did not become ready: see " + str(tmp / "cluster-server"))
            time.sleep(0.3)
        out = subprocess.run(
            [bench.LEADERBOARD, "keys", "create", "--role", "admin", "--name", "bench"],
            capture_output=True, text=True, env=env, cwd=bench.REPO, check=True,
        )  # fmt: skip
        key = out.stdout.strip().splitlines()[-1]
        primaries = [n.proc.pid for n in cluster.primary_nodes() if n.proc is not None]
        curl = f"http://127.0.0.1:{port}"
        bench._log(f"cluster server pid {proc.pid} on {curl}; redis cluster {cluster.url} (primaries {primaries})")
        pid_of = {n.port: n.proc.pid for n in cluster.primary_nodes() if n.proc is not None}
        rows = []
        for i, (label, scenario, opts) in enumerate(RUNS):
            kw: dict[str, Any] = dict(duration=plan.hot_duration, procs=2, retry_fraction=0.01, users=10_000, **opts)
            # a fresh board per run; in the cluster, the runner's Redis CPU is that of the board's shard alone
            board = f"bench-cluster-{i}-{secrets.token_hex(3)}"
            owner = cluster.owner(f"lb:{{{board}}}:z").port
            for target, url, k, pid, backends in (
                ("single Redis", srv.url, srv.admin_key, srv.proc.pid, srv.backends()),
                ("Redis Cluster (3 primaries)", curl, key, proc.pid,
                 {"postgres_pids": srv.backends()["postgres_pids"], "redis_pids": [pid_of[owner]]}),
            ):  # fmt: skip
                before = _cpu_seconds(cluster)
                started = time.monotonic()
                r = bench._run(
                    f"{target}: {label}",
                    bench._cmd(url, scenario, board=board, **kw),
                    url=url, key=k, scenario=scenario, board=board, server_pids=[pid], **backends, **kw,
                )  # fmt: skip
                r["target"], r["label"] = target, label
                if url == curl:
                    after, took = _cpu_seconds(cluster), time.monotonic() - started
                    r["shard"] = owner
                    # the other shards over the whole run (seeding included): what they do meanwhile is idle work
                    r["other_shards_percent_of_one_core"] = [
                        round(100 * (after[p] - b) / took, 1) for p, b in before.items() if p != owner and p in after
                    ]
                rows.append(r)
        bench._log("sharded pub/sub ceiling of one shard")
        return {"runs": rows, "primaries": len(primaries), "pubsub": _pubsub_ceiling(cluster)}
    finally:
        if proc is not None:
            bench.stop_proc(proc)
        cluster.stop()


def format_rows(result: dict[str, Any]) -> str:
    """A markdown table: one line per run and target."""
    if "skipped" in result:
        return f"Redis Cluster runs skipped: {result['skipped']}\n"
    lines = [
        "| run | Redis | acked/s | ack p50 / p99 ms | push p50 / p99 ms | Redis CPU, % of a core (per acked op) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        s, w = r["submissions"], r["watch"]
        a = s["ack_latency_ms"]
        p = w.get("push_latency_ms") or {}
        push = f"{_n(p.get('p50'))} / {_n(p.get('p99'))}" if p else "-"
        cpu = r.get("cpu", {}).get("redis", {})
        shards = f"{_n(cpu.get('percent_of_one_core'))} ({_n(cpu.get('us_per_op'))} µs/op)"
        if "shard" in r:
            shards += " / others " + " / ".join(f"{c}" for c in r["other_shards_percent_of_one_core"])
        lines.append(
            f"| {r['label']} | {r['target']} | {_n(s['acked_per_s'])} | {_n(a['p50'])} / {_n(a['p99'])} | {push} "
            f"| {shards} |"
        )
    lines.append("")
    lines.append(
        "In the cluster the first figure is the shard that holds the run's board (one board lives in one slot, "
        "so on one shard), then the other two shards."
    )
    if result.get("pubsub"):
        lines.append("")
        lines.append(
            "Sharded pub/sub on one shard (one primary, one core at most): `SPUBLISH` of 150-byte events to one "
            "channel, pipelined by `redis-benchmark`, with N connections subscribed (`redis-cli SSUBSCRIBE`, on "
            "the same 2 cores):"
        )
        lines.append("")
        lines.append("| subscribed connections | published/s | delivered messages/s |")
        lines.append("| --- | --- | --- |")
        for p in result["pubsub"]:
            lines.append(f"| {p['subscribers']} | {_n(p['published_per_s'])} | {_n(p['delivered_per_s'])} |")
    return "\n".join(lines) + "\n"


def _n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)
