"""``python -m loadtest.nakama``: the same closed-loop REST load against a Nakama server, for side-by-side runs.

Untested against a real Nakama here (the benchmark machine runs no container engine); it speaks Nakama's public
REST API as its API definition describes it, and the test suite checks it against a stand-in. See
docs/benchmarks.md, section 9, for the whole recipe (Nakama on the same Postgres, a runtime module that creates
the leaderboard).

Each client is one player: it authenticates a device once (``POST /v2/account/authenticate/device``, HTTP Basic
auth with the server key), keeps one keep-alive connection and one request in flight, and repeats its operation:

- ``write``: ``POST /v2/leaderboard/{id}`` ``{"score": "N"}`` with its session token (its own record);
- ``top``: ``GET /v2/leaderboard/{id}?limit=10``;
- ``rank``: ``GET /v2/leaderboard/{id}?owner_ids={its user id}&limit=1`` (the record comes back in
  ``owner_records``, with its ``rank``).

CPU per acknowledged operation is measured as in ``python -m loadtest`` (``procstat``, over the measured window).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from loadtest.analysis import summarize
from loadtest.runner import WindowCpu
from loadtest.wire import HTTPClient, HTTPResponse, http_connect


def _user_id(token: str) -> str:
    """The ``uid`` claim of a Nakama session token (a JWT); read, not verified."""
    payload = token.split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["uid"])


class Client:
    def __init__(self, conn: HTTPClient, token: str, user_id: str) -> None:
        self.conn = conn
        self.headers = {"Authorization": f"Bearer {token}"}
        self.user_id = user_id


async def _login(host: str, port: int, server_key: str, name: str) -> Client:
    conn = await http_connect(host, port)
    basic = base64.b64encode(f"{server_key}:".encode()).decode()
    body = orjson.dumps({"id": f"loadtest-device-{name}"})
    path = f"/v2/account/authenticate/device?create=true&username={name}"
    resp = await conn.request("POST", path, body, {"Authorization": f"Basic {basic}"})
    if resp.status != 200:
        conn.close()
        raise RuntimeError(f"device authentication for {name}: HTTP {resp.status}: {resp.body[:200]!r}")
    token = orjson.loads(resp.body)["token"]
    return Client(conn, token, _user_id(token))


async def run(
    url: str,
    *,
    op: str,
    board: str,
    clients: int = 100,
    duration: float = 10.0,
    server_key: str = "defaultkey",
    server_pids: list[int] | None = None,
    postgres_pids: list[int] | None = None,
    prefix: str = "lt",
) -> dict[str, Any]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 7350
    sem = asyncio.Semaphore(32)

    async def login(i: int) -> Client:
        async with sem:
            return await _login(host, port, server_key, f"{prefix}{i}")

    players = await asyncio.gather(*(login(i) for i in range(clients)))
    rng = random.Random(0)
    if op in ("top", "rank"):  # every player needs a record to read
        await asyncio.gather(*(_write(p, board, rng.randint(1, 1_000_000)) for p in players))
    lat: list[float] = []
    errors: dict[str, int] = {}
    acked = 0
    running = True
    start = time.monotonic() + 0.2
    end = start + duration
    trees = {"postgres": postgres_pids} if postgres_pids else {}
    cpu = WindowCpu(start, end, server_pids or [], trees, [os.getpid()])
    cpu.start()

    def send(p: Client) -> None:
        t = time.monotonic()
        if op == "write":
            body = orjson.dumps({"score": str(rng.randint(1, 100))})
            fut = p.conn.request("POST", f"/v2/leaderboard/{board}", body, p.headers)
        elif op == "top":
            fut = p.conn.request("GET", f"/v2/leaderboard/{board}?limit=10", None, p.headers)
        else:
            fut = p.conn.request("GET", f"/v2/leaderboard/{board}?owner_ids={p.user_id}&limit=1", None, p.headers)
        fut.add_done_callback(lambda f: done(p, t, f))

    def done(p: Client, t: float, fut: asyncio.Future[HTTPResponse]) -> None:
        nonlocal acked
        if fut.cancelled() or fut.exception() is not None:
            errors["connection"] = errors.get("connection", 0) + 1
            return
        resp = fut.result()
        now = time.monotonic()
        if resp.status != 200:
            errors[f"http_{resp.status}"] = errors.get(f"http_{resp.status}", 0) + 1
        elif start <= now <= end:
            acked += 1
            lat.append(now - t)
        if running:
            send(p)

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    for p in players:
        send(p)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    running = False
    await asyncio.sleep(0.5)
    for p in players:
        p.conn.close()
    await asyncio.to_thread(cpu.join, 5)
    return {
        "target": "nakama",
        "op": op,
        "clients": clients,
        "acked_per_s": round(acked / duration, 1),
        "latency_ms": summarize(lat),
        "errors": errors,
        "cpu": cpu.report(acked),
    }


async def _write(p: Client, board: str, score: int) -> None:
    body = orjson.dumps({"score": str(score)})
    resp = await p.conn.request("POST", f"/v2/leaderboard/{board}", body, p.headers)
    if resp.status != 200:
        raise RuntimeError(f"writing {p.user_id}'s record: HTTP {resp.status}: {resp.body[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.nakama", description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=["write", "top", "rank"])
    ap.add_argument("--url", default="http://127.0.0.1:7350")
    ap.add_argument("--board", default="bench", help="leaderboard id (created by your runtime module)")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--server-key", default="defaultkey")
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--postgres-pid", type=int, action="append", default=[])
    a = ap.parse_args(argv)
    try:
        from uvloop import run as run_loop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        run_loop = asyncio.run
    report = run_loop(
        run(a.url, op=a.op, board=a.board, clients=a.clients, duration=a.duration, server_key=a.server_key,
            server_pids=a.server_pid, postgres_pids=a.postgres_pid)
    )  # fmt: skip
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
