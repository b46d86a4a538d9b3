import { useEffect, useState } from "react";
import { useConnStatus, useStore } from "../hooks";

/** Connection status, always visible: connected / reconnecting (attempt N) / offline. */
export function Status({ compact = false }: { compact?: boolean }) {
  const status = useConnStatus();
  const store = useStore();
  const [now, setNow] = useState(() => Date.now());

  // Tick only while a retry is scheduled, to show the countdown.
  useEffect(() => {
    if (status.retryAt === null) return;
    const t = window.setInterval(() => setNow(Date.now()), 250);
    return () => window.clearInterval(t);
  }, [status.retryAt]);

  let label: string;
  let detail = "";
  switch (status.state) {
    case "connected":
      label = "Connected";
      break;
    case "connecting":
    case "idle":
      label = "Connecting…";
      break;
    case "reconnecting": {
      label = `Reconnecting (attempt ${status.attempt})`;
      if (status.retryAt !== null && status.retryAt > now) {
        detail = `next try in ${Math.ceil((status.retryAt - now) / 1000)} s`;
      }
      break;
    }
    case "offline":
      label = "Offline";
      detail =
        status.reason === "auth"
          ? "authentication failed (1008): live updates need a valid read key"
          : "no network";
      break;
  }
  const showRetry = !compact && (status.state === "offline" || status.state === "reconnecting");
  return (
    <div className={`status status-${status.state}${compact ? " compact" : ""}`} data-state={status.state}>
      <span className="dot" aria-hidden="true" />
      <span className="status-label" data-testid="status">
        {label}
      </span>
      {detail && !compact && <span className="status-detail">{detail}</span>}
      {showRetry && (
        <button type="button" className="link" onClick={() => store.retry()}>
          Retry now
        </button>
      )}
    </div>
  );
}
