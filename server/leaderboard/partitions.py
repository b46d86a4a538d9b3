"""The submission log's monthly partitions (sql/006): created ahead of time, dropped past the retention.

Every serving process keeps the current month and the next MONTHS_AHEAD partitioned (`run`, at start-up and then
hourly); `leaderboard maintain` (cron) does the same, then applies LEADERBOARD_LOG_RETENTION_MONTHS (`maintain`).
Both go through `lb_log_partitions` (sql/006), which serialises them and moves rows that landed in the DEFAULT
partition into their month. docs/operations.md, "The submission log", says what is kept and why.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

MONTHS_AHEAD = 3  # the current month and the next three always exist
AHEAD_INTERVAL_S = 3600.0  # how often a serving process checks (a month is created 3 months before it is needed)
RETRY_S = 60.0
LOCK_TIMEOUT = "5s"  # DDL waits this long for the table's lock, then gives up (rather than queue writers behind it)
DEFAULT_PARTITION = "game_sessions_default"

SQL_LOCK = "SELECT set_config('lock_timeout', $1, true), pg_advisory_xact_lock(14, 0)"
SQL_CREATE = "SELECT created, moved FROM lb_log_partitions($1)"
SQL_PARTITIONS = r"""
SELECT c.relname AS name, b[1]::timestamptz AS lo, b[2]::timestamptz AS hi,
       greatest(c.reltuples, 0)::bigint AS rows, pg_size_pretty(pg_total_relation_size(c.oid)) AS size
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
     regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS b
WHERE i.inhparent = 'game_sessions'::regclass AND b IS NOT NULL
ORDER BY lo
"""
SQL_LIMITS = """
SELECT date_trunc('month', now(), 'UTC') - make_interval(months => $1) AS cutoff, now() - $2::interval AS window_start
"""
# The live seasons that began before a time: a board with a schedule ends its season within one period, so its
# rows are kept until then; a board without one (global) never ends it, so it cannot hold the log back.
SQL_LIVE = """
SELECT id, season, season_started_at AS since, reset IS NOT NULL AS scheduled FROM leaderboards
WHERE season_started_at < $1 ORDER BY season_started_at, id
"""


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lo: datetime
    hi: datetime
    rows: int  # the planner's estimate (counting a month of the log would read it all)
    size: str

    def describe(self) -> str:
        return f"{self.name} ({self.lo:%Y-%m-%d} to {self.hi:%Y-%m-%d}, ~{self.rows} rows, {self.size})"


@dataclass(slots=True)
class Report:
    """What one maintenance run did (or, with dry_run, would do), as lines for people."""

    created: list[tuple[str, int]] = field(default_factory=list)  # (partition, rows moved out of the default)
    removed: list[Partition] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (partition, why it is past retention but kept)
    notes: list[str] = field(default_factory=list)
    verb: str = "dropped"

    def lines(self) -> list[str]:
        out = [
            f"created {name}" + (f" (moved {moved} rows out of {DEFAULT_PARTITION})" if moved else "")
            for name, moved in self.created
        ]
        out += [f"{self.verb} {p.describe()}" for p in self.removed]
        out += [f"kept {name}: {why}" for name, why in self.kept]
        out += self.notes
        return out


async def ensure(con: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, ahead: int = MONTHS_AHEAD) -> list[
    tuple[str, int]
]:  # fmt: skip
    """Create the missing partitions up to `ahead` months ahead (and the months rows in the DEFAULT partition
    belong to); (name, rows moved out of the default) for each."""
    async with con.transaction():
        await con.execute(SQL_LOCK, LOCK_TIMEOUT)
        return [(r["created"], r["moved"]) for r in await con.fetch(SQL_CREATE, ahead)]


async def run(pool: asyncpg.Pool, interval_s: float = AHEAD_INTERVAL_S) -> None:
    """A serving process's part: the partitions ahead, now and every `interval_s`; never drops anything."""
    while True:
        wait = interval_s
        try:
            async with pool.acquire() as con:
                for name, moved in await ensure(con):
                    log.info("created log partition %s (moved %d rows out of %s)", name, moved, DEFAULT_PARTITION)
                    if moved:
                        log.warning("%d submissions were logged in %s: run `leaderboard maintain`", moved, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lock wait that timed out, Postgres away: try again soon, never give up
            log.warning("could not create the log partitions ahead (%s); retrying in %.0f s", exc, RETRY_S)
            wait = RETRY_S
        await asyncio.sleep(wait)


async def maintain(
    con: asyncpg.Connection,
    retention_months: int | None,
    window: timedelta,
    *,
    detach: bool = False,
    dry_run: bool = False,
) -> Report:
    """Partitions ahead (as `run` does), then drop (or detach) the months wholly older than `retention_months`,
    except those within the idempotency `window` and those a scheduled board's live season began in or after."""
    report = Report(
        verb=("would detach" if detach else "would drop") if dry_run else ("detached" if detach else "dropped")
    )
    if dry_run:
        report.notes.append("dry run: nothing was changed")
    else:
        report.created = await ensure(con)
    if retention_months is None:
        report.notes.append("retention: every month is kept (LEADERBOARD_LOG_RETENTION_MONTHS is not set)")
        return report
    limits = await con.fetchrow(SQL_LIMITS, retention_months, window)
    assert limits is not None
    cutoff, window_start = limits["cutoff"], limits["window_start"]
    old = [Partition(**r) for r in await con.fetch(SQL_PARTITIONS) if r["hi"] <= cutoff]
    unscheduled: dict[str, datetime] = {}
    for p in old:
        live = await con.fetch(SQL_LIVE, p.hi)
        scheduled = [r for r in live if r["scheduled"]]
        if p.hi > window_start:
            report.kept.append((p.name, f"within the idempotency window ({window.days} days)"))
        elif scheduled:
            r = scheduled[0]
            report.kept.append(
                (p.name, f"board {r['id']!r} is in season {r['season']} since {r['since']:%Y-%m-%d} (it has a reset "
                         f"schedule: the month is dropped once that season has ended)")
            )  # fmt: skip
        else:
            unscheduled.update((r["id"], r["since"]) for r in live)
            if not dry_run:
                await _remove(con, p.name, detach)
            report.removed.append(p)
    if unscheduled:
        names = ", ".join(sorted(unscheduled))
        report.notes.append(
            f"note: the live season of {names} (no reset schedule) began before the months removed: their board "
            f"values are unchanged, but a recompute from the log can only use the months that remain"
        )
    if not old:
        report.notes.append(f"retention: no month is older than {retention_months} months")
    return report


async def _remove(con: asyncpg.Connection, name: str, detach: bool) -> None:
    """One month out, in its own transaction (what was removed stays removed if a later one times out)."""
    async with con.transaction():
        await con.execute(SQL_LOCK, LOCK_TIMEOUT)
        ident = '"' + name.replace('"', '""') + '"'
        if detach:
            await con.execute(f"ALTER TABLE game_sessions DETACH PARTITION {ident}")
        else:
            await con.execute(f"DROP TABLE {ident}")
