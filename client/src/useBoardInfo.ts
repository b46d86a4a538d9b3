import { useCallback, useEffect, useRef, useState } from "react";
import { ProblemError, getBoard } from "./api";
import { MAX_TIMER_MS, dueRefreshDelay } from "./clock";
import { useConnStatus, useHealth } from "./hooks";
import type { BoardInfo } from "./types";

export type BoardInfoState =
  | { kind: "loading" }
  | { kind: "found"; info: BoardInfo }
  | { kind: "missing" }
  | { kind: "error"; message: string };

interface Stored {
  board: string;
  state: BoardInfoState;
  /** Settled reads so far (a new number after each answer, also a failed one). */
  reads: number;
}

/**
 * GET /api/leaderboards/{id}: the board's live season and its next reset. Read when the board is chosen and
 * again when
 *  - `seasonHint` changes (a `season` frame said the board was reset),
 *  - its next reset is due (see dueRefreshDelay: a second after `next_reset_at`, then backing off while the
 *    answer still says it is due),
 *  - the socket has reconnected (a reset may have happened while it was down),
 *  - the server reports itself healthy again after a read failed,
 *  - `refresh()` is called.
 * A failed re-read keeps what was known; the error shows only when nothing is.
 */
export function useBoardInfo(board: string, seasonHint?: number): { state: BoardInfoState; refresh(): void } {
  const [stored, setStored] = useState<Stored>({ board, state: { kind: "loading" }, reads: 0 });
  const [attempt, setAttempt] = useState(0);
  const refresh = useCallback(() => setAttempt((n) => n + 1), []);

  useEffect(() => {
    const ctl = new AbortController();
    getBoard(board, ctl.signal).then(
      (info) => setStored((prev) => ({ board, state: { kind: "found", info }, reads: prev.reads + 1 })),
      (err: unknown) => {
        if (ctl.signal.aborted) return;
        setStored((prev) => {
          const reads = prev.reads + 1;
          if (err instanceof ProblemError && err.problem.status === 404) return { board, state: { kind: "missing" }, reads };
          if (prev.board === board && prev.state.kind === "found") return { ...prev, reads };
          const message = err instanceof Error ? err.message : String(err);
          return { board, state: { kind: "error", message }, reads };
        });
      },
    );
    return () => ctl.abort();
  }, [board, attempt, seasonHint]);

  const state: BoardInfoState = stored.board === board ? stored.state : { kind: "loading" };
  const nextReset = state.kind === "found" ? state.info.next_reset_at : null;

  // Read again once the next reset is due; `overdue` counts the reads that found it due already.
  const overdue = useRef(0);
  useEffect(() => {
    const dueAt = nextReset ? Date.parse(nextReset) : Number.NaN;
    if (!Number.isFinite(dueAt)) return;
    const now = Date.now();
    if (dueAt > now) overdue.current = 0;
    const delay = dueRefreshDelay(dueAt, now, overdue.current);
    if (dueAt <= now) overdue.current += 1;
    const longWait = delay === MAX_TIMER_MS;
    const t = window.setTimeout(() => (longWait ? setStored((prev) => ({ ...prev })) : refresh()), delay);
    return () => window.clearTimeout(t);
  }, [nextReset, stored, refresh]);

  // After a reconnect (not the first connect): the socket may have missed a `season` frame.
  const connected = useConnStatus().state === "connected";
  const wasConnected = useRef(false);
  useEffect(() => {
    if (!connected) return;
    if (wasConnected.current) refresh();
    wasConnected.current = true;
  }, [connected, refresh]);

  // A read that failed (say 503 while Postgres is down) is made again once the server is healthy.
  const healthy = useHealth().state === "ok";
  const failed = state.kind === "error";
  useEffect(() => {
    if (healthy && failed) refresh();
  }, [healthy, failed, refresh]);

  return { state, refresh };
}
