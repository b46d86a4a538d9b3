// The operator view's logic, free of React and the network: the confirm-then-run flow of a destructive action,
// what to say about its answer, the audit log's paging, and which submissions can be voided or restored.

import type { Problem, ScoreFormat } from "../types";
import { formatScore } from "../format";
import type { AuditEntry, AuditPage, BanReply, LoggedSubmission, RemoveReply, RestoreReply, VoidReply } from "./adminApi";
import { reasonProblem } from "./adminApi";

// ---- a destructive action: open, give a reason, confirm, run; a refusal goes back to the confirm step ----

/** The logged submission a void or a restore acts on. */
interface OnSubmission {
  userId: string;
  board: string;
  sessionId: string;
  score: number;
  season: number;
  submittedAt: string;
}

export type Pending =
  | ({ kind: "void" } & OnSubmission)
  | ({ kind: "restore" } & OnSubmission)
  | { kind: "remove"; userId: string; board: string }
  | { kind: "ban"; userId: string }
  | { kind: "unban"; userId: string };

export type Flow =
  | { phase: "idle" }
  /** `invalid`: the reason as typed would be refused; `problem`: the server refused the last attempt. */
  | { phase: "confirm"; action: Pending; reason: string; invalid: string | null; problem: Problem | null }
  | { phase: "running"; action: Pending; reason: string };

export type FlowEvent =
  | { type: "open"; action: Pending }
  | { type: "reason"; text: string }
  | { type: "cancel" }
  | { type: "confirm" }
  | { type: "failed"; problem: Problem }
  | { type: "done" };

export const IDLE: Flow = { phase: "idle" };

export function flowReducer(state: Flow, ev: FlowEvent): Flow {
  switch (ev.type) {
    case "open":
      // Not while one runs: its answer must land on the action it belongs to.
      return state.phase === "running" ? state : { phase: "confirm", action: ev.action, reason: "", invalid: null, problem: null };
    case "reason":
      return state.phase === "confirm" ? { ...state, reason: ev.text, invalid: null } : state;
    case "cancel":
      return state.phase === "confirm" ? IDLE : state; // a request on its way cannot be called back
    case "confirm": {
      if (state.phase !== "confirm") return state;
      const invalid = reasonProblem(state.reason);
      return invalid ? { ...state, invalid, problem: null } : { phase: "running", action: state.action, reason: state.reason };
    }
    case "failed":
      return state.phase === "running"
        ? { phase: "confirm", action: state.action, reason: state.reason, invalid: null, problem: ev.problem }
        : state;
    case "done":
      return state.phase === "running" ? IDLE : state;
  }
}

/** A refusal that means the view is out of date (someone else acted first): read the player again. */
export function isStale(problem: Problem): boolean {
  return problem.status === 404 || problem.status === 409;
}

/** A problem as one line: its detail first (what the operator needs), then status and code. */
export function problemText(p: Problem): string {
  const what = p.detail || p.title;
  const tag = p.status ? ` (${p.status}${p.code ? ` ${p.code}` : ""})` : "";
  const hint =
    p.status === 401
      ? " — the key was refused: it may have been revoked; forget it and enter a valid admin key."
      : p.status === 403
        ? " — this needs an admin key."
        : "";
  return `${what}${tag}${hint}`;
}

export const shortId = (sessionId: string): string => sessionId.slice(0, 8);

export interface ActionText {
  title: string;
  /** What it does, in a sentence, said before the operator confirms. */
  summary: string;
  confirm: string;
  running: string;
  /** It cannot be taken back through the API. */
  final: boolean;
}

