import { useAnnouncement, useStore, useToasts } from "../hooks";

/** Visible rank-change toasts (capped and throttled by the store's ToastQueue). */
export function Toasts() {
  const toasts = useToasts();
  const store = useStore();
  return (
    <section className="toasts" aria-label="Rank changes">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.kind}`} data-testid="toast">
          <span className="toast-who" title={t.label}>
            {t.label}
          </span>
          <span className="toast-text">{t.text}</span>
          <button
            type="button"
            className="toast-close"
            aria-label={`Dismiss: ${t.spoken}`}
            onClick={() => store.toasts.dismiss(t.id)}
          >
            ×
          </button>
        </div>
      ))}
    </section>
  );
}

/** The polite ARIA live region: screen readers hear each (coalesced) rank change once. */
export function LiveRegion() {
  const a = useAnnouncement();
  return (
    <div className="sr-only" aria-live="polite" aria-atomic="true" data-testid="live-region">
      {a ? a.text : ""}
    </div>
  );
}
