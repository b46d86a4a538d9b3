"""Layer: collector.py: open sockets' objects are frozen out of the cyclic GC, closed sockets' cycles are
collected at the thaw (real gc, this process)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from leaderboard import observability as obs
from leaderboard.collector import Collector


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()  # as the app leaves it


def test_every_growth_sockets_opened_freeze_what_lives(thawed: None) -> None:
    c = Collector(growth=4, churn=100)
    for n in range(1, 4):
        c.opened(n)
    assert (c.freezes, gc.get_freeze_count()) == (0, 0)
    c.opened(4)
    assert c.freezes == 1 and gc.get_freeze_count() > 0
    frozen = gc.get_freeze_count()
    live = [Node() for _ in range(1000)]  # state of the next sockets
    for n in range(5, 9):
        c.opened(n)
    assert c.freezes == 2 and gc.get_freeze_count() >= frozen + 1000
    assert all(gc.is_tracked(x) for x in live)


def test_a_closed_sockets_cycles_wait_for_the_thaw_then_are_collected(thawed: None) -> None:
    c = Collector(growth=2, churn=3)
    node = Node()
    gone = weakref.ref(node)
    c.opened(1)
    c.opened(2)  # frozen, node included
    del node
    gc.collect()
    assert gone() is not None  # frozen: no collection reaches it
    c.closed_one(1)
    c.closed_one(0)
    assert c.thaws == 0 and gone() is not None
    thaws = obs.GC_THAW_SECONDS.prom.collect()[0]
    before = next(s.value for s in thaws.samples if s.name.endswith("_count"))
    c.closed_one(0)  # as many closed since the thaw as were ever open (at least churn): thaw, collect, freeze
    assert c.thaws == 1 and gone() is None
    thaws = obs.GC_THAW_SECONDS.prom.collect()[0]
    assert next(s.value for s in thaws.samples if s.name.endswith("_count")) == before + 1  # on /metrics
    assert gc.get_freeze_count() > 0  # what lives is frozen again


def test_the_thaw_waits_for_as_many_closes_as_sockets_were_open(thawed: None) -> None:
    c = Collector(growth=1000, churn=2)
    for n in range(1, 6):
        c.opened(n)
    for n in range(4, 0, -1):
        c.closed_one(n)
    assert c.thaws == 0  # 4 closed of a peak of 5
    c.closed_one(0)
    assert c.thaws == 1


def test_the_socket_registry_tells_the_collector_once_per_socket(thawed: None) -> None:
    from leaderboard.ws import Sockets

    registry = Sockets(collector=Collector(growth=2, churn=2))
    a, b = object(), object()
    registry.joined(a)  # type: ignore[arg-type]
    registry.joined(b)  # type: ignore[arg-type]
    assert registry.collector.freezes == 1
    registry.left(a)  # type: ignore[arg-type]
    registry.left(a)  # type: ignore[arg-type]  # (told twice: counted once)
    assert registry.collector.closed == 1
    registry.left(b)  # type: ignore[arg-type]
    assert registry.collector.thaws == 1 and not registry.open
