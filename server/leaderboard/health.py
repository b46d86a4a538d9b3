"""What this process can reach: Postgres and Redis, probed every second, for /readyz and `status` frames.

Postgres is probed on a connection of its own, not one of the pool: under a flood every pooled connection can
be busy for seconds while Postgres answers, and a probe queued behind them would call Postgres unavailable (a
`degraded` status to every socket, /readyz 503 taking a working instance out of its load balancer exactly when
it is busiest). Concurrent probes share the one in flight.
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
        self._running: dict[bool, asyncio.Future[dict[str, str]]] = {}  # the probe in flight, per kind
        self._using = asyncio.Lock()  # one query at a time on the connection (the two kinds may overlap)

    async def probe(self, migrations: bool = False) -> dict[str, str]:
        """Ask both now; {"postgres": "ok" | "unavailable: <why>", "redis": ...}, and with `migrations`, also
        {"migrations": "ok" | "pending: <names>"} when Postgres answered. Joins a probe already in flight."""
        running = self._running.get(migrations)
        if running is None:
            running = self._running[migrations] = asyncio.ensure_future(self._probe(migrations))
            running.add_done_callback(lambda _: self._running.pop(migrations, None))
        return await asyncio.shield(running)

    async def _probe(self, with_migrations: bool) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(PROBE_TIMEOUT), self._using:
                if self._con is None or self._con.is_closed():
                    self._con = await asyncpg.connect(self.dsn, timeout=PROBE_TIMEOUT)
                await self._con.fetchval("SELECT 1")
                missing = await migrations.pending(self._con) if with_migrations else []
            checks["postgres"] = "ok"
            if with_migrations:
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
        running = list(self._running.values())
        for probe in running:
            probe.cancel()
        await asyncio.gather(*running, return_exceptions=True)  # (a query cut off here is cancelled in Postgres)
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
            checks = await self.probe()
            was = {k: v == "ok" for k, v in self.checks.items()}
            self.checks = checks
            if {k: v == "ok" for k, v in checks.items()} != was:
                log.warning("health changed: %s", checks)
                changed()
            await pause(interval)
