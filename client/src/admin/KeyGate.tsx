import { useEffect, useId, useRef, useState } from "react";
import { problemOf } from "../useRequest";
import { adminClient, saveAdminKey } from "./adminApi";

type Check = { kind: "idle" } | { kind: "checking" } | { kind: "refused"; text: string };

/**
 * Asks for an admin API key and checks it (an admin-only read) before keeping it, in this tab's sessionStorage
 * only: a wrong key or a non-admin key is refused here, not at the first destructive action.
 */
export function KeyGate({ onKey }: { onKey(key: string): void }) {
  const id = useId();
  const input = useRef<HTMLInputElement>(null);
  const [value, setValue] = useState("");
  const [check, setCheck] = useState<Check>({ kind: "idle" });
  useEffect(() => input.current?.focus(), []);

  async function submit(ev: React.FormEvent) {
    ev.preventDefault();
    const key = value.trim();
    if (!key) {
      setCheck({ kind: "refused", text: "Paste an admin API key." });
      input.current?.focus();
      return;
    }
    setCheck({ kind: "checking" });
    try {
      await adminClient(key).verify();
    } catch (err) {
      const p = problemOf(err);
      const text =
        p.status === 401
          ? `This key was not accepted: ${p.detail || p.title}`
          : p.status === 403
            ? `This is not an admin key: ${p.detail || p.title}`
            : `Could not check the key: ${p.detail || p.title}${p.status ? ` (${p.status})` : ""}`;
      setCheck({ kind: "refused", text });
      input.current?.focus();
      return;
    }
    saveAdminKey(key);
    onKey(key);
  }

  const refused = check.kind === "refused";
  return (
    <section className="panel key-gate" aria-labelledby={`${id}-h`}>
      <h2 id={`${id}-h`}>Operator sign-in</h2>
      <p className="muted">
        Voiding scores, removing entries and banning players need an <strong>admin</strong> API key.
      </p>
      <form className="grid" onSubmit={submit} noValidate>
        <label htmlFor={`${id}-key`}>Admin API key</label>
        <input
          ref={input}
          id={`${id}-key`}
          name="admin-key"
          type="password"
          value={value}
          onChange={(e) => setValue(e.target.value)}
          placeholder="lbk_…"
          autoComplete="off"
          spellCheck={false}
          aria-invalid={refused ? true : undefined}
          aria-describedby={`${id}-help${refused ? ` ${id}-err` : ""}`}
        />
        <p className="help" id={`${id}-help`}>
          Kept in this tab’s sessionStorage only (never localStorage), until you forget it or close the tab. Create
          one with <code>leaderboard keys create --role admin --name ops-you</code>.
        </p>
        <button type="submit" disabled={check.kind === "checking"}>
          {check.kind === "checking" ? "Checking…" : "Use this key"}
        </button>
      </form>
      {refused && (
        <p className="error" role="alert" id={`${id}-err`} data-testid="key-error">
          {check.text}
        </p>
      )}
    </section>
  );
}
