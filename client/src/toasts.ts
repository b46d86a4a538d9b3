// Rank-change toasts, per followed player ("lane"): at most one toast per player per `windowMs`. The first
// change after a quiet spell shows at once; the changes that follow inside the window are held and shown
// as one net move when it ends ("↓ 4 → 9 over 3 s"), or not at all if the player ended where they started.
// A player's new toast replaces their previous one on screen; at most `maxVisible` toasts show (the oldest
// goes first), each dismissed after `ttlMs`.

import type { TimerHandle, Timers } from "./clock";

export interface Toast {
  id: number;
  /** The lane (followed player) it belongs to. */
  key: string;
  kind: "up" | "down";
  from: number;
  to: number;
  /** The net move of several changes over this long, or null for a single change. */
  overMs: number | null;
  /** Visible text, e.g. "↑ 12 → 9", "overtaken: 4 → 5" or "↓ 4 → 9 over 3 s". */
  text: string;
  /** Sentence for screen readers. */
  spoken: string;
  label: string;
  createdAt: number;
}

export interface ToastOptions {
  /** At most one toast per player per window. */
  windowMs: number;
  maxVisible: number;
  ttlMs: number;
}

export const DEFAULT_TOAST_OPTIONS: ToastOptions = { windowMs: 3000, maxVisible: 3, ttlMs: 4000 };

const seconds = (ms: number): number => Math.max(1, Math.round(ms / 1000));

/** "↑ 12 → 9" / "overtaken: 4 → 5" for one change; "↑ 9 → 4 over 3 s" / "↓ 4 → 9 over 3 s" for a net move. */
export function toastText(from: number, to: number, overMs: number | null = null): string {
  if (overMs === null) return to < from ? `↑ ${from} → ${to}` : `overtaken: ${from} → ${to}`;
  return `${to < from ? "↑" : "↓"} ${from} → ${to} over ${seconds(overMs)} s`;
}

function spokenText(label: string, from: number, to: number, overMs: number | null): string {
  if (overMs === null) {
    return to < from ? `${label} moved up from rank ${from} to ${to}` : `${label} was overtaken: rank ${from} to ${to}`;
  }
  return `${label} moved ${to < from ? "up" : "down"} from rank ${from} to ${to} over ${seconds(overMs)} seconds`;
}

interface Pending {
  from: number;
  to: number;
  label: string;
  changes: number;
  timer: TimerHandle;
}

interface Lane {
  lastEmitAt: number;
  pending: Pending | null;
}

export class ToastQueue {
  private toasts: readonly Toast[] = [];
  private readonly listeners = new Set<() => void>();
  private readonly dismissTimers = new Map<number, TimerHandle>();
  private readonly lanes = new Map<string, Lane>();
  private nextId = 1;
  /** How many rank changes were held back to be shown as part of a net move (for tests and debugging). */
  coalesced = 0;

  constructor(
    private readonly timers: Timers,
    private readonly options: ToastOptions = DEFAULT_TOAST_OPTIONS,
  ) {}

  /** A followed player's rank went from `from` to `to`. `key` names the player's lane (default: the label). */
  push(from: number, to: number, label: string, key: string = label): void {
    if (from === to) return;
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { lastEmitAt: Number.NEGATIVE_INFINITY, pending: null };
      this.lanes.set(key, lane);
    }
    if (lane.pending) {
      // Keep the starting point: the toast tells the whole move since the last one shown.
      lane.pending.to = to;
      lane.pending.label = label;
      lane.pending.changes += 1;
      this.coalesced += 1;
      return;
    }
    const wait = lane.lastEmitAt + this.options.windowMs - this.timers.now();
    if (wait <= 0) {
      this.emit(key, lane, from, to, label, null);
      return;
    }
    this.coalesced += 1;
    lane.pending = { from, to, label, changes: 1, timer: this.timers.setTimeout(() => this.flush(key), wait) };
  }

  /** Stop tracking a player (unfollowed): a held-back move is dropped, a later follow starts fresh. */
  forget(key: string): void {
    const lane = this.lanes.get(key);
    if (lane?.pending) this.timers.clearTimeout(lane.pending.timer);
    this.lanes.delete(key);
  }

  get visible(): readonly Toast[] {
    return this.toasts;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): readonly Toast[] => this.toasts;

  dismiss(id: number): void {
    const next = this.toasts.filter((t) => t.id !== id);
    this.stopTimer(id);
    if (next.length !== this.toasts.length) this.set(next);
  }

  clear(): void {
    for (const key of [...this.lanes.keys()]) this.forget(key);
    for (const timer of this.dismissTimers.values()) this.timers.clearTimeout(timer);
    this.dismissTimers.clear();
    if (this.toasts.length) this.set([]);
  }

  private flush(key: string): void {
    const lane = this.lanes.get(key);
    const p = lane?.pending;
    if (!lane || !p) return;
    lane.pending = null;
    // A net move of zero (e.g. 4 -> 5 -> 4) is not worth a toast; the next change then shows at once.
    if (p.from === p.to) return;
    const overMs = p.changes > 1 ? this.timers.now() - lane.lastEmitAt : null;
    this.emit(key, lane, p.from, p.to, p.label, overMs);
  }

  private emit(key: string, lane: Lane, from: number, to: number, label: string, overMs: number | null): void {
    const now = this.timers.now();
    lane.lastEmitAt = now;
    const toast: Toast = {
      id: this.nextId++,
      key,
      kind: to < from ? "up" : "down",
      from,
      to,
      overMs,
      text: toastText(from, to, overMs),
      spoken: spokenText(label, from, to, overMs),
      label,
      createdAt: now,
    };
    // The player's previous toast is old news: replace it rather than stack another one.
    let next = [...this.toasts.filter((t) => t.key !== key), toast];
    while (next.length > this.options.maxVisible) next = next.slice(1);
    for (const t of this.toasts) if (!next.includes(t)) this.stopTimer(t.id);
    this.dismissTimers.set(
      toast.id,
      this.timers.setTimeout(() => this.dismiss(toast.id), this.options.ttlMs),
    );
    this.set(next);
  }

  private stopTimer(id: number): void {
    const timer = this.dismissTimers.get(id);
    if (timer !== undefined) this.timers.clearTimeout(timer);
    this.dismissTimers.delete(id);
  }

  private set(next: readonly Toast[]): void {
    this.toasts = next;
    for (const l of [...this.listeners]) l();
  }
}
