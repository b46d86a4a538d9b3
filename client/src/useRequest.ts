import { useCallback, useEffect, useRef, useState } from "react";
import { ProblemError } from "./api";
import type { Problem } from "./types";

export type Requested<T> =
  | { kind: "idle" }
  | { kind: "loading" }
  | { kind: "done"; data: T }
  | { kind: "error"; problem: Problem };

interface Stored<T> {
  key: string | null;
  attempt: number;
  state: Requested<T>;
}

export function problemOf(err: unknown): Problem {
  if (err instanceof ProblemError) return err.problem;
  return { title: "Request failed", status: 0, detail: err instanceof Error ? err.message : String(err) };
}

/**
 * One REST read for `key` (null: none): made when the key changes or on retry(), the previous one aborted. An
 * answer shows only under the key (and attempt) it answers, so a slow answer never shows under a newer search.
 */
export function useRequest<T>(
  key: string | null,
  load: (signal: AbortSignal) => Promise<T>,
): { state: Requested<T>; retry(): void } {
  const [attempt, setAttempt] = useState(0);
  const [stored, setStored] = useState<Stored<T>>({ key: null, attempt: 0, state: { kind: "idle" } });
  const loadRef = useRef(load);
  loadRef.current = load;

  useEffect(() => {
    if (key === null) return;
    const ctl = new AbortController();
    loadRef.current(ctl.signal).then(
      (data) => setStored({ key, attempt, state: { kind: "done", data } }),
      (err: unknown) => {
        if (!ctl.signal.aborted) setStored({ key, attempt, state: { kind: "error", problem: problemOf(err) } });
      },
    );
    return () => ctl.abort();
  }, [key, attempt]);

  const retry = useCallback(() => setAttempt((n) => n + 1), []);
  if (key === null) return { state: { kind: "idle" }, retry };
  const current = stored.key === key && stored.attempt === attempt;
  return { state: current ? stored.state : { kind: "loading" }, retry };
}
