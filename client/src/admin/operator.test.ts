import { describe, expect, it } from "vitest";
import type { AuditEntry, AuditPage, LoggedSubmission } from "./adminApi";
import {
  AUDIT_START,
  type AuditState,
  type Flow,
  IDLE,
  type Pending,
  actionText,
  auditReducer,
  auditText,
  flowReducer,
  isStale,
  outcomeText,
  problemText,
  submissionAction,
} from "./operator";

const SID = "0c8f3a52-6a43-4d3e-9b8e-2f7c6a9e1d11";
const voidAlice: Pending = {
  kind: "void",
  userId: "alice",
  board: "global",
  sessionId: SID,
  score: 50,
  season: 1,
  submittedAt: "2026-12-01T10:00:00Z",
};
const restoreAlice: Pending = { ...voidAlice, kind: "restore" };
const conflict = { title: "Conflict", status: 409, code: "already_voided", detail: "this submission is already voided" };
const notVoided = { title: "Conflict", status: 409, code: "not_voided", detail: "this submission is not voided" };

function run(events: Parameters<typeof flowReducer>[1][], from: Flow = IDLE): Flow {
  return events.reduce(flowReducer, from);
}

describe("flowReducer: reason, confirm, run", () => {
  it("opens on the confirm step with an empty reason", () => {
    expect(run([{ type: "open", action: voidAlice }])).toEqual({
      phase: "confirm",
      action: voidAlice,
      reason: "",
      invalid: null,
      problem: null,
    });
  });

  it("does not run without a valid reason", () => {
    const s = run([{ type: "open", action: voidAlice }, { type: "confirm" }]);
    expect(s).toMatchObject({ phase: "confirm", invalid: expect.stringMatching(/required/) });
    const s2 = run([{ type: "reason", text: "x".repeat(501) }, { type: "confirm" }], s);
    expect(s2).toMatchObject({ phase: "confirm", invalid: expect.stringMatching(/at most 500/) });
    // typing clears the complaint
    expect(run([{ type: "reason", text: "ok" }], s2)).toMatchObject({ phase: "confirm", invalid: null, reason: "ok" });
  });

  it("runs with a valid reason, then goes back to idle", () => {
    const s = run([{ type: "open", action: voidAlice }, { type: "reason", text: "dup run" }, { type: "confirm" }]);
    expect(s).toEqual({ phase: "running", action: voidAlice, reason: "dup run" });
    expect(run([{ type: "done" }], s)).toEqual(IDLE);
  });

  it("a refusal returns to the confirm step with the problem and the reason kept", () => {
    const s = run([
      { type: "open", action: voidAlice },
      { type: "reason", text: "dup run" },
      { type: "confirm" },
      { type: "failed", problem: conflict },
    ]);
    expect(s).toEqual({ phase: "confirm", action: voidAlice, reason: "dup run", invalid: null, problem: conflict });
    // trying again clears it while the request runs
    expect(run([{ type: "confirm" }], s)).toEqual({ phase: "running", action: voidAlice, reason: "dup run" });
  });

  it("cannot be cancelled or replaced while the request runs; cancel closes the confirm step", () => {
    const running = run([{ type: "open", action: voidAlice }, { type: "reason", text: "r" }, { type: "confirm" }]);
    expect(run([{ type: "cancel" }], running)).toBe(running);
    expect(run([{ type: "open", action: { kind: "ban", userId: "bob" } }], running)).toBe(running);
    expect(run([{ type: "open", action: voidAlice }, { type: "cancel" }])).toEqual(IDLE);
  });

  it("ignores answers that arrive when nothing runs", () => {
    expect(run([{ type: "done" }])).toEqual(IDLE);
    expect(run([{ type: "failed", problem: conflict }])).toEqual(IDLE);
    const confirm = run([{ type: "open", action: voidAlice }]);
    expect(run([{ type: "done" }], confirm)).toBe(confirm);
  });
});

