// REST calls (docs/protocol.md). Errors come back as RFC 9457 problem details.

import { type Health, healthFromReadyz } from "./health";
import type { BoardInfo, BoardSeasons, PlayerRank, Problem, SubmitAck, SubmitBody, TopPage } from "./types";

export class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail || problem.title);
  }
}

async function readProblem(res: Response): Promise<Problem> {
  try {
    const body = (await res.json()) as Partial<Problem>;
    // A problem has a title; the server's always does, but `{status, code, detail}` alone is still one.
    if (body && typeof body === "object" && (typeof body.title === "string" || typeof body.detail === "string")) {
      return { ...body, title: body.title ?? (res.statusText || "Error"), status: body.status ?? res.status } as Problem;
    }
  } catch {
    // Not JSON (a proxy error page, for instance): fall through to a synthetic problem.
  }
  return { title: res.statusText || "Request failed", status: res.status, detail: `HTTP ${res.status}` };
}

/** fetch, then the JSON body; a non-2xx answer or a network error is thrown as a ProblemError. */
export async function request<T>(path: string, init?: RequestInit): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ProblemError({ title: "Network error", status: 0, detail: String(err), code: "network" });
  }
  if (!res.ok) throw new ProblemError(await readProblem(res));
  return (await res.json()) as T;
}

export async function listBoards(signal?: AbortSignal): Promise<BoardInfo[]> {
  const body = await request<{ boards: BoardInfo[] }>("/api/leaderboards", { signal });
  return body.boards;
}

/** One board with its live season and next reset (GET /api/leaderboards/{id}). */
export function getBoard(board: string, signal?: AbortSignal): Promise<BoardInfo> {
  return request<BoardInfo>(`/api/leaderboards/${encodeURIComponent(board)}`, { signal });
}

/** Seasons per page of the past-seasons view (the API's default is 100). */
export const SEASONS_PAGE = 25;

/** A page of a board's seasons, newest first: the first (no `before`) starts with the live one. */
export function getSeasons(board: string, signal?: AbortSignal, before?: number): Promise<BoardSeasons> {
  const page = `?limit=${SEASONS_PAGE}${before === undefined ? "" : `&before=${before}`}`;
  return request<BoardSeasons>(`/api/leaderboards/${encodeURIComponent(board)}/seasons${page}`, { signal });
}

/** A page of a board; with `season`, of that (ended) season as it ended. */
export function getTop(
  board: string,
  opts: { limit?: number; offset?: number; season?: number | null } = {},
  signal?: AbortSignal,
): Promise<TopPage> {
  const q = new URLSearchParams({ board, limit: String(opts.limit ?? 10), offset: String(opts.offset ?? 0) });
  if (opts.season != null) q.set("season", String(opts.season));
  return request<TopPage>(`/api/leaderboard/top?${q}`, { signal });
}

/** GET /readyz as health; null when it says nothing about the server (network error, not 200/503). */
export async function probeReady(): Promise<Health | null> {
  let res: Response;
  try {
    res = await fetch("/readyz", { cache: "no-store", signal: AbortSignal.timeout(5000) });
  } catch {
    return null;
  }
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    // not JSON (a proxy's error page): the status alone decides
  }
  return healthFromReadyz(res.status, body);
}

/** A player's standing; with `season`, in that (ended) season. */
export function getRank(
  userId: string,
  board: string,
  around = 3,
  signal?: AbortSignal,
  season?: number | null,
): Promise<PlayerRank> {
  const q = new URLSearchParams({ board, around: String(around) });
  if (season != null) q.set("season", String(season));
  return request<PlayerRank>(`/api/leaderboard/rank/${encodeURIComponent(userId)}?${q}`, { signal });
}

export function submitScore(body: SubmitBody, key: string): Promise<SubmitAck> {
  return request<SubmitAck>("/api/leaderboard/submit", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
}

/** crypto.randomUUID exists only in secure contexts (https, localhost); build a v4 UUID otherwise. */
export function newSessionId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
