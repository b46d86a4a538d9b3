import { useEffect, useId } from "react";
import { formatScore, nameOf } from "../format";
import { useSeasonEnd, useStore } from "../hooks";
import type { ScoreFormat } from "../types";

/** How long TV mode (no controls) shows the banner. */
export const TV_BANNER_MS = 60_000;

interface Props {
  board: string;
  format: ScoreFormat;
  /** TV mode: no buttons; the banner goes by itself after TV_BANNER_MS. */
  tv?: boolean;
  /** Open the ended season's final standings (the past-seasons view). */
  onShowStandings?(season: number): void;
}

/**
 * "Season N ended" with its winners (the top 3 of the final standings the `season` frame brought), shown when
 * the board is reset while it is on screen, until closed. Screen readers hear it through the store's live region.
 */
export function SeasonBanner({ board, format, tv = false, onShowStandings }: Props) {
  const end = useSeasonEnd(board);
  const store = useStore();
  const id = useId();
  const visible = end !== undefined && !end.dismissed;

  useEffect(() => {
    if (!tv || !visible) return;
    const t = window.setTimeout(() => store.dismissSeasonEnd(board), TV_BANNER_MS);
    return () => window.clearTimeout(t);
  }, [tv, visible, store, board, end?.season]);

  if (!end || !visible) return null;
  const title = `Season ${end.ended} ended`;
  return (
    <section
      className={`season-banner${tv ? " tv-banner" : ""}`}
      aria-labelledby={`${id}-h`}
      data-testid="season-banner"
      data-ended={end.ended}
    >
      <h2 id={`${id}-h`}>{title}</h2>
      {end.winners !== null && end.winners.length === 0 && <p>Nobody scored in it.</p>}
      {end.winners !== null && end.winners.length > 0 && (
        <ol className="winners" aria-label={`Winners of season ${end.ended}`}>
          {end.winners.map((e) => (
            <li key={e.user_id} className={`podium-${e.rank}`} data-user={e.user_id}>
              <span className="rank-badge">{e.rank}</span>
              <span className="name" title={nameOf(e)}>
                {nameOf(e)}
              </span>
              <span className="winner-score">{formatScore(e.score, format)}</span>
            </li>
          ))}
        </ol>
      )}
      <p className="season-next">Season {end.season} has started.</p>
      {!tv && (
        <div className="banner-actions">
          {onShowStandings && (
            <button type="button" className="secondary" onClick={() => onShowStandings(end.ended)}>
              Final standings of season {end.ended}
            </button>
          )}
          <button type="button" className="link" aria-label={`Dismiss: ${title}`} onClick={() => store.dismissSeasonEnd(board)}>
            Dismiss
          </button>
        </div>
      )}
    </section>
  );
}