describe("texts", () => {
  it("says what each action does before it runs; a void (and a removal's voids) can be restored, so none is final", () => {
    const v = actionText(voidAlice);
    expect(v.summary).toMatch(/Void the 50 that alice submitted on global \(season 1\)/);
    expect(v.summary).toMatch(/It can be restored while season 1 is live\.$/);
    expect(v).toMatchObject({ confirm: "Void submission", final: false, title: "Void submission 0c8f3a52…" });
    const remove = actionText({ kind: "remove", userId: "a", board: "cup" });
    expect(remove).toMatchObject({ final: false, confirm: "Remove entry" });
    expect(remove.summary).toMatch(/Each of those submissions can be restored on its own while the season is live\.$/);
    const r = actionText(restoreAlice);
    expect(r).toMatchObject({ confirm: "Restore submission", running: "Restoring…", final: false, title: "Restore submission 0c8f3a52…" });
    expect(r.summary).toBe(
      "Restore the 50 that alice submitted on global (season 1): it is no longer voided, it counts again, and their score on global is recomputed with it.",
    );
    expect(actionText({ ...restoreAlice, score: 61_234 }, "time_ms").summary).toMatch(/^Restore the 1:01\.234 /);
    expect(actionText({ kind: "ban", userId: "a" })).toMatchObject({ final: false, confirm: "Ban player" });
    expect(actionText({ kind: "unban", userId: "a" })).toMatchObject({ final: false, confirm: "Lift ban" });
    expect(actionText({ ...voidAlice, score: 61_234 }, "time_ms").summary).toMatch(/Void the 1:01\.234/);
  });

  it("says what an action did from its answer", () => {
    expect(outcomeText(voidAlice, { board: "global", user_id: "alice", session_id: SID, score: 1200, season: 1 })).toBe(
      "Voided submission 0c8f3a52: alice's score on global is now 1,200.",
    );
    expect(outcomeText(voidAlice, { board: "global", user_id: "alice", session_id: SID, score: null, season: 1 })).toBe(
      "Voided submission 0c8f3a52: alice has no entry on global any more.",
    );
    expect(outcomeText(restoreAlice, { board: "global", user_id: "alice", session_id: SID, score: 1234, season: 1 })).toBe(
      "Restored submission 0c8f3a52: alice's score on global is now 1,234.",
    );
    expect(
      outcomeText({ ...restoreAlice, board: "sprint" }, { board: "sprint", user_id: "alice", session_id: SID, score: 61_234, season: 2 }, (b) =>
        b === "sprint" ? "time_ms" : "number",
      ),
    ).toBe("Restored submission 0c8f3a52: alice's score on sprint is now 1:01.234.");
    // Only a banned player has no value with the submission counting again.
    expect(outcomeText(restoreAlice, { board: "global", user_id: "alice", session_id: SID, score: null, season: 1 })).toBe(
      "Restored submission 0c8f3a52: alice has no entry on global (banned: it counts once the ban is lifted).",
    );
    expect(outcomeText({ kind: "remove", userId: "alice", board: "cup" }, { board: "cup", user_id: "alice", season: 3, voided: 1 })).toBe(
      "Removed alice from cup (season 3): 1 submission voided.",
    );
    expect(outcomeText({ kind: "ban", userId: "alice" }, { user_id: "alice", banned: true, boards: { global: null, cup: null } })).toBe(
      "Banned alice: removed from global, cup.",
    );
    expect(outcomeText({ kind: "ban", userId: "z" }, { user_id: "z", banned: true, boards: {} })).toBe(
      "Banned z: they had no entry on any board.",
    );
    expect(
      outcomeText(
        { kind: "unban", userId: "alice" },
        { user_id: "alice", banned: false, boards: { global: 100, sprint: 61_234 } },
        (b) => (b === "sprint" ? "time_ms" : "number"),
      ),
    ).toBe("Lifted the ban on alice: restored on global (100), sprint (1:01.234).");
  });

  it("puts a problem's detail first, with status and code, and explains 401 and 403", () => {
    expect(problemText(conflict)).toBe("this submission is already voided (409 already_voided)");
    expect(problemText({ title: "Unauthorized", status: 401, code: "unauthorized", detail: "unknown key" })).toMatch(
      /^unknown key \(401 unauthorized\) — the key was refused/,
    );
    expect(problemText({ title: "Forbidden", status: 403, detail: "voiding a submission needs an admin key" })).toMatch(/\(403\) — this needs an admin key/);
    expect(problemText({ title: "Network error", status: 0, detail: "TypeError: Failed to fetch" })).toBe("TypeError: Failed to fetch");
  });

  it("404 and 409 mean the view is out of date", () => {
    expect(isStale(conflict)).toBe(true);
    expect(isStale(notVoided)).toBe(true); // restored by someone else first
    expect(isStale({ title: "Conflict", status: 409, code: "season_ended" })).toBe(true);
    expect(isStale({ title: "", status: 404 })).toBe(true);
    expect(isStale({ title: "", status: 422 })).toBe(false);
    expect(isStale({ title: "", status: 503 })).toBe(false);
  });
});

