import { useCallback, useId, useState } from "react";
import { getRank } from "../api";
import { formatScore, nameOf, scoreHeading } from "../format";
import type { ScoreFormat } from "../types";
import { useRequest } from "../useRequest";
import { AroundTable } from "./AroundTable";
import { USER_ID } from "./PlayerPanel";

interface Props {
  board: string;
  season: number;
  format: ScoreFormat;
}

/** Find a player in an ended season: their final rank, score, percentile and neighbours (rank with season=). */
export function SeasonPlayer({ board, season, format }: Props) {
  const id = useId();
  const [query, setQuery] = useState("");
  const [userId, setUserId] = useState<string | null>(null);
  const [invalid, setInvalid] = useState<string | null>(null);
  const load = useCallback(
    (signal: AbortSignal) => getRank(userId ?? "", board, 3, signal, season),
    [userId, board, season],
  );
  const { state, retry } = useRequest(userId ? `${board}\n${season}\n${userId}` : null, load);

  function submit(ev: React.FormEvent) {
    ev.preventDefault();
    const q = query.trim();
    if (!USER_ID.test(q)) {
      setInvalid("A user_id is 1–64 characters: letters, digits and _ . : @ -");
      setUserId(null);
      return;
    }
    setInvalid(null);
    if (q === userId) retry();
    else setUserId(q);
  }

  const data = state.kind === "done" ? state.data : null;
  return (
    <section className="season-player" aria-labelledby={`${id}-h`}>
      <h3 id={`${id}-h`}>Find a player in season {season}</h3>
      <form className="search" role="search" aria-labelledby={`${id}-h`} onSubmit={submit}>
        <label htmlFor={`${id}-q`}>user_id</label>
        <div className="row">
          <input
            id={`${id}-q`}
            value={query}
            onChange={(e) => setQuery(e.target.value)}
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
      <div className="player-result" data-testid="season-player-result">
        {state.kind === "loading" && <p className="muted">Looking up {userId}…</p>}
        {state.kind === "error" && state.problem.status === 404 && (
          <p className="notice">
            No entry for <code>{userId}</code> in season {season}.
          </p>
        )}
        {state.kind === "error" && state.problem.status !== 404 && (
          <p className="error" role="alert">
            Lookup failed: {state.problem.detail || state.problem.title}
          </p>
        )}
        {data && (
          <>
            <dl className="stats">
              <div>
                <dt>Final rank</dt>
                <dd data-testid="season-player-rank">{data.rank.toLocaleString()}</dd>
              </div>
              <div>
                <dt>{scoreHeading(format)}</dt>
                <dd data-testid="season-player-score">{formatScore(data.score, format)}</dd>
              </div>
              <div>
                <dt>Percentile</dt>
                <dd>{data.percentile.toFixed(2)} %</dd>
              </div>
            </dl>
            <p className="muted">
              <strong className="trunc-inline" title={nameOf(data)}>
                {nameOf(data)}
              </strong>{" "}
              of {data.total.toLocaleString()} players in season {season}
            </p>
            {data.around.length > 0 && <AroundTable data={data} format={format} />}
          </>
        )}
      </div>
    </section>
  );
}
