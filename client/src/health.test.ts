import { describe, expect, it } from "vitest";
import { describeChecks, healthFromFrame, healthFromReadyz } from "./health";

describe("healthFromFrame", () => {
  it("reads the contract's frame", () => {
    expect(
      healthFromFrame({
        type: "status",
        state: "degraded",
        checks: { postgres: "unavailable", redis: "ok" },
        detail: "Postgres did not answer",
      }),
    ).toEqual({ state: "degraded", checks: { postgres: "unavailable", redis: "ok" }, detail: "Postgres did not answer", source: "frame" });
    expect(healthFromFrame({ type: "status", state: "ok", checks: { postgres: "ok", redis: "ok" }, detail: "all good" })).toEqual({
      state: "ok",
      checks: { postgres: "ok", redis: "ok" },
      detail: "",
      source: "frame",
    });
  });

  it("describes the failing checks when the frame has no detail", () => {
    expect(healthFromFrame({ type: "status", state: "degraded", checks: { postgres: "unavailable", redis: "ok" } })?.detail).toBe(
      "database unavailable: scores cannot be saved",
    );
    expect(healthFromFrame({ type: "status", state: "degraded", checks: { postgres: "unavailable", redis: "unavailable" }, detail: " " })?.detail).toBe(
      "database unavailable: scores cannot be saved; rank cache unavailable: reads are slower",
    );
    expect(healthFromFrame({ type: "status", state: "degraded" })?.detail).toBe("the server reports a problem");
  });

  it("keeps a multi-line detail on one line", () => {
    expect(healthFromFrame({ type: "status", state: "degraded", checks: {}, detail: "a\n  b" })?.detail).toBe("a b");
  });

  it("does not report a state it does not know as fine", () => {
    expect(healthFromFrame({ type: "status", state: "down", checks: {}, detail: "x" })?.state).toBe("degraded");
  });

  it("ignores what is not a status frame", () => {
    expect(healthFromFrame({ type: "top" })).toBeNull();
    expect(healthFromFrame({ type: "status" })).toBeNull();
    expect(healthFromFrame(null)).toBeNull();
    expect(healthFromFrame("status")).toBeNull();
  });
});

describe("healthFromReadyz", () => {
  it("200 is ok", () => {
    expect(healthFromReadyz(200, { status: "ready", checks: { postgres: "ok", migrations: "ok", redis: "ok" } })).toEqual({
      state: "ok",
      checks: { postgres: "ok", migrations: "ok", redis: "ok" },
      detail: "",
      source: "readyz",
    });
  });

  it("503: the problem's detail lists the failing checks (today's server)", () => {
    const h = healthFromReadyz(503, {
      type: "/problems/unavailable",
      title: "Service unavailable",
      status: 503,
      detail: "postgres: unreachable: FileNotFoundError",
      code: "unavailable",
    });
    expect(h).toEqual({
      state: "degraded",
      checks: { postgres: "unreachable: FileNotFoundError" },
      detail: "database unavailable: scores cannot be saved",
      source: "readyz",
    });
    expect(healthFromReadyz(503, { detail: "postgres: unreachable: OSError; redis: unreachable: ConnectionError" })?.detail).toBe(
      "database unavailable: scores cannot be saved; rank cache unavailable: reads are slower",
    );
  });

  it("503: other reasons are passed on as they are", () => {
    expect(healthFromReadyz(503, { detail: "draining: this instance is shutting down" })?.detail).toBe(
      "draining: this instance is shutting down",
    );
    expect(healthFromReadyz(503, { detail: "migrations: pending: 0007_formats" })?.detail).toBe("migrations: pending: 0007_formats");
    expect(healthFromReadyz(503, null)).toMatchObject({ state: "degraded", detail: "the server is not ready" });
  });

  it("503 with a checks object uses it", () => {
    expect(healthFromReadyz(503, { detail: "x", checks: { postgres: "ok", redis: "unreachable: TimeoutError" } })?.detail).toBe(
      "rank cache unavailable: reads are slower",
    );
  });

  it("anything else says nothing about the server's dependencies", () => {
    expect(healthFromReadyz(502, null)).toBeNull();
    expect(healthFromReadyz(404, { title: "Not found" })).toBeNull();
    expect(healthFromReadyz(0, null)).toBeNull();
  });
});

describe("describeChecks", () => {
  it("leaves out what is ok", () => {
    expect(describeChecks({ postgres: "ok", redis: "ok" })).toBe("");
    expect(describeChecks({ postgres: "ok", search: "unavailable" })).toBe("search: unavailable");
  });
});
