import { describe, expect, it } from "vitest";
import { healthFromReadyz } from "./health";
import {
  ANNOUNCE_KEY,
  DEFAULT_BACKOFF,
  HEALTH_KEY,
  LiveStore,
  STATUS_KEY,
  type StoreDeps,
  backoffDelay,
  rankKey,
  seasonKey,
  topKey,
} from "./store";
import { FakeReadyProbe, FakeSocket, ManualClock, randomSeq } from "./testkit";
import type { Entry } from "./types";

function setup(random: () => number = () => 0.5, heartbeatMs = 60_000, extra: Partial<StoreDeps> = {}) {
  const clock = new ManualClock();
  const sockets: FakeSocket[] = [];
  const store = new LiveStore({
    url: "ws://test/ws",
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    timers: clock,
    random,
    heartbeatMs,
    ...extra,
  });
  const last = () => {
    const s = sockets.at(-1);
    if (!s) throw new Error("no socket yet");
    return s;
  };
  return { clock, sockets, store, last };
}

const entry = (rank: number, user_id: string, score: number): Entry => ({
  rank,
  user_id,
  display_name: null,
  score,
});

function top(board: string, seq: number, entries: Entry[], total = entries.length) {
  return { type: "top", board, seq, total, entries };
}

describe("backoffDelay (full jitter)", () => {
  it("draws uniformly below min(cap, base * 2^attempt)", () => {
    const ceilings = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000];
    ceilings.forEach((ceiling, attempt) => {
      expect(backoffDelay(attempt, () => 0)).toBe(0);
      expect(backoffDelay(attempt, () => 0.5)).toBe(ceiling / 2);
      const top = backoffDelay(attempt, () => 0.999999);
      expect(top).toBeLessThan(ceiling);
      expect(top).toBeGreaterThanOrEqual(ceiling - 1);
    });
  });

  it("stays capped for huge attempt numbers", () => {
    expect(backoffDelay(10_000, () => 0.999999)).toBeLessThan(DEFAULT_BACKOFF.capMs);
    expect(Number.isFinite(backoffDelay(10_000, () => 0.5))).toBe(true);
  });

  it("stays within bounds for many random draws", () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(10_000, 250 * 2 ** attempt);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, Math.random);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceiling);
      }
    }
  });
});