export function actionText(a: Pending, format: ScoreFormat = "number"): ActionText {
  switch (a.kind) {
    case "void":
      return {
        title: `Void submission ${shortId(a.sessionId)}…`,
        summary: `Void the ${formatScore(a.score, format)} that ${a.userId} submitted on ${a.board} (season ${a.season}). It stays in the log, marked voided, and their score on ${a.board} is recomputed without it. It can be restored while season ${a.season} is live.`,
        confirm: "Void submission",
        running: "Voiding…",
        final: false,
      };
    case "restore":
      return {
        title: `Restore submission ${shortId(a.sessionId)}…`,
        summary: `Restore the ${formatScore(a.score, format)} that ${a.userId} submitted on ${a.board} (season ${a.season}): it is no longer voided, it counts again, and their score on ${a.board} is recomputed with it.`,
        confirm: "Restore submission",
        running: "Restoring…",
        final: false,
      };
    case "remove":
      return {
        title: `Remove ${a.userId} from ${a.board}`,
        summary: `Remove ${a.userId}'s entry from ${a.board}'s live season and void every submission of theirs in it. They can score again afterwards. Each of those submissions can be restored on its own while the season is live.`,
        confirm: "Remove entry",
        running: "Removing…",
        final: false,
      };
    case "ban":
      return {
        title: `Ban ${a.userId}`,
        summary: `Ban ${a.userId}: their entries leave every board now and each later submission is refused. Their submissions are kept, so lifting the ban restores them.`,
        confirm: "Ban player",
        running: "Banning…",
        final: false,
      };
    case "unban":
      return {
        title: `Lift the ban on ${a.userId}`,
        summary: `Lift the ban on ${a.userId}: their entries come back, recomputed from their submissions that are not voided.`,
        confirm: "Lift ban",
        running: "Lifting the ban…",
        final: false,
      };
  }
}

type FormatOf = (board: string) => ScoreFormat;
const plain: FormatOf = () => "number";

/** "global (1,200), cup (no entry)" for a board -> value map. */
export function boardValues(boards: Record<string, number | null> | undefined, formatOf: FormatOf = plain): string {
  const list = Object.entries(boards ?? {});
  if (!list.length) return "";
  return list.map(([b, v]) => `${b} (${v === null ? "no entry" : formatScore(v, formatOf(b))})`).join(", ");
}

/** What an action did, from its answer. */
export function outcomeText(
  a: Pending,
  reply: VoidReply | RestoreReply | RemoveReply | BanReply,
  formatOf: FormatOf = plain,
): string {
  switch (a.kind) {
    case "void": {
      const r = reply as VoidReply;
      const now =
        r.score === null
          ? `${r.user_id} has no entry on ${r.board} any more`
          : `${r.user_id}'s score on ${r.board} is now ${formatScore(r.score, formatOf(r.board))}`;
      return `Voided submission ${shortId(r.session_id)}: ${now}.`;
    }
    case "restore": {
      const r = reply as RestoreReply;
      // With the submission counting again only a banned player has no value (it counts at the unban).
      const now =
        r.score === null
          ? `${r.user_id} has no entry on ${r.board} (banned: it counts once the ban is lifted)`
          : `${r.user_id}'s score on ${r.board} is now ${formatScore(r.score, formatOf(r.board))}`;
      return `Restored submission ${shortId(r.session_id)}: ${now}.`;
    }
    case "remove": {
      const r = reply as RemoveReply;
      const n = r.voided === 1 ? "1 submission" : `${r.voided} submissions`;
      return `Removed ${r.user_id} from ${r.board} (season ${r.season}): ${n} voided.`;
    }
    case "ban": {
      const r = reply as BanReply;
      const gone = Object.keys(r.boards);
      return `Banned ${r.user_id}: ${gone.length ? `removed from ${gone.join(", ")}` : "they had no entry on any board"}.`;
    }
    case "unban": {
      const r = reply as BanReply;
      const back = boardValues(r.boards, formatOf);
      return `Lifted the ban on ${r.user_id}: ${back ? `restored on ${back}` : "they have no submissions to restore"}.`;
    }
  }
}

