import { useCallback, useEffect, useState } from "react";
import { ProblemError, listBoards } from "./api";
import { useHealth } from "./hooks";
import type { BoardInfo } from "./types";

const FALLBACK_BOARDS: BoardInfo[] = [
  { id: "global", title: "Global", sort: "desc", operator: "incr", created_at: "" },
];

export interface BoardList {
  boards: BoardInfo[];
  /** Why the last GET /api/leaderboards failed, or null. */
  error: string | null;
  loading: boolean;
  retry(): void;
}

function whyFailed(err: unknown): string {
  if (err instanceof ProblemError) {
    const p = err.problem;
    return p.status ? `${p.status} ${p.detail || p.title}` : p.detail || p.title;
  }
  return String(err);
}

/**
 * The board picker's list. When it cannot be loaded the picker keeps what it had (at first only `global`
 * and the board in the address bar) and says so, with a retry, instead of silently offering fewer boards.
 * It retries by itself when the server reports itself healthy again.
 */
export function useBoards(): BoardList {
  const [boards, setBoards] = useState<BoardInfo[]>(FALLBACK_BOARDS);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [attempt, setAttempt] = useState(0);
  const health = useHealth().state;
  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    listBoards(ctl.signal).then(
      (list) => {
        if (list.length) setBoards(list);
        setError(null);
        setLoading(false);
      },
      (err: unknown) => {
        if (ctl.signal.aborted) return;
        setError(whyFailed(err));
        setLoading(false);
      },
    );
    return () => ctl.abort();
  }, [attempt]);
  const retry = useCallback(() => setAttempt((n) => n + 1), []);
  const failed = error !== null;
  useEffect(() => {
    if (health === "ok" && failed) retry();
  }, [health, failed, retry]);
  return { boards, error, loading, retry };
}