describe("connection state machine", () => {
  it("connects, reports connected, and retries with growing jittered delays", () => {
    const { store, last, clock, sockets } = setup(() => 0.999);
    const states: string[] = [];
    store.listen(STATUS_KEY, () => states.push(`${store.getStatus().state}:${store.getStatus().attempt}`));
    store.start();
    expect(store.getStatus().state).toBe("connecting");
    last().open();
    expect(store.getStatus()).toMatchObject({ state: "connected", attempt: 0 });

    last().serverClose(1006);
    const observed: number[] = [];
    for (let i = 0; i < 8; i++) {
      const delays = clock.scheduled();
      expect(delays).toHaveLength(1);
      observed.push(delays[0] ?? -1);
      expect(store.getStatus()).toMatchObject({ state: "reconnecting", attempt: i + 1 });
      clock.advance(delays[0] ?? 0);
      expect(sockets).toHaveLength(i + 2);
      last().fail();
    }
    // random() = 0.999 => just under each ceiling: 250, 500, ... capped at 10 s.
    expect(observed).toEqual([249, 499, 999, 1998, 3996, 7992, 9990, 9990]);
    expect(states).toContain("reconnecting:8");
  });

  it("resets the backoff after a successful connect", () => {
    const { store, last, clock } = setup(() => 0.999);
    store.start();
    last().open();
    last().serverClose(1006);
    for (let i = 0; i < 4; i++) {
      clock.advance(clock.scheduled()[0] ?? 0);
      last().fail();
    }
    expect(clock.scheduled()).toEqual([3996]);
    clock.advance(3996);
    last().open();
    expect(store.getStatus()).toMatchObject({ state: "connected", attempt: 0 });
    last().serverClose(1006);
    expect(clock.scheduled()).toEqual([249]);
    expect(store.getStatus()).toMatchObject({ state: "reconnecting", attempt: 1 });
  });

  it("uses the injected random for full jitter (not a fixed delay)", () => {
    const { store, last, clock } = setup(randomSeq(0.1, 0.9, 0));
    store.start();
    last().open();
    last().serverClose(1006);
    expect(clock.scheduled()).toEqual([25]);
    clock.advance(25);
    last().fail();
    expect(clock.scheduled()).toEqual([450]);
    clock.advance(450);
    last().fail();
    expect(clock.scheduled()).toEqual([0]);
  });

  it("reconnects promptly after 1012 (server restart)", () => {
    const { store, last, clock, sockets } = setup(() => 0.5);
    store.start();
    last().open();
    last().serverClose(1012, "server restarting");
    expect(store.getStatus()).toMatchObject({ state: "reconnecting", attempt: 1, lastCloseCode: 1012 });
    expect(clock.scheduled()).toEqual([125]);
    clock.advance(125);
    expect(sockets).toHaveLength(2);
    last().open();
    expect(store.getStatus().state).toBe("connected");
  });

  it("does not retry after 1008 until asked to", () => {
    const { store, last, clock, sockets } = setup();
    store.start();
    last().open();
    last().serverClose(1008, "bad token");
    expect(store.getStatus()).toMatchObject({ state: "offline", reason: "auth" });
    expect(clock.scheduled()).toEqual([]);
    clock.advance(60_000);
    expect(sockets).toHaveLength(1);
    store.retry();
    expect(sockets).toHaveLength(2);
    last().open();
    expect(store.getStatus()).toMatchObject({ state: "connected", reason: null });
  });

  it("sends the auth frame first when a token is set, and a new token reconnects", () => {
    const { store, last, sockets } = setup();
    store.setToken("lbk_one");
    store.watchTop("global");
    store.start();
    last().open();
    expect(last().sent.map((f) => f.type)).toEqual(["auth", "subscribe", "subscribe"]);
    expect(last().sent[0]).toEqual({ type: "auth", token: "lbk_one" });
    expect(last().sent[1]).toEqual({ type: "subscribe", topics: ["status"] }); // the server's health
    store.setToken("lbk_two");
    expect(sockets).toHaveLength(2);
    expect(sockets[0]?.closedByClient).not.toBeNull();
    last().open();
    expect(last().sent[0]).toEqual({ type: "auth", token: "lbk_two" });
  });

  it("goes offline with the network and reconnects at once when it returns", () => {
    const { store, last, clock, sockets } = setup();
    store.start();
    last().open();
    store.setNetworkOnline(false);
    expect(store.getStatus()).toMatchObject({ state: "offline", reason: "network" });
    expect(sockets[0]?.closedByClient).not.toBeNull();
    clock.advance(30_000);
    expect(sockets).toHaveLength(1);
    store.setNetworkOnline(true);
    expect(sockets).toHaveLength(2);
    expect(store.getStatus().state).toBe("reconnecting");
  });

  it("treats a silent socket as dead (heartbeat) and reconnects", () => {
    const { store, last, clock, sockets } = setup(() => 0, 1000);
    store.start();
    last().open();
    clock.advance(1000);
    expect(last().sent).toContainEqual({ type: "ping", ref: "hb" });
    last().receive({ type: "pong", ref: "hb" });
    clock.advance(2000);
    expect(sockets).toHaveLength(1);
    clock.advance(1000); // 3 s of silence > 2.5 heartbeats
    expect(sockets[0]?.closedByClient?.code).toBe(4000);
    expect(sockets).toHaveLength(2);
  });

  it("ignores events from a socket it has already replaced", () => {
    const { store, last, sockets } = setup();
    store.watchTop("global");
    store.start();
    const first = last();
    first.open();
    store.retry();
    expect(sockets).toHaveLength(2);
    first.receive(top("global", 10, [entry(1, "ghost", 1)]));
    first.serverClose(1006);
    expect(store.getTop("global")).toBeUndefined();
    expect(store.getStatus().state).toBe("reconnecting"); // the new socket is still connecting
    last().open();
    expect(store.getStatus().state).toBe("connected");
  });

  it("stop() closes the socket and schedules nothing", () => {
    const { store, last, clock } = setup();
    store.start();
    last().open();
    store.stop();
    expect(last().closedByClient?.code).toBe(1000);
    expect(store.getStatus().state).toBe("idle");
    expect(clock.scheduled()).toEqual([]);
  });
});

