import { describe, expect, it } from "vitest";
import { formatCountdown, formatDateTime, formatOf, formatScore, scoreHeading } from "./format";
import type { BoardInfo } from "./types";

const board = (format?: unknown): BoardInfo =>
  ({ id: "b", title: "B", sort: "asc", operator: "best", created_at: "", format }) as BoardInfo;

describe("formatOf", () => {
  it("is number when the server sends no format (servers before the field existed)", () => {
    expect(formatOf(board())).toBe("number");
    expect(formatOf(undefined)).toBe("number");
    expect(formatOf(null)).toBe("number");
  });

  it("passes the known formats and treats unknown ones as number", () => {
    expect(formatOf(board("time_ms"))).toBe("time_ms");
    expect(formatOf(board("time_s"))).toBe("time_s");
    expect(formatOf(board("number"))).toBe("number");
    expect(formatOf(board("furlongs"))).toBe("number");
    expect(formatOf(board(42))).toBe("number");
  });
});

describe("formatScore", () => {
  it("number: thousands separators, as before (also the default)", () => {
    const grouped = new Intl.NumberFormat(undefined).format(2796001);
    expect(formatScore(2796001)).toBe(grouped);
    expect(formatScore(2796001, "number")).toBe(grouped);
    expect(formatScore(null)).toBe("—");
    expect(formatScore(undefined, "time_ms")).toBe("—");
  });

  it("time_ms: m:ss.mmm below an hour", () => {
    expect(formatScore(0, "time_ms")).toBe("0:00.000");
    expect(formatScore(7, "time_ms")).toBe("0:00.007");
    expect(formatScore(83_456, "time_ms")).toBe("1:23.456");
    expect(formatScore(600_000, "time_ms")).toBe("10:00.000");
    expect(formatScore(3_599_999, "time_ms")).toBe("59:59.999");
  });

  it("time_ms: h:mm:ss.mmm from an hour on", () => {
    expect(formatScore(3_600_000, "time_ms")).toBe("1:00:00.000");
    expect(formatScore(3_723_004, "time_ms")).toBe("1:02:03.004");
    expect(formatScore(36_000_000 * 10, "time_ms")).toBe("100:00:00.000");
    // the largest score the API accepts is still exact
    expect(formatScore(2 ** 53 - 1, "time_ms")).toBe("2501999792:59:00.991");
  });

  it("time_s: m:ss, then h:mm:ss", () => {
    expect(formatScore(0, "time_s")).toBe("0:00");
    expect(formatScore(83, "time_s")).toBe("1:23");
    expect(formatScore(3599, "time_s")).toBe("59:59");
    expect(formatScore(3600, "time_s")).toBe("1:00:00");
    expect(formatScore(3723, "time_s")).toBe("1:02:03");
  });

  it("keeps the sign of a negative time", () => {
    expect(formatScore(-83_456, "time_ms")).toBe("-1:23.456");
    expect(formatScore(-5, "time_s")).toBe("-0:05");
  });

  it("names the column after the format", () => {
    expect(scoreHeading("number")).toBe("Score");
    expect(scoreHeading("time_ms")).toBe("Time");
    expect(scoreHeading("time_s")).toBe("Time");
  });
});

describe("formatCountdown", () => {
  const s = 1000;
  const min = 60 * s;
  const h = 60 * min;

  it("days and hours, hours and minutes, minutes and seconds, seconds", () => {
    expect(formatCountdown(2 * 24 * h + 3 * h + 59 * min)).toBe("2 d 3 h");
    expect(formatCountdown(3 * h + 12 * min)).toBe("3 h 12 min");
    expect(formatCountdown(3 * h + 12 * min + 30 * s)).toBe("3 h 12 min");
    expect(formatCountdown(h)).toBe("1 h 0 min");
    expect(formatCountdown(59 * min + 59 * s)).toBe("59 min 59 s");
    expect(formatCountdown(12 * min + 5 * s)).toBe("12 min 5 s");
    expect(formatCountdown(45 * s)).toBe("45 s");
  });

  it("rounds up to whole seconds: '1 s' until the moment itself", () => {
    expect(formatCountdown(1)).toBe("1 s");
    expect(formatCountdown(1500)).toBe("2 s");
    expect(formatCountdown(min - 1)).toBe("1 min 0 s");
    expect(formatCountdown(24 * h - 1)).toBe("1 d 0 h");
  });

  it("never shows a negative time", () => {
    expect(formatCountdown(0)).toBe("0 s");
    expect(formatCountdown(-1)).toBe("0 s");
    expect(formatCountdown(-3 * h)).toBe("0 s");
    expect(formatCountdown(Number.NaN)).toBe("0 s");
  });

  it("ticks down one second at a time near the end", () => {
    const shown = [5000, 4000, 3000, 2000, 1000, 0, -1000].map(formatCountdown);
    expect(shown).toEqual(["5 s", "4 s", "3 s", "2 s", "1 s", "0 s", "0 s"]);
  });
});

describe("formatDateTime", () => {
  it("formats an instant in the reader's time zone, and says '—' for none", () => {
    const iso = "2026-11-30T18:50:43.371173Z";
    const expected = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(Date.parse(iso));
    expect(formatDateTime(iso)).toBe(expected);
    expect(formatDateTime(null)).toBe("—");
    expect(formatDateTime("not a date")).toBe("—");
  });
});
