import { useCallback, useEffect, useId, useReducer, useRef, useState } from "react";
import { USER_ID } from "../components/PlayerPanel";
import { formatScore, nameOf, scoreHeading } from "../format";
import type { BoardInfo, PlayerRank, Problem, ScoreFormat } from "../types";
import { problemOf } from "../useRequest";
import type { AdminClient, PlayerSubmissions } from "./adminApi";
import { reasonProblem } from "./adminApi";
import { ConfirmDialog } from "./ConfirmDialog";
import { IDLE, type Pending, flowReducer, isStale, outcomeText, problemText, shortId, submissionAction } from "./operator";

const FIRST_LIMIT = 25;
/** The id of the panel's heading, which takes the focus when a player is chosen elsewhere (the audit log). */
export const PLAYER_HEADING = "op-find-heading";
const MAX_LIMIT = 500;

interface Loaded {
  /** The search it answers: board and user_id. */
  key: string;
  loading: boolean;
  rank?: PlayerRank | null;
  subs?: PlayerSubmissions;
  info?: BoardInfo;
  problems: { rank?: Problem; subs?: Problem };
}

const keyOf = (board: string, userId: string) => `${board}\n${userId}`;

/**
 * The player's rank and score on the board, their submissions there and the live season, read together. A
 * refresh of the same search keeps the last answer on screen until the new one arrives (no flicker after an
 * action); an answer never shows under another search.
 */
function usePlayer(api: AdminClient, board: string, userId: string | null, limit: number, tick: number): Loaded | null {
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  useEffect(() => {
    if (!userId) return;
    const key = keyOf(board, userId);
    const ctl = new AbortController();
    setLoaded((prev) => (prev?.key === key ? { ...prev, loading: true } : { key, loading: true, problems: {} }));
    Promise.allSettled([
      api.rank(userId, board, ctl.signal),
      api.submissions(userId, board, limit, ctl.signal),
      api.board(board, ctl.signal),
    ]).then(([rank, subs, info]) => {
      if (ctl.signal.aborted) return;
      setLoaded((prev) => ({
        key,
        loading: false,
        rank: rank.status === "fulfilled" ? rank.value : undefined,
        subs: subs.status === "fulfilled" ? subs.value : undefined,
        // The board's live season: a failed read keeps the one known.
        info: info.status === "fulfilled" ? info.value : prev?.key === key ? prev.info : undefined,
        problems: {
          rank: rank.status === "rejected" ? problemOf(rank.reason) : undefined,
          subs: subs.status === "rejected" ? problemOf(subs.reason) : undefined,
        },
      }));
    });
    return () => ctl.abort();
  }, [api, board, userId, limit, tick]);
  if (!userId) return null;
  const key = keyOf(board, userId);
  return loaded?.key === key ? loaded : { key, loading: true, problems: {} };
}

const when = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
const at = (iso: string): string => {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? when.format(t) : iso;
};

interface Props {
  api: AdminClient;
  board: string;
  boardTitle: string;
  format: ScoreFormat;
  formatOf(board: string): ScoreFormat;
  userId: string | null;
  onFind(userId: string | null): void;
  /** An action changed something (or found the view out of date): the audit log is read again. */
  onChanged(): void;
}

type Outcome = { tone: "ok"; text: string; seq: number } | null;

/** The request an action makes. */
function run(api: AdminClient, action: Pending, reason: string) {
  switch (action.kind) {
    case "void":
      return api.void(action.sessionId, reason);
    case "restore":
      return api.restore(action.sessionId, reason);
    case "remove":
      return api.removeEntry(action.userId, action.board, reason);
    case "ban":
      return api.ban(action.userId, reason);
    case "unban":
      return api.unban(action.userId, reason);
  }
}

