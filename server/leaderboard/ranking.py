"""Pure ordering rules: operators, sort keys, competition ranks. No I/O; Postgres and Redis both obey these.

A board stores for each user a `value`. Its `sort_key` is `-value` on `desc` boards and `value` on `asc`
boards, so on every board *smaller sort_key is better* and ties are listed by user_id ascending. Both
stores sort by (sort_key, user_id) ascending, which is exactly Redis' ZRANGE order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Sort = Literal["desc", "asc"]
Operator = Literal["incr", "decr", "best", "set"]

MAX_VALUE = 2**53 - 1  # largest integer a Redis double (and a JS number) holds exactly


class OutOfRange(ValueError):
    """The new board value would leave ±(2^53-1)."""


def sort_key(value: int, sort: Sort) -> int:
    return -value if sort == "desc" else value


def value_of(key: int, sort: Sort) -> int:
    return -key if sort == "desc" else key


def apply(op: Operator, sort: Sort, current: int | None, score: int) -> int:
    """The board value after one submission of `score` to a user whose value is `current`."""
    if op == "decr":
        new = (current or 0) - score
    elif current is None or op == "set":
        new = score
    elif op == "incr":
        new = current + score
    elif sort == "desc":
        new = max(current, score)
    else:
        new = min(current, score)
    if not -MAX_VALUE <= new <= MAX_VALUE:
        raise OutOfRange(f"the board value would be {new}, outside ±{MAX_VALUE}")
    return new


def page_ranks(first_rank: int, offset: int, keys: Sequence[float]) -> list[int]:
    """Competition ranks of a page of entries sorted by key, given the rank of the page's first entry.

    An entry ties with the one before it (same rank) or is ranked by its position (offset + index + 1).
    """
    ranks: list[int] = []
    for i, key in enumerate(keys):
        if i == 0:
            ranks.append(first_rank)
        elif key == keys[i - 1]:
            ranks.append(ranks[-1])
        else:
            ranks.append(offset + i + 1)
    return ranks


def percentile(rank: int, total: int) -> float:
    """Share of the board (in %) ranked at or below this player: rank 1 is 100.0."""
    if total <= 0:
        return 0.0
    return round(100.0 * (total - rank + 1) / total, 2)


def crossed(followed_key: float, old_key: float | None, new_key: float) -> bool:
    """Did another player's move from old_key to new_key change whether they rank above `followed_key`?"""
    was_better = old_key is not None and old_key < followed_key
    return was_better != (new_key < followed_key)


def affected(followed: dict[str, float | None], changes: Iterable[tuple[str, float | None, float]]) -> set[str]:
    """Followed users whose rank or score may have moved, given a batch of (user, old_key, new_key) changes.

    A cheap filter before asking Redis: a user's rank moves only if someone crossed its key (see `crossed`),
    or it moved itself. Users with no entry yet (key None) are affected only by their own change.
    O((F + C) log F) for F followed users and C changes: each change marks the key interval it crossed.
    """
    hit: set[str] = set()
    ranked = sorted((key, user) for user, key in followed.items() if key is not None)
    keys = [key for key, _ in ranked]
    marks = [0] * (len(keys) + 1)
    for user, old, new in changes:
        if user in followed:
            hit.add(user)
        if old is None:  # a newcomer ranks above every key greater than its own
            lo, hi = bisect_right(keys, new), len(keys)
        elif old != new:  # keys k with min < k <= max flipped between "worse than" and "better than"
            lo, hi = bisect_right(keys, min(old, new)), bisect_right(keys, max(old, new))
        else:
            continue
        marks[lo] += 1
        marks[hi] -= 1
    running = 0
    for i, (_, user) in enumerate(ranked):
        running += marks[i]
        if running > 0:
            hit.add(user)
    return hit


# ---- what a read returns (both stores answer with these) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One entry of a listing: sort key, not value (the board's sort turns it into a score)."""

    user_id: str
    display_name: str | None
    key: int
    meta: str | None = None  # the entry's metadata as stored (JSON text), if any


@dataclass(frozen=True, slots=True)
class TopSlice:
    """A page of a board in listing order. `first_rank` is the rank of members[0] (0 when empty)."""

    seq: int
    total: int
    offset: int
    first_rank: int
    members: list[Member]

    def ranks(self) -> list[int]:
        return page_ranks(self.first_rank, self.offset, [m.key for m in self.members])


@dataclass(frozen=True, slots=True)
class Standing:
    """A player's place: their rank and the window of members around them."""

    seq: int
    total: int
    rank: int
    user_id: str
    page: TopSlice  # the window around the player (offset = its start)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a followed player stands: sort key and rank."""

    key: int
    rank: int


@dataclass(frozen=True, slots=True)
class Players:
    """Some players of a board (friends, a group) in listing order, each with its competition rank on the whole
    board; players without an entry are left out."""

    seq: int
    total: int
    ranked: list[tuple[Member, int]]
