import { useCallback, useEffect, useId, useMemo, useState } from "react";
import { Status } from "../components/Status";
import { formatOf } from "../format";
import { useBoards } from "../useBoards";
import { adminClient, loadAdminKey, saveAdminKey } from "./adminApi";
import { AuditLog } from "./AuditLog";
import { KeyGate } from "./KeyGate";
import { PLAYER_HEADING, PlayerOps } from "./PlayerOps";

/** `/admin` (or `/?view=admin`) opens the operator view. */
export function isAdminLocation(loc: Pick<Location, "pathname" | "search">): boolean {
  return /^\/admin\/?$/.test(loc.pathname) || new URLSearchParams(loc.search).get("view") === "admin";
}

function readParams() {
  const p = new URLSearchParams(window.location.search);
  return { board: p.get("board") || "global", player: p.get("player") || null };
}

/** The board and player in the address bar, so a link (in an incident note, say) opens the same view. */
function writeParams(board: string, player: string | null) {
  const p = new URLSearchParams(window.location.search);
  if (board === "global") p.delete("board");
  else p.set("board", board);
  if (player) p.set("player", player);
  else p.delete("player");
  const qs = p.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${qs ? `?${qs}` : ""}`);
}

/**
 * The operator view: an admin key (sessionStorage only), then find a player, void a submission or restore a
 * voided one, remove an entry, ban or lift a ban, each with a reason and a confirmation, and the audit log of
 * every action.
 */
export function AdminApp() {
  const initial = useMemo(readParams, []);
  const [key, setKey] = useState<string | null>(() => loadAdminKey());
  const api = useMemo(() => (key ? adminClient(key) : null), [key]);
  const boardList = useBoards();
  const boards = boardList.boards;
  const [board, setBoard] = useState(initial.board);
  const [player, setPlayer] = useState<string | null>(initial.player);
  const [auditTick, setAuditTick] = useState(0);
  const pickerId = useId();

  useEffect(() => {
    document.title = "Operator · Leaderboard";
  }, []);
  useEffect(() => writeParams(board, player), [board, player]);

  const info = boards.find((b) => b.id === board);
  const title = info?.title || board;
  const formatFor = useCallback((id: string) => formatOf(boards.find((b) => b.id === id)), [boards]);
  const onChanged = useCallback(() => setAuditTick((n) => n + 1), []);

  function forget() {
    saveAdminKey(null);
    setKey(null);
  }

  function showPlayer(userId: string) {
    setPlayer(userId);
    // The player's panel is above the log on a phone: take the reader there.
    document.getElementById(PLAYER_HEADING)?.focus();
  }

  return (
    <div className="app admin">
      <a className="skip" href="#main">
        Skip to the operator view
      </a>
      <header className="topbar">
        <h1>
          <span className="logo" aria-hidden="true">
            ◆
          </span>{" "}
          Leaderboard <span className="admin-tag">Operator</span>
        </h1>
        {key && (
          <div className="picker">
            <label htmlFor={pickerId}>Board</label>
            <select id={pickerId} value={board} onChange={(e) => setBoard(e.target.value)}>
              {boards.map((b) => (
                <option key={b.id} value={b.id}>
                  {b.title || b.id}
                </option>
              ))}
              {!boards.some((b) => b.id === board) && <option value={board}>{board}</option>}
            </select>
            {boardList.error !== null && (
              <span className="picker-error" role="alert" title={boardList.error}>
                could not load boards —{" "}
                <button type="button" className="link" onClick={boardList.retry} disabled={boardList.loading}>
                  retry
                </button>
              </span>
            )}
          </div>
        )}
        {key && (
          <button type="button" className="secondary" onClick={forget} data-testid="forget-key">
            Forget key
          </button>
        )}
        <Status />
      </header>
      <main id="main" tabIndex={-1}>
        {!api ? (
          <KeyGate onKey={setKey} />
        ) : (
          <div className="layout">
            <div className="col-board">
              <PlayerOps
                api={api}
                board={board}
                boardTitle={title}
                format={formatOf(info)}
                formatOf={formatFor}
                userId={player}
                onFind={setPlayer}
                onChanged={onChanged}
              />
            </div>
            <div className="col-side">
              <AuditLog api={api} refreshTick={auditTick} formatOf={formatFor} onPlayer={showPlayer} />
            </div>
          </div>
        )}
      </main>
      <p className="hint">
        <a href={`/${board !== "global" ? `?board=${encodeURIComponent(board)}` : ""}`}>The public board</a>
      </p>
    </div>
  );
}
