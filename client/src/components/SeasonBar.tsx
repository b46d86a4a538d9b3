import type { BoardInfoState } from "../useBoardInfo";
import { Countdown } from "./Countdown";

export type View = "live" | "past";

interface Props {
  info: BoardInfoState;
  /** The live season as best known (the board's info, or a newer `season` frame). */
  season: number | null;
  /** TV mode: no controls. */
  tv?: boolean;
  view?: View;
  onView?(view: View): void;
  onRetry?(): void;
}

/** Whether a board has seasons worth showing: it resets on a schedule, or it has been reset. */
export function hasSeasons(info: BoardInfoState, season: number | null): boolean {
  return (info.kind === "found" && info.info.reset != null) || (season ?? 0) > 1;
}

/**
 * The live season and the countdown to the next reset ("Season 3 · resets in 3 h 12 min"), and the way to past
 * seasons (the past-seasons view has the way back). Nothing for a board that never resets and never was reset, or for a server that
 * predates seasons.
 */
export function SeasonBar({ info, season, tv = false, view = "live", onView, onRetry }: Props) {
  if (info.kind === "error" && !tv) {
    return (
      <p className="season-bar season-error" role="alert" title={info.message}>
        Season unknown: the board could not be read —{" "}
        <button type="button" className="link" onClick={onRetry}>
          retry
        </button>
      </p>
    );
  }
  if (season === null || !hasSeasons(info, season)) return null;
  const next = info.kind === "found" ? info.info.next_reset_at : null;
  return (
    <p className={`season-bar${tv ? " tv-season" : ""}`} data-testid="season-bar">
      <span className="season-label" data-testid="season">
        {view === "past" ? `Live now: season ${season}` : `Season ${season}`}
      </span>
      {next && <Countdown to={next} />}
      {!tv && onView && view === "live" && season > 1 && (
        <button type="button" className="link" onClick={() => onView("past")}>
          Past seasons
        </button>
      )}
    </p>
  );
}
