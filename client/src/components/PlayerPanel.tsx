import { useCallback, useEffect, useId, useRef, useState } from "react";
import { getRank } from "../api";
import { realTimers } from "../clock";
import { formatScore, nameOf, percentileOf, scoreHeading } from "../format";
import { useRank, useStore } from "../hooks";
import { type Answered, Rereader, rankDiffers } from "../reread";
import { type RankState, rankKey, topKey } from "../store";
import type { PlayerRank, ScoreFormat } from "../types";
import { type Requested, useRequest } from "../useRequest";
import { AroundTable } from "./AroundTable";

/** The REST lookup of the current search (useRequest shows an answer only under the search it answers). */
type Lookup =
  | { kind: "idle" }
  | { kind: "loading" }
  | { kind: "found"; data: PlayerRank }
  | { kind: "missing" }
  | { kind: "error"; message: string };

const lookupKey = (board: string, userId: string): string => `${board}\n${userId}`;

function lookupOf(state: Requested<PlayerRank>): Lookup {
  switch (state.kind) {
    case "idle":
    case "loading":
      return state;
    case "done":
      return { kind: "found", data: state.data };
    case "error":
      return state.problem.status === 404
        ? { kind: "missing" }
        : { kind: "error", message: state.problem.detail || state.problem.title };
  }
}

function answeredOf(lookup: Lookup): Answered {
  switch (lookup.kind) {
    case "idle":
    case "loading":
      return "pending";
    case "found":
      return { rank: lookup.data.rank, score: lookup.data.score };
    case "missing":
      return { rank: null, score: null };
    case "error":
      return "failed";
  }
}

/** The neighbours are read again at most this often (a throttle, see Rereader). */
const AROUND_REREAD_MS = 1000;

interface Props {
  board: string;
  boardTitle: string;
  /** The board's score format (see format.ts). */
  format: ScoreFormat;
  userId: string | null;
  onFollow(userId: string | null): void;
}

/** What a user_id may be (the server says the same). */
export const USER_ID = /^[A-Za-z0-9_.:@-]{1,64}$/;

/**
 * Find a player: REST lookup (rank, score, percentile, the players around them), then follow them live
 * over the socket. A live rank push updates rank/score at once. The neighbours and percentile follow the
 * board: the same lookup is made again when a push says they may have changed (a `top` snapshot of the board
 * with a newer seq, or a `rank` push for the player saying something the last lookup did not), throttled
 * by Rereader: at most one a second, one at a time, the last change always read. Not polling: without
 * pushes nothing is read. (The board's `top` is the Board's subscription; the panel only listens to it.)
 */