/** Find a player, see their standing and submissions on the board, and act on them. */
export function PlayerOps({ api, board, boardTitle, format, formatOf, userId, onFind, onChanged }: Props) {
  const id = useId();
  const [query, setQuery] = useState(userId ?? "");
  const [invalid, setInvalid] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const [limit, setLimit] = useState(FIRST_LIMIT);
  const [flow, dispatch] = useReducer(flowReducer, IDLE);
  const [outcome, setOutcome] = useState<Outcome>(null);
  const busy = useRef(false);
  const outcomeRef = useRef<HTMLParagraphElement>(null);
  const data = usePlayer(api, board, userId, limit, tick);

  // Another player or board: the last outcome and the page size belong to the previous one.
  useEffect(() => {
    setOutcome(null);
    setLimit(FIRST_LIMIT);
  }, [userId, board]);
  useEffect(() => setQuery(userId ?? ""), [userId]);
  useEffect(() => {
    if (outcome) outcomeRef.current?.focus();
  }, [outcome]);

  const refresh = useCallback(() => setTick((n) => n + 1), []);

  function find(ev: React.FormEvent) {
    ev.preventDefault();
    const q = query.trim();
    if (!USER_ID.test(q)) {
      setInvalid("A user_id is 1–64 characters: letters, digits and _ . : @ -");
      return;
    }
    setInvalid(null);
    if (q === userId) refresh();
    else onFind(q);
  }

  function open(action: Pending) {
    dispatch({ type: "open", action });
  }

  async function confirm() {
    if (flow.phase !== "confirm" || busy.current) return;
    const { action, reason } = flow;
    dispatch({ type: "confirm" });
    if (reasonProblem(reason)) return; // the reducer says why, next to the field
    busy.current = true;
    try {
      const reply = await run(api, action, reason);
      dispatch({ type: "done" });
      setOutcome((prev) => ({ tone: "ok", text: outcomeText(action, reply, formatOf), seq: (prev?.seq ?? 0) + 1 }));
      refresh();
      onChanged();
    } catch (err) {
      const problem = problemOf(err);
      dispatch({ type: "failed", problem });
      if (isStale(problem)) {
        // Someone acted first (already voided, restored, not banned any more…): show what is true now.
        refresh();
        onChanged();
      }
    } finally {
      busy.current = false;
    }
  }

  const rank = data?.rank;
  const subs = data?.subs;
  const banned = subs?.banned ?? null;
  const liveSeason = data?.info?.season ?? null;
  const name = rank ? nameOf(rank) : userId;

  return (
    <>
      <section className="panel" aria-labelledby={PLAYER_HEADING}>
        <h2 id={PLAYER_HEADING} tabIndex={-1}>
          Find a player
        </h2>
        <form className="search" role="search" aria-label="Find a player" onSubmit={find}>
          <label htmlFor={`${id}-q`}>user_id</label>
          <div className="row">
            <input
              id={`${id}-q`}
              name="user_id"
              value={query}
              onChange={(e) => setQuery(e.target.value)}
              placeholder="e.g. player-0042"
              autoComplete="off"
              spellCheck={false}
              aria-invalid={invalid ? true : undefined}
              aria-describedby={invalid ? `${id}-err` : undefined}
            />
            <button type="submit">Find</button>
          </div>
          {invalid && (
            <p className="error" id={`${id}-err`}>
              {invalid}
            </p>
          )}
        </form>

        {data && (
          <div className="op-player" data-testid="op-player" aria-busy={data.loading}>
            <h3 className="op-name">
              <span className="trunc-inline" title={name ?? ""}>
                {name}
              </span>{" "}
              {rank && rank.display_name && <code className="muted">{userId}</code>}{" "}
              {banned === true && (
                <span className="badge badge-banned" data-testid="banned-badge">
                  Banned
                </span>
              )}
            </h3>
            {data.loading && !subs && !rank && <p className="muted">Looking up {userId}…</p>}
            {data.problems.rank && (
              <p className="error" role="alert">
                Could not read the rank: {problemText(data.problems.rank)}
              </p>
            )}
            <dl className="stats">
              <div>
                <dt>Rank on {boardTitle}</dt>
                <dd data-testid="op-rank">{rank ? rank.rank.toLocaleString() : rank === null ? "No entry" : "—"}</dd>
              </div>
              <div>
                <dt>{scoreHeading(format)}</dt>
                <dd data-testid="op-score">{rank ? formatScore(rank.score, format) : "—"}</dd>
              </div>
              <div>
                <dt>Status</dt>
                <dd data-testid="op-status">{banned === null ? "—" : banned ? "Banned" : "Not banned"}</dd>
              </div>
            </dl>
            {rank === null && (
              <p className="muted" data-testid="op-no-entry">
                {banned ? `${userId} is banned: banned players have no entries.` : `${userId} has no entry on ${boardTitle} this season.`}
              </p>
            )}
            <div className="op-actions" role="group" aria-label={`Actions on ${userId}`}>
              <button
                type="button"
                className="danger"
                disabled={!rank}
                aria-describedby={!rank ? `${id}-noremove` : undefined}
                onClick={() => userId && open({ kind: "remove", userId, board })}
              >
                Remove from {boardTitle}…
              </button>
              {banned ? (
                <button type="button" onClick={() => userId && open({ kind: "unban", userId })}>
                  Lift ban…
                </button>
              ) : (
                <button
                  type="button"
                  className="danger"
                  disabled={banned === null}
                  onClick={() => userId && open({ kind: "ban", userId })}
                >
                  Ban player…
                </button>
              )}
              <button type="button" className="secondary" onClick={refresh} disabled={data.loading}>
                {data.loading ? "Refreshing…" : "Refresh"}
              </button>
              {!rank && (
                <span className="sr-only" id={`${id}-noremove`}>
                  No entry to remove on this board.
                </span>
              )}
            </div>
            <div aria-live="polite" className="op-outcome">
              {outcome && (
                <p className="ok" ref={outcomeRef} tabIndex={-1} data-testid="op-outcome" key={outcome.seq}>
                  {outcome.text}
                </p>
              )}
            </div>
          </div>
        )}
      </section>

      {data && (
        <section className="panel" aria-labelledby={`${id}-sh`} data-testid="op-submissions">
          <h2 id={`${id}-sh`}>
            Submissions of <span className="trunc-inline">{userId}</span> on {boardTitle}
          </h2>
          {data.problems.subs && (
            <p className="error" role="alert">
              Could not read the submissions: {problemText(data.problems.subs)}
            </p>
          )}
          {subs && subs.submissions.length === 0 && <p className="muted">No submission on {boardTitle}.</p>}
          {subs && subs.submissions.length > 0 && (
            <table className="subs">
              <caption className="sr-only">Newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Submitted</th>
                  <th scope="col" className="col-score">
                    {scoreHeading(format)}
                  </th>
                  <th scope="col" className="col-act">
                    <span className="sr-only">Action</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {subs.submissions.map((s) => {
                  const can = submissionAction(s, liveSeason);
                  const voided = can === "restore" || can === "final-voided";
                  const on = {
                    userId: userId ?? "",
                    board: s.board,
                    sessionId: s.session_id,
                    score: s.score,
                    season: s.season,
                    submittedAt: s.submitted_at,
                  };
                  return (
                    <tr key={s.session_id} className={voided ? "voided" : undefined} data-session={s.session_id} data-testid="submission">
                      <th scope="row">
                        <time dateTime={s.submitted_at}>{at(s.submitted_at)}</time>
                        <code className="uid" title={s.session_id}>
                          {s.session_id}
                        </code>
                      </th>
                      <td className="col-score">
                        <span className="score-of">{formatScore(s.score, format)}</span>
                        <span className="season-of">season {s.season}</span>
                      </td>
                      <td className="col-act">
                        {can === "void" && (
                          <button
                            type="button"
                            className="danger small"
                            aria-label={`Void the ${formatScore(s.score, format)} submitted ${at(s.submitted_at)} (${shortId(s.session_id)})`}
                            onClick={() => userId && open({ kind: "void", ...on })}
                          >
                            Void…
                          </button>
                        )}
                        {voided && (
                          <span
                            className="state-voided"
                            title={can === "final-voided" ? `Season ${s.season} has ended: its standings are final` : (s.voided_at ?? "")}
                          >
                            voided
                          </span>
                        )}
                        {can === "restore" && (
                          <button
                            type="button"
                            className="small"
                            aria-label={`Restore the ${formatScore(s.score, format)} submitted ${at(s.submitted_at)} (${shortId(s.session_id)})`}
                            onClick={() => userId && open({ kind: "restore", ...on })}
                          >
                            Restore…
                          </button>
                        )}
                        {can === "final" && (
                          <span className="muted" title={`Season ${s.season} has ended: its standings are final`}>
                            final
                          </span>
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )}
          {subs && subs.submissions.length >= limit && limit < MAX_LIMIT && (
            <div className="pager">
              <button type="button" className="secondary" onClick={() => setLimit((n) => Math.min(MAX_LIMIT, n * 4))} disabled={data.loading}>
                Show more
              </button>
            </div>
          )}
        </section>
      )}
      <ConfirmDialog flow={flow} dispatch={dispatch} onConfirm={confirm} format={format} />
    </>
  );
}
