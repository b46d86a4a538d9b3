"""Render the benchmark results as docs/benchmarks.md and docs/img/bench-*.png (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .runner import fmt_number


def _n(v: Any, digits: int = 1) -> str:
    return fmt_number(v, digits, missing="–")


def _rate_label(r: dict[str, Any]) -> str:
    return _n(r["options"]["rate"], 0) if r["options"]["rate"] else "max"


def _verify(r: dict[str, Any]) -> str:
    v = r.get("verify")
    if not v:
        return "–"
    return "OK" if v["ok"] else "FAILED"


def _errs(r: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in r["errors"].items()] + [f"close {k}={v}" for k, v in r["closes"].items()]
    return ", ".join(parts) or "none"


def _best(runs: list[dict[str, Any]], target: str) -> dict[str, Any] | None:
    rs = [r for r in runs if r["target"] == target]
    return max(rs, key=lambda r: r["submissions"]["acked_per_s"] or 0) if rs else None


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    tp = res["throughput"]
    ws = _best(tp, "leaderboard (WebSocket)")
    rest = _best(tp, "leaderboard (REST)")
    base = _best(tp, "baseline (REST)")
    base_rate = base["submissions"]["acked_per_s"] if base else None
    for name, ours in (("REST vs REST", rest), ("WebSocket vs baseline REST", ws)):
        if ours and base_rate:
            ratio = ours["submissions"]["acked_per_s"] / base_rate
            rows.append(
                (
                    f"durable acked submissions ≥ 10× baseline ({name})",
                    "≥ 10×",
                    f"{ratio:.1f}× ({_n(ours['submissions']['acked_per_s'], 0)}/s vs {_n(base_rate, 0)}/s)",
                    "met" if ratio >= 10 else f"missed by {10 / ratio:.1f}×",
                )
            )
    c = res["ceilings"]
    ceiling = max(c["pg_1conn"]["rows_per_s"], c["pg_4conn"]["rows_per_s"])
    best = max((r for r in (ws, rest) if r), key=lambda r: r["submissions"]["acked_per_s"], default=None)
    if best:
        got = best["submissions"]["acked_per_s"]
        rows.append(
            (
                "durable acked submissions ≥ ½ raw Postgres batched insert rate",
                f"≥ {_n(ceiling / 2, 0)}/s",
                f"{_n(got, 0)}/s = {100 * got / ceiling:.0f}% of {_n(ceiling, 0)} rows/s",
                "met" if got >= ceiling / 2 else f"missed by {ceiling / 2 / got:.1f}×",
            )
        )
    pushes = [r for r in res["watchers"] if r["target"] == "leaderboard (push)"]
    if pushes:
        big = max(pushes, key=lambda r: r["watch"]["watchers"])
        p99 = big["watch"]["push_latency_ms"]["p99"]
        rate = big["submissions"]["acked_per_s"]
        offered = big["options"]["rate"]
        met = p99 is not None and p99 <= 250 and rate >= 0.95 * offered and big["watch"]["watchers"] >= 10_000
        rows.append(
            (
                "10k watchers, p99 push latency at 5k submissions/s",
                "≤ 250 ms",
                f"{_n(p99)} ms with {_n(big['watch']['watchers'])} watchers at {_n(rate, 0)} acked/s "
                f"(offered {_n(offered, 0)})",
                "met" if met else "not met",
            )
        )
        per = [
            r["server"].get("rss_per_connection_bytes")
            for r in pushes
            if r.get("server", {}).get("rss_per_connection_bytes") and r["watch"]["watchers"] >= 1000
        ]
        if per:
            kib = per[-1] / 1024
            rows.append(
                (
                    "server RSS per idle WebSocket",
                    "< 20 KB",
                    f"{kib:.1f} KiB (at {_n(pushes[-1]['watch']['watchers'])} sockets)",
                    "met" if per[-1] < 20_000 else f"missed by {per[-1] / 20_000:.1f}×",
                )
            )
    sizes = res["board_sizes"]
    if sizes:
        worst_rank = max(s["rank"]["p99"] for s in sizes)
        worst_top = max(s["top"]["p99"] for s in sizes)
        span = f"{_n(sizes[0]['members'])}–{_n(sizes[-1]['members'])} members"
        rows.append(
            (
                "rank / top-10 p99 across board sizes",
                "≤ 5 ms",
                f"rank {_n(worst_rank, 2)} ms, top {_n(worst_top, 2)} ms (worst over {span})",
                "met" if max(worst_rank, worst_top) <= 5 else "not met",
            )
        )
        big = sizes[-1]
        t = big["rebuild_reported_s"]
        rows.append(
            (
                f"rebuild of a {_n(big['members'])}-member board from Postgres",
                "< 5 s (for 1M)",
                f"{_n(t, 2)} s (command wall time {_n(big['rebuild_command_wall_s'], 2)} s)",
                ("met" if t is not None and t < 5 else "not met")
                if big["members"] >= 1_000_000
                else "not measured at 1M (quick run)",
            )
        )
    return rows


def write_plots(res: dict[str, Any], img: Path) -> list[Path]:
    out: list[Path] = []
    tp = res["throughput"]
    if tp:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        rates = sorted({r["options"]["rate"] for r in tp if r["options"]["rate"]})
        max_x = (rates[-1] * 1.6) if rates else 1.0
        for target in dict.fromkeys(r["target"] for r in tp):
            rs = sorted((r for r in tp if r["target"] == target), key=lambda r: r["options"]["rate"] or max_x)
            xs = [r["options"]["rate"] or max_x for r in rs]
            a1.plot(xs, [r["submissions"]["acked_per_s"] for r in rs], "o-", label=target)
            a2.plot(xs, [r["submissions"]["ack_latency_ms"]["p99"] for r in rs], "o-", label=target)
        for a in (a1, a2):
            a.set_xscale("log")
            a.minorticks_off()
            a.set_xticks([*rates, max_x], [*(str(int(x)) for x in rates), "max"])
            a.set_xlabel("offered submissions/s")
            a.grid(alpha=0.3)
        a1.set_ylabel("acked (committed) submissions/s")
        a2.set_ylabel("ack latency p99 (ms)")
        a2.set_yscale("log")
        a1.legend(fontsize=8)
        a1.set_title("Durable throughput vs offered load")
        a2.set_title("Ack latency p99 vs offered load")
        fig.tight_layout()
        p = img / "bench-throughput.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        out.append(p)
    ws = [r for r in res["watchers"] if r["target"] == "leaderboard (push)"]
    if ws:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        xs = [r["watch"]["watchers"] for r in ws]
        for q in ("p50", "p95", "p99"):
            a1.plot(xs, [r["watch"]["push_latency_ms"][q] for r in ws], "o-", label=f"push {q}")
        a1.axhline(250, color="red", ls="--", lw=0.8, label="target p99 250 ms")
        a1.set_xscale("log")
        a1.set_xlabel("watcher sockets")
        a1.set_ylabel("push latency (ms)")
        a1.set_title(f"Push latency at {_n(ws[0]['options']['rate'], 0)} offered submissions/s")
        a1.legend(fontsize=8)
        a1.grid(alpha=0.3)
        a2.plot(xs, [r.get("server", {}).get("cpu_avg_percent_of_one_core") for r in ws], "o-", label="server CPU %")
        a2.plot(xs, [r["generator"]["cpu_avg_percent_of_one_core"] for r in ws], "s--", label="generator CPU %")
        a2.set_xscale("log")
        a2.set_xlabel("watcher sockets")
        a2.set_ylabel("CPU, % of one core")
        a3 = a2.twinx()
        per = [(r.get("server", {}).get("rss_per_connection_bytes") or 0) / 1024 for r in ws]
        a3.plot(xs, per, "^:", color="black", label="server RSS per socket (KiB)")
        a3.set_ylabel("KiB per socket")
        a3.set_ylim(bottom=0, top=max([*per, 20.0]) * 1.2)
        a2.set_title("Server CPU and memory vs watchers")
        h1, l1 = a2.get_legend_handles_labels()
        h2, l2 = a3.get_legend_handles_labels()
        a2.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
        a2.grid(alpha=0.3)
        fig.tight_layout()
        p = img / "bench-watchers.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        out.append(p)
    sizes = res["board_sizes"]
    if sizes:
        fig, a = plt.subplots(figsize=(6.5, 4.2))
        xs = [s["members"] for s in sizes]
        for kind in ("rank", "top"):
            for q, style in (("p50", "o-"), ("p99", "s--")):
                a.plot(xs, [s[kind][q] for s in sizes], style, label=f"{kind} {q}")
        a.axhline(5, color="red", ls="--", lw=0.8, label="target p99 5 ms")
        a.set_xscale("log")
        a.set_xlabel("board members")
        a.set_ylabel("REST latency (ms), one client")
        a.set_title("Rank and top-10 latency vs board size")
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
        fig.tight_layout()
        p = img / "bench-board-size.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        out.append(p)
    return out


def render(res: dict[str, Any], images: list[Path], doc_dir: Path) -> str:
    m = res["machine"]
    L: list[str] = []
    add = L.append
    add("# Benchmarks")
    add("")
    add(
        "Generated by `make bench` (`.venv/bin/python -m loadtest.bench`"
        + (" --quick" if res["quick"] else "")
        + f") on {res['started']} in {res['total_s']} s. Rewritten by every run — do not edit by hand; the "
        "method and caveats below are part of the generator (`loadtest/bench.py`, `loadtest/benchdoc.py`)."
    )
    if res["quick"]:
        add("")
        add("> **Quick run** (`--quick`): short steps and small sizes; numbers are a smoke test, not a result.")
    add("")
    add("## Targets")
    add("")
    add("| target | goal | measured | status |")
    add("| --- | --- | --- | --- |")
    for row in targets(res):
        add("| " + " | ".join(row) + " |")
    add("")
    add("## Machine and versions")
    add("")
    add(
        f"- {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"RLIMIT_NOFILE {m['nofile_limit']}, load average at start {m['load_average_at_start']}."
    )
    add(
        "- **Everything shares these cores**: the server, its embedded Postgres and Valkey, the baseline and the "
        "load generator. Every table shows the server's CPU, Postgres' CPU and the generator's own CPU so you can "
        "see which one ran out. The machine is also shared with other work, so repeat runs vary by ±20%."
    )
    add("- " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    add("")
    add("## How it was run")
    add("")
    add("```sh")
    add(res["server_command"])
    add("leaderboard keys create --role admin --name bench --data-dir TMP   # -> $KEY")
    add(res["baseline_command"])
    add("```")
    add("")
    add(
        "The baseline (`loadtest/baseline/`) is the seed design implemented literally — one transaction per request "
        "(insert game session, upsert total, `ZINCRBY` inside the transaction, COMMIT), top-10 by `ZREVRANGE`, "
        "no push (clients poll `/top`). It shares the server's embedded Postgres (own `baseline_*` tables) and "
        "Valkey (db 1), and gets the same pool size (10), so both run on identical storage."
    )
    add("")
    add(
        "Each load step is one `python -m loadtest` run (exact command lines below each table; `$PID` is the "
        "server's pid for CPU/RSS sampling, `$DSN` its Postgres). Every run uses a fresh `incr` board, replays 1% "
        "of submissions with the same `session_id` (half racing the original on another connection, half after "
        "its ack), and afterwards verifies in Postgres that every acked "
        "submission is stored exactly once and that every board value equals the sum of its committed scores "
        "(column *verify*)."
    )
    add("")
    add("**Latency definitions.** *Ack latency*: from writing the submission to the socket to reading its ack "
        "(the server answers only after COMMIT). *Push latency*: every non-duplicate ack returns the board value "
        "it produced, so the generator knows when it sent the submission that produced each (user, value). For "
        "each watcher and each snapshot it receives, every entry that differs from the previous snapshot *that "
        "watcher* received is one sample: arrival time − send time of the submission that produced it. So it "
        "includes the submit's trip, the commit, the debounce interval (100 ms default) and the fan-out; a "
        "coalesced change is charged the whole wait. All processes use CLOCK_MONOTONIC, so times from different "
        "generator processes compare directly.")  # fmt: skip
    add("")

    tp = res["throughput"]
    add("## 1. Durable submission throughput vs offered load")
    add("")
    if images and (doc_dir / "img" / "bench-throughput.png").exists():
        add("![throughput](img/bench-throughput.png)")
        add("")
    add(
        "| target | offered/s | acked/s | ack p50 / p95 / p99 / max (ms) | server CPU % | Postgres CPU % | "
        "generator CPU % | machine busy % | errors | verify |"
    )
    add("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in tp:
        a = r["submissions"]["ack_latency_ms"]
        add(
            f"| {r['target']} | {_rate_label(r)} | {_n(r['submissions']['acked_per_s'], 0)} | "
            f"{_n(a['p50'])} / {_n(a['p95'])} / {_n(a['p99'])} / {_n(a['max'])} | "
            f"{_n(r.get('server', {}).get('cpu_avg_percent_of_one_core'))} | "
            f"{_n(r.get('backends', {}).get('cpu_avg_percent_of_one_core'))} | "
            f"{_n(r['generator']['cpu_avg_percent_of_one_core'])} | "
            f"{_n(r['generator'].get('machine_cpu_busy_percent_of_all_cores'))} | {_errs(r)} | {_verify(r)} |"
        )
    add("")
    add("CPU % is of one core (200% = both cores). Commands:")
    add("")
    add("```sh")
    for r in tp:
        add(r["command"])
    add("```")
    add("")

    ws = res["watchers"]
    add("## 2. Push latency, CPU and memory vs watcher sockets")
    add("")
    if (doc_dir / "img" / "bench-watchers.png").exists() and ws:
        add("![watchers](img/bench-watchers.png)")
        add("")
    add(
        "| target | watchers | acked/s (offered) | push p50 / p95 / p99 / max (ms) | rank push p50 / p99 (ms) | "
        "snapshots per watcher (min/mean) | server CPU % | generator CPU % | server RSS per socket | errors | verify |"
    )
    add("| --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | --- | --- |")
    for r in ws:
        p = r["watch"]["push_latency_ms"] or {}
        rp = r["watch"]["rank_push_latency_ms"] or {}
        spw = r["watch"]["snapshots_per_watcher"]
        per = r.get("server", {}).get("rss_per_connection_bytes")
        add(
            f"| {r['target']} | {_n(r['watch']['watchers'])} | {_n(r['submissions']['acked_per_s'], 0)} "
            f"({_rate_label(r)}) | {_n(p.get('p50'))} / {_n(p.get('p95'))} / {_n(p.get('p99'))} / "
            f"{_n(p.get('max'))} | {_n(rp.get('p50'))} / {_n(rp.get('p99'))} | {_n(spw['min'])} / {_n(spw['mean'])} | "
            f"{_n(r.get('server', {}).get('cpu_avg_percent_of_one_core'))} | "
            f"{_n(r['generator']['cpu_avg_percent_of_one_core'])} | "
            f"{_n(per / 1024 if per else None)} KiB | {_errs(r)} | {_verify(r)} |"
        )
    add("")
    add(
        "RSS per socket = (server RSS with every socket connected and subscribed, before the load starts − RSS "
        "before connecting) / sockets. The baseline row is the seed design's live view: each watcher polls "
        "`GET /top` once a second, so its latency is bounded below by the polling interval."
    )
    add("")
    add("```sh")
    for r in ws:
        add(r["command"])
    add("```")
    add("")

    sizes = res["board_sizes"]
    add("## 3. Rank and top-10 latency vs board size")
    add("")
    if (doc_dir / "img" / "bench-board-size.png").exists() and sizes:
        add("![board size](img/bench-board-size.png)")
        add("")
    add(
        "Boards seeded directly in Postgres (`INSERT … SELECT generate_series`, random values), loaded into "
        "Valkey with `leaderboard rebuild --board B`, then timed over REST from one keep-alive connection, "
        "sequentially (pure service latency, no queueing), after 50 warm-up requests; `rank` asks for random "
        "members."
    )
    add("")
    add("| members | seed (s) | rebuild (s) | top p50 / p95 / p99 / max (ms) | rank p50 / p95 / p99 / max (ms) |")
    add("| ---: | ---: | ---: | --- | --- |")
    for s in sizes:
        t, rk = s["top"], s["rank"]
        add(
            f"| {_n(s['members'])} | {_n(s['seed_s'], 1)} | {_n(s['rebuild_reported_s'], 2)} | "
            f"{_n(t['p50'], 2)} / {_n(t['p95'], 2)} / {_n(t['p99'], 2)} / {_n(t['max'], 2)} | "
            f"{_n(rk['p50'], 2)} / {_n(rk['p95'], 2)} / {_n(rk['p99'], 2)} / {_n(rk['max'], 2)} |"
        )
    add("")
    add("## 4. Cold start: rebuilding a board from Postgres")
    add("")
    for s in sizes:
        add(
            f"- {_n(s['members'])} members: `{s['command']}` reported "
            f"{_n(s['rebuild_reported_s'], 2)} s; the whole command (process start, attach, rebuild) took "
            f"{_n(s['rebuild_command_wall_s'], 2)} s."
        )
    add("")
    c = res["ceilings"]
    add("## 5. Raw ceilings on this machine (same run, same Postgres and Valkey)")
    add("")
    add(
        f"- Postgres durable batched insert (asyncpg, `INSERT … SELECT * FROM unnest($1::uuid[], …)` into a "
        f"scratch table shaped like `game_sessions`, one transaction per batch of {c['pg_1conn']['batch']}): "
        f"**{_n(c['pg_1conn']['rows_per_s'], 0)} rows/s** on 1 connection, "
        f"**{_n(c['pg_4conn']['rows_per_s'], 0)} rows/s** on 4."
    )
    add(
        f"- Valkey single-member `ZADD`, pipelined {c['redis']['pipeline']} per round trip on one connection "
        "(pre-encoded RESP, so the Python client's encoding is not what is measured): "
        f"**{_n(c['redis']['zadd_per_s'], 0)} members/s**."
    )
    add("")
    add("## Reading the numbers")
    add("")
    add(
        "- *acked/s* counts acks received inside the measured window for submissions committed to Postgres "
        "(the 1% replays' duplicate acks included; they are answered without a write). Offered `max` = each "
        "connection keeps `--inflight` submissions in flight (WebSocket: 16 connections × 16; REST: 128 "
        "keep-alive connections × 1)."
    )
    add(
        "- When *acked/s* stays below *offered/s* the target is saturated; the ack latency then measures queueing. "
        "Check *machine busy %*: near 100% means the 2 cores, not the design, set the ceiling."
    )
    add(
        "- The generator uses its own callback-driven WebSocket/HTTP clients (`loadtest/wire.py`: no task per "
        "socket, orjson, uvloop) in 2 processes; its CPU is in every table."
    )
    add("")
    return "\n".join(L) + "\n"
