import type { BoardInfo, Entry, ScoreFormat } from "./types";

const scoreFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** A board's score format; a missing or unknown `format` (servers before it existed) is a plain number. */
export function formatOf(board: Pick<BoardInfo, "format"> | null | undefined): ScoreFormat {
  const f = board?.format;
  return f === "time_ms" || f === "time_s" ? f : "number";
}

/** Whole seconds as m:ss, or h:mm:ss from an hour on. */
function clock(totalSeconds: number): string {
  const h = Math.floor(totalSeconds / 3600);
  const m = Math.floor((totalSeconds % 3600) / 60);
  const s = totalSeconds % 60;
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * A score as the board shows it: `number` with thousands separators, `time_ms` as m:ss.mmm (h:mm:ss.mmm
 * past an hour), `time_s` as m:ss (h:mm:ss). Scores are integers (|n| <= 2^53-1), so the integer
 * arithmetic below is exact.
 */
export function formatScore(score: number | null | undefined, format: ScoreFormat = "number"): string {
  if (score === null || score === undefined) return "—";
  if (format === "number" || !Number.isFinite(score)) return scoreFormat.format(score);
  const sign = score < 0 ? "-" : "";
  const abs = Math.abs(Math.trunc(score));
  if (format === "time_s") return sign + clock(abs);
  const ms = abs % 1000;
  return `${sign}${clock((abs - ms) / 1000)}.${String(ms).padStart(3, "0")}`;
}

/** The column/card heading for a board's scores. */
export function scoreHeading(format: ScoreFormat): string {
  return format === "number" ? "Score" : "Time";
}

export function nameOf(e: Pick<Entry, "user_id" | "display_name">): string {
  return e.display_name && e.display_name.trim() ? e.display_name : e.user_id;
}

export function percentileOf(rank: number, total: number): number {
  if (total <= 0) return 0;
  return Math.round((10000 * (total - rank + 1)) / total) / 100;
}

/**
 * Time left until a reset, for "resets in …": "2 d 3 h", "3 h 12 min", "12 min 5 s", "45 s". Whole seconds,
 * rounded up (it says "1 s" until the moment itself); zero, negative or not a number reads "0 s", never a
 * negative time.
 */
export function formatCountdown(ms: number): string {
  const total = Number.isFinite(ms) && ms > 0 ? Math.ceil(ms / 1000) : 0;
  const d = Math.floor(total / 86_400);
  const h = Math.floor((total % 86_400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** An ISO 8601 instant in the reader's time zone ("30 Nov 2026, 18:50"); "—" when missing or unreadable. */
export function formatDateTime(iso: string | null | undefined): string {
  const t = iso ? Date.parse(iso) : Number.NaN;
  return Number.isFinite(t) ? dateTimeFormat.format(t) : "—";
}
