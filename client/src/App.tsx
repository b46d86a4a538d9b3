import { useCallback, useEffect, useId, useState } from "react";
import { formatOf } from "./format";
import { Board } from "./components/Board";
import { PastSeasons } from "./components/PastSeasons";
import { PlayerPanel } from "./components/PlayerPanel";
import { SeasonBanner } from "./components/SeasonBanner";
import { SeasonBar, type View } from "./components/SeasonBar";
import { Status } from "./components/Status";
import { KEY_FOR_SOCKET_STORAGE, KEY_STORAGE, SubmitPanel } from "./components/SubmitPanel";
import { LiveRegion, Toasts } from "./components/Toasts";
import { useSeasonEnd, useStore } from "./hooks";
import { useBoardInfo } from "./useBoardInfo";
import { useBoards } from "./useBoards";

function readParams() {
  const p = new URLSearchParams(window.location.search);
  const season = Number(p.get("season"));
  return {
    board: p.get("board") || "global",
    player: p.get("player") || null,
    screen: p.get("screen") === "1",
    view: (p.get("view") === "seasons" ? "past" : "live") as View,
    season: Number.isSafeInteger(season) && season >= 1 ? season : null,
  };
}

/** Keep the chosen board, followed player and past season in the address bar, so a link reproduces the view. */
function writeParams(board: string, player: string | null, view: View, season: number | null) {
  const p = new URLSearchParams(window.location.search);
  if (board === "global") p.delete("board");
  else p.set("board", board);
  if (player) p.set("player", player);
  else p.delete("player");
  if (view === "past") p.set("view", "seasons");
  else p.delete("view");
  if (view === "past" && season !== null) p.set("season", String(season));
  else p.delete("season");
  const qs = p.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${qs ? `?${qs}` : ""}`);
}

export function App() {
  const initial = readParams();
  const store = useStore();
  const boardList = useBoards();
  const boards = boardList.boards;
  const [board, setBoard] = useState(initial.board);
  const [player, setPlayer] = useState<string | null>(initial.player);
  const [view, setView] = useState<View>(initial.view);
  const [pastSeason, setPastSeason] = useState<number | null>(initial.season);
  /** The past-seasons view was opened from a button (not the address bar): its heading takes the focus. */
  const [pastFocus, setPastFocus] = useState(false);
  const pickerId = useId();

  useEffect(() => writeParams(board, player, view, pastSeason), [board, player, view, pastSeason]);

  // The live season: the board's info, read again after a `season` frame (which may know a newer one first).
  const seasonEnd = useSeasonEnd(board);
  const boardInfo = useBoardInfo(board, seasonEnd?.season);
  const infoSeason = boardInfo.state.kind === "found" ? (boardInfo.state.info.season ?? null) : null;
  const liveSeason = Math.max(infoSeason ?? 0, seasonEnd?.season ?? 0) || null;
  const chooseBoard = useCallback((next: string) => {
    setBoard(next);
    setPastSeason(null);
  }, []);
  const showPast = useCallback((season: number | null) => {
    setPastSeason(season);
    setView("past");
    setPastFocus(true);
  }, []);
  const showView = useCallback((next: View) => {
    setView(next);
    setPastFocus(next === "past");
    if (next === "live") setPastSeason(null);
  }, []);

  useEffect(() => {
    try {
      if (sessionStorage.getItem(KEY_FOR_SOCKET_STORAGE) === "1") store.setToken(sessionStorage.getItem(KEY_STORAGE));
    } catch {
      // sessionStorage unavailable
    }
  }, [store]);
  const onKeyForLive = useCallback((key: string | null) => store.setToken(key), [store]);

  const info = boards.find((b) => b.id === board);
  const title = info?.title || board;
  const format = formatOf(info);
  // Said wherever the board is shown: on an asc board a smaller number wins, which nobody guesses.
  const sortNote = info?.sort === "asc" ? " (lower is better)" : "";

  if (initial.screen) {
    return (
      <div className="tv">
        <header className="tv-header">
          <h1>
            {title}
            {sortNote && (
              <span className="tv-sort" data-testid="sort-note">
                {sortNote.trim()}
              </span>
            )}
          </h1>
          <div className="tv-side">
            <SeasonBar info={boardInfo.state} season={liveSeason} tv />
            <Status compact />
          </div>
        </header>
        <main>
          <Board board={board} title={`Top 10 · ${title}${sortNote}`} format={format} />
        </main>
        <SeasonBanner board={board} format={format} tv />
        <LiveRegion />
      </div>
    );
  }

  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to the leaderboard
      </a>
      <header className="topbar">
        <h1>
          <span className="logo" aria-hidden="true">
            ◆
          </span>{" "}
          Leaderboard
        </h1>
        <div className="picker">
          <label htmlFor={pickerId}>Board</label>
          <select id={pickerId} value={board} onChange={(e) => chooseBoard(e.target.value)}>
            {boards.map((b) => (
              <option key={b.id} value={b.id}>
                {b.title || b.id}
              </option>
            ))}
            {!boards.some((b) => b.id === board) && <option value={board}>{board}</option>}
          </select>
          {boardList.error !== null && (
            <span className="picker-error" role="alert" data-testid="boards-error" title={boardList.error}>
              could not load boards —{" "}
              <button type="button" className="link" onClick={boardList.retry} disabled={boardList.loading}>
                retry
              </button>
            </span>
          )}
        </div>
        <Status />
      </header>
      <main id="main" className="layout">
        <div className="col-board">
          <SeasonBar
            info={boardInfo.state}
            listed={info}
            season={liveSeason}
            view={view}
            onView={showView}
            onRetry={boardInfo.refresh}
          />
          {view === "live" ? (
            <>
              <SeasonBanner board={board} format={format} onShowStandings={showPast} />
              <Board
                board={board}
                title={`Top 10 · ${title}${sortNote}`}
                highlight={player}
                format={format}
              />
              <p className="hint">
                Live over WebSocket. TV view:{" "}
                <a href={`?screen=1${board !== "global" ? `&board=${board}` : ""}`}>?screen=1</a>
              </p>
            </>
          ) : (
            <PastSeasons
              board={board}
              boardTitle={title}
              format={format}
              season={pastSeason}
              liveSeason={liveSeason}
              onSeason={setPastSeason}
              onBack={() => showView("live")}
              focus={pastFocus}
            />
          )}
        </div>
        <div className="col-side">
          <PlayerPanel board={board} boardTitle={title} format={format} userId={player} onFollow={setPlayer} />
          <SubmitPanel boards={boards} board={board} onKeyForLive={onKeyForLive} />
        </div>
      </main>
      <Toasts />
      <LiveRegion />
    </div>
  );
}
