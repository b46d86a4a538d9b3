import { useEffect, useState } from "react";
import { useConnStatus, useHealth, useStore } from "../hooks";

/**
 * Connection status, always visible: connected / reconnecting (attempt N) / offline, and while connected
 * whether the server is degraded (its database or cache unavailable: amber, with the reason).
 */
export function Status({ compact = false }: { compact?: boolean }) {
  const status = useConnStatus();
  const health = useHealth();
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
  // A live socket says nothing about the database behind it: the server's own health decides the colour.
  const degraded = status.state === "connected" && health.state === "degraded";
  switch (status.state) {
    case "connected":
      label = degraded ? (compact ? "Connected — degraded" : "Connected — degraded:") : "Connected";
      if (degraded) detail = health.detail;
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
    <div
      className={`status status-${status.state}${degraded ? " status-degraded" : ""}${compact ? " compact" : ""}`}
      data-state={status.state}
      data-health={health.state}
      title={compact && detail ? detail : undefined}
    >
      <span className="dot" aria-hidden="true" />
      <span className="status-label" data-testid="status">
        {label}
      </span>
      {/* the space keeps label and detail apart for screen readers; flex layout does not show it */}
      {detail && !compact && " "}
      {detail && !compact && (
        <span className="status-detail" data-testid="status-detail">
          {detail}
        </span>
      )}
      {showRetry && (
        <button type="button" className="link" onClick={() => store.retry()}>
          Retry now
        </button>
      )}
    </div>
  );
}
