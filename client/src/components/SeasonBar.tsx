import type { BoardInfo } from "../types";
import type { BoardInfoState } from "../useBoardInfo";
import { Countdown } from "./Countdown";

export type View = "live" | "past";

interface Props {
  info: BoardInfoState;
  /** The board as the board list has it (if it does): says whether it has seasons when `info` cannot be read. */
  listed?: BoardInfo;
  /** The live season as best known (the board's info, or a newer `season` frame). */
  season: number | null;
  /** TV mode: no controls. */
  tv?: boolean;
  view?: View;
  onView?(view: View): void;
  onRetry?(): void;
}

/** Whether a board has seasons worth showing: it resets on a schedule, or it has been reset. */
export function hasSeasons(info: BoardInfo | undefined, season: number | null): boolean {
  return info?.reset != null || (info?.season ?? 0) > 1 || (season ?? 0) > 1;
}

/**
 * The live season and the countdown to the next reset ("Season 3 · resets in 3 h 12 min"), and the way to past
 * seasons (the past-seasons view has the way back). Nothing for a board that never resets and never was reset, or for a server that
 * predates seasons.
 */
export function SeasonBar({ info, listed, season, tv = false, view = "live", onView, onRetry }: Props) {
  // A board that cannot be read says so only if it is known to have seasons (the picker says the rest).
  if (info.kind === "error" && !tv && hasSeasons(listed, season)) {
    return (
      <p className="season-bar season-error" role="alert" title={info.message}>
        Season unknown: the board could not be read —{" "}
        <button type="button" className="link" onClick={onRetry}>
          retry
        </button>
      </p>
    );
  }
  if (season === null || info.kind !== "found" || !hasSeasons(info.info, season)) return null;
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
