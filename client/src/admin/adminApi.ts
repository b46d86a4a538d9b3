// The moderation API (admin key; a player's submissions also with a read key). Every call sends
// `Authorization: Bearer <key>`; errors are thrown as ProblemError (RFC 9457: status, code, detail).

import { ProblemError, request } from "../api";
import type { BoardInfo, PlayerRank } from "../types";

/** One logged submission of a player (newest first in the list). */
export interface LoggedSubmission {
  session_id: string;
  board: string;
  season: number;
  score: number;
  submitted_at: string;
  voided_at: string | null;
  /** Of the board's live season (moderation can void or restore it); false: of an ended season, final. */
  live?: boolean;
}

export interface PlayerSubmissions {
  user_id: string;
  banned: boolean;
  submissions: LoggedSubmission[];
}

export interface VoidReply {
  board: string;
  user_id: string;
  session_id: string;
  /** The player's value recomputed without it; null: nothing is left, the entry is gone. */
  score: number | null;
  season: number;
}

/** A restore answers like a void: `score` is the player's value recomputed with the submission again. */
export type RestoreReply = VoidReply;

export interface RemoveReply {
  board: string;
  user_id: string;
  season: number;
  /** Submissions of the live season voided with the entry. */
  voided: number;
}

export interface BanReply {
  user_id: string;
  banned: boolean;
  /** board -> the player's value there now (a ban: null on every board it had an entry on). */
  boards: Record<string, number | null>;
}

export type AuditAction = "void" | "restore" | "remove" | "ban" | "unban";

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: AuditAction;
  board: string | null;
  user_id: string;
  session_id: string | null;
  reason: string;
  detail: { boards?: Record<string, number | null> } & Record<string, unknown>;
}

export interface AuditPage {
  entries: AuditEntry[];
  /** Pass as `before` for the next (older) page; null: this was the last. */
  next_before: number | null;
}

const seg = encodeURIComponent;

/** What a reason may be (the server checks the same): 1–500 characters once trimmed, on one line. */
export const REASON_MAX = 500;
// Control characters (newlines too) and bidirectional controls, as the server's TEXT_PATTERN refuses them.
const REASON_BANNED = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;

/** Characters as the server counts them (code points, not UTF-16 units). */
export const reasonLength = (text: string): number => [...text.trim()].length;

/** Why a reason would be refused, or null when it is fine. */
export function reasonProblem(text: string): string | null {
  const n = reasonLength(text);
  if (n === 0) return "A reason is required: it is kept in the audit log.";
  if (n > REASON_MAX) return `The reason is ${n} characters: at most ${REASON_MAX}.`;
  if (REASON_BANNED.test(text.trim())) return "The reason must be one line without control characters.";
  return null;
}

export interface AdminClient {
  /** Checks the key against an admin-only read: resolves when it is an admin key, else throws (401, 403…). */
  verify(signal?: AbortSignal): Promise<void>;
  board(board: string, signal?: AbortSignal): Promise<BoardInfo>;
  /** The player's rank and score on a board; null when they have no entry there (404). */
  rank(userId: string, board: string, signal?: AbortSignal): Promise<PlayerRank | null>;
  submissions(userId: string, board: string | null, limit: number, signal?: AbortSignal): Promise<PlayerSubmissions>;
  void(sessionId: string, reason: string): Promise<VoidReply>;
  /** Undo a void: the submission counts again (409 not_voided if it is not voided, season_ended if final). */
  restore(sessionId: string, reason: string): Promise<RestoreReply>;
  removeEntry(userId: string, board: string, reason: string): Promise<RemoveReply>;
  ban(userId: string, reason: string): Promise<BanReply>;
  unban(userId: string, reason: string): Promise<BanReply>;
  audit(limit: number, before: number | null, signal?: AbortSignal): Promise<AuditPage>;
}

export function adminClient(key: string): AdminClient {
  const auth = { Authorization: `Bearer ${key}` };
  const get = <T>(path: string, signal?: AbortSignal) => request<T>(path, { headers: auth, signal, cache: "no-store" });
  const send = <T>(method: "POST" | "DELETE", path: string, body?: unknown) =>
    request<T>(path, {
      method,
      headers: body === undefined ? auth : { ...auth, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const audit = (limit: number, before: number | null, signal?: AbortSignal) => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before !== null) q.set("before", String(before));
    return get<AuditPage>(`/api/audit?${q}`, signal);
  };
  return {
    async verify(signal) {
      await audit(1, null, signal);
    },
    board: (board, signal) => get<BoardInfo>(`/api/leaderboards/${seg(board)}`, signal),
    async rank(userId, board, signal) {
      try {
        return await get<PlayerRank>(`/api/leaderboard/rank/${seg(userId)}?${new URLSearchParams({ board })}`, signal);
      } catch (err) {
        if (err instanceof ProblemError && err.problem.status === 404) return null;
        throw err;
      }
    },
    submissions(userId, board, limit, signal) {
      const q = new URLSearchParams({ limit: String(limit) });
      if (board !== null) q.set("board", board);
      return get<PlayerSubmissions>(`/api/players/${seg(userId)}/submissions?${q}`, signal);
    },
    void: (sessionId, reason) => send<VoidReply>("POST", "/api/leaderboard/void", { session_id: sessionId, reason: reason.trim() }),
    restore: (sessionId, reason) =>
      send<RestoreReply>("POST", "/api/leaderboard/restore", { session_id: sessionId, reason: reason.trim() }),
    removeEntry: (userId, board, reason) =>
      send<RemoveReply>(
        "DELETE",
        `/api/leaderboard/entries/${seg(userId)}?${new URLSearchParams({ board, reason: reason.trim() })}`,
      ),
    ban: (userId, reason) => send<BanReply>("POST", `/api/players/${seg(userId)}/ban`, { reason: reason.trim() }),
    unban: (userId, reason) =>
      send<BanReply>("DELETE", `/api/players/${seg(userId)}/ban?${new URLSearchParams({ reason: reason.trim() })}`),
    audit,
  };
}

/** The admin key lives in this tab's sessionStorage only (never localStorage): gone when the tab closes. */
export const ADMIN_KEY_STORAGE = "leaderboard.adminKey";

type KeyStore = Pick<Storage, "getItem" | "setItem" | "removeItem">;

function session(): KeyStore | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage disabled
  }
}

export function loadAdminKey(store: KeyStore | null = session()): string | null {
  try {
    return store?.getItem(ADMIN_KEY_STORAGE) || null;
  } catch {
    return null;
  }
}

export function saveAdminKey(key: string | null, store: KeyStore | null = session()): void {
  try {
    if (key) store?.setItem(ADMIN_KEY_STORAGE, key);
    else store?.removeItem(ADMIN_KEY_STORAGE);
  } catch {
    // Storage disabled: the key is kept for this page only.
  }
}
