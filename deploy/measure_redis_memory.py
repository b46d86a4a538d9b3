#!/usr/bin/env python3
"""Measure Redis memory per board member with the structures the service uses (docs/operations.md).

Loads N members (default 1,000,000) into one board of a scratch Redis database, structure by structure:

    lb:{board}:z  sorted set  user_id -> sort key   (member like player-00001234, score = -value)
    lb:{board}:v  hash        user_id -> version     (small integer)
    lb:{board}:n  hash        user_id -> display name (~12 characters)

and reports, per structure, MEMORY USAGE of the key (exact, unaffected by other clients of a shared
server) and the INFO memory `used_memory` delta (includes allocator overhead; noisy if other clients
write at the same time), plus bytes per member. The database is FLUSHDB'd afterwards; the script refuses
to touch a database that is not empty.

    python deploy/measure_redis_memory.py --url redis://127.0.0.1:6379 --db 14 --members 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

STRUCTURES = ("z", "v", "n")
DESCRIPTIONS = {
    "z": "sorted set user_id -> sort key",
    "v": "hash user_id -> version",
    "n": "hash user_id -> display name",
}


def _used_memory(r: redis.Redis) -> int:
    info: dict[str, Any] = r.info("memory")
    return int(info["used_memory"])


def _settle(r: redis.Redis) -> int:
    # Let lazy frees and the allocator settle a little so that deltas are comparable.
    time.sleep(0.5)
    return _used_memory(r)


def load(r: redis.Redis, board: str, structure: str, members: int, batch: int, seed: int) -> None:
    rnd = random.Random(seed)
    key = f"lb:{{{board}}}:{structure}"
    pipe = r.pipeline(transaction=False)
    for start in range(0, members, batch):
        chunk = range(start, min(start + batch, members))
        if structure == "z":
            # desc board: sort key = -value; values up to a billion points.
            pipe.zadd(key, {f"player-{i:08d}": -rnd.randrange(0, 1_000_000_000) for i in chunk})
        elif structure == "v":
            pipe.hset(key, mapping={f"player-{i:08d}": rnd.randrange(1, 500) for i in chunk})
        else:
            pipe.hset(key, mapping={f"player-{i:08d}": f"Player {i:06d}"[:12] for i in chunk})
        if len(pipe) >= 10:
            pipe.execute()
    pipe.execute()


def measure(url: str, db: int, members: int, board: str, batch: int, force: bool) -> dict[str, Any]:
    # A database number in the URL path would override db= in redis-py: the --db option decides.
    parts = urlsplit(url)
    r = redis.Redis.from_url(urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")), db=db)
    r.ping()
    if r.dbsize() and not force:
        raise SystemExit(f"db {db} is not empty ({r.dbsize()} keys): pick another --db (or --force)")
    r.flushdb()
    server: dict[str, Any] = r.info("server")
    listpack = r.config_get("*listpack*")
    config = {str(k): v for k, v in listpack.items() if str(k).startswith(("zset", "hash"))}
    result: dict[str, Any] = {
        "members": members,
        "redis_version": server.get("redis_version"),
        "allocator": r.info("memory").get("mem_allocator"),
        "config": config,
        "structures": {},
    }
    try:
        total_usage = 0
        total_delta = 0
        for structure in STRUCTURES:
            before = _settle(r)
            t0 = time.perf_counter()
            load(r, board, structure, members, batch, seed=STRUCTURES.index(structure) + 1)
            elapsed = time.perf_counter() - t0
            after = _settle(r)
            key = f"lb:{{{board}}}:{structure}"
            usage = int(r.memory_usage(key, samples=0) or 0)
            assert (r.zcard(key) if structure == "z" else r.hlen(key)) == members
            total_usage += usage
            total_delta += after - before
            result["structures"][key] = {
                "what": DESCRIPTIONS[structure],
                "encoding": r.object("encoding", key).decode() if r.object("encoding", key) else None,
                "memory_usage_bytes": usage,
                "used_memory_delta_bytes": after - before,
                "bytes_per_member": round(usage / members, 1),
                "load_seconds": round(elapsed, 2),
            }
        result["total"] = {
            "memory_usage_bytes": total_usage,
            "used_memory_delta_bytes": total_delta,
            "bytes_per_member": round(total_usage / members, 1),
            "mib_per_million_members": round(total_usage / members * 1_000_000 / 2**20, 1),
        }
    finally:
        r.flushdb()
        r.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--db", type=int, default=14, help="scratch database number (must be empty)")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--board", default="memtest")
    parser.add_argument("--batch", type=int, default=1000, help="members per ZADD/HSET command")
    parser.add_argument("--force", action="store_true", help="FLUSHDB a non-empty --db first")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    res = measure(args.url, args.db, args.members, args.board, args.batch, args.force)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"Redis {res['redis_version']} ({res['allocator']}), {res['members']:,} members, config {res['config']}")
    print(f"{'key':<18} {'encoding':<10} {'MEMORY USAGE':>14} {'used_memory Δ':>14} {'B/member':>9}")
    for key, s in res["structures"].items():
        print(
            f"{key:<18} {s['encoding'] or '?':<10} {s['memory_usage_bytes']:>14,} "
            f"{s['used_memory_delta_bytes']:>14,} {s['bytes_per_member']:>9}"
        )
    t = res["total"]
    print(
        f"{'total':<18} {'':<10} {t['memory_usage_bytes']:>14,} {t['used_memory_delta_bytes']:>14,} "
        f"{t['bytes_per_member']:>9}  (= {t['mib_per_million_members']} MiB per million members)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
