import { describe, expect, it } from "vitest";
import { ManualClock } from "./testkit";
import { DEFAULT_TOAST_OPTIONS, ToastQueue, toastText } from "./toasts";

const opts = { windowMs: 3000, maxVisible: 3, ttlMs: 4000 };

describe("toastText", () => {
  it("formats one move up and being overtaken", () => {
    expect(toastText(12, 9)).toBe("↑ 12 → 9");
    expect(toastText(4, 5)).toBe("overtaken: 4 → 5");
  });

  it("formats a net move over a window", () => {
    expect(toastText(4, 9, 3000)).toBe("↓ 4 → 9 over 3 s");
    expect(toastText(9, 4, 3000)).toBe("↑ 9 → 4 over 3 s");
    expect(toastText(9, 4, 200)).toBe("↑ 9 → 4 over 1 s");
  });
});

describe("ToastQueue: one toast per player per window", () => {
  it("defaults to a 3 s window", () => {
    expect(DEFAULT_TOAST_OPTIONS.windowMs).toBe(3000);
  });

  it("shows the first change at once and the net change of the rest when the window ends", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(4, 5, "Alice", "alice");
    expect(q.visible.map((t) => t.text)).toEqual(["overtaken: 4 → 5"]);
    for (let r = 5; r < 9; r++) {
      clock.advance(500);
      q.push(r, r + 1, "Alice", "alice");
    }
    expect(q.visible.map((t) => t.text)).toEqual(["overtaken: 4 → 5"]); // held back
    expect(q.coalesced).toBe(4);
    clock.advance(999);
    expect(q.visible.map((t) => t.text)).toEqual(["overtaken: 4 → 5"]);
    clock.advance(1);
    // The player's new toast replaces the previous one rather than stacking under it.
    expect(q.visible.map((t) => t.text)).toEqual(["↓ 5 → 9 over 3 s"]);
    expect(q.visible[0]).toMatchObject({ kind: "down", from: 5, to: 9, overMs: 3000, createdAt: 3000 });
    expect(q.visible[0]?.spoken).toBe("Alice moved down from rank 5 to 9 over 3 seconds");
  });

  it("never shows more than one toast per player per window on a busy board", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, { ...opts, ttlMs: 100_000 });
    const shown: string[] = [];
    q.subscribe(() => {
      const last = q.visible.at(-1);
      if (last && shown.at(-1) !== `${last.createdAt}:${last.text}`) shown.push(`${last.createdAt}:${last.text}`);
    });
    // 10 changes a second for 10 s, drifting down.
    let rank = 100;
    for (let i = 0; i < 100; i++) {
      const next = rank + (i % 3 === 0 ? -1 : 1);
      q.push(rank, next, "a", "a");
      rank = next;
      clock.advance(100);
    }
    clock.advance(5000);
    const times = shown.map((s) => Number(s.split(":")[0]));
    for (let i = 1; i < times.length; i++) expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeGreaterThanOrEqual(3000);
    expect(shown.length).toBeLessThanOrEqual(5); // 10 s / 3 s, not 100
    expect(q.visible).toHaveLength(1); // one on screen for this player
    expect(q.visible[0]?.to).toBe(rank); // nothing lost: the last toast ends at the final rank
  });

  it("shows nothing when the net change over the window is zero", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(7, 8, "b", "b");
    clock.advance(100);
    q.push(8, 9, "b", "b");
    q.push(9, 8, "b", "b"); // back where the last toast left it
    clock.advance(5000);
    expect(q.visible.map((t) => t.text)).toEqual([]); // the first expired, no second one
    expect(clock.scheduled()).toEqual([]);
    q.push(8, 6, "b", "b"); // a quiet spell after a dropped window: shown at once
    expect(q.visible.map((t) => t.text)).toEqual(["↑ 8 → 6"]);
  });

  it("a single change held back by the window reads as a single change", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(3, 2, "a", "a");
    clock.advance(1000);
    q.push(2, 1, "a", "a");
    clock.advance(2000);
    expect(q.visible.map((t) => t.text)).toEqual(["↑ 2 → 1"]);
    expect(q.visible[0]?.overMs).toBeNull();
  });

  it("keeps a separate window per player", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(4, 5, "Alice", "alice");
    q.push(10, 8, "Bob", "bob");
    clock.advance(100);
    q.push(5, 6, "Alice", "alice");
    q.push(8, 7, "Bob", "bob");
    expect(q.visible.map((t) => `${t.label} ${t.text}`)).toEqual(["Alice overtaken: 4 → 5", "Bob ↑ 10 → 8"]);
    clock.advance(2900);
    expect(q.visible.map((t) => `${t.label} ${t.text}`)).toEqual(["Alice overtaken: 5 → 6", "Bob ↑ 8 → 7"]);
  });

  it("caps visible toasts across players, dropping the oldest", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    for (let i = 0; i < 5; i++) {
      q.push(20, 19, `p${i}`, `p${i}`);
      clock.advance(10);
    }
    expect(q.visible.map((t) => t.key)).toEqual(["p2", "p3", "p4"]);
    clock.advance(5000);
    expect(q.visible).toHaveLength(0);
    expect(clock.scheduled()).toEqual([]); // no stray timers for the dropped ones
  });

  it("forget() drops a held-back move (unfollow)", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(4, 5, "a", "a");
    clock.advance(100);
    q.push(5, 9, "a", "a");
    q.forget("a");
    clock.advance(10_000);
    expect(clock.scheduled()).toEqual([]);
    q.push(9, 10, "a", "a"); // a new follow starts fresh: at once
    expect(q.visible.map((t) => t.text)).toEqual(["overtaken: 9 → 10"]);
  });

  it("auto-dismisses after the ttl and can be dismissed by hand", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(3, 2, "a", "a");
    q.push(7, 6, "b", "b");
    const [first, second] = q.visible;
    q.dismiss(second?.id ?? -1);
    expect(q.visible).toEqual([first]);
    clock.advance(3999);
    expect(q.visible).toHaveLength(1);
    clock.advance(1);
    expect(q.visible).toHaveLength(0);
    expect(clock.scheduled()).toEqual([]);
  });

  it("clear() removes toasts, held-back moves and timers", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(3, 2, "a", "a");
    q.push(2, 1, "a", "a");
    q.clear();
    expect(q.visible).toHaveLength(0);
    expect(clock.scheduled()).toEqual([]);
  });

  it("notifies subscribers with a new array each change", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    const seen: number[] = [];
    q.subscribe(() => seen.push(q.getSnapshot().length));
    const before = q.getSnapshot();
    q.push(2, 1, "a");
    expect(q.getSnapshot()).not.toBe(before);
    clock.advance(5000);
    expect(seen).toEqual([1, 0]);
  });
});