const entry = (id: number, action: AuditEntry["action"] = "void", extra: Partial<AuditEntry> = {}): AuditEntry => ({
  id,
  at: "2026-12-01T10:00:00Z",
  actor: "ops",
  action,
  board: action === "void" || action === "restore" || action === "remove" ? "global" : null,
  user_id: "alice",
  session_id: action === "void" || action === "restore" ? SID : null,
  reason: "r",
  detail: { boards: {} },
  ...extra,
});
const page = (ids: number[], next: number | null): AuditPage => ({ entries: ids.map((i) => entry(i)), next_before: next });
const ids = (s: AuditState) => s.entries.map((e) => e.id);

describe("auditText", () => {
  it("describes each action with what it changed", () => {
    expect(auditText(entry(1, "void", { detail: { boards: { global: 100 } } }))).toBe("voided submission 0c8f3a52 of alice on global — score now 100");
    expect(auditText(entry(1, "void", { detail: { boards: { global: null } } }))).toBe("voided submission 0c8f3a52 of alice on global — no entry left");
    expect(auditText(entry(2, "remove"))).toBe("removed alice from global");
    expect(auditText(entry(3, "ban", { detail: { boards: { global: null, cup: null } } }))).toBe("banned alice — removed from global, cup");
    expect(auditText(entry(4, "unban", { detail: { boards: { global: 100 } } }))).toBe("lifted the ban on alice — restored on global (100)");
    expect(auditText(entry(5, "unban", { detail: {} }))).toBe("lifted the ban on alice");
  });

  it("describes a restore like a void: the submission, the player, the board and the score now", () => {
    expect(auditText(entry(6, "restore", { detail: { boards: { global: 1234 } } }))).toBe(
      "restored submission 0c8f3a52 of alice on global — score now 1,234",
    );
    expect(auditText(entry(6, "restore", { board: "sprint", detail: { boards: { sprint: 61_234 } } }), (b) => (b === "sprint" ? "time_ms" : "number"))).toBe(
      "restored submission 0c8f3a52 of alice on sprint — score now 1:01.234",
    );
    expect(auditText(entry(6, "restore", { detail: { boards: { global: null } } }))).toBe("restored submission 0c8f3a52 of alice on global — no entry (banned)");
    expect(auditText(entry(6, "restore", { session_id: null, detail: {} }))).toBe("restored submission of alice on global");
  });
});

