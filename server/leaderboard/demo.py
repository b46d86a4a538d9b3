"""Demo traffic: simulated players submitting scores over the WebSocket, so a live board has things to show.

`leaderboard demo` creates a submit key and calls `run_demo`. Players have stable ids (`player-0042`),
generated display names, a skewed skill distribution (a clear top) and a drifting "form", so the top 10
keeps changing. Each submission carries a session_id; after a reconnect the unacknowledged ones are resent
with the same session_id, so the server applies each at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import socket
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

CLOSE_POLICY = 1008
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 10.0
REPORT_EVERY_S = 5.0
MAX_IN_FLIGHT = 256

ADJECTIVES = (
    "Amber Arctic Atomic Blazing Bold Brave Bright Cosmic Crimson Crystal Dark Dusty Electric Emerald Fierce "
    "Frosty Galactic Gentle Golden Grim Hidden Hyper Iron Jade Lucky Lunar Mighty Misty Neon Nimble Noble "
    "Obsidian Phantom Quantum Quick Quiet Rapid Rogue Royal Ruby Rusty Sapphire Shadow Silent Silver Solar "
    "Sonic Steel Stormy Swift Thunder Turbo Velvet Vivid Wild Wicked Zen"
).split()
NOUNS = (
    "Badger Bandit Bear Blade Comet Condor Coyote Dragon Falcon Ferret Fox Gecko Ghost Golem Griffin Hawk "
    "Hornet Jackal Jaguar Knight Kraken Lynx Mamba Mantis Meteor Monk Ninja Otter Owl Panda Panther Phoenix "
    "Pilot Pirate Puma Raven Rider Ronin Samurai Shark Sparrow Sphinx Spider Titan Tiger Viper Walrus Wizard "
    "Wolf Wombat Yeti"
).split()


def ws_url(url: str) -> str:
    """http(s)://host[:port][/prefix] -> ws(s)://host[:port][/prefix]/ws (a ws(s) URL is used as given)."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme in {url!r} (use http, https, ws or wss)")
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def check_reachable(url: str, timeout: float = 3.0) -> None:
    """Raise DemoError (one line, what to do) if nothing accepts connections at the server's address: the demo
    would otherwise retry forever. Once it runs, a server that goes away is retried (a restart, a deploy)."""
    parts = urlsplit(ws_url(url))
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise DemoError(
            f"no server answers at {host}:{port} ({reason}): start one first (`make run`), or give its address "
            "with --url"
        ) from None


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt))."""
    return rng.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 30)))


@dataclass
class Player:
    user_id: str
    display_name: str
    skill: float
    form: float = 1.0


class Simulation:
    """Who plays next and what they score. Deterministic for a given seed."""

    def __init__(self, players: int, seed: int | None = None) -> None:
        if players < 1:
            raise ValueError("players must be >= 1")
        self.rng = random.Random(seed)
        width = max(4, len(str(players - 1)))
        names: set[str] = set()
        self.players: list[Player] = []
        # A few "pros" of nearly equal skill far ahead of a long-tailed crowd: a clear top whose order
        # keeps changing (with `incr`, equal skill means the gaps at the top only random-walk).
        pros = set(self.rng.sample(range(players), k=min(players, max(3, min(15, players // 80)))))
        for i in range(players):
            name = self._name(names)
            skill = 100.0 * (self.rng.uniform(5.0, 5.5) if i in pros else min(4.2, self.rng.lognormvariate(0.0, 0.55)))
            self.players.append(Player(f"player-{i:0{width}d}", name, skill))
        # Better players also play more often, so the top moves while the tail trickles in.
        self._weights = [p.skill for p in self.players]

    def _name(self, taken: set[str]) -> str:
        for _ in range(20):
            name = f"{self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)}"
            if name not in taken:
                taken.add(name)
                return name
        name = f"{self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)} {self.rng.randint(2, 999)}"
        taken.add(name)
        return name

    def next_submission(self) -> tuple[Player, int]:
        """Pick a player and a game score. Form drifts (hot and cold streaks), so ranks keep changing."""
        player = self.rng.choices(self.players, weights=self._weights, k=1)[0]
        # Mean-reverting random walk of form in [0.5, 1.8].
        player.form += 0.15 * (1.0 - player.form) + self.rng.gauss(0.0, 0.12)
        player.form = min(1.8, max(0.5, player.form))
        score = player.skill * player.form * self.rng.lognormvariate(0.0, 0.35)
        return player, max(1, math.floor(score))


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    resent: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def record_latency(self, ms: float) -> None:
        self.latencies_ms.append(ms)
        if len(self.latencies_ms) > 5000:
            del self.latencies_ms[:2500]


class AuthFailed(RuntimeError):
    """The server refused the key (close 1008 or HTTP 401/403 on the upgrade)."""


class DemoError(RuntimeError):
    """A problem a retry cannot fix (for example an unknown board)."""


@dataclass
class _Pending:
    frame: dict[str, Any]
    sent_at: float


class _Connection:
    """One WebSocket that submits at `rate`/s, reconnecting with full-jitter backoff."""

    def __init__(self, idx: int, url: str, key: str, board: str, rate: float, sim: Simulation, stats: Stats) -> None:
        self.idx, self.url, self.key, self.board, self.rate = idx, url, key, board, rate
        self.sim, self.stats = sim, stats
        self.pending: dict[int, _Pending] = {}
        self.next_ref = 1
        self.rng = random.Random()
        self.fatal: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        first = True
        while not stop.is_set():
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.key}"},
                    open_timeout=10,
                    max_queue=1024,
                ) as ws:
                    if not first:
                        self.stats.reconnects += 1
                    first = False
                    attempt = 0
                    await self._session(ws, stop)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise AuthFailed(f"the server refused the key (HTTP {exc.response.status_code})") from None
                self._log(f"upgrade refused: HTTP {exc.response.status_code}")
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_POLICY:
                    raise AuthFailed(f"the server closed with 1008: {exc.rcvd.reason or 'policy'}") from None
                code = exc.rcvd.code if exc.rcvd is not None else "none"
                self._log(f"connection closed (code {code}); reconnecting")
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self._log(f"connect failed: {exc.__class__.__name__}: {exc}")
            if self.fatal is not None:
                raise self.fatal
            if stop.is_set():
                break
            delay = backoff_delay(attempt, self.rng)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        # Resend what the last socket never acknowledged; same session_id, so at most once.
        for p in list(self.pending.values()):
            p.sent_at = time.monotonic()
            await ws.send(json.dumps(p.frame))
            self.stats.resent += 1
        reader = asyncio.create_task(self._read(ws))
        try:
            interval = 1.0 / self.rate if self.rate > 0 else math.inf
            next_at = time.monotonic()
            while not stop.is_set():
                if reader.done():
                    reader.result()  # re-raise ConnectionClosed
                    return
                now = time.monotonic()
                if now < next_at:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=min(next_at - now, 0.5))
                    continue
                # Never fall more than a second behind: a slow server gets less, not a burst later.
                next_at = max(next_at + interval, now - 1.0)
                if len(self.pending) >= MAX_IN_FLIGHT:
                    await asyncio.sleep(0.01)
                    continue
                await ws.send(json.dumps(self._new_frame()))
                self.stats.sent += 1
        finally:
            reader.cancel()
            # Collects the reader's own ConnectionClosed too, so it is never logged as "never retrieved".
            await asyncio.gather(reader, return_exceptions=True)

    def _new_frame(self) -> dict[str, Any]:
        player, score = self.sim.next_submission()
        ref = self.next_ref
        self.next_ref += 1
        frame: dict[str, Any] = {
            "type": "submit",
            "ref": ref,
            "user_id": player.user_id,
            "score": score,
            "board": self.board,
            "session_id": str(uuid.uuid4()),
            "display_name": player.display_name,
        }
        self.pending[ref] = _Pending(frame, time.monotonic())
        return frame

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                continue
            ref = msg.get("ref")
            kind = msg.get("type")
            if kind == "ack" and isinstance(ref, int):
                p = self.pending.pop(ref, None)
                if p is not None:
                    self.stats.acked += 1
                    self.stats.record_latency((time.monotonic() - p.sent_at) * 1000.0)
                if msg.get("duplicate"):
                    self.stats.duplicates += 1
            elif kind == "error":
                code = str(msg.get("code"))
                self.stats.errors[code] += 1
                if isinstance(ref, int):
                    self.pending.pop(ref, None)
                if code == "not_found":
                    self.fatal = DemoError(f"board {self.board!r} does not exist: {msg.get('detail')}")
                    await ws.close()
                    return

    def _log(self, text: str) -> None:
        print(f"demo[{self.idx}]: {text}", file=sys.stderr, flush=True)


def _percentile(values: list[float], q: float) -> str:
    if not values:
        return "-"
    s = sorted(values)
    return f"{s[min(len(s) - 1, int(q * len(s)))]:.1f}ms"


async def _report(stats: Stats, sim: Simulation, stop: asyncio.Event, out: TextIO) -> None:
    last_acked, last_t = 0, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REPORT_EVERY_S)
        now = time.monotonic()
        rate = (stats.acked - last_acked) / max(1e-9, now - last_t)
        last_acked, last_t = stats.acked, now
        lat = stats.latencies_ms
        errors = ", ".join(f"{k}={v}" for k, v in sorted(stats.errors.items())) or "0"
        hottest = max(sim.players, key=lambda p: p.skill * p.form)
        print(
            f"demo: sent={stats.sent} acked={stats.acked} ({rate:.1f}/s) dup={stats.duplicates} "
            f"resent={stats.resent} reconnects={stats.reconnects} errors={errors} "
            f"ack p50={_percentile(lat, 0.5)} p99={_percentile(lat, 0.99)} "
            f"hot: {hottest.display_name} ({hottest.user_id})",
            file=out,
            flush=True,
        )


async def run_demo(
    url: str,
    key: str,
    players: int = 1000,
    rate: float = 50.0,
    board: str = "global",
    duration: float | None = None,
    connections: int = 4,
    *,
    seed: int | None = None,
    out: TextIO | None = None,
) -> None:
    """Submit realistic scores for `players` simulated players at about `rate`/s until `duration` ends."""
    if connections < 1:
        raise ValueError("connections must be >= 1")
    if rate <= 0:
        raise ValueError("rate must be > 0")
    target = ws_url(url)
    sim = Simulation(players, seed)
    stats = Stats()
    stop = asyncio.Event()
    sink = out if out is not None else sys.stdout
    print(
        f"demo: {players} players, ~{rate:g} submissions/s over {connections} socket(s) to {target} (board {board})",
        file=sink,
        flush=True,
    )
    conns = [_Connection(i, target, key, board, rate / connections, sim, stats) for i in range(connections)]
    reporter = asyncio.create_task(_report(stats, sim, stop, sink))
    tasks = [asyncio.create_task(c.run(stop)) for c in conns]
    try:
        if duration is None:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        else:
            done, _ = await asyncio.wait(tasks, timeout=duration, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
    finally:
        stop.set()
        for t in tasks:
            if not t.done():
                # Give each socket a moment to finish its current frame and close cleanly.
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(t, timeout=5)
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(reporter, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    """`python -m leaderboard.demo --url … --key …` (the CLI's `leaderboard demo` creates the key for you)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m leaderboard.demo", description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", required=True, help="a submit or admin API key")
    p.add_argument("--players", type=int, default=1000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--board", default="global")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    try:
        asyncio.run(run_demo(a.url, a.key, a.players, a.rate, a.board, a.duration, a.connections, seed=a.seed))
    except (AuthFailed, DemoError) as exc:
        raise SystemExit(f"demo: {exc}") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
