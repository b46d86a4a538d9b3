import { useCallback, useEffect, useRef, useState } from "react";
import { ProblemError } from "./api";
import type { Problem } from "./types";

export type Requested<T> =
  | { kind: "idle" }
  | { kind: "loading" }
  | { kind: "done"; data: T }
  | { kind: "error"; problem: Problem };

/** The last answer (or failure) stored, with the key and attempt it answers. */
export interface Stored<T> {
  key: string | null;
  attempt: number;
  state: Requested<T>;
}

/**
 * What a request for `key` shows at `attempt`: the stored answer when it answers exactly that (then nothing
 * is pending), else "loading", or with `keep` the stored answer of the same key (an earlier attempt) until
 * the new one arrives.
 */
export function requestView<T>(
  stored: Stored<T>,
  key: string | null,
  attempt: number,
  keep = false,
): { state: Requested<T>; pending: boolean } {
  if (key === null) return { state: { kind: "idle" }, pending: false };
  if (stored.key === key && stored.attempt === attempt) return { state: stored.state, pending: false };
  const kept = keep && stored.key === key ? stored.state : null;
  return { state: kept ?? { kind: "loading" }, pending: true };
}

export function problemOf(err: unknown): Problem {
  if (err instanceof ProblemError) return err.problem;
  return { title: "Request failed", status: 0, detail: err instanceof Error ? err.message : String(err) };
}

/**
 * One REST read for `key` (null: none): made when the key changes or on retry(), the previous one aborted. An
 * answer shows only under the key (and attempt) it answers, so a slow answer never shows under a newer search,
 * nor an older attempt's over a newer one's. `pending`: the read for the current key and attempt has not
 * answered yet. With `keep`, a retry of the same key keeps showing the last answer until the new one arrives
 * (no flicker when a view is read again); a new key still starts from "loading".
 */
export function useRequest<T>(
  key: string | null,
  load: (signal: AbortSignal) => Promise<T>,
  opts: { keep?: boolean } = {},
): { state: Requested<T>; pending: boolean; retry(): void } {
  const [attempt, setAttempt] = useState(0);
  const [stored, setStored] = useState<Stored<T>>({ key: null, attempt: 0, state: { kind: "idle" } });
  const loadRef = useRef(load);
  loadRef.current = load;

  useEffect(() => {
    if (key === null) return;
    const ctl = new AbortController();
    loadRef.current(ctl.signal).then(
      (data) => {
        if (!ctl.signal.aborted) setStored({ key, attempt, state: { kind: "done", data } });
      },
      (err: unknown) => {
        if (!ctl.signal.aborted) setStored({ key, attempt, state: { kind: "error", problem: problemOf(err) } });
      },
    );
    return () => ctl.abort();
  }, [key, attempt]);

  const retry = useCallback(() => setAttempt((n) => n + 1), []);
  return { ...requestView(stored, key, attempt, opts.keep), retry };
}
