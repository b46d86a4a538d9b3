"""Keeps CPython's cyclic garbage collector off the state of open sockets.

CPython 3.11 runs a full collection whenever the objects that survived into the oldest generation since the
last one reach a quarter of those it kept, and a full collection walks every tracked object while nothing else
runs. An open WebSocket holds ~150 tracked objects (uvicorn's protocol, the ASGI middlewares' coroutines,
Starlette's WebSocket, our Connection and Outbox): with 10,000 sockets a full collection walks ~1.5 million
objects and stops the process for 0.4-1.2 s, and a ramp of new sockets (a game launching) sets one off for every
quarter of growth (measured: docs/performance.md).

The policy: every `growth` sockets opened, the young generations are collected and everything alive is frozen
(`gc.freeze()`: moved out of every later collection; refcounting still frees what is no longer referenced). What
a closed socket leaves in reference cycles (its whole connection: uvicorn's protocol and uvloop's transport refer
to each other; ~77 objects a socket, measured) is then kept until the next thaw: once as many sockets have closed
since the last thaw as were open at the peak (at least `churn`), everything is thawed, collected once and frozen
again. So a ramp costs no full collection over the sockets, and the memory held for closed sockets' cycles stays
below about that of the most sockets open at once.
"""

from __future__ import annotations

import gc
import logging
import time

from . import observability as obs

log = logging.getLogger(__name__)


class Collector:
    """Told of every socket opened and closed in this process (ws.Sockets does it)."""

    def __init__(self, growth: int = 256, churn: int = 1024) -> None:
        self.growth, self.churn = growth, churn
        self.fresh = 0  # sockets opened since the last freeze
        self.closed = 0  # sockets closed since the last thaw
        self.peak = 0  # most sockets open at once since the last thaw
        self.freezes = self.thaws = 0

    def opened(self, open_now: int) -> None:
        self.fresh += 1
        if self.fresh >= self.growth:
            self.fresh = 0
            gc.collect(1)  # the young generations: what is frozen is what lives on
            gc.freeze()
            self.freezes += 1
        self.peak = max(self.peak, open_now)

    def closed_one(self, open_now: int) -> None:
        self.closed += 1
        if self.closed >= max(self.churn, self.peak):
            self.closed = self.fresh = 0
            self.peak = open_now
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.thaws += 1
            took = time.perf_counter() - started
            obs.observe(obs.GC_THAW_SECONDS, took)
            log.info("collected %d objects left by closed sockets in %.0f ms (%d open)", found, 1000 * took, open_now)