/** The subscribe frames sent for board topics (every connection also subscribes to the server's status). */
function boardSubscribes(s: FakeSocket): Record<string, unknown>[] {
  return s.sent.filter((f) => f.type === "subscribe" && !(f.topics as string[]).includes("status"));
}

describe("subscriptions", () => {
  it("subscribes on open and resubscribes every topic after a reconnect", () => {
    const { store, last, clock } = setup(() => 0);
    store.watchTop("global");
    store.watchRank("global", "alice");
    store.watchTop("speedrun", 5);
    store.start();
    last().open();
    const frames = (s: FakeSocket) => boardSubscribes(s).map(({ ref: _ref, ...rest }) => rest);
    const expected = [
      { type: "subscribe", board: "global", topics: ["top"], limit: 10 },
      { type: "subscribe", board: "global", topics: ["rank"], user_id: "alice" },
      { type: "subscribe", board: "speedrun", topics: ["top"], limit: 5 },
    ];
    expect(frames(last())).toEqual(expected);
    last().serverClose(1012);
    clock.advance(0);
    last().open();
    expect(frames(last())).toEqual(expected);
  });

  it("subscribes immediately when connected, reference-counts, and unsubscribes on the last release", () => {
    const { store, last } = setup();
    store.start();
    last().open();
    const a = store.watchTop("global");
    const b = store.watchTop("global");
    expect(boardSubscribes(last())).toHaveLength(1);
    a();
    a(); // idempotent
    expect(last().sent.filter((f) => f.type === "unsubscribe")).toHaveLength(0);
    b();
    const unsub = last().sent.filter((f) => f.type === "unsubscribe");
    expect(unsub).toHaveLength(1);
    expect(unsub[0]).toMatchObject({ board: "global", topics: ["top"] });
    expect(unsub[0]).not.toHaveProperty("limit");
  });

  it("does not resubscribe released topics after a reconnect", () => {
    const { store, last, clock } = setup(() => 0);
    const release = store.watchRank("global", "bob");
    store.watchTop("global");
    store.start();
    last().open();
    release();
    last().serverClose(1006);
    clock.advance(0);
    last().open();
    expect(boardSubscribes(last()).map((f) => f.topics)).toEqual([["top"]]);
  });

  it("records an error frame answering a subscribe (unknown board)", () => {
    const { store, last } = setup();
    store.watchTop("nope");
    store.start();
    last().open();
    const sub = boardSubscribes(last())[0];
    let notified = 0;
    store.listenError(topKey("nope"), () => notified++);
    last().receive({ type: "error", ref: sub?.ref, code: "not_found", detail: "no board nope" });
    expect(store.getError(topKey("nope"))).toMatchObject({ code: "not_found" });
    expect(notified).toBe(1);
  });
});

