import { describe, expect, it } from "vitest";
import { ManualClock } from "./testkit";
import { ToastQueue, toastText } from "./toasts";

const opts = { minIntervalMs: 400, maxVisible: 3, ttlMs: 4000 };

describe("toastText", () => {
  it("formats moves up and being overtaken", () => {
    expect(toastText(12, 9)).toBe("↑ 12 → 9");
    expect(toastText(4, 5)).toBe("overtaken: 4 → 5");
  });
});

describe("ToastQueue", () => {
  it("shows the first change at once and coalesces changes inside the interval", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(12, 11, "a");
    expect(q.visible.map((t) => t.text)).toEqual(["↑ 12 → 11"]);
    clock.advance(100);
    q.push(11, 10, "a");
    clock.advance(100);
    q.push(10, 9, "a");
    expect(q.visible).toHaveLength(1); // held back
    expect(q.coalesced).toBe(1);
    clock.advance(199);
    expect(q.visible).toHaveLength(1);
    clock.advance(1);
    expect(q.visible.map((t) => t.text)).toEqual(["↑ 12 → 11", "↑ 11 → 9"]);
    expect(q.visible[1]?.createdAt).toBe(400);
  });

  it("never emits more than one toast per interval", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, { ...opts, maxVisible: 100, ttlMs: 100_000 });
    for (let i = 0; i < 200; i++) {
      q.push(100 - i, 99 - i, "a");
      clock.advance(10);
    }
    clock.advance(1000);
    const times = q.visible.map((t) => t.createdAt);
    for (let i = 1; i < times.length; i++) expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeGreaterThanOrEqual(400);
    // 2 s of changes => about 5-6 toasts, not 200
    expect(times.length).toBeGreaterThanOrEqual(5);
    expect(times.length).toBeLessThanOrEqual(7);
    // nothing lost: the last toast ends at the final rank
    expect(q.visible.at(-1)?.to).toBe(-100);
  });

  it("drops a coalesced move that ends where it started", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(4, 5, "a");
    clock.advance(50);
    q.push(5, 6, "a");
    q.push(6, 4, "a");
    clock.advance(1000);
    expect(q.visible.map((t) => t.text)).toEqual(["overtaken: 4 → 5", "↑ 5 → 4"]);

    const q2 = new ToastQueue(clock, opts);
    q2.push(7, 8, "b");
    clock.advance(10);
    q2.push(8, 9, "b"); // pending from 8
    q2.push(9, 8, "b"); // back to 8
    clock.advance(1000);
    expect(q2.visible.map((t) => t.text)).toEqual(["overtaken: 7 → 8"]);
  });

  it("caps visible toasts, dropping the oldest", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    for (let i = 0; i < 6; i++) {
      q.push(20 - i, 19 - i, "a");
      clock.advance(500);
    }
    expect(q.visible).toHaveLength(3);
    expect(q.visible.map((t) => t.from)).toEqual([17, 16, 15]);
  });

  it("auto-dismisses after the ttl and can be dismissed by hand", () => {
    const clock = new ManualClock();
    const q = new ToastQueue(clock, opts);
    q.push(3, 2, "a");
    clock.advance(500);
    q.push(2, 1, "a");
    const [first, second] = q.visible;
    q.dismiss(second?.id ?? -1);
    expect(q.visible).toEqual([first]);
    clock.advance(3499);
    expect(q.visible).toHaveLength(1);
    clock.advance(1);
    expect(q.visible).toHaveLength(0);
    expect(clock.scheduled()).toEqual([]); // no stray timers
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
