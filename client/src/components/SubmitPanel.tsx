import { useId, useState } from "react";
import { ProblemError, newSessionId, submitScore } from "../api";
import { formatOf, formatScore } from "../format";
import type { BoardInfo, Problem, SubmitAck } from "../types";

export const KEY_STORAGE = "leaderboard.apiKey";
export const KEY_FOR_SOCKET_STORAGE = "leaderboard.apiKeyForLive";

type Result = { kind: "ack"; ack: SubmitAck } | { kind: "problem"; problem: Problem } | null;

interface Props {
  boards: BoardInfo[];
  board: string;
  onKeyForLive(key: string | null): void;
}

function readSession(name: string): string {
  try {
    return sessionStorage.getItem(name) ?? "";
  } catch {
    return "";
  }
}

function writeSession(name: string, value: string): void {
  try {
    if (value) sessionStorage.setItem(name, value);
    else sessionStorage.removeItem(name);
  } catch {
    // Storage disabled: the key just is not remembered.
  }
}

/** Demo submit form (behind a toggle). The API key lives in sessionStorage only, never in localStorage. */
export function SubmitPanel({ boards, board, onKeyForLive }: Props) {
  const id = useId();
  const [open, setOpen] = useState(false);
  const [key, setKey] = useState(() => readSession(KEY_STORAGE));
  const [keyForLive, setKeyForLive] = useState(() => readSession(KEY_FOR_SOCKET_STORAGE) === "1");
  const [userId, setUserId] = useState("");
  const [score, setScore] = useState("");
  const [target, setTarget] = useState(board);
  const [displayName, setDisplayName] = useState("");
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<Result>(null);
  const targetFormat = formatOf(boards.find((b) => b.id === target));
  const unit = targetFormat === "time_ms" ? " (ms)" : targetFormat === "time_s" ? " (s)" : "";

  function changeKey(value: string) {
    setKey(value);
    writeSession(KEY_STORAGE, value.trim());
    if (keyForLive) onKeyForLive(value.trim() || null);
  }

  function changeKeyForLive(on: boolean) {
    setKeyForLive(on);
    writeSession(KEY_FOR_SOCKET_STORAGE, on ? "1" : "");
    onKeyForLive(on && key.trim() ? key.trim() : null);
  }

  async function submit(ev: React.FormEvent) {
    ev.preventDefault();
    const n = Number(score);
    if (!key.trim()) {
      setResult({ kind: "problem", problem: { title: "An API key is needed", status: 0, detail: "Paste a submit key." } });
      return;
    }
    if (score.trim() === "" || !Number.isSafeInteger(n)) {
      setResult({
        kind: "problem",
        problem: { title: "Invalid score", status: 0, detail: "The score must be a whole number (|n| ≤ 2^53−1)." },
      });
      return;
    }
    setBusy(true);
    setResult(null);
    try {
      const body = { user_id: userId.trim(), score: n, board: target, session_id: newSessionId() };
      const ack = await submitScore(displayName.trim() ? { ...body, display_name: displayName.trim() } : body, key.trim());
      setResult({ kind: "ack", ack });
    } catch (err) {
      const problem: Problem =
        err instanceof ProblemError ? err.problem : { title: "Request failed", status: 0, detail: String(err) };
      setResult({ kind: "problem", problem });
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="panel submit" aria-labelledby={`${id}-h`}>
      <h2 id={`${id}-h`}>
        <button
          type="button"
          className="disclosure"
          aria-expanded={open}
          aria-controls={`${id}-body`}
          onClick={() => {
            setOpen(!open);
            setTarget(board);
          }}
        >
          <span aria-hidden="true">{open ? "▾" : "▸"}</span> Submit a score (demo)
        </button>
      </h2>
      <div id={`${id}-body`} hidden={!open}>
        <form onSubmit={submit} className="grid">
          <label htmlFor={`${id}-key`}>API key</label>
          <input
            id={`${id}-key`}
            type="password"
            value={key}
            onChange={(e) => changeKey(e.target.value)}
            placeholder="lbk_…"
            autoComplete="off"
            spellCheck={false}
            aria-describedby={`${id}-keyhelp`}
          />
          <p className="help" id={`${id}-keyhelp`}>
            Kept in this tab’s sessionStorage only. Create one with{" "}
            <code>leaderboard keys create --role submit --name demo</code>.
          </p>
          <label className="check">
            <input type="checkbox" checked={keyForLive} onChange={(e) => changeKeyForLive(e.target.checked)} /> Also
            use it for live updates (needed when public reads are off)
          </label>

          <label htmlFor={`${id}-user`}>user_id</label>
          <input
            id={`${id}-user`}
            required
            pattern="[A-Za-z0-9_.:@\-]{1,64}"
            value={userId}
            onChange={(e) => setUserId(e.target.value)}
            autoComplete="off"
            spellCheck={false}
          />
          <label htmlFor={`${id}-score`}>Score{unit}</label>
          <input
            id={`${id}-score`}
            required
            inputMode="numeric"
            value={score}
            onChange={(e) => setScore(e.target.value)}
          />
          <label htmlFor={`${id}-board`}>Board</label>
          <select id={`${id}-board`} value={target} onChange={(e) => setTarget(e.target.value)}>
            {boards.map((b) => (
              <option key={b.id} value={b.id}>
                {b.title || b.id} ({b.operator})
              </option>
            ))}
            {!boards.some((b) => b.id === target) && <option value={target}>{target}</option>}
          </select>
          <label htmlFor={`${id}-name`}>Display name (optional)</label>
          <input
            id={`${id}-name`}
            maxLength={64}
            value={displayName}
            onChange={(e) => setDisplayName(e.target.value)}
          />
          <button type="submit" disabled={busy}>
            {busy ? "Submitting…" : "Submit"}
          </button>
        </form>
        <div aria-live="polite" className="submit-result" data-testid="submit-result">
          {result?.kind === "ack" && (
            <p className="ok">
              {result.ack.duplicate ? "Duplicate (already applied): " : "Accepted: "}
              <strong>{result.ack.user_id}</strong> now has{" "}
              {formatScore(result.ack.score, formatOf(boards.find((b) => b.id === result.ack.board)))} on {result.ack.board}
              {result.ack.rank !== null ? `, rank ${result.ack.rank}` : ""}.
            </p>
          )}
          {result?.kind === "problem" && (
            <div className="error" role="alert">
              <p>
                <strong>{result.problem.title}</strong>
                {result.problem.status ? ` (${result.problem.status}${result.problem.code ? ` ${result.problem.code}` : ""})` : ""}
                {result.problem.detail ? `: ${result.problem.detail}` : ""}
              </p>
              {result.problem.errors && result.problem.errors.length > 0 && (
                <ul>
                  {result.problem.errors.map((e, i) => (
                    <li key={i}>
                      <code>{e.loc.join(".")}</code>: {e.msg}
                    </li>
                  ))}
                </ul>
              )}
            </div>
          )}
        </div>
      </div>
    </section>
  );
}