describe("top snapshots", () => {
  it("applies newer snapshots and drops older or equal seq", () => {
    const { store, last } = setup();
    store.watchTop("global");
    store.start();
    last().open();
    last().receive(top("global", 5, [entry(1, "a", 10), entry(2, "b", 5)]));
    expect(store.getTop("global")?.seq).toBe(5);
    const applied = store.getTop("global");

    last().receive(top("global", 5, [entry(1, "x", 99)]));
    last().receive(top("global", 3, [entry(1, "y", 99)]));
    expect(store.getTop("global")).toBe(applied); // same object: nothing re-rendered
    expect(store.droppedSnapshots).toBe(2);

    last().receive(top("global", 6, [entry(1, "b", 20), entry(2, "a", 10)]));
    expect(store.getTop("global")?.entries.map((e) => e.user_id)).toEqual(["b", "a"]);
  });

  it("accepts a jump in seq and replaces the whole state (snapshots are complete)", () => {
    const { store, last } = setup();
    store.watchTop("global");
    store.start();
    last().open();
    last().receive(top("global", 7, [entry(1, "a", 10), entry(2, "b", 5), entry(3, "c", 1)], 3));
    last().receive(top("global", 42, [entry(1, "d", 50)], 4));
    const t = store.getTop("global");
    expect(t).toMatchObject({ seq: 42, total: 4 });
    expect(t?.entries).toEqual([entry(1, "d", 50)]);
  });

  it("keeps the last applied seq across a reconnect, so a replayed snapshot is ignored", () => {
    const { store, last, clock } = setup(() => 0);
    store.watchTop("global");
    store.start();
    last().open();
    last().receive(top("global", 10, [entry(1, "a", 10)]));
    last().serverClose(1012);
    clock.advance(0);
    last().open();
    last().receive(top("global", 10, [entry(1, "a", 10)])); // fresh snapshot, nothing changed
    last().receive(top("global", 9, [entry(1, "old", 1)])); // a stale one from a lagging process
    expect(store.getTop("global")?.entries[0]?.user_id).toBe("a");
    last().receive(top("global", 15, [entry(1, "z", 70)]));
    expect(store.getTop("global")?.entries[0]?.user_id).toBe("z");
  });

  it("tracks seq per board", () => {
    const { store, last } = setup();
    store.watchTop("global");
    store.watchTop("speedrun");
    store.start();
    last().open();
    last().receive(top("global", 100, [entry(1, "a", 1)]));
    last().receive(top("speedrun", 3, [entry(1, "s", 1)]));
    expect(store.getTop("speedrun")?.seq).toBe(3);
    expect(store.getTop("global")?.seq).toBe(100);
  });

  it("notifies only the listeners of the topic that changed", () => {
    const { store, last } = setup();
    store.watchTop("global");
    store.watchRank("global", "alice");
    store.start();
    last().open();
    let topN = 0;
    let rankN = 0;
    store.listen(topKey("global"), () => topN++);
    store.listen(rankKey("global", "alice"), () => rankN++);
    last().receive({ type: "rank", board: "global", user_id: "alice", rank: 3, previous_rank: null, score: 5, seq: 1 });
    expect([topN, rankN]).toEqual([0, 1]);
    last().receive(top("global", 2, [entry(1, "a", 1)]));
    expect([topN, rankN]).toEqual([1, 1]);
    last().receive(top("global", 2, [entry(1, "a", 1)]));
    expect([topN, rankN]).toEqual([1, 1]);
  });
});

describe("rank pushes and toasts", () => {
  const rank = (r: number | null, prev: number | null, seq: number, score = 100) => ({
    type: "rank",
    board: "global",
    user_id: "alice",
    rank: r,
    previous_rank: prev,
    score,
    seq,
  });

  it("raises '↑' and 'overtaken' toasts and announces them politely", () => {
    const { store, last, clock } = setup();
    store.watchRank("global", "alice", "Alice");
    store.start();
    last().open();
    last().receive(rank(12, null, 1)); // initial: no toast
    expect(store.toasts.visible).toHaveLength(0);
    last().receive(rank(9, 12, 2));
    expect(store.toasts.visible.map((t) => t.text)).toEqual(["↑ 12 → 9"]);
    expect(store.getAnnouncement()?.text).toBe("Alice moved up from rank 12 to 9");
    clock.advance(3000); // past the player's toast window
    last().receive(rank(10, 9, 3));
    expect(store.toasts.visible.map((t) => t.text)).toEqual(["overtaken: 9 → 10"]); // replaces Alice's last one
    expect(store.getAnnouncement()?.text).toBe("Alice was overtaken: rank 9 to 10");
  });

  it("drops rank pushes older than the last applied one", () => {
    const { store, last } = setup();
    store.watchRank("global", "alice");
    store.start();
    last().open();
    last().receive(rank(4, null, 10));
    last().receive(rank(7, 4, 8));
    expect(store.getRank("global", "alice")?.rank).toBe(4);
    expect(store.toasts.visible).toHaveLength(0);
  });

  it("after a reconnect, compares with the rank it last knew (server previous_rank is null)", () => {
    const { store, last, clock } = setup(() => 0);
    store.watchRank("global", "alice");
    store.start();
    last().open();
    last().receive(rank(4, null, 1));
    last().serverClose(1012);
    clock.advance(0);
    last().open();
    last().receive(rank(6, null, 5));
    expect(store.toasts.visible.map((t) => t.text)).toEqual(["overtaken: 4 → 6"]);
  });

  it("ignores pushes for a player no longer followed", () => {
    const { store, last } = setup();
    const release = store.watchRank("global", "alice");
    store.start();
    last().open();
    last().receive(rank(4, null, 1));
    release();
    last().receive(rank(2, 4, 2));
    expect(store.getRank("global", "alice")).toBeUndefined();
    expect(store.toasts.visible).toHaveLength(0);
  });

  it("coalesces a busy player's rank changes: one toast per 3 s, with the net change", () => {
    const { store, last, clock } = setup();
    store.watchRank("global", "alice");
    store.start();
    last().open();
    const shown: string[] = [];
    store.toasts.subscribe(() => {
      const t = store.toasts.visible.at(-1);
      if (t && !shown.includes(t.text)) shown.push(t.text);
    });
    last().receive(rank(50, null, 1));
    let r = 50;
    for (let i = 0; i < 40; i++) {
      r -= 1;
      last().receive(rank(r, r + 1, 2 + i));
      clock.advance(25); // 40 changes/s
    }
    clock.advance(3000);
    expect(shown).toEqual(["↑ 50 → 49", "↑ 49 → 10 over 3 s"]);
    expect(store.toasts.visible.map((t) => t.text)).toEqual(["↑ 49 → 10 over 3 s"]);
    expect(store.getAnnouncement()?.text).toBe("alice moved up from rank 49 to 10 over 3 seconds");
  });

  it("unfollowing drops a held-back toast", () => {
    const { store, last, clock } = setup();
    const release = store.watchRank("global", "alice");
    store.start();
    last().open();
    last().receive(rank(5, null, 1));
    last().receive(rank(4, 5, 2)); // shown at once
    last().receive(rank(3, 4, 3)); // held back by the window
    const shown = store.toasts.visible.map((t) => t.text);
    release();
    clock.advance(5000);
    expect(shown).toEqual(["↑ 5 → 4"]);
    expect(store.toasts.visible).toHaveLength(0); // the first one expired, the held-back one never came
    expect(clock.scheduled()).toEqual([55_000]); // only the heartbeat is left
  });
});

