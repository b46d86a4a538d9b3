// Reading something over REST again when live pushes say it may have changed (the "Around <name>" table of
// the player panel): throttled, one read at a time, and never polling. Free of React and the network.

import type { TimerHandle, Timers } from "./clock";

/**
 * When to read again. Tell it `changed(version)` for every push that could have changed what was read (the
 * version is the push's `seq`; null: unknown), `started()` when a read starts elsewhere (a new search) and
 * `settled()` when the read in flight has answered or failed. It calls `read` (which starts a read) so that
 *  - a read starts at once after a quiet spell, then at most one every `intervalMs` (a throttle: someone
 *    who keeps changing still gets fresh reads, not only once they stop);
 *  - never while a read is in flight: a change meanwhile is read once that one has answered (trailing), so
 *    the last change is always followed by a read that started after it;
 *  - a burst of changes gives one read, and a push whose version is not newer than every version `known()`
 *    gave when the last read started (that read saw it) gives none;
 *  - nothing happens without a push: no polling.
 */
export class Rereader {
  private inFlight = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  /** The newest version known when the last read started: pushes up to it are reflected by that read. */
  private covered = Number.NEGATIVE_INFINITY;
  /** A change not reflected by the last read started. */
  private dirty = false;
  private timer: TimerHandle | null = null;
  private disposed = false;

  constructor(
    private readonly timers: Timers,
    private readonly intervalMs: number,
    private readonly read: () => void,
    /** The newest version the pushes have brought so far (null: none yet). */
    private readonly known: () => number | null = () => null,
  ) {}

  /** A push that may have changed what was read. */
  changed(version: number | null = null): void {
    if (this.disposed) return;
    if (version !== null && version <= this.covered) return;
    this.dirty = true;
    this.schedule();
  }

  /** A read started (by `read`, or elsewhere: the first one for a search). */
  started(): void {
    if (this.disposed) return;
    this.inFlight = true;
    this.dirty = false;
    this.lastStart = this.timers.now();
    this.covered = this.known() ?? Number.NEGATIVE_INFINITY;
    this.cancelTimer();
  }

  /** The read in flight answered (or failed). */
  settled(): void {
    if (this.disposed) return;
    this.inFlight = false;
    this.schedule();
  }

  /** Whether a read has been asked for and not started yet (for tests and the debug overlay). */
  get waiting(): boolean {
    return this.dirty;
  }

  dispose(): void {
    this.disposed = true;
    this.cancelTimer();
  }

  private schedule(): void {
    if (!this.dirty || this.inFlight || this.timer !== null || this.disposed) return;
    const wait = this.lastStart + this.intervalMs - this.timers.now();
    if (wait > 0) {
      this.timer = this.timers.setTimeout(() => {
        this.timer = null;
        this.schedule();
      }, wait);
      return;
    }
    this.started();
    this.read();
  }

  private cancelTimer(): void {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * What the last read for the followed player said: their rank and score (null, null: no entry), "pending"
 * while the first read of a search is on its way, "failed" when it failed.
 */
export type Answered = { rank: number | null; score: number | null } | "pending" | "failed";

/**
 * Whether a `rank` push for the followed player says something the last read did not, so that the players
 * around them may have changed too. While the first read of a search is on its way a push says nothing new
 * (it is mostly the answer to the subscribe): it is compared with the read's answer once that arrives.
 */
export function rankDiffers(push: { rank: number | null; score: number | null }, answered: Answered): boolean {
  if (answered === "pending") return false;
  if (answered === "failed") return true;
  if (push.rank === null) return answered.rank !== null;
  return push.rank !== answered.rank || push.score !== answered.score;
}
