import type { Entry } from "./types";

const scoreFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function formatScore(score: number | null | undefined): string {
  return score === null || score === undefined ? "—" : scoreFormat.format(score);
}

export function nameOf(e: Pick<Entry, "user_id" | "display_name">): string {
  return e.display_name && e.display_name.trim() ? e.display_name : e.user_id;
}

export function percentileOf(rank: number, total: number): number {
  if (total <= 0) return 0;
  return Math.round((10000 * (total - rank + 1)) / total) / 100;
}
