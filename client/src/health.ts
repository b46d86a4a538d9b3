// What the server says about its own dependencies (Postgres, Redis), for the status area. Two sources:
// the `status` frame, sent when the socket subscribes to the `status` topic and again whenever it changes, and, for servers that do
// not send it, GET /readyz (200 ready; 503 problem whose `detail` lists the failing checks). Pure: no I/O.

export type HealthState = "ok" | "degraded" | "unknown";

export interface Health {
  state: HealthState;
  /** Check name -> "ok", or what is wrong with it ("unavailable", "unreachable: OSError"). */
  checks: Readonly<Record<string, string>>;
  /** One line for people, e.g. "database unavailable: scores cannot be saved". Empty when ok. */
  detail: string;
  source: "frame" | "readyz" | null;
}

export const UNKNOWN_HEALTH: Health = { state: "unknown", checks: {}, detail: "", source: null };

/** What a failing check means for someone watching the board: the server's own words (its health.py MEANING),
 * so the status reads the same whether a `status` frame or /readyz said it. */
const CONSEQUENCES: Readonly<Record<string, string>> = {
  postgres: "database unavailable: scores cannot be saved",
  redis: "rank cache unavailable: reads are slower",
};

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function stringRecord(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(v)) for (const [k, val] of Object.entries(v)) if (typeof val === "string") out[k] = val;
  return out;
}

const oneLine = (s: string): string => s.replace(/\s+/g, " ").trim();

/** The failing checks in words, e.g. "database unavailable: scores cannot be saved". */
export function describeChecks(checks: Readonly<Record<string, string>>): string {
  return Object.entries(checks)
    .filter(([, value]) => value !== "ok")
    .map(([name, value]) => CONSEQUENCES[name] ?? `${name}: ${value}`)
    .join("; ");
}

/** A `status` frame as health, or null if the frame is not one. */
export function healthFromFrame(frame: unknown): Health | null {
  if (!isObject(frame) || frame.type !== "status" || typeof frame.state !== "string") return null;
  const checks = stringRecord(frame.checks);
  // A state this client does not know is not reported as fine.
  if (frame.state === "ok") return { state: "ok", checks, detail: "", source: "frame" };
  const detail = typeof frame.detail === "string" ? oneLine(frame.detail) : "";
  return { state: "degraded", checks, detail: detail || describeChecks(checks) || "the server reports a problem", source: "frame" };
}

/** "postgres: unreachable: OSError; redis: unreachable: ConnectionError" -> {postgres: "unreachable: OSError", …} */
function parseFailing(detail: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of detail.split(";")) {
    const i = part.indexOf(":");
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim() || "failing";
  }
  return out;
}

/**
 * A GET /readyz answer as health: 200 is ok, 503 is degraded (its problem `detail` lists the failing
 * checks). Anything else (a network error, a proxy's 502, a 404) says nothing about the server's
 * dependencies: null.
 */
export function healthFromReadyz(status: number, body: unknown): Health | null {
  const json = isObject(body) ? body : {};
  if (status === 200) return { state: "ok", checks: stringRecord(json.checks), detail: "", source: "readyz" };
  if (status !== 503) return null;
  const raw = typeof json.detail === "string" ? oneLine(json.detail) : "";
  const given = stringRecord(json.checks);
  const checks = Object.keys(given).length ? given : parseFailing(raw);
  return { state: "degraded", checks, detail: describeChecks(checks) || raw || "the server is not ready", source: "readyz" };
}