export function PlayerPanel({ board, boardTitle, format, userId, onFollow }: Props) {
  const inputId = useId();
  const store = useStore();
  const [query, setQuery] = useState(userId ?? "");
  const [invalid, setInvalid] = useState<string | null>(null);
  const load = useCallback((signal: AbortSignal) => getRank(userId ?? "", board, 3, signal), [userId, board]);
  // A read again of the same search keeps showing the last answer until the new one arrives.
  const request = useRequest(userId ? lookupKey(board, userId) : null, load, { keep: true });
  const { pending, retry } = request;
  const lookup = lookupOf(request.state);
  const label = lookup.kind === "found" ? nameOf(lookup.data) : (userId ?? undefined);
  const live = useRank(board, userId, label);

  // What the last lookup said, for the push listeners below (set while rendering, read in callbacks).
  const answered = useRef<Answered>("pending");
  answered.current = answeredOf(lookup);
  const reader = useRef<Rereader | null>(null);
  /** The rank push last counted as a change (each push counts once, whatever REST says). */
  const counted = useRef<RankState | null>(null);

  /** A rank push (or a lookup's answer) where the push says what the lookup did not: read again. */
  const countRank = useCallback(
    (b: string, u: string) => {
      const push = store.getRank(b, u);
      if (!push || push === counted.current || !rankDiffers(push, answered.current)) return;
      counted.current = push;
      reader.current?.changed(push.seq);
    },
    [store],
  );

  useEffect(() => {
    if (!userId) return;
    const newest = () => {
      const seqs = [store.getTop(board)?.seq, store.getRank(board, userId)?.seq].filter((n): n is number => typeof n === "number");
      return seqs.length ? Math.max(...seqs) : null;
    };
    const r = new Rereader(realTimers, AROUND_REREAD_MS, retry, newest);
    r.started(); // the first lookup of this search, which useRequest has just started
    reader.current = r;
    counted.current = null;
    const offTop = store.listen(topKey(board), () => r.changed(store.getTop(board)?.seq ?? null));
    const offRank = store.listen(rankKey(board, userId), () => countRank(board, userId));
    return () => {
      offTop();
      offRank();
      r.dispose();
      if (reader.current === r) reader.current = null;
    };
  }, [store, board, userId, retry, countRank]);

  // A lookup answered: another may follow (a change came while it was on its way), and the answer is
  // compared with the last rank push (which may have come before it).
  useEffect(() => {
    if (pending || !userId) return;
    reader.current?.settled();
    countRank(board, userId);
  }, [pending, request.state, board, userId, countRank]);

  function submit(ev: React.FormEvent) {
    ev.preventDefault();
    const id = query.trim();
    if (!USER_ID.test(id)) {
      setInvalid("A user_id is 1–64 characters: letters, digits and _ . : @ -");
      // A new search replaces the previous one even when it is invalid: no stale result or "No entry"
      // message under the error, and no toasts about a player the panel no longer shows.
      if (userId) onFollow(null);
      return;
    }
    setInvalid(null);
    if (id === userId) {
      reader.current?.started();
      retry();
    } else onFollow(id);
  }

  const data = lookup.kind === "found" ? lookup.data : null;
  const rank = live?.rank ?? data?.rank ?? null;
  const score = live && live.rank !== null ? live.score : (data?.score ?? null);
  const total = data?.total ?? null;
  const pct = rank !== null && total ? (rank === data?.rank ? data.percentile : percentileOf(rank, total)) : null;

  return (
    <section className="panel player" aria-labelledby={`${inputId}-h`}>
      <h2 id={`${inputId}-h`}>Find a player</h2>
      <form className="search" onSubmit={submit} role="search">
        <label htmlFor={inputId}>user_id</label>
        <div className="row">
          <input
            id={inputId}
            name="user_id"
            value={query}
            onChange={(e) => setQuery(e.target.value)}
            placeholder="e.g. player-0042"
            autoComplete="off"
            spellCheck={false}
            aria-invalid={invalid ? true : undefined}
            aria-describedby={invalid ? `${inputId}-err` : undefined}
          />
          <button type="submit">Find</button>
          {userId && (
            <button
              type="button"
              className="secondary"
              onClick={() => {
                onFollow(null);
                setQuery("");
              }}
            >
              Stop
            </button>
          )}
        </div>
        {invalid && (
          <p className="error" id={`${inputId}-err`}>
            {invalid}
          </p>
        )}
      </form>

      <div className="player-result" aria-live="off" data-testid="player-result">
        {lookup.kind === "loading" && <p className="muted">Looking up {userId}…</p>}
        {lookup.kind === "missing" && (rank === null || !live) && (
          <p className="notice" data-testid="no-entry">
            No entry for <code>{userId}</code> on {boardTitle}. Following anyway: they appear here as soon as
            they score.
          </p>
        )}
        {lookup.kind === "error" && <p className="error">Lookup failed: {lookup.message}</p>}
        {userId && rank !== null && (
          <>
            <dl className="stats">
              <div>
                <dt>Rank</dt>
                <dd data-testid="player-rank">{rank.toLocaleString()}</dd>
              </div>
              <div>
                <dt>{scoreHeading(format)}</dt>
                <dd data-testid="player-score">{formatScore(score, format)}</dd>
              </div>
              <div>
                <dt>Percentile</dt>
                <dd>{pct !== null ? `${pct.toFixed(2)} %` : "—"}</dd>
              </div>
            </dl>
            <p className="following">
              <span className="dot live" aria-hidden="true" /> Following{" "}
              <strong className="trunc-inline" title={data ? nameOf(data) : userId}>
                {data ? nameOf(data) : userId}
              </strong>{" "}
              live on {boardTitle}
            </p>
            {data && data.around.length > 0 && <AroundTable data={data} format={format} />}
          </>
        )}
      </div>
    </section>
  );
}
