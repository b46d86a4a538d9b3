"""Post-run correctness check against Postgres (and the served top list)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

TABLES = {
    # (sessions table, board table, board value column)
    "core": ("game_sessions", "leaderboard", "value"),
    "baseline": ("baseline_game_sessions", "baseline_leaderboard", "total_score"),
}


async def verify(
    dsn: str,
    board: str,
    results: list[dict[str, Any]],
    tables: str = "core",
    served_top: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every acked submission is in Postgres exactly once; board values == sum of committed scores per user.

    Submissions that were sent but never acked (socket lost, run drained) may or may not have committed; they are
    allowed in Postgres but must then be counted in the board value too. Postgres rows whose session_id the
    generator never sent are an error (the board is fresh per run).
    """
    sessions_t, board_t, value_c = TABLES[tables]
    sent: dict[str, tuple[str, int]] = {}
    for r in results:
        sent.update(r["sent_sids"])
    acked: set[str] = set()
    for r in results:
        for sid, _u, _s, _dup in r["acks"]:
            acked.add(sid)
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            f"SELECT session_id::text AS sid, user_id, score, count(*) OVER (PARTITION BY session_id) AS n "
            f"FROM {sessions_t} WHERE board_id = $1",
            board,
        )
        values = await con.fetch(f"SELECT user_id, {value_c} AS value FROM {board_t} WHERE board_id = $1", board)
        top = await con.fetch(
            f"SELECT user_id, {value_c} AS value FROM {board_t} WHERE board_id = $1 "
            f"ORDER BY {value_c} DESC, user_id LIMIT 100",
            board,
        )
    finally:
        await con.close()
    problems: list[str] = []
    in_pg: dict[str, tuple[str, int]] = {}
    for row in rows:
        if row["n"] != 1:
            problems.append(f"session {row['sid']} stored {row['n']} times")
        in_pg[row["sid"]] = (row["user_id"], row["score"])
    missing = [sid for sid in acked if sid not in in_pg]
    mismatched = [sid for sid in acked if sid in in_pg and in_pg[sid] != sent.get(sid)]
    foreign = [sid for sid in in_pg if sid not in sent]
    unacked_committed = sum(1 for sid in in_pg if sid not in acked and sid in sent)
    if missing:
        problems.append(f"{len(missing)} acked submissions missing from {sessions_t}, e.g. {missing[:3]}")
    if mismatched:
        problems.append(f"{len(mismatched)} stored sessions differ from what was sent, e.g. {mismatched[:3]}")
    if foreign:
        problems.append(f"{len(foreign)} sessions on the board were never sent by this run")
    expected: dict[str, int] = defaultdict(int)
    for sid, (user, score) in in_pg.items():
        if sid in sent:
            expected[user] += score
    acked_expected: dict[str, int] = defaultdict(int)
    for sid in acked:
        user, score = sent[sid]
        acked_expected[user] += score
    actual = {row["user_id"]: row["value"] for row in values}
    wrong = [u for u in expected.keys() | actual.keys() if expected.get(u, 0) != actual.get(u, 0)]
    if wrong:
        u = wrong[0]
        problems.append(
            f"{len(wrong)} users' board value != sum of their committed scores "
            f"(e.g. {u}: board {actual.get(u)} vs sum {expected.get(u)})"
        )
    not_acked_users = sum(1 for u in actual if actual[u] != acked_expected.get(u, 0))
    top_checked = 0
    if served_top is not None:
        # Redis vs Postgres through the API: every served entry has its Postgres value, and the served scores
        # are the top scores (compared as multisets so tie order does not matter).
        served_scores = sorted((e["score"] for e in served_top), reverse=True)
        pg_scores = [row["value"] for row in top[: len(served_top)]]
        bad = [e for e in served_top if actual.get(e["user_id"]) != e["score"]]
        if bad:
            problems.append(f"{len(bad)} served top entries disagree with Postgres, e.g. {bad[0]}")
        if served_scores != pg_scores:
            problems.append("served top scores differ from the Postgres top scores")
        top_checked = len(served_top)
    return {
        "ok": not problems,
        "problems": problems,
        "acked_sessions": len(acked),
        "sessions_in_pg": len(in_pg),
        "unacked_but_committed": unacked_committed,
        "users_checked": len(expected.keys() | actual.keys()),
        "users_value_differs_from_acked_sum": not_acked_users,
        "served_top_checked": top_checked,
    }
