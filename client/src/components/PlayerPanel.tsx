import { useEffect, useId, useRef, useState } from "react";
import { ProblemError, getRank } from "../api";
import { formatScore, nameOf, percentileOf, scoreHeading } from "../format";
import { useRank } from "../hooks";
import type { PlayerRank, ScoreFormat } from "../types";
import { AroundTable } from "./AroundTable";

/** The REST lookup, tagged with the search it answers (`key`), so its result never shows under another. */
type Lookup =
  | { kind: "idle" }
  | { kind: "loading"; key: string }
  | { kind: "found"; key: string; data: PlayerRank }
  | { kind: "missing"; key: string }
  | { kind: "error"; key: string; message: string };

const lookupKey = (board: string, userId: string): string => `${board}\n${userId}`;

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
 * over the socket. A live rank push updates rank/score at once; the neighbours and percentile are
 * re-read over REST shortly after (one request per burst of changes, not polling).
 */
export function PlayerPanel({ board, boardTitle, format, userId, onFollow }: Props) {
  const inputId = useId();
  const [query, setQuery] = useState(userId ?? "");
  const [invalid, setInvalid] = useState<string | null>(null);
  const [stored, setLookup] = useState<Lookup>({ kind: "idle" });
  const [refreshTick, setRefreshTick] = useState(0);
  // Until the effect below has started the lookup for a new search, the previous one's answer is stale.
  const currentKey = userId ? lookupKey(board, userId) : null;
  const lookup: Lookup =
    currentKey === null
      ? { kind: "idle" }
      : stored.kind !== "idle" && stored.key === currentKey
        ? stored
        : { kind: "loading", key: currentKey };
  const label = lookup.kind === "found" ? nameOf(lookup.data) : (userId ?? undefined);
  const live = useRank(board, userId, label);

  useEffect(() => {
    if (!userId) {
      setLookup({ kind: "idle" });
      return;
    }
    const ctl = new AbortController();
    const key = lookupKey(board, userId);
    // A refresh of the same search keeps showing the last answer until the new one arrives.
    setLookup((prev) => (prev.kind === "found" && prev.key === key ? prev : { kind: "loading", key }));
    getRank(userId, board, 3, ctl.signal).then(
      (data) => setLookup({ kind: "found", key, data }),
      (err: unknown) => {
        if (ctl.signal.aborted) return;
        if (err instanceof ProblemError && err.problem.status === 404) setLookup({ kind: "missing", key });
        else setLookup({ kind: "error", key, message: err instanceof Error ? err.message : String(err) });
      },
    );
    return () => ctl.abort();
  }, [userId, board, refreshTick]);

  // Re-read the neighbourhood after a live change: at once after a quiet spell, then at most once per
  // 750 ms (a throttle, so a player who keeps moving still gets fresh neighbours). Not polling: only
  // a push triggers it. A push saying the player has no rank while the lookup found one (the board was reset
  // into a new season) re-reads too: the lookup then says "No entry".
  const pendingRefresh = useRef<number | null>(null);
  const lastRefreshAt = useRef(0);
  const lastRefreshFor = useRef("");
  useEffect(() => {
    if (!live || pendingRefresh.current !== null) return;
    if (live.rank === null && lookup.kind !== "found") return;
    const sig = `${live.rank}:${live.score}`;
    const known = lookup.kind === "found" ? `${lookup.data.rank}:${lookup.data.score}` : "";
    // Once per distinct live state: if REST and the push ever disagree, this must not turn into polling.
    if (sig === known || sig === lastRefreshFor.current) return;
    lastRefreshFor.current = sig;
    const wait = Math.max(0, lastRefreshAt.current + 750 - Date.now());
    pendingRefresh.current = window.setTimeout(() => {
      pendingRefresh.current = null;
      lastRefreshAt.current = Date.now();
      setRefreshTick((n) => n + 1);
    }, wait);
  }, [live, lookup]);
  useEffect(
    () => () => {
      if (pendingRefresh.current !== null) window.clearTimeout(pendingRefresh.current);
      pendingRefresh.current = null;
    },
    [],
  );

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
    if (id === userId) setRefreshTick((n) => n + 1);
    else onFollow(id);
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
