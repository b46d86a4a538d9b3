import { useCallback, useEffect, useId, useLayoutEffect, useReducer, useRef } from "react";
import type { ScoreFormat } from "../types";
import { problemOf } from "../useRequest";
import type { AdminClient, AuditAction } from "./adminApi";
import { AUDIT_START, auditReducer, auditText, problemText } from "./operator";

export const AUDIT_PAGE = 20;

const LABEL: Record<AuditAction, string> = { void: "Void", restore: "Restore", remove: "Remove", ban: "Ban", unban: "Unban" };
const when = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
const at = (iso: string): string => {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? when.format(t) : iso;
};

interface Props {
  api: AdminClient;
  /** Read the newest page again whenever this changes (after every action). */
  refreshTick: number;
  formatOf(board: string): ScoreFormat;
  onPlayer(userId: string): void;
}

/** Every moderation action, newest first (GET /api/audit), a page at a time with “Older”. */
export function AuditLog({ api, refreshTick, formatOf, onPlayer }: Props) {
  const id = useId();
  const [state, dispatch] = useReducer(auditReducer, AUDIT_START);
  const gen = useRef(0);
  /** After “Older”, the first entry it added takes the focus (the button may be gone). */
  const focusId = useRef<number | null>(null);
  const list = useRef<HTMLOListElement>(null);

  const refresh = useCallback(() => {
    const g = ++gen.current;
    dispatch({ type: "refresh", gen: g });
    api.audit(AUDIT_PAGE, null).then(
      (page) => dispatch({ type: "page", gen: g, before: null, page }),
      (err: unknown) => dispatch({ type: "failed", gen: g, problem: problemOf(err) }),
    );
  }, [api]);

  useEffect(() => refresh(), [refresh, refreshTick]);

  function older() {
    const before = state.nextBefore;
    if (before === null || state.loading !== null) return;
    const g = gen.current;
    focusId.current = null;
    dispatch({ type: "older" });
    api.audit(AUDIT_PAGE, before).then(
      (page) => {
        focusId.current = page.entries[0]?.id ?? null;
        dispatch({ type: "page", gen: g, before, page });
      },
      (err: unknown) => dispatch({ type: "failed", gen: g, problem: problemOf(err) }),
    );
  }

  useLayoutEffect(() => {
    if (focusId.current === null) return;
    const el = list.current?.querySelector<HTMLElement>(`[data-id="${focusId.current}"]`);
    focusId.current = null;
    el?.focus();
  }, [state.entries]);

  return (
    <section className="panel audit" aria-labelledby={`${id}-h`} data-testid="audit-log">
      <div className="panel-head">
        <h2 id={`${id}-h`}>Audit log</h2>
        <button type="button" className="secondary small" onClick={refresh} disabled={state.loading === "first"}>
          {state.loading === "first" ? "Refreshing…" : "Refresh"}
        </button>
      </div>
      {state.problem && (
        <p className="error" role="alert" data-testid="audit-error">
          Could not read the audit log: {problemText(state.problem)}
        </p>
      )}
      {!state.loaded && state.loading === "first" && <p className="muted">Reading the audit log…</p>}
      {state.loaded && state.entries.length === 0 && <p className="muted">No moderation action yet.</p>}
      <ol className="audit-list" ref={list} aria-busy={state.loading !== null} aria-label="Moderation actions, newest first">
        {state.entries.map((e) => (
          <li key={e.id} data-id={e.id} tabIndex={-1} className={`audit-${e.action}`} data-testid="audit-entry" data-action={e.action}>
            <div className="audit-head">
              <span className={`tag tag-${e.action}`}>{LABEL[e.action] ?? e.action}</span>
              <time dateTime={e.at} title={e.at}>
                {at(e.at)}
              </time>
              <span className="muted audit-id">#{e.id}</span>
            </div>
            <p className="audit-what">{auditText(e, formatOf)}</p>
            <p className="audit-why">
              <span className="sr-only">Reason: </span>“{e.reason}” <span className="muted">— {e.actor}</span>
            </p>
            <button type="button" className="link small" onClick={() => onPlayer(e.user_id)}>
              Show {e.user_id}
            </button>
          </li>
        ))}
      </ol>
      {state.nextBefore !== null && (
        <div className="pager">
          <button type="button" className="secondary" onClick={older} disabled={state.loading !== null} data-testid="audit-older">
            {state.loading === "older" ? "Loading…" : "Older"}
          </button>
        </div>
      )}
    </section>
  );
}
