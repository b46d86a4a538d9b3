import { describe, expect, it } from "vitest";
import { Rereader, rankDiffers } from "./reread";
import { ManualClock } from "./testkit";

/**
 * A Rereader on a manual clock whose reads are recorded (with the time they started); `answer()` settles the
 * read in flight. `newest` is the newest seq the pushes have brought (what `known()` returns).
 */
function setup(intervalMs = 1000) {
  const clock = new ManualClock();
  const reads: number[] = [];
  let newest: number | null = null;
  const r = new Rereader(clock, intervalMs, () => reads.push(clock.now()), () => newest);
  return {
    clock,
    reads,
    r,
    /** A push with this seq arrives (the store has applied it, then the listener says so). */
    push(seq: number) {
      newest = Math.max(newest ?? seq, seq);
      r.changed(seq);
    },
    answer() {
      r.settled();
    },
  };
}

describe("Rereader: reading the around list again after pushes", () => {
  it("reads at once after a quiet spell, and nothing without a push (no polling)", () => {
    const { clock, reads, r, push, answer } = setup();
    clock.advance(5000);
    expect(reads).toEqual([]);
    push(10);
    expect(reads).toEqual([5000]);
    answer();
    clock.advance(60_000);
    expect(reads).toEqual([5000]);
    expect(clock.scheduled()).toEqual([]);
    expect(r.waiting).toBe(false);
  });

  it("at most one read a second, trailing: a burst gives one read at once and one for the rest", () => {
    const { clock, reads, push, answer } = setup();
    push(1);
    expect(reads).toEqual([0]);
    clock.advance(40);
    answer();
    // Ten pushes within the next 900 ms: one read, a second after the first started.
    for (let i = 0; i < 10; i++) {
      clock.advance(90);
      push(2 + i);
    }
    expect(reads).toEqual([0]);
    expect(clock.scheduled()).toEqual([1000 - 940]);
    clock.advance(59);
    expect(reads).toEqual([0]);
    clock.advance(1);
    expect(reads).toEqual([0, 1000]);
    answer();
    clock.advance(10_000);
    expect(reads).toEqual([0, 1000]);
  });

  it("keeps reading once a second while changes keep coming (a throttle, not a debounce)", () => {
    const { clock, reads, push, answer } = setup();
    for (let t = 0; t < 4500; t += 100) {
      push(t + 1);
      clock.advance(50);
      answer(); // each read answers within 50 ms
      clock.advance(50);
    }
    expect(reads).toEqual([0, 1000, 2000, 3000, 4000]);
    clock.advance(499);
    expect(reads).toEqual([0, 1000, 2000, 3000, 4000]);
    clock.advance(1); // the pushes after the read at 4000 are read too
    expect(reads).toEqual([0, 1000, 2000, 3000, 4000, 5000]);
    answer();
    clock.advance(10_000);
    expect(reads).toHaveLength(6);
  });

  it("never starts a read while one is in flight: the change waits for the answer", () => {
    const { clock, reads, push, answer } = setup();
    push(1);
    clock.advance(100);
    push(2);
    clock.advance(5000); // the first read is slow
    expect(reads).toEqual([0]);
    answer();
    expect(reads).toEqual([0, 5100]); // the interval has passed: at once
    push(3);
    clock.advance(999);
    answer();
    expect(reads).toEqual([0, 5100]);
    clock.advance(1);
    expect(reads).toEqual([0, 5100, 6100]);
  });

  it("a push the last read has seen (seq not newer than the newest known when it started) reads nothing", () => {
    const { clock, reads, r, push, answer } = setup();
    push(1024);
    expect(reads).toEqual([0]);
    // The rank push for the same change comes after the top snapshot (or the other way round): same seq.
    r.changed(1024);
    clock.advance(50);
    answer();
    clock.advance(5000);
    expect(reads).toEqual([0]);
    // An older seq on another topic, too.
    r.changed(900);
    clock.advance(5000);
    expect(reads).toEqual([0]);
    // A push without a seq always counts.
    r.changed(null);
    expect(reads).toEqual([0, 10_050]);
  });

  it("a read started elsewhere (the first of a search) counts: pushes it has seen do not read again", () => {
    const { clock, reads, r, push } = setup();
    push(7); // read at 0
    clock.advance(2000);
    r.settled();
    r.started(); // a new lookup, started by the panel; the newest seq known is 7
    push(7);
    expect(reads).toEqual([0]);
    push(8); // newer: read, once that lookup has answered and a second after it started
    expect(reads).toEqual([0]);
    clock.advance(3000);
    expect(reads).toEqual([0]);
    r.settled();
    expect(reads).toEqual([0, 5000]);
  });

  it("after dispose nothing is read", () => {
    const { clock, reads, r, push, answer } = setup();
    push(1);
    answer();
    push(2);
    expect(clock.scheduled()).toEqual([1000]);
    r.dispose();
    expect(clock.scheduled()).toEqual([]);
    push(3);
    r.settled();
    clock.advance(10_000);
    expect(reads).toEqual([0]);
  });
});

describe("rankDiffers: does a rank push say what the last lookup did not?", () => {
  it("compares rank and score with the lookup's answer", () => {
    expect(rankDiffers({ rank: 4, score: 1320 }, { rank: 4, score: 1320 })).toBe(false);
    expect(rankDiffers({ rank: 3, score: 1320 }, { rank: 4, score: 1320 })).toBe(true);
    expect(rankDiffers({ rank: 4, score: 1400 }, { rank: 4, score: 1320 })).toBe(true);
  });

  it("no entry: a push with no rank after a 404 says nothing new; a rank after it, or no rank after an entry, does", () => {
    expect(rankDiffers({ rank: null, score: null }, { rank: null, score: null })).toBe(false);
    expect(rankDiffers({ rank: 9, score: 10 }, { rank: null, score: null })).toBe(true);
    expect(rankDiffers({ rank: null, score: null }, { rank: 4, score: 1320 })).toBe(true); // reset, removed
  });

  it("while the first lookup is on its way a push is not a change (it is compared with the answer later); after a failure it is", () => {
    expect(rankDiffers({ rank: 4, score: 1320 }, "pending")).toBe(false);
    expect(rankDiffers({ rank: 4, score: 1320 }, "failed")).toBe(true);
  });
});
