"""Turn raw worker results into the numbers we report (pure functions, no I/O).

Push latency method: every non-duplicate ack returns the board value it produced, so the generator knows, for
each pair (user_id, value), the monotonic time at which the submission that produced it was sent. Snapshots are
identified by ``seq`` (or by content when the server sends none, as the polling baseline does). For each watcher
and each snapshot it receives, the *changes* are the (user_id, score) entries that were not in the previous
snapshot that same watcher received; each change gives one sample ``receive time - send time of the submission
whose ack returned that value``. This includes the submit's trip to the server, the commit, fan-out, debounce and
delivery, i.e. what a player would observe. A watcher that missed intermediate snapshots (coalesced, or a poll
interval) is charged the full wait. Entries whose value this run did not produce (seeded data, other clients) are
skipped and counted as unattributed. The first snapshot a socket receives (its initial state) is not a sample.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

PCTS = (50, 95, 99)


def summarize(samples: Any) -> dict[str, float | int | None]:
    """p50/p95/p99/max/mean of seconds, reported in milliseconds."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    qs = np.percentile(a, PCTS)
    return {
        "n": int(a.size),
        "p50": round(float(qs[0]) * 1000, 3),
        "p95": round(float(qs[1]) * 1000, 3),
        "p99": round(float(qs[2]) * 1000, 3),
        "max": round(float(a.max()) * 1000, 3),
        "mean": round(float(a.mean()) * 1000, 3),
    }


class Histogram:
    """Fixed 0.1 ms buckets up to 120 s: exact enough for percentiles, bounded memory for millions of samples."""

    RES = 1e-4
    N = 1_200_000

    def __init__(self) -> None:
        self.counts = np.zeros(self.N + 1, dtype=np.int64)
        self.max = 0.0
        self.total = 0.0
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, seconds: np.ndarray) -> None:
        if seconds.size == 0:
            return
        self.max = max(self.max, float(seconds.max()))
        self.total += float(seconds.sum())
        self._pending.append(np.clip((seconds / self.RES).astype(np.int64), 0, self.N))
        self._pending_n += seconds.size
        if self._pending_n > 4_000_000:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.counts += np.bincount(np.concatenate(self._pending), minlength=self.N + 1)
            self._pending = []
            self._pending_n = 0

    def summary(self) -> dict[str, float | int | None]:
        self._flush()
        n = int(self.counts.sum())
        if n == 0:
            return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        cum = np.cumsum(self.counts)
        out: dict[str, float | int | None] = {"n": n}
        for p in PCTS:
            i = int(np.searchsorted(cum, np.ceil(n * p / 100.0)))
            out[f"p{p}"] = round((i + 0.5) * self.RES * 1000, 3)
        out["max"] = round(self.max * 1000, 3)
        out["mean"] = round(self.total / n * 1000, 3)
        return out


def push_latency(results: list[dict[str, Any]]) -> dict[str, Any]:
    value_sent: dict[tuple[str, int], float] = {}
    for r in results:
        for k, t in r["value_sent"].items():
            if k not in value_sent or t < value_sent[k]:
                value_sent[k] = t
    info: dict[Any, tuple[int | None, float, tuple[tuple[str, int], ...]]] = {}
    recv: dict[tuple[Any, Any], list[Any]] = {}
    for r in results:
        for key, (seq, first, pairs) in r["snap_info"].items():
            if key not in info or first < info[key][1]:
                info[key] = (seq, first, pairs)
        for trans, arr in r["snap_recv"].items():
            recv.setdefault(trans, []).append(np.frombuffer(arr, dtype=np.float64))
    hist = Histogram()
    changes_total = unattributed = 0
    for (prev_key, key), arrs in recv.items():
        prev = set(info[prev_key][2])
        new = [p for p in info[key][2] if p not in prev]
        sends = []
        for p in new:
            t = value_sent.get(p)
            if t is None:
                unattributed += 1
            else:
                sends.append(t)
        changes_total += len(new)
        if not sends:
            continue
        arrivals = np.concatenate(arrs)
        lat = arrivals[:, None] - np.asarray(sends)[None, :]
        hist.add(lat.ravel())
    rank_hist = []
    for r in results:
        for user, score, t in r["rank_events"]:
            ts = value_sent.get((user, score))
            if ts is not None:
                rank_hist.append(t - ts)
    return {
        "top": hist.summary(),
        "snapshots_distinct": len(info),
        "changes_seen": changes_total,
        "changes_unattributed": unattributed,
        "rank": summarize(rank_hist),
    }


def merge_counters(dicts: list[dict[str, int]]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for d in dicts:
        c.update(d)
    return dict(sorted(c.items()))


def idempotency_check(results: list[dict[str, Any]]) -> dict[str, int]:
    """Per session_id: at most one non-duplicate ack, whatever the number of replays."""
    nondup: Counter[str] = Counter()
    dup_only: set[str] = set()
    for r in results:
        for sid, _u, _s, dup in r["acks"]:
            if dup:
                dup_only.add(sid)
            else:
                nondup[sid] += 1
    double = sum(1 for n in nondup.values() if n > 1)
    return {
        "sessions_acked": len(nondup.keys() | dup_only),
        "double_accepted": double,
        "replays_acked_duplicate": sum(1 for s in dup_only if s in nondup),
    }