describe("season frames (a board was reset)", () => {
  const final = [entry(1, "yan", 70), entry(2, "xia", 50), entry(3, "zoe", 30), entry(4, "ben", 20), entry(5, "kim", 10)];
  const season = (ended: number, next: number, entries: Entry[] = final, board = "cup") => ({
    type: "season",
    board,
    ended,
    season: next,
    final: entries,
  });

  function followed() {
    const env = setup();
    env.store.watchTop("cup");
    env.store.watchRank("cup", "xia", "Xia");
    env.store.start();
    env.last().open();
    env.last().receive(top("cup", 100, final));
    env.last().receive({ type: "rank", board: "cup", user_id: "xia", rank: 2, previous_rank: null, score: 50, seq: 100 });
    return env;
  }

  it("keeps the ended season, the new one and the top 3, then applies the empty snapshot that follows", () => {
    const { store, last, clock } = followed();
    const notified = { season: 0, top: 0, rank: 0 };
    store.listen(seasonKey("cup"), () => notified.season++);
    store.listen(topKey("cup"), () => notified.top++);
    store.listen(rankKey("cup", "xia"), () => notified.rank++);
    clock.advance(1234);

    last().receive(season(1, 2));
    expect(store.getSeasonEnd("cup")).toEqual({
      board: "cup",
      ended: 1,
      season: 2,
      winners: final.slice(0, 3),
      receivedAt: 1234,
      dismissed: false,
    });
    expect(notified).toEqual({ season: 1, top: 0, rank: 0 }); // the frame alone does not touch the board
    expect(store.getAnnouncement()?.text).toBe("Season 1 ended. Winners: 1 yan, 2 xia, 3 zoe. Season 2 has started.");

    // What the server sends next: the new season's (empty) top, and the followed player's rank (none yet).
    last().receive(top("cup", 101, [], 0));
    last().receive({ type: "rank", board: "cup", user_id: "xia", rank: null, previous_rank: 2, score: null, seq: 101 });
    expect(store.getTop("cup")).toMatchObject({ seq: 101, total: 0, entries: [] });
    expect(store.getRank("cup", "xia")).toMatchObject({ rank: null, score: null });
    expect(notified).toEqual({ season: 1, top: 1, rank: 1 });
    expect(store.toasts.visible).toEqual([]); // no rank toast for a reset

    // The first score of the new season: a plain snapshot, and no toast from a rank of the old season.
    last().receive(top("cup", 102, [entry(1, "xia", 5)], 1));
    last().receive({ type: "rank", board: "cup", user_id: "xia", rank: 1, previous_rank: null, score: 5, seq: 102 });
    expect(store.getTop("cup")?.entries.map((e) => e.user_id)).toEqual(["xia"]);
    expect(store.toasts.visible).toEqual([]);
  });

  it("ignores the same reset twice and older news, and keeps boards apart", () => {
    const { store, last } = followed();
    let notified = 0;
    store.listen(seasonKey("cup"), () => notified++);
    last().receive(season(3, 4));
    const kept = store.getSeasonEnd("cup");
    last().receive(season(3, 4, [entry(1, "other", 1)]));
    last().receive(season(2, 3));
    expect(store.getSeasonEnd("cup")).toBe(kept);
    expect(notified).toBe(1);
    last().receive(season(1, 2, [], "arena"));
    expect(store.getSeasonEnd("arena")).toMatchObject({ ended: 1, season: 2, winners: [] });
    expect(store.getSeasonEnd("cup")).toBe(kept);
    last().receive(season(4, 5));
    expect(store.getSeasonEnd("cup")).toMatchObject({ ended: 4, season: 5 });
    expect(notified).toBe(2);
  });

  it("says when nobody scored in the ended season, and keeps fewer than 3 winners as they are", () => {
    const { store, last } = followed();
    let announced = 0;
    store.listen(ANNOUNCE_KEY, () => announced++);
    last().receive(season(1, 2, []));
    expect(store.getSeasonEnd("cup")?.winners).toEqual([]);
    expect(store.getAnnouncement()?.text).toBe("Season 1 ended with no scores. Season 2 has started.");
    last().receive(season(2, 3, [{ ...entry(1, "yan", 9), display_name: "Yan Li" }]));
    expect(store.getSeasonEnd("cup")?.winners).toHaveLength(1);
    expect(store.getAnnouncement()?.text).toBe("Season 2 ended. Winners: 1 Yan Li. Season 3 has started.");
    expect(announced).toBe(2);
  });

  it("dismissing the banner keeps the season known, and the next reset shows again", () => {
    const { store, last } = followed();
    let notified = 0;
    store.listen(seasonKey("cup"), () => notified++);
    store.dismissSeasonEnd("cup"); // nothing to dismiss yet
    expect(notified).toBe(0);
    last().receive(season(1, 2));
    store.dismissSeasonEnd("cup");
    store.dismissSeasonEnd("cup");
    expect(store.getSeasonEnd("cup")).toMatchObject({ ended: 1, season: 2, dismissed: true });
    expect(notified).toBe(2);
    last().receive(season(1, 2)); // the same reset again does not bring the banner back
    expect(store.getSeasonEnd("cup")?.dismissed).toBe(true);
    last().receive(season(2, 3));
    expect(store.getSeasonEnd("cup")).toMatchObject({ ended: 2, season: 3, dismissed: false });
  });

  it("ignores a malformed season frame", () => {
    const { store, last } = followed();
    last().receive({ type: "season", board: "cup", ended: "1", season: 2, final: [] });
    last().receive({ type: "season", board: "cup", ended: 1, final: [] });
    expect(store.getSeasonEnd("cup")).toBeUndefined();
    last().receive({ type: "season", board: "cup", ended: 1, season: 2 }); // no final: the winners are not known
    expect(store.getSeasonEnd("cup")).toMatchObject({ ended: 1, season: 2, winners: null });
    expect(store.getAnnouncement()?.text).toBe("Season 1 ended. Season 2 has started.");
  });
});

