import { afterEach, describe, expect, it, vi } from "vitest";
import { ProblemError } from "../api";
import {
  ADMIN_KEY_STORAGE,
  REASON_MAX,
  adminClient,
  loadAdminKey,
  reasonLength,
  reasonProblem,
  saveAdminKey,
} from "./adminApi";

interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: unknown;
}

/** A fetch that records each call and answers from `answer` (status and JSON body). */
function fakeFetch(answer: (url: string) => { status: number; body: unknown }) {
  const calls: Call[] = [];
  const fn = vi.fn(async (url: string, init: RequestInit = {}) => {
    calls.push({
      url,
      method: init.method ?? "GET",
      headers: { ...(init.headers as Record<string, string>) },
      body: typeof init.body === "string" ? JSON.parse(init.body) : init.body,
    });
    const { status, body } = answer(url);
    return new Response(body === undefined ? null : JSON.stringify(body), {
      status,
      headers: { "content-type": status < 300 ? "application/json" : "application/problem+json" },
    });
  });
  vi.stubGlobal("fetch", fn);
  return calls;
}

afterEach(() => {
  vi.unstubAllGlobals();
});

const problem = (status: number, code: string, detail: string) => ({
  type: `/problems/${code}`,
  title: "Conflict",
  status,
  code,
  detail,
});

describe("adminClient: requests", () => {
  it("sends the key as a bearer token on reads and actions", async () => {
    const calls = fakeFetch(() => ({ status: 200, body: {} }));
    const api = adminClient("lbk_admin");
    await api.submissions("alice", "global", 25);
    await api.audit(20, null);
    await api.board("cup");
    for (const c of calls) expect(c.headers.Authorization).toBe("Bearer lbk_admin");
    expect(calls.map((c) => c.url)).toEqual([
      "/api/players/alice/submissions?limit=25&board=global",
      "/api/audit?limit=20",
      "/api/leaderboards/cup",
    ]);
  });

  it("pages the audit log with before=, and reads all boards' submissions without board=", async () => {
    const calls = fakeFetch(() => ({ status: 200, body: { entries: [], next_before: null } }));
    const api = adminClient("k");
    await api.audit(20, 41);
    await api.submissions("a.b@c", null, 50);
    expect(calls.map((c) => c.url)).toEqual(["/api/audit?limit=20&before=41", "/api/players/a.b%40c/submissions?limit=50"]);
  });

  it("void: POST with session_id and the trimmed reason", async () => {
    const reply = { board: "global", user_id: "alice", session_id: "s-1", score: 100, season: 1 };
    const calls = fakeFetch(() => ({ status: 200, body: reply }));
    expect(await adminClient("k").void("s-1", "  duplicate run  ")).toEqual(reply);
    expect(calls[0]).toMatchObject({
      url: "/api/leaderboard/void",
      method: "POST",
      body: { session_id: "s-1", reason: "duplicate run" },
      headers: { "Content-Type": "application/json", Authorization: "Bearer k" },
    });
  });

  it("restore: POST with session_id and the trimmed reason, answered like a void", async () => {
    const reply = { board: "global", user_id: "alice", session_id: "s-1", score: 150, season: 1 };
    const calls = fakeFetch(() => ({ status: 200, body: reply }));
    expect(await adminClient("k").restore("s-1", "  voided by mistake  ")).toEqual(reply);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({
      url: "/api/leaderboard/restore",
      method: "POST",
      body: { session_id: "s-1", reason: "voided by mistake" },
      headers: { "Content-Type": "application/json", Authorization: "Bearer k" },
    });
  });

  it("restore: a submission that is not voided (any more) is a 409 not_voided problem", async () => {
    fakeFetch(() => ({ status: 409, body: problem(409, "not_voided", "this submission is not voided") }));
    const err = await adminClient("k").restore("s", "r").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProblemError);
    expect((err as ProblemError).problem).toMatchObject({ status: 409, code: "not_voided", detail: "this submission is not voided" });
  });

  it("remove and unban: DELETE with board and reason in the query", async () => {
    const calls = fakeFetch(() => ({ status: 200, body: {} }));
    const api = adminClient("k");
    await api.removeEntry("alice", "cup", "aimbot & wallhack");
    await api.unban("alice", "appeal upheld");
    expect(calls.map((c) => [c.method, c.url])).toEqual([
      ["DELETE", "/api/leaderboard/entries/alice?board=cup&reason=aimbot+%26+wallhack"],
      ["DELETE", "/api/players/alice/ban?reason=appeal+upheld"],
    ]);
    expect(calls[0]?.body).toBeUndefined();
  });

  it("ban: POST with the reason in the body", async () => {
    const calls = fakeFetch(() => ({ status: 200, body: { user_id: "alice", banned: true, boards: { global: null } } }));
    const reply = await adminClient("k").ban("alice", "cheating");
    expect(reply.boards).toEqual({ global: null });
    expect(calls[0]).toMatchObject({ method: "POST", url: "/api/players/alice/ban", body: { reason: "cheating" } });
  });

  it("rank: a 404 is no entry (null), other errors are thrown", async () => {
    let status = 404;
    fakeFetch(() => ({ status, body: problem(status, "not_found", "'bob' has no entry on board 'global'") }));
    const api = adminClient("k");
    expect(await api.rank("bob", "global")).toBeNull();
    status = 503;
    await expect(api.rank("bob", "global")).rejects.toBeInstanceOf(ProblemError);
  });

  it("errors are problem details with status, code and detail", async () => {
    fakeFetch(() => ({ status: 409, body: problem(409, "already_voided", "this submission is already voided") }));
    const err = await adminClient("k").void("s", "r").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProblemError);
    expect((err as ProblemError).problem).toMatchObject({ status: 409, code: "already_voided", detail: "this submission is already voided" });
  });

  it("a problem without a title still carries its detail; a non-JSON error page its status", async () => {
    let body: unknown = { status: 409, code: "season_ended", detail: "its standings are final" };
    fakeFetch(() => ({ status: 409, body }));
    const api = adminClient("k");
    let err = (await api.void("s", "r").catch((e: unknown) => e)) as ProblemError;
    expect(err.problem).toMatchObject({ status: 409, code: "season_ended", detail: "its standings are final" });
    expect(typeof err.problem.title).toBe("string");
    body = undefined;
    err = (await api.ban("a", "r").catch((e: unknown) => e)) as ProblemError;
    expect(err.problem).toMatchObject({ status: 409, detail: "HTTP 409" });
  });

  it("a network error is a problem with status 0", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => Promise.reject(new TypeError("Failed to fetch"))));
    const err = (await adminClient("k").audit(1, null).catch((e: unknown) => e)) as ProblemError;
    expect(err.problem).toMatchObject({ status: 0, code: "network" });
  });

  it("verify: an admin-only read; 401 and 403 are refusals", async () => {
    let status = 200;
    const calls = fakeFetch(() =>
      status === 200 ? { status, body: { entries: [], next_before: null } } : { status, body: problem(status, "forbidden", "reading the audit log needs an admin key") },
    );
    const api = adminClient("k");
    await expect(api.verify()).resolves.toBeUndefined();
    expect(calls[0]?.url).toBe("/api/audit?limit=1");
    status = 403;
    await expect(api.verify()).rejects.toMatchObject({ problem: { status: 403 } });
    status = 401;
    await expect(api.verify()).rejects.toMatchObject({ problem: { status: 401 } });
  });
});

