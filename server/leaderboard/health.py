"""What this process can reach: Postgres and Redis, probed every second, for /readyz and `status` frames.

Postgres is probed on a connection of its own, not one of the pool: under a flood every pooled connection can
be busy for seconds while Postgres answers, and a probe queued behind them would call Postgres unavailable (a
`degraded` status to every socket, /readyz 503 taking a working instance out of its load balancer exactly when
it is busiest). Concurrent probes share the one in flight, so the connection has one query at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from redis.exceptions import RedisError

from . import migrations
from .protocol import encode
from .redisconn import Client, pause

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
MEANING = {
    "postgres": "database unavailable: scores cannot be saved",
    "redis": "rank cache unavailable: reads are slower",
}


class Health:
    def __init__(self, dsn: str, redis: Client) -> None:
        self.dsn, self.redis = dsn, redis
        self.checks = {"postgres": "ok", "redis": "ok"}
        self._con: asyncpg.Connection | None = None
        self._running: asyncio.Future[dict[str, str]] | None = None  # the probe in flight

    async def probe(self) -> dict[str, str]:
        """Ask both now: {"postgres": "ok" | "unavailable: <why>", "migrations": "ok" | "pending: <names>" (when
        Postgres answered), "redis": "ok" | "unavailable: <why>"}. Joins the probe in flight, if any."""
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
            self._running.add_done_callback(self._probed)
        return await asyncio.shield(self._running)

    def _probed(self, _: asyncio.Future[dict[str, str]]) -> None:
        self._running = None

    async def _probe(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                if self._con is None or self._con.is_closed():
                    self._con = await asyncpg.connect(self.dsn, timeout=PROBE_TIMEOUT)
                await self._con.fetchval("SELECT 1")
                missing = await migrations.pending(self._con)
            checks["postgres"] = "ok"
            checks["migrations"] = "ok" if not missing else "pending: " + ", ".join(missing)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            checks["postgres"] = f"unavailable: {exc.__class__.__name__}"
            self._drop()  # (a query cut off by the timeout leaves the connection unusable)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self.redis.ping()
            checks["redis"] = "ok"
        except (RedisError, OSError, TimeoutError) as exc:
            checks["redis"] = f"unavailable: {exc.__class__.__name__}"
        return checks

    def _drop(self) -> None:
        if self._con is not None:
            self._con.terminate()
            self._con = None

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)  # (a query cut off is cancelled in Postgres)
        if self._con is not None:
            with contextlib.suppress(OSError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.wait_for(self._con.close(), PROBE_TIMEOUT)
            self._drop()

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def status(self) -> bytes:
        """The `status` frame for the last probe."""
        failing = [k for k, v in self.checks.items() if v != "ok"]
        return encode({
            "type": "status", "state": "degraded" if failing else "ok",
            "checks": {k: "ok" if v == "ok" else "unavailable" for k, v in self.checks.items()},
            "detail": "; ".join(MEANING[k] for k in failing) if failing else "all systems normal",
        })  # fmt: skip

    async def run(self, changed: Callable[[], None], interval: float = 1.0) -> None:
        """Probe forever; call `changed()` when the outcome flips."""
        while True:
            checks = {k: v for k, v in (await self.probe()).items() if k in MEANING}  # (what a status frame tells)
            was = {k: v == "ok" for k, v in self.checks.items()}
            self.checks = checks
            if {k: v == "ok" for k, v in checks.items()} != was:
                log.warning("health changed: %s", checks)
                changed()
            await pause(interval)