describe("auditReducer: newest first, 'older' appends", () => {
  it("loads the first page, then older pages until next_before is null", () => {
    let s = auditReducer(AUDIT_START, { type: "refresh", gen: 1 });
    expect(s.loading).toBe("first");
    s = auditReducer(s, { type: "page", gen: 1, before: null, page: page([9, 8, 7], 7) });
    expect(ids(s)).toEqual([9, 8, 7]);
    expect(s).toMatchObject({ nextBefore: 7, loading: null, loaded: true });
    s = auditReducer(s, { type: "older" });
    expect(s.loading).toBe("older");
    s = auditReducer(s, { type: "page", gen: 1, before: 7, page: page([6, 5], null) });
    expect(ids(s)).toEqual([9, 8, 7, 6, 5]);
    expect(s.nextBefore).toBeNull();
    expect(auditReducer(s, { type: "older" })).toBe(s); // nothing older
  });

  it("a refresh replaces the list with the newest page (entries stay shown until it arrives)", () => {
    let s = auditReducer(AUDIT_START, { type: "refresh", gen: 1 });
    s = auditReducer(s, { type: "page", gen: 1, before: null, page: page([3, 2], 2) });
    s = auditReducer(s, { type: "refresh", gen: 2 });
    expect(ids(s)).toEqual([3, 2]);
    s = auditReducer(s, { type: "page", gen: 2, before: null, page: page([5, 4], 4) });
    expect(ids(s)).toEqual([5, 4]);
    expect(s.nextBefore).toBe(4);
  });

  it("drops answers of an earlier refresh and of a page already read", () => {
    let s = auditReducer(AUDIT_START, { type: "refresh", gen: 1 });
    s = auditReducer(s, { type: "page", gen: 1, before: null, page: page([9, 8], 8) });
    s = auditReducer(s, { type: "older" });
    s = auditReducer(s, { type: "refresh", gen: 2 }); // a refresh while "older" is on its way
    const stale = auditReducer(s, { type: "page", gen: 1, before: 8, page: page([7, 6], 6) });
    expect(stale).toBe(s);
    s = auditReducer(s, { type: "page", gen: 2, before: null, page: page([10, 9], 9) });
    expect(ids(s)).toEqual([10, 9]);
    expect(auditReducer(s, { type: "failed", gen: 1, problem: conflict })).toBe(s);
    // an older page answering a cursor that is no longer the current one
    const again = auditReducer(auditReducer(s, { type: "older" }), { type: "page", gen: 2, before: 8, page: page([7], null) });
    expect(ids(again)).toEqual([10, 9]);
    expect(again.loading).toBeNull();
  });

  it("never lists an entry twice", () => {
    let s = auditReducer(AUDIT_START, { type: "refresh", gen: 1 });
    s = auditReducer(s, { type: "page", gen: 1, before: null, page: page([9, 8], 8) });
    s = auditReducer(s, { type: "older" });
    s = auditReducer(s, { type: "page", gen: 1, before: 8, page: page([8, 7, 9], null) });
    expect(ids(s)).toEqual([9, 8, 7]);
  });

  it("keeps the entries and says why when a page fails", () => {
    let s = auditReducer(AUDIT_START, { type: "refresh", gen: 1 });
    s = auditReducer(s, { type: "page", gen: 1, before: null, page: page([2], 2) });
    s = auditReducer(s, { type: "older" });
    s = auditReducer(s, { type: "failed", gen: 1, problem: { title: "", status: 503, detail: "the database is unavailable; retry" } });
    expect(ids(s)).toEqual([2]);
    expect(s).toMatchObject({ loading: null, nextBefore: 2, problem: { status: 503 } });
  });
});

describe("submissionAction", () => {
  const VOIDED = "2026-12-01T11:00:00Z";
  const sub = (season: number, voided_at: string | null = null, live?: boolean): LoggedSubmission => ({
    session_id: SID,
    board: "global",
    season,
    score: 1,
    submitted_at: "2026-12-01T10:00:00Z",
    voided_at,
    ...(live === undefined ? {} : { live }),
  });
  it("void in the live season, restore once voided there; before it, final (voided or not)", () => {
    expect(submissionAction(sub(3), 3)).toBe("void");
    expect(submissionAction(sub(3, VOIDED), 3)).toBe("restore");
    expect(submissionAction(sub(2), 3)).toBe("final");
    expect(submissionAction(sub(2, VOIDED), 3)).toBe("final-voided");
    // live season unknown: let the server decide
    expect(submissionAction(sub(1), null)).toBe("void");
    expect(submissionAction(sub(1, VOIDED), null)).toBe("restore");
  });

  it("believes the submission's own `live` over the board's season (read at another moment)", () => {
    expect(submissionAction(sub(3, VOIDED, false), 3)).toBe("final-voided");
    expect(submissionAction(sub(3, null, false), null)).toBe("final");
    expect(submissionAction(sub(2, VOIDED, true), 3)).toBe("restore");
    expect(submissionAction(sub(2, null, true), 3)).toBe("void");
  });
});