describe("reasons", () => {
  it("are required, 1–500 characters once trimmed, counted as the server counts them", () => {
    expect(reasonProblem("")).toMatch(/required/);
    expect(reasonProblem("   ")).toMatch(/required/);
    expect(reasonProblem("x")).toBeNull();
    expect(reasonProblem("x".repeat(REASON_MAX))).toBeNull();
    expect(reasonProblem("x".repeat(REASON_MAX + 1))).toMatch(/501 characters/);
    // 500 emoji are 1000 UTF-16 units but 500 characters for the server.
    expect(reasonLength("🎮".repeat(500))).toBe(500);
    expect(reasonProblem("🎮".repeat(500))).toBeNull();
    expect(reasonProblem(`  ${"y".repeat(500)}  `)).toBeNull();
  });

  it("are one line without control or bidirectional characters", () => {
    expect(reasonProblem("line one\nline two")).toMatch(/one line/);
    expect(reasonProblem("tab\there")).toMatch(/one line/);
    expect(reasonProblem("\u202eevil")).toMatch(/one line/);
    expect(reasonProblem("speed hack (x3), see ticket #41 — ÄÖÜ 🎮")).toBeNull();
  });
});

describe("the admin key's storage", () => {
  function memory() {
    const m = new Map<string, string>();
    return {
      m,
      getItem: (k: string) => m.get(k) ?? null,
      setItem: (k: string, v: string) => void m.set(k, v),
      removeItem: (k: string) => void m.delete(k),
    };
  }

  it("saves, loads and forgets the key under one name", () => {
    const s = memory();
    expect(loadAdminKey(s)).toBeNull();
    saveAdminKey("lbk_1", s);
    expect(s.m.get(ADMIN_KEY_STORAGE)).toBe("lbk_1");
    expect(loadAdminKey(s)).toBe("lbk_1");
    saveAdminKey(null, s);
    expect(s.m.size).toBe(0);
    expect(loadAdminKey(s)).toBeNull();
  });

  it("uses sessionStorage by default and survives storage that throws", () => {
    const s = memory();
    vi.stubGlobal("sessionStorage", s);
    saveAdminKey("lbk_2");
    expect(loadAdminKey()).toBe("lbk_2");
    const broken = {
      getItem: () => {
        throw new Error("denied");
      },
      setItem: () => {
        throw new Error("denied");
      },
      removeItem: () => {
        throw new Error("denied");
      },
    };
    expect(loadAdminKey(broken)).toBeNull();
    expect(() => saveAdminKey("k", broken)).not.toThrow();
  });
});
