"""Command line: ``python -m loadtest --url http://HOST:PORT --key KEY {submit,watch,mixed} [options]``."""

from __future__ import annotations

import argparse
import sys

from loadtest.runner import SCENARIO_DEFAULTS, RunOptions, run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Drive a leaderboard deployment with submissions and watchers; report throughput, latency, "
        "errors and (with --verify-dsn) correctness.",
    )
    ap.add_argument("scenario", choices=sorted(SCENARIO_DEFAULTS))
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--watch-url", help="watchers connect here instead of --url (e.g. a watcher-only process)")
    ap.add_argument("--key", help="API key (submit or admin) sent as Bearer on every request and upgrade")
    ap.add_argument("--admin-key", help="key used to create the run's board (defaults to --key)")
    ap.add_argument("--board", help="use this board instead of a fresh bench-<random> one")
    ap.add_argument("--transport", choices=["ws", "rest"], default="ws")
    ap.add_argument("--conns", type=int, help="submit connections in total (default per scenario)")
    ap.add_argument("--users", type=int, default=10_000, help="distinct user ids u0..u{N-1}")
    ap.add_argument("--rate", type=float, help="offered submissions/s in total; 0 = as fast as acks allow")
    ap.add_argument("--inflight", type=int, help="requests in flight per connection (default per scenario)")
    ap.add_argument("--batch", type=int, help="items per submission request/frame, ≤ 500 (0 = single submissions)")
    ap.add_argument("--read", choices=["top", "rank"], default="top",
                    help="read scenario: GET /top?limit=LIMIT, or GET /rank/{random member}")  # fmt: skip
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--procs", type=int, default=2, help="generator processes")
    ap.add_argument(
        "--retry-fraction",
        type=float,
        default=0.01,
        help="share of submissions replayed with the same session_id (half racing, half after the ack)",
    )
    ap.add_argument("--watchers", type=int, help="sockets subscribed to the board's top-N")
    ap.add_argument("--rank-watchers", type=int, help="sockets subscribed to one player's rank each")
    ap.add_argument("--watch-mode", choices=["push", "poll"], default="push", help="poll = GET /top (baseline)")
    ap.add_argument("--poll-interval", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=10, help="top-N size for watchers")
    ap.add_argument("--server-pid", type=int, action="append", default=[], help="sample CPU/RSS (repeatable)")
    ap.add_argument("--postgres-pid", "--backend-pid", type=int, action="append", default=[],
                    help="the postmaster: its tree's CPU per op is reported as Postgres (repeatable)")  # fmt: skip
    ap.add_argument("--redis-pid", type=int, action="append", default=[], help="report this process' CPU as Redis")
    ap.add_argument("--verify-dsn", help="postgresql://… : check every acked submission after the run")
    ap.add_argument("--verify-tables", choices=["core", "baseline"], default="core")
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    opts = RunOptions(
        url=a.url,
        scenario=a.scenario,
        watch_url=a.watch_url,
        key=a.key,
        admin_key=a.admin_key,
        board=a.board,
        transport=a.transport,
        conns=a.conns,
        users=a.users,
        rate=a.rate,
        inflight=a.inflight,
        batch=a.batch,
        read=a.read,
        duration=a.duration,
        procs=a.procs,
        retry_fraction=a.retry_fraction,
        watchers=a.watchers,
        rank_watchers=a.rank_watchers,
        watch_mode=a.watch_mode,
        poll_interval=a.poll_interval,
        limit=a.limit,
        server_pids=a.server_pid,
        postgres_pids=a.postgres_pid,
        redis_pids=a.redis_pid,
        verify_dsn=a.verify_dsn,
        verify_tables=a.verify_tables,
        out=a.out,
        quiet=a.quiet,
        seed=a.seed,
    )
    report = run(opts)
    if "skipped" in report:
        print(f"skipped: {report['skipped']}")
        return 3
    if "verify" in report and not report["verify"]["ok"]:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
