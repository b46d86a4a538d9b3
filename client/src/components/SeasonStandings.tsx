import { useCallback, useId, useRef, useState } from "react";
import { getTop } from "../api";
import { formatScore, nameOf } from "../format";
import type { ScoreFormat, TopPage } from "../types";
import { useRequest } from "../useRequest";
import { EntriesHead } from "./EntriesHead";

export const PAGE_SIZE = 10;

interface Props {
  board: string;
  boardTitle: string;
  season: number;
  format: ScoreFormat;
}

/** The final standings of an ended season, a page at a time (GET /top with season=): read once, never followed. */
export function SeasonStandings({ board, boardTitle, season, format }: Props) {
  const id = useId();
  const [offset, setOffset] = useState(0);
  const load = useCallback(
    (signal: AbortSignal) => getTop(board, { limit: PAGE_SIZE, offset, season }, signal),
    [board, offset, season],
  );
  const { state, retry } = useRequest(`${board}\n${season}\n${offset}`, load);
  // While the next page loads, the one before stays (marked busy) rather than the table collapsing.
  const shown = useRef<TopPage | null>(null);
  if (state.kind === "done") shown.current = state.data;
  const page = state.kind === "done" ? state.data : state.kind === "loading" ? shown.current : null;

  if (state.kind === "error") {
    const p = state.problem;
    return (
      <div className="notice" role="alert" data-testid="standings-error">
        {p.status === 404 ? (
          <p>
            There is no season {season} of {boardTitle}.
          </p>
        ) : (
          <p>
            Could not load the standings of season {season}: {p.status ? `${p.status} ` : ""}
            {p.detail || p.title}{" "}
            <button type="button" className="link" onClick={retry}>
              retry
            </button>
          </p>
        )}
      </div>
    );
  }

  const total = page?.total ?? 0;
  const entries = page?.entries ?? [];
  const first = entries.length ? offset + 1 : 0;
  const last = offset + entries.length;
  return (
    <div className="standings" data-season={season}>
      <table className="board standings-table" aria-describedby={`${id}-meta`} aria-busy={state.kind === "loading"}>
        <caption>
          <span className="caption-row">
            <span className="caption-title">Season {season} · final standings</span>
            <span className="caption-meta" id={`${id}-meta`}>
              {page ? (total ? `${first}–${last} of ${total.toLocaleString()} players` : "nobody scored") : ""}
            </span>
          </span>
        </caption>
        <EntriesHead format={format} />
        <tbody>
          {entries.map((e) => (
            <tr key={e.user_id} data-user={e.user_id} className={e.rank <= 3 ? `podium podium-${e.rank}` : undefined}>
              <td className="col-rank">
                <span className="rank-badge">{e.rank}</span>
              </td>
              <th scope="row" className="col-name">
                <span className="name-line">
                  <span className="name" title={nameOf(e)}>
                    {nameOf(e)}
                  </span>
                </span>
                {e.display_name && e.display_name !== e.user_id && (
                  <span className="uid" title={e.user_id}>
                    {e.user_id}
                  </span>
                )}
              </th>
              <td className="col-score">{formatScore(e.score, format)}</td>
            </tr>
          ))}
          {!page && (
            <tr className="empty">
              <td colSpan={3}>Loading the standings of season {season}…</td>
            </tr>
          )}
          {page && entries.length === 0 && (
            <tr className="empty">
              <td colSpan={3}>{total ? "No players on this page." : "Nobody scored in this season."}</td>
            </tr>
          )}
        </tbody>
      </table>
      {total > PAGE_SIZE && (
        <nav className="pager" aria-label={`Pages of season ${season}`}>
          <button
            type="button"
            className="secondary"
            disabled={offset === 0 || state.kind === "loading"}
            onClick={() => setOffset(Math.max(0, offset - PAGE_SIZE))}
          >
            Previous
          </button>
          <span className="muted">
            page {Math.floor(offset / PAGE_SIZE) + 1} of {Math.ceil(total / PAGE_SIZE)}
          </span>
          <button
            type="button"
            className="secondary"
            disabled={offset + PAGE_SIZE >= total || state.kind === "loading"}
            onClick={() => setOffset(offset + PAGE_SIZE)}
          >
            Next
          </button>
        </nav>
      )}
    </div>
  );
}