/** One audit entry in words (without its reason, actor and time, which are shown beside it). */
export function auditText(e: AuditEntry, formatOf: FormatOf = plain): string {
  const values = e.detail?.boards;
  switch (e.action) {
    case "void":
    case "restore": {
      const v = e.board !== null ? values?.[e.board] : undefined;
      const sid = e.session_id ? ` ${shortId(e.session_id)}` : "";
      const none = e.action === "void" ? " — no entry left" : " — no entry (banned)";
      const after = v === undefined ? "" : v === null ? none : ` — score now ${formatScore(v, formatOf(e.board ?? ""))}`;
      return `${e.action === "void" ? "voided" : "restored"} submission${sid} of ${e.user_id} on ${e.board ?? "?"}${after}`;
    }
    case "remove":
      return `removed ${e.user_id} from ${e.board ?? "?"}`;
    case "ban": {
      const gone = Object.keys(values ?? {});
      return `banned ${e.user_id}${gone.length ? ` — removed from ${gone.join(", ")}` : ""}`;
    }
    case "unban": {
      const back = boardValues(values, formatOf);
      return `lifted the ban on ${e.user_id}${back ? ` — restored on ${back}` : ""}`;
    }
    default:
      return `${String(e.action)} ${e.user_id}`;
  }
}

// ---- which submissions can be voided or restored ----

/**
 * What a logged submission offers: `void` (it counts, in the live season), `restore` (voided, in the live
 * season), or nothing because its season has ended (its standings are final: the server answers 409
 * season_ended): `final` (it counted) or `final-voided`.
 */
export type SubmissionAction = "void" | "restore" | "final" | "final-voided";

/**
 * The submission's own `live` says whether it is of the live season; without it (an older server) its season
 * is compared with the board's live one, and when neither is known the server decides.
 */
export function submissionAction(s: LoggedSubmission, liveSeason: number | null): SubmissionAction {
  const live = typeof s.live === "boolean" ? s.live : liveSeason === null || s.season >= liveSeason;
  if (s.voided_at !== null) return live ? "restore" : "final-voided";
  return live ? "void" : "final";
}

// ---- the audit log: newest first, "older" appends the next page ----

export interface AuditState {
  /** Bumped by every refresh: an answer for an older generation is dropped. */
  gen: number;
  entries: AuditEntry[];
  nextBefore: number | null;
  loading: "first" | "older" | null;
  problem: Problem | null;
  loaded: boolean;
}

export type AuditEvent =
  | { type: "refresh"; gen: number }
  | { type: "older" }
  | { type: "page"; gen: number; before: number | null; page: AuditPage }
  | { type: "failed"; gen: number; problem: Problem };

export const AUDIT_START: AuditState = { gen: 0, entries: [], nextBefore: null, loading: null, problem: null, loaded: false };

export function auditReducer(state: AuditState, ev: AuditEvent): AuditState {
  switch (ev.type) {
    case "refresh":
      // The entries stay on screen until the new first page replaces them.
      return { ...state, gen: ev.gen, loading: "first", problem: null };
    case "older":
      return state.nextBefore === null || state.loading !== null ? state : { ...state, loading: "older", problem: null };
    case "page": {
      if (ev.gen !== state.gen) return state;
      if (ev.before === null) {
        return { ...state, entries: ev.page.entries, nextBefore: ev.page.next_before, loading: null, problem: null, loaded: true };
      }
      if (ev.before !== state.nextBefore) return { ...state, loading: null }; // an answer to a page already read
      const last = state.entries.at(-1)?.id ?? Number.POSITIVE_INFINITY;
      const seen = new Set(state.entries.map((e) => e.id));
      const more = ev.page.entries.filter((e) => e.id < last && !seen.has(e.id));
      return { ...state, entries: [...state.entries, ...more], nextBefore: ev.page.next_before, loading: null, problem: null };
    }
    case "failed":
      return ev.gen === state.gen ? { ...state, loading: null, problem: ev.problem } : state;
  }
}
