// Rank-change toasts: throttled (at most one per `minIntervalMs`; changes in between are coalesced into one
// "from -> to" toast), capped (`maxVisible`, the oldest goes first) and auto-dismissed after `ttlMs`.

import type { TimerHandle, Timers } from "./clock";

export interface Toast {
  id: number;
  kind: "up" | "down";
  from: number;
  to: number;
  /** Visible text, e.g. "↑ 12 → 9" or "overtaken: 4 → 5". */
  text: string;
  /** Sentence for screen readers. */
  spoken: string;
  label: string;
  createdAt: number;
}

export interface ToastOptions {
  minIntervalMs: number;
  maxVisible: number;
  ttlMs: number;
}

export const DEFAULT_TOAST_OPTIONS: ToastOptions = { minIntervalMs: 400, maxVisible: 3, ttlMs: 4000 };

export function toastText(from: number, to: number): string {
  return to < from ? `↑ ${from} → ${to}` : `overtaken: ${from} → ${to}`;
}

interface Pending {
  from: number;
  to: number;
  label: string;
  timer: TimerHandle;
}

export class ToastQueue {
  private toasts: readonly Toast[] = [];
  private readonly listeners = new Set<() => void>();
  private readonly dismissTimers = new Map<number, TimerHandle>();
  private pending: Pending | null = null;
  private lastEmitAt = Number.NEGATIVE_INFINITY;
  private nextId = 1;
  /** How many rank changes were folded into an earlier or later toast (for tests and debugging). */
  coalesced = 0;

  constructor(
    private readonly timers: Timers,
    private readonly options: ToastOptions = DEFAULT_TOAST_OPTIONS,
  ) {}

  /** A followed player's rank went from `from` to `to`. */
  push(from: number, to: number, label: string): void {
    if (from === to) return;
    if (this.pending) {
      // Keep the oldest starting point so the toast tells the whole move since the last one shown.
      this.pending.to = to;
      this.pending.label = label;
      this.coalesced += 1;
      return;
    }
    const now = this.timers.now();
    const wait = this.lastEmitAt + this.options.minIntervalMs - now;
    if (wait <= 0) {
      this.emit(from, to, label);
      return;
    }
    const timer = this.timers.setTimeout(() => this.flush(), wait);
    this.pending = { from, to, label, timer };
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
    const timer = this.dismissTimers.get(id);
    if (timer !== undefined) this.timers.clearTimeout(timer);
    this.dismissTimers.delete(id);
    const next = this.toasts.filter((t) => t.id !== id);
    if (next.length !== this.toasts.length) this.set(next);
  }

  clear(): void {
    if (this.pending) this.timers.clearTimeout(this.pending.timer);
    this.pending = null;
    for (const timer of this.dismissTimers.values()) this.timers.clearTimeout(timer);
    this.dismissTimers.clear();
    if (this.toasts.length) this.set([]);
  }

  private flush(): void {
    const p = this.pending;
    this.pending = null;
    // A move that came back to where it started (e.g. 4 -> 5 -> 4) is not worth a toast.
    if (p && p.from !== p.to) this.emit(p.from, p.to, p.label);
  }

  private emit(from: number, to: number, label: string): void {
    const now = this.timers.now();
    this.lastEmitAt = now;
    const up = to < from;
    const toast: Toast = {
      id: this.nextId++,
      kind: up ? "up" : "down",
      from,
      to,
      text: toastText(from, to),
      spoken: up ? `${label} moved up from rank ${from} to ${to}` : `${label} was overtaken: rank ${from} to ${to}`,
      label,
      createdAt: now,
    };
    let next = [...this.toasts, toast];
    while (next.length > this.options.maxVisible) {
      const [oldest, ...rest] = next;
      if (oldest) {
        const timer = this.dismissTimers.get(oldest.id);
        if (timer !== undefined) this.timers.clearTimeout(timer);
        this.dismissTimers.delete(oldest.id);
      }
      next = rest;
    }
    this.dismissTimers.set(
      toast.id,
      this.timers.setTimeout(() => this.dismiss(toast.id), this.options.ttlMs),
    );
    this.set(next);
  }

  private set(next: readonly Toast[]): void {
    this.toasts = next;
    for (const l of [...this.listeners]) l();
  }
}
