import { useEffect, useState } from "react";
import { formatCountdown, formatDateTime } from "../format";

/** Whole seconds left until `at` (ms since the epoch), never below zero. */
const secondsLeft = (at: number): number => Math.max(0, Math.ceil((at - Date.now()) / 1000));

/**
 * "resets in 3 h 12 min", ticking once a second (on the second) until the moment; then "resetting now…" until
 * the board is read again with its next reset. Only this element re-renders as it ticks, and only when its
 * text changes; it is not a live region (a screen reader reads it when asked, not every second).
 */
export function Countdown({ to }: { to: string }) {
  const at = Date.parse(to);
  const [left, setLeft] = useState(() => secondsLeft(at));

  useEffect(() => {
    if (!Number.isFinite(at)) return;
    let timer = 0;
    const tick = () => {
      const s = secondsLeft(at);
      setLeft(s);
      // Wake up just after the next whole second before `at`, so the text changes on time.
      if (s > 0) timer = window.setTimeout(tick, ((at - Date.now()) % 1000) + 5);
    };
    tick();
    return () => window.clearTimeout(timer);
  }, [at]);

  if (!Number.isFinite(at)) return null;
  return (
    <time className="countdown" dateTime={to} title={`next reset: ${formatDateTime(to)}`} data-testid="countdown">
      {left > 0 ? `resets in ${formatCountdown(left * 1000)}` : "resetting now…"}
    </time>
  );
}
