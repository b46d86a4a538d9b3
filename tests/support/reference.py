"""The ranking contract (docs/protocol.md) as a pure model: operators, competition ranks, percentiles.

Written independently of leaderboard/ranking.py, so that a bug there fails against this model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_VALUE = 2**53 - 1


def apply_op(operator: str, sort: str, old: int | None, score: int) -> int:
    if operator == "decr":
        return (old or 0) - score
    if old is None:
        return score
    if operator == "incr":
        return old + score
    if operator == "set":
        return score
    assert operator == "best"
    return max(old, score) if sort == "desc" else min(old, score)


def ranked(values: Mapping[str, int], sort: str) -> list[dict[str, Any]]:
    """Competition ranking ("1224"); ties ordered by user_id byte order."""
    sign = -1 if sort == "desc" else 1
    order = sorted(values, key=lambda u: (sign * values[u], u.encode()))
    out = []
    for user in order:
        better = sum(1 for v in values.values() if (v > values[user] if sort == "desc" else v < values[user]))
        out.append({"rank": better + 1, "user_id": user, "score": values[user]})
    return out


def percentile(rank_: int, total: int) -> float:
    return round(100 * (total - rank_ + 1) / total, 2)


def recompute(operator: str, sort: str, scores: list[int]) -> int | None:
    """A player's value from its kept submissions, oldest first (None: none kept)."""
    value = None
    for score in scores:
        value = apply_op(operator, sort, value, score)
    return value