describe("server health: status frame, /readyz fallback", () => {
  const degradedFrame = {
    type: "status",
    state: "degraded",
    checks: { postgres: "unavailable", redis: "ok" },
    detail: "database unavailable: scores cannot be saved",
  };
  const okFrame = { type: "status", state: "ok", checks: { postgres: "ok", redis: "ok" }, detail: "" };
  const notReady = healthFromReadyz(503, { status: 503, detail: "postgres: unreachable: OSError" });
  const ready = healthFromReadyz(200, { status: "ready", checks: { postgres: "ok", redis: "ok" } });

  function withProbe(random: () => number = () => 0.5) {
    const probe = new FakeReadyProbe();
    return { probe, ...setup(random, 60_000, { probeReady: probe.probe, readyPollMs: 10_000 }) };
  }

  it("is unknown until the server says anything", () => {
    const { store, last } = setup();
    store.start();
    last().open();
    expect(store.getHealth().state).toBe("unknown");
  });

  it("reports a degraded status frame with its detail, and an ok frame clears it", () => {
    const { store, last } = setup();
    let notified = 0;
    store.listen(HEALTH_KEY, () => notified++);
    store.start();
    last().open();
    last().receive(degradedFrame);
    expect(store.getHealth()).toEqual({
      state: "degraded",
      checks: { postgres: "unavailable", redis: "ok" },
      detail: "database unavailable: scores cannot be saved",
      source: "frame",
    });
    expect(store.getStatus().state).toBe("connected"); // the socket is fine; the server is not
    last().receive(degradedFrame); // unchanged: no re-render
    expect(notified).toBe(1);
    last().receive(okFrame);
    expect(store.getHealth()).toMatchObject({ state: "ok", detail: "", source: "frame" });
    expect(notified).toBe(2);
  });

  it("probes /readyz at once on start, then every 10 s while connected and no status frame came", async () => {
    const { store, last, clock, probe } = withProbe();
    store.start();
    expect(probe.calls).toBe(1); // on load, before the socket opens
    await probe.answer(notReady);
    expect(store.getHealth()).toMatchObject({
      state: "degraded",
      detail: "database unavailable: scores cannot be saved",
      source: "readyz",
    });
    clock.advance(50);
    last().open();
    clock.advance(9_949);
    expect(probe.calls).toBe(1);
    clock.advance(1); // 10 s after the last probe
    expect(probe.calls).toBe(2);
    await probe.answer(ready);
    expect(store.getHealth()).toMatchObject({ state: "ok", source: "readyz" });
    clock.advance(10_000);
    expect(probe.calls).toBe(3);
    await probe.answer(null); // inconclusive (network error): keeps what it knew
    expect(store.getHealth().state).toBe("ok");
  });

  it("stops polling once a status frame arrives, and a late probe answer does not override the frame", async () => {
    const { store, last, clock, probe } = withProbe();
    store.start();
    last().open();
    last().receive(degradedFrame);
    await probe.answer(ready); // the load-time probe answers after the frame
    expect(store.getHealth()).toMatchObject({ state: "degraded", source: "frame" });
    clock.advance(60_000);
    expect(probe.calls).toBe(1);
  });

  it("does not poll while disconnected; after a reconnect it polls again until that socket sends a frame", async () => {
    const { store, last, clock, probe } = withProbe(() => 0);
    store.start();
    await probe.answer(ready);
    last().open();
    last().receive(okFrame);
    last().serverClose(1012); // e.g. a rolling restart onto a server that sends no status frame
    clock.advance(0);
    clock.advance(30_000); // the new socket has not opened yet
    expect(probe.calls).toBe(1);
    last().open();
    clock.advance(0); // the last probe is > 10 s old: at once
    expect(probe.calls).toBe(2);
    await probe.answer(notReady);
    expect(store.getHealth()).toMatchObject({ state: "degraded", source: "readyz" });
    clock.advance(10_000);
    expect(probe.calls).toBe(3);
    last().receive(okFrame);
    await probe.answer(notReady); // the frame wins
    expect(store.getHealth()).toMatchObject({ state: "ok", source: "frame" });
    clock.advance(60_000);
    expect(probe.calls).toBe(3);
  });

  it("never runs two probes at once, and stop() ends the polling", async () => {
    const { store, last, clock, probe } = withProbe();
    store.start();
    last().open();
    clock.advance(30_000); // the load-time probe never answered
    expect(probe.calls).toBe(1);
    await probe.answer(ready);
    clock.advance(10_000);
    expect(probe.calls).toBe(2);
    store.stop();
    await probe.answer(notReady); // answers after stop are ignored
    clock.advance(60_000);
    expect(probe.calls).toBe(2);
    expect(store.getHealth().state).toBe("ok");
  });
});
