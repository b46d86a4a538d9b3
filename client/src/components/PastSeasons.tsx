import { useCallback, useEffect, useId, useRef, useState } from "react";
import { getSeasons } from "../api";
import { formatDateTime, formatScore, nameOf } from "../format";
import type { ScoreFormat, SeasonInfo } from "../types";
import { useRequest } from "../useRequest";
import { SeasonPlayer } from "./SeasonPlayer";
import { SeasonStandings } from "./SeasonStandings";

interface Props {
  board: string;
  boardTitle: string;
  format: ScoreFormat;
  /** The season chosen (null: the latest that ended). */
  season: number | null;
  /** The live season as known: the list is read again when it moves on. */
  liveSeason: number | null;
  onSeason(season: number): void;
  onBack(): void;
  /** Move the focus to the heading when shown (opened from a button, which is gone now). */
  focus?: boolean;
}

const span = (s: SeasonInfo): string => `${formatDateTime(s.started_at)} – ${formatDateTime(s.ended_at)}`;

/**
 * Past seasons of a board: pick one (GET /api/leaderboards/{id}/seasons), see its final standings and find a
 * player in it. Ended seasons are read-only: read over REST, never subscribed to.
 */
export function PastSeasons({ board, boardTitle, format, season, liveSeason, onSeason, onBack, focus = false }: Props) {
  const id = useId();
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    if (focus) heading.current?.focus();
  }, [focus]);
  // Read the list again when the live season moves on (a reset while here), not when it first becomes known.
  const [epoch, setEpoch] = useState(0);
  const seen = useRef<string | null>(null);
  useEffect(() => {
    if (liveSeason === null) return;
    const now = `${board}\n${liveSeason}`;
    if (seen.current !== null && seen.current !== now && seen.current.startsWith(`${board}\n`)) setEpoch((n) => n + 1);
    seen.current = now;
  }, [board, liveSeason]);
  const load = useCallback((signal: AbortSignal) => getSeasons(board, signal), [board]);
  const key = `${board}\n${epoch}`;
  const { state, retry } = useRequest(key, load);
  // Older pages (GET …/seasons?before=next), appended below the first; dropped when the list is read again.
  const [older, setOlder] = useState<{ key: string; seasons: SeasonInfo[]; next: number | null } | null>(null);
  const [olderState, setOlderState] = useState<"idle" | "loading" | "error">("idle");
  const extra = older?.key === key ? older : null;
  const first = state.kind === "done" ? state.data : null;
  const all = first === null ? [] : [...first.seasons, ...(extra?.seasons ?? [])];
  const next = extra !== null ? extra.next : (first?.next ?? null);
  const loadOlder = () => {
    if (next === null) return;
    setOlderState("loading");
    getSeasons(board, undefined, next).then(
      (page) => {
        setOlder({ key, seasons: [...(extra?.seasons ?? []), ...page.seasons], next: page.next });
        setOlderState("idle");
      },
      () => setOlderState("error"),
    );
  };
  const ended = all.filter((s) => s.ended_at !== null);
  const chosen = season ?? ended[0]?.season ?? null;
  const info = all.find((s) => s.season === chosen);
  const live = info !== undefined && info.ended_at === null;
  const champion = info?.winners[0];

  return (
    <section className="past-seasons" aria-labelledby={`${id}-h`} data-testid="past-seasons">
      <div className="past-head">
        <h2 id={`${id}-h`} ref={heading} tabIndex={-1}>
          Past seasons · {boardTitle}
        </h2>
        <button type="button" className="secondary" onClick={onBack}>
          Back to the live board
        </button>
      </div>

      {state.kind === "loading" && <p className="muted">Loading the seasons of {boardTitle}…</p>}
      {state.kind === "error" && (
        <p className="error" role="alert">
          {state.problem.status === 404
            ? `Board “${board}” does not exist.`
            : `Could not load the seasons: ${state.problem.detail || state.problem.title}`}{" "}
          {state.problem.status !== 404 && (
            <button type="button" className="link" onClick={retry}>
              retry
            </button>
          )}
        </p>
      )}
      {state.kind === "done" && ended.length === 0 && season === null && (
        <p className="notice">No season of {boardTitle} has ended yet.</p>
      )}

      {state.kind === "done" && chosen !== null && (
        <>
          <div className="season-pick">
            <label htmlFor={`${id}-s`}>Season</label>
            <select id={`${id}-s`} value={chosen} onChange={(e) => onSeason(Number(e.target.value))}>
              {ended.map((s) => (
                <option key={s.season} value={s.season}>
                  Season {s.season} ({s.total.toLocaleString()} players)
                </option>
              ))}
              {!ended.some((s) => s.season === chosen) && <option value={chosen}>Season {chosen}</option>}
            </select>
            {info && !live && (
              <span className="muted" data-testid="season-dates">
                {span(info)}
              </span>
            )}
            {next !== null && (
              <button type="button" className="link" onClick={loadOlder} disabled={olderState === "loading"}>
                {olderState === "loading" ? "Loading older seasons…" : "Older seasons"}
              </button>
            )}
            {olderState === "error" && (
              <span className="error" role="alert">
                Could not load older seasons.
              </span>
            )}
          </div>
          {live ? (
            <p className="notice">
              Season {chosen} is the live season.{" "}
              <button type="button" className="link" onClick={onBack}>
                See the live board
              </button>
            </p>
          ) : (
            <>
              {champion && (
                <p className="muted season-winners">
                  Won by <strong>{nameOf(champion)}</strong> with {formatScore(champion.score, format)}
                </p>
              )}
              <SeasonStandings key={`${board}:${chosen}`} board={board} boardTitle={boardTitle} season={chosen} format={format} />
              <SeasonPlayer key={`${board}:${chosen}:find`} board={board} season={chosen} format={format} />
            </>
          )}
        </>
      )}
    </section>
  );
}
