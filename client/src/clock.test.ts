import { describe, expect, it } from "vitest";
import { MAX_TIMER_MS, dueRefreshDelay } from "./clock";

describe("dueRefreshDelay (reading a board again for its next reset)", () => {
  const due = 1_000_000;

  it("waits until a second after the reset is due", () => {
    expect(dueRefreshDelay(due, due - 60_000, 0)).toBe(61_000);
    expect(dueRefreshDelay(due, due, 0)).toBe(1000);
    expect(dueRefreshDelay(due, due - 10, 0, 0)).toBe(10);
  });

  it("past due, backs off from 2 s to at most 30 s instead of hammering the server", () => {
    const delays = [0, 1, 2, 3, 4, 5, 50].map((n) => dueRefreshDelay(due, due + 5000, n));
    expect(delays).toEqual([2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  });

  it("never asks setTimeout for more than it can wait", () => {
    const inAYear = 365 * 24 * 3600 * 1000;
    expect(dueRefreshDelay(inAYear, 0, 0)).toBe(MAX_TIMER_MS);
  });
});
