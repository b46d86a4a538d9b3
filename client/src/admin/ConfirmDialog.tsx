import { useEffect, useId, useRef } from "react";
import type { ScoreFormat } from "../types";
import { REASON_MAX, reasonLength } from "./adminApi";
import { type Flow, type FlowEvent, actionText, problemText } from "./operator";

interface Props {
  flow: Flow;
  dispatch(ev: FlowEvent): void;
  /** The confirm button: the caller validates and runs the action. */
  onConfirm(): void;
  format: ScoreFormat;
}

/**
 * The confirmation step of a destructive action: a modal <dialog> (focus trapped inside, Esc cancels) saying
 * what will happen, asking for the reason, and showing the server's refusal next to the button.
 */
export function ConfirmDialog({ flow, dispatch, onConfirm, format }: Props) {
  const id = useId();
  const dialog = useRef<HTMLDialogElement>(null);
  const reasonInput = useRef<HTMLInputElement>(null);
  const open = flow.phase !== "idle";

  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (open && !d.open) {
      d.showModal();
      reasonInput.current?.focus();
    } else if (!open && d.open) {
      d.close();
    }
  }, [open]);

  // A refusal: the reason field gets the focus back, with the problem read out (role=alert).
  const problem = flow.phase === "confirm" ? flow.problem : null;
  useEffect(() => {
    if (problem) reasonInput.current?.focus();
  }, [problem]);

  const running = flow.phase === "running";
  const text = flow.phase === "idle" ? null : actionText(flow.action, format);
  const reason = flow.phase === "idle" ? "" : flow.reason;
  const invalid = flow.phase === "confirm" ? flow.invalid : null;
  const n = reasonLength(reason);
  const describedBy = [`${id}-count`, invalid ? `${id}-invalid` : "", problem ? `${id}-problem` : ""].filter(Boolean).join(" ");

  return (
    <dialog
      ref={dialog}
      className="confirm"
      aria-labelledby={`${id}-h`}
      aria-describedby={`${id}-what`}
      data-testid="confirm-dialog"
      onCancel={(e) => {
        // Esc: close through the state, and not while the request is on its way.
        e.preventDefault();
        if (!running) dispatch({ type: "cancel" });
      }}
    >
      {text && (
        <form
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            onConfirm();
          }}
        >
          <h2 id={`${id}-h`}>{text.title}</h2>
          <p id={`${id}-what`}>
            {text.summary}
            {text.final && <strong className="warn"> This cannot be undone.</strong>}
          </p>
          <label htmlFor={`${id}-reason`}>Reason (required, kept in the audit log)</label>
          <input
            ref={reasonInput}
            id={`${id}-reason`}
            name="reason"
            value={reason}
            onChange={(e) => dispatch({ type: "reason", text: e.target.value })}
            readOnly={running}
            autoComplete="off"
            aria-invalid={invalid ? true : undefined}
            aria-describedby={describedBy}
          />
          <p className={`help${n > REASON_MAX ? " error" : ""}`} id={`${id}-count`}>
            {n} / {REASON_MAX} characters
          </p>
          {invalid && (
            <p className="error" id={`${id}-invalid`} data-testid="reason-error">
              {invalid}
            </p>
          )}
          {problem && (
            <p className="error problem" role="alert" id={`${id}-problem`} data-testid="action-error">
              <strong>Refused:</strong> {problemText(problem)}
            </p>
          )}
          <div className="dialog-actions">
            <button type="button" className="secondary" onClick={() => dispatch({ type: "cancel" })} disabled={running}>
              Cancel
            </button>
            <button type="submit" className="danger" disabled={running} data-testid="confirm-action">
              {running ? text.running : text.confirm}
            </button>
          </div>
        </form>
      )}
    </dialog>
  );
}
