// Wire types from docs/protocol.md. Only what the UI reads or sends.

export interface Entry {
  rank: number;
  user_id: string;
  display_name: string | null;
  score: number;
}

export interface TopPush {
  type: "top";
  board: string;
  seq: number;
  total: number;
  entries: Entry[];
}

export interface RankPush {
  type: "rank";
  board: string;
  user_id: string;
  rank: number | null;
  previous_rank: number | null;
  score: number | null;
  seq?: number | null;
}

/**
 * Sent to a board's top subscribers right after a reset: season `ended` is over (`final`: its standings up
 * to the subscriber's limit) and `season` is live. A `top` snapshot of the new (empty) season follows.
 */
export interface SeasonPush {
  type: "season";
  board: string;
  ended: number;
  season: number;
  final: Entry[];
}

export interface ErrorPush {
  type: "error";
  ref?: string | number | null;
  code: string;
  detail: string;
}

/** The server's own dependencies: sent on a subscribe to the `status` topic and again whenever it changes. */
export interface StatusPush {
  type: "status";
  state: "ok" | "degraded";
  checks: Record<string, "ok" | "unavailable">;
  detail: string;
}

export interface AuthReply {
  type: "auth";
  ok: boolean;
  role?: string;
  user_id?: string | null;
}

export type ServerFrame =
  | TopPush
  | RankPush
  | SeasonPush
  | ErrorPush
  | StatusPush
  | AuthReply
  | { type: "subscribed" | "unsubscribed"; ref?: string | number | null; board: string; topics: string[] }
  | { type: "pong"; ref?: string | number | null }
  | { type: "ack"; ref?: string | number | null };

/** How a board's scores read. Servers that predate the field send none: that means "number". */
export type ScoreFormat = "number" | "time_ms" | "time_s";

export interface BoardInfo {
  id: string;
  title: string;
  sort: "desc" | "asc";
  operator: "incr" | "best" | "set";
  /** Read it through formatOf(): absent or unknown values are "number". */
  format?: ScoreFormat;
  created_at: string;
  /** When it resets: null (never), "daily", "weekly", "monthly" or a cron expression (UTC). Servers before
   * seasons send none of these four fields. */
  reset?: string | null;
  /** The live season. */
  season?: number;
  season_started_at?: string;
  /** ISO 8601 UTC; null when the board never resets. */
  next_reset_at?: string | null;
  total?: number | null;
}

/** A season of a board (GET /api/leaderboards/{id}/seasons): `ended_at` null for the live one. */
export interface SeasonInfo {
  season: number;
  started_at: string;
  ended_at: string | null;
  total: number;
  /** Its top 3. */
  winners: Entry[];
}

export interface BoardSeasons {
  board: string;
  /** Newest (the live one, on the first page) first. */
  seasons: SeasonInfo[];
  /** `before` for the next page of older seasons; null: none older. */
  next: number | null;
}

/** GET /api/leaderboard/top (also of an ended season, with `season=`). */
export interface TopPage {
  board: string;
  total: number;
  seq: number;
  entries: Entry[];
}

export interface PlayerRank {
  board: string;
  user_id: string;
  display_name: string | null;
  rank: number;
  score: number;
  total: number;
  percentile: number;
  around: Entry[];
}

export interface SubmitAck {
  accepted: boolean;
  duplicate: boolean;
  board: string;
  user_id: string;
  score: number;
  rank: number | null;
  session_id: string;
}

/** RFC 9457 problem details. */
export interface Problem {
  type?: string;
  title: string;
  status: number;
  detail?: string;
  code?: string;
  errors?: { loc: (string | number)[]; msg: string }[] | null;
}

export interface SubmitBody {
  user_id: string;
  score: number;
  board: string;
  session_id: string;
  display_name?: string;
}
