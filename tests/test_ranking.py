"""ranking.py: pure ordering rules, checked against brute force."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard import ranking
from leaderboard.ranking import MAX_VALUE, OutOfRange


@pytest.mark.parametrize(
    ("op", "sort", "current", "score", "expected"),
    [
        ("incr", "desc", None, 5, 5),
        ("incr", "desc", 10, 5, 15),
        ("incr", "asc", 10, -3, 7),
        ("best", "desc", 10, 5, 10),
        ("best", "desc", 10, 50, 50),
        ("best", "asc", 10, 5, 5),
        ("best", "asc", 10, 50, 10),
        ("set", "desc", 10, 3, 3),
        ("set", "asc", None, 3, 3),
    ],
)
def test_apply_operators(
    op: ranking.Operator, sort: ranking.Sort, current: int | None, score: int, expected: int
) -> None:
    assert ranking.apply(op, sort, current, score) == expected


def test_apply_refuses_values_outside_exact_double_range() -> None:
    assert ranking.apply("incr", "desc", MAX_VALUE - 1, 1) == MAX_VALUE
    with pytest.raises(OutOfRange):
        ranking.apply("incr", "desc", MAX_VALUE, 1)
    with pytest.raises(OutOfRange):
        ranking.apply("incr", "desc", -MAX_VALUE, -1)


def test_sort_key_makes_better_smaller() -> None:
    assert ranking.sort_key(100, "desc") < ranking.sort_key(10, "desc")
    assert ranking.sort_key(10, "asc") < ranking.sort_key(100, "asc")
    assert ranking.value_of(ranking.sort_key(42, "desc"), "desc") == 42


def _competition_ranks(keys: list[int]) -> list[int]:
    return [1 + sum(1 for other in keys if other < k) for k in keys]


@given(st.lists(st.integers(-5, 5), min_size=1, max_size=30), st.data())
def test_page_ranks_match_competition_ranking(values: list[int], data: st.DataObject) -> None:
    keys = sorted(values)
    full = _competition_ranks(keys)
    offset = data.draw(st.integers(0, len(keys) - 1))
    page = keys[offset : offset + data.draw(st.integers(1, 10))]
    assert ranking.page_ranks(full[offset], offset, page) == full[offset : offset + len(page)]


def test_ties_share_a_rank_1224() -> None:
    assert ranking.page_ranks(1, 0, [-10, -7, -7, -3]) == [1, 2, 2, 4]


def test_percentile() -> None:
    assert ranking.percentile(1, 4) == 100.0
    assert ranking.percentile(4, 4) == 25.0
    assert ranking.percentile(1, 0) == 0.0


keys_st = st.one_of(st.none(), st.integers(-6, 6).map(float))


@given(
    st.dictionaries(st.sampled_from([f"u{i}" for i in range(8)]), keys_st, max_size=8),
    st.lists(
        st.tuples(st.sampled_from([f"u{i}" for i in range(10)]), keys_st, st.integers(-6, 6).map(float)),
        max_size=6,
    ),
)
def test_affected_finds_exactly_the_players_a_change_can_move(
    followed: dict[str, float | None], changes: list[tuple[str, float | None, float]]
) -> None:
    expected = {u for u, _, _ in changes if u in followed}
    for user, key in followed.items():
        if key is not None and any(o != user and ranking.crossed(key, a, b) for o, a, b in changes):
            expected.add(user)
    assert ranking.affected(followed, changes) == expected


def test_crossed_only_when_relative_order_flips() -> None:
    assert ranking.crossed(5.0, None, 3.0)  # a newcomer now ahead
    assert not ranking.crossed(5.0, None, 5.0)  # a tie is not ahead
    assert ranking.crossed(5.0, 7.0, 4.0)  # overtaken
    assert ranking.crossed(5.0, 4.0, 6.0)  # fell behind
    assert not ranking.crossed(5.0, 7.0, 6.0)  # moved, still behind
