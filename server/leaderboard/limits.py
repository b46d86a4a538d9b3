"""Abuse limits: a player's submission rate (shared by every process, through Redis) and failed authentication
per client address (each process on its own, in bounded memory).

    SubmitLimit  LEADERBOARD_PLAYER_SUBMIT_RATE submissions per second per (board, user_id), bursts of twice
                 that (GCRA in Redis: cache.py `take`). Checked once per group-commit batch by the writer: one
                 Lua call per board of the batch, never one per submission. A refused submission is answered
                 429 `rate_limited` and writes nothing. Redis unreachable: every submission is admitted (fail
                 open; the limit protects the service, it must not take scores down with Redis).
    AuthFailures LEADERBOARD_AUTH_FAILURES_MAX failed authentications per client address within
                 LEADERBOARD_AUTH_FAILURE_WINDOW_S; past that, a request from that address that carries a
                 credential is refused 429 (before the credential is even looked at) until the window ends.
                 IPv6 addresses count per /64 (one host holds a whole /64). At most MAX_ADDRESSES addresses are
                 remembered, least recently failed first out.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Sequence

from redis.exceptions import RedisError

from . import observability as obs
from .cache import Cache
from .errors import TooMany
from .store import Write

log = logging.getLogger(__name__)

MAX_ADDRESSES = 10_000  # client addresses whose failed authentications are remembered (LRU)
WARN_EVERY_S = 10.0  # at most one warning per interval while Redis cannot check the rate


class SubmitLimit:
    """Per-player submission rate across all processes (see the module docstring)."""

    def __init__(self, cache: Cache, rate: float) -> None:
        self.cache, self.rate, self.burst = cache, rate, max(1.0, 2 * rate)
        self._warned = 0.0

    async def refused(self, batch: Sequence[Write]) -> dict[int, TooMany]:
        """The submissions of the batch over their player's rate (by index in the batch), each with its refusal.
        The others are counted against their player's rate; with Redis unreachable all are admitted."""
        by_board: dict[str, list[int]] = defaultdict(list)
        for i, w in enumerate(batch):
            by_board[w.board.id].append(i)
        try:
            waits = await asyncio.gather(
                *(self.cache.take(b, [batch[i].sub.user_id for i in idx], self.rate, self.burst)
                  for b, idx in by_board.items())
            )  # fmt: skip
        except (RedisError, OSError) as exc:
            obs.count(obs.REDIS_FALLBACK, 1, "rate")
            if time.monotonic() >= self._warned + WARN_EVERY_S:
                self._warned = time.monotonic()
                log.warning("player submission rate not checked, Redis unreachable (%s): admitting all", exc)
            return {}
        out: dict[int, TooMany] = {}
        for idx, board_waits in zip(by_board.values(), waits, strict=True):
            for i, wait in zip(idx, board_waits, strict=True):
                if wait > 0:
                    out[i] = self.refusal(batch[i], wait)
        return out

    def refusal(self, w: Write, wait: float) -> TooMany:
        return TooMany(
            f"{w.sub.user_id!r} submits to board {w.board.id!r} faster than {self.rate:g} per second (bursts of "
            f"{self.burst:g}); nothing was written; retry in {wait:.2f} s",
            retry_after=wait,
        )


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class AuthFailures:
    """Failed authentications per client address in a fixed window (see the module docstring)."""

    def __init__(self, limit: int, window: float, max_addresses: int = MAX_ADDRESSES) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address -> (window start, failures)

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # parsing an address costs more than the request's other checks
    def key(address: str | None) -> str | None:
        if not address:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address  # a unix socket path, a test client's name: as it is
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def check(self, address: str | None) -> None:
        """Raise TooMany when the address failed too often in its current window."""
        if not self.limit or not self._seen:  # every request asks: the common answer first
            return
        key = self.key(address)
        if key is None:
            return
        found = self._seen.get(key)
        if found is None:
            return
        started, failures = found
        left = started + self.window - time.monotonic()
        if left <= 0:
            del self._seen[key]
        elif failures >= self.limit:
            raise TooMany(
                f"too many failed authentications from this address ({failures} within {self.window:g} s); "
                f"retry in {left:.0f} s",
                retry_after=left,
            )

    def failed(self, address: str | None) -> None:
        key = self.key(address)
        if not self.limit or key is None:
            return
        now = time.monotonic()
        started, failures = self._seen.pop(key, (now, 0))
        if now - started >= self.window:
            started, failures = now, 0
        self._seen[key] = (started, failures + 1)  # now the most recent
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
