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
