// Test helpers: a manual clock and an in-memory socket that records what the client sent. These drive the
// client's state machine; they are not a stand-in for the server (the e2e tests use the real one).

import type { TimerHandle, Timers } from "./clock";
import type { Health } from "./health";
import type { SocketLike } from "./store";

export class ManualClock implements Timers {
  private t = 0;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.pending.delete(handle as number);
  }

  /** Delays of the timers currently scheduled, relative to now. */
  scheduled(): number[] {
    return [...this.pending.values()].map((p) => p.at - this.t).sort((a, b) => a - b);
  }

  /** Advance time, firing due timers in order (timers scheduled by timers fire too if due). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.pending) {
        if (entry[1].at <= end && (!next || entry[1].at < next[1].at || (entry[1].at === next[1].at && entry[0] < next[0]))) {
          next = entry;
        }
      }
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}

export class FakeSocket implements SocketLike {
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  closedByClient: { code?: number; reason?: string } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ---- driven by the test ----
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** A connection attempt that never opened (connection refused): browsers report 1006. */
  fail(): void {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: "" });
  }
}

/** A sequence of random() results, repeating the last one when exhausted. */
export function randomSeq(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)] ?? 0;
}

/** A stand-in for GET /readyz: counts probes; the test answers each one when it likes. */
export class FakeReadyProbe {
  calls = 0;
  private readonly waiting: ((h: Health | null) => void)[] = [];

  readonly probe = (): Promise<Health | null> => {
    this.calls += 1;
    return new Promise((resolve) => this.waiting.push(resolve));
  };

  get outstanding(): number {
    return this.waiting.length;
  }

  /** Answer the oldest outstanding probe, then let the store's continuation run. */
  async answer(health: Health | null): Promise<void> {
    const resolve = this.waiting.shift();
    if (!resolve) throw new Error("no probe is waiting for an answer");
    resolve(health);
    await settle();
  }
}

/** Let pending promise continuations run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
