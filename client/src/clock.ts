// Time is injected so the store's state machine can be unit-tested with a fake clock.

export type TimerHandle = unknown;

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

/** setTimeout's longest delay (about 24.8 days); a longer wait is made of several. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * When to read a board again for its next reset at `dueAt` (ms since the epoch, as Date.now()). Before it:
 * `graceMs` after it (the server's scheduler runs every 0.5 s), at most MAX_TIMER_MS from now (then look again).
 * Past it (the read still said the reset is due: the server has not reset the board yet, or the clocks differ):
 * 2 s, 4 s, 8 s, ... up to 30 s after the previous read, `overdue` being how many reads found it due already.
 */
export function dueRefreshDelay(dueAt: number, now: number, overdue: number, graceMs = 1000): number {
  const wait = dueAt + graceMs - now;
  if (wait > 0) return Math.min(wait, MAX_TIMER_MS);
  return Math.min(30_000, 2000 * 2 ** Math.min(overdue, 10));
}
