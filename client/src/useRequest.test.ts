import { describe, expect, it } from "vitest";
import { type Stored, requestView } from "./useRequest";

const done = (key: string, attempt: number, data: string): Stored<string> => ({ key, attempt, state: { kind: "done", data } });
const failed = (key: string, attempt: number, status: number): Stored<string> => ({
  key,
  attempt,
  state: { kind: "error", problem: { title: "", status } },
});
const NOTHING: Stored<string> = { key: null, attempt: 0, state: { kind: "idle" } };

describe("requestView: what a request shows, and whether its read is still on its way", () => {
  it("no key: idle; the first read of a key: loading until its answer", () => {
    expect(requestView(NOTHING, null, 0)).toEqual({ state: { kind: "idle" }, pending: false });
    expect(requestView(NOTHING, "a", 0)).toEqual({ state: { kind: "loading" }, pending: true });
    expect(requestView(done("a", 0, "A0"), "a", 0)).toEqual({ state: { kind: "done", data: "A0" }, pending: false });
  });

  it("an answer never shows under another key, kept or not", () => {
    expect(requestView(done("a", 0, "A0"), "b", 0)).toEqual({ state: { kind: "loading" }, pending: true });
    expect(requestView(done("a", 0, "A0"), "b", 0, true)).toEqual({ state: { kind: "loading" }, pending: true });
  });

  it("a retry: loading, or with keep the last answer of the same key until the new one arrives", () => {
    const a0 = done("a", 0, "A0");
    expect(requestView(a0, "a", 1)).toEqual({ state: { kind: "loading" }, pending: true });
    expect(requestView(a0, "a", 1, true)).toEqual({ state: { kind: "done", data: "A0" }, pending: true });
    expect(requestView(done("a", 1, "A1"), "a", 1, true)).toEqual({ state: { kind: "done", data: "A1" }, pending: false });
    // a failure is kept the same way (a 404 "no entry" stays on screen while it is read again)
    expect(requestView(failed("a", 1, 404), "a", 2, true)).toMatchObject({ state: { kind: "error" }, pending: true });
  });
});
