"""Postgres' own cost of one batch: ``python -m loadtest.submitfn --dsn DSN --board B [--new] [--batches N]``.

Calls lb_submit (the function the writer calls once per group commit) directly, one batch after the other on
one connection, and reports the wall time per batch and the CPU time of that connection's backend process per
submission (from /proc/<pid>/stat: run it on the database's machine). Nothing else runs in between: this is the
SQL's cost alone, without the server, the network or other batches. Players are u0..u{users-1} (those of
`python -m loadtest ... --users N`), or new ones every batch with --new (a season's first submissions).
Commits are asynchronous here (synchronous_commit off) so that the fsync's wait does not blur the wall time; CPU
is the same either way. docs/performance.md uses it for sql/009.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

import asyncpg

from loadtest.procstat import read_stat

SUBMIT = "SELECT * FROM lb_submit($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])"


def backend_cpu_s(pid: int) -> float:
    stat = read_stat(pid)
    if stat is None:
        raise RuntimeError(f"backend {pid} is not on this machine: run this where Postgres runs")
    return stat.own


async def measure(dsn: str, board: str, size: int, batches: int, users: int, new: bool) -> tuple[float, float]:
    """(ms per batch, backend CPU µs per submission) over `batches` batches after 20 of warm-up."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("SET synchronous_commit = off")
        pid = await con.fetchval("SELECT pg_backend_pid()")

        async def one() -> float:
            players = [f"n{uuid.uuid4().hex[:16]}" if new else f"u{random.randrange(users)}" for _ in range(size)]
            args = (
                [uuid.uuid4() for _ in players], [board] * size, players,
                [random.randrange(1, 1_000_000) for _ in players], [None] * size,
            )  # fmt: skip
            started = time.perf_counter()
            async with con.transaction():
                await con.fetch(SUBMIT, *args)
            return time.perf_counter() - started

        for _ in range(20):
            await one()
        cpu = backend_cpu_s(pid)
        wall = sum([await one() for _ in range(batches)])
        return wall / batches * 1e3, (backend_cpu_s(pid) - cpu) / (batches * size) * 1e6
    finally:
        await con.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest.submitfn", description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True, help="the server's database (`leaderboard serve` prints it)")
    ap.add_argument("--board", required=True, help="an existing board")
    ap.add_argument("--batch", type=int, default=50, help="submissions per batch (the writer's at 100 clients)")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--new", action="store_true", help="new players in every batch")
    args = ap.parse_args()
    ms, us = asyncio.run(measure(args.dsn, args.board, args.batch, args.batches, args.users, args.new))
    print(f"lb_submit, batches of {args.batch}: {ms:.3f} ms per batch, backend CPU {us:.1f} µs per submission")


if __name__ == "__main__":
    main()
