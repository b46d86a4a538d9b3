"""CPU time of processes and process trees, read from ``/proc/<pid>/stat`` (Linux).

Why /proc and CPU seconds rather than % or throughput: on a shared, noisy machine a process that is descheduled
uses no CPU, so CPU seconds per operation hold when wall-clock rates do not. ``utime + stime`` is what the
process itself used; ``cutime + cstime`` is what its children used once they exited and were reaped. Summing
all four over the *live* processes of a tree counts every process that ever belonged to it exactly once (a
dead child's time moved into its parent's ``cutime``), so a delta over a window is the tree's CPU in that
window even when Postgres forks and reaps backends or autovacuum workers inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    own: float  # utime + stime, seconds
    children: float  # cutime + cstime (reaped children), seconds


def read_stat(pid: int) -> Stat | None:
    """One process' CPU times; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields we want follow the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state); utime..cstime are fields 14..17, ppid is field 4
    return Stat(
        pid,
        int(rest[1]),
        (int(rest[11]) + int(rest[12])) / CLK_TCK,
        (int(rest[13]) + int(rest[14])) / CLK_TCK,
    )


def _all_stats() -> dict[int, Stat]:
    out: dict[int, Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = read_stat(int(name))
            if s is not None:
                out[s.pid] = s
    return out


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def descendants(root: int, stats: dict[int, Stat]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for s in stats.values():
        kids.setdefault(s.ppid, []).append(s.pid)
    out: list[int] = []
    todo = list(kids.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def sample(server_pids: list[int], trees: dict[str, list[int]], generator_pids: list[int]) -> dict[str, float]:
    """CPU seconds now, by group:

    - ``server``: the server pids and their descendants running the same program (e.g. uvicorn workers);
    - each of ``trees`` (e.g. ``postgres``: the postmaster; ``redis``): the whole tree, reaped children included;
    - ``server_other``: the server's other descendants that are in no tree (e.g. an embedded Valkey);
    - ``generator``: the given pids' own time.
    """
    stats = _all_stats()
    out: dict[str, float] = {}
    seen: set[int] = set()
    for name, roots in trees.items():
        total = 0.0
        for root in roots:
            for pid in [root, *descendants(root, stats)]:
                s = stats.get(pid)
                if s is not None and pid not in seen:
                    seen.add(pid)
                    total += s.own + s.children
        out[name] = total
    server = other = 0.0
    for root in server_pids:
        s = stats.get(root)
        if s is None:
            continue
        server += s.own
        exe = _exe(root)
        for pid in descendants(root, stats):
            if pid in seen:  # e.g. an embedded postmaster under the server: counted once, as Postgres
                continue
            d = stats[pid]
            if exe is not None and _exe(pid) == exe:
                server += d.own
            else:
                other += d.own + d.children
    out["server"] = server
    out["server_other"] = other
    generator = 0.0
    for pid in generator_pids:
        g = stats.get(pid) or read_stat(pid)
        if g is not None:
            generator += g.own
    out["generator"] = generator
    return out
