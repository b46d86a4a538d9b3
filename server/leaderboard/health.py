"""What this process can reach: Postgres and Redis, probed every second, for /readyz and `status` frames."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
from redis.exceptions import RedisError

from .protocol import encode
from .redisconn import Client, pause

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
MEANING = {
    "postgres": "database unavailable: scores cannot be saved",
    "redis": "rank cache unavailable: reads are slower",
}


class Health:
    def __init__(self, pool: asyncpg.Pool, redis: Client) -> None:
        self.pool, self.redis = pool, redis
        self.checks = {"postgres": "ok", "redis": "ok"}

    async def probe(self) -> dict[str, str]:
        """Ask both now; {"postgres": "ok" | "unavailable: <why>", "redis": ...}."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self.pool.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            checks["postgres"] = f"unavailable: {exc.__class__.__name__}"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self.redis.ping()
            checks["redis"] = "ok"
        except (RedisError, OSError, TimeoutError) as exc:
            checks["redis"] = f"unavailable: {exc.__class__.__name__}"
        return checks

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
            checks = await self.probe()
            was = {k: v == "ok" for k, v in self.checks.items()}
            self.checks = checks
            if {k: v == "ok" for k, v in checks.items()} != was:
                log.warning("health changed: %s", checks)
                changed()
            await pause(interval)
