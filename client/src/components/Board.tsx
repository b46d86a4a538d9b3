import { memo, useLayoutEffect, useRef } from "react";
import { useTop, useTopError } from "../hooks";
import type { Entry, ScoreFormat } from "../types";
import { formatScore, nameOf } from "../format";
import { EntriesHead } from "./EntriesHead";

interface Props {
  board: string;
  title: string;
  /** user_id to highlight (the followed player). */
  highlight?: string | null;
  limit?: number;
  /** How scores read (the board's `format`; "number" when the server sends none). */
  format?: ScoreFormat;
}

const MOVE_MS = 450;

function prefersReducedMotion(): boolean {
  return typeof matchMedia === "function" && matchMedia("(prefers-reduced-motion: reduce)").matches;
}

/**
 * The live top-N. Re-renders only when this board's snapshot changes. Rows are keyed by user_id and
 * animated FLIP-style: positions are read before React commits (in render), the rows are moved, and
 * each row that changed place is animated from its old position to the new one.
 */
export const Board = memo(function Board({ board, title, highlight, limit = 10, format = "number" }: Props) {
  const top = useTop(board, limit);
  const error = useTopError(board);
  const rows = useRef(new Map<string, HTMLTableRowElement>());
  const before = useRef(new Map<string, number>());
  const prevScores = useRef(new Map<string, number>());
  const prevRanks = useRef(new Map<string, number>());

  // First/Last: the visual position of every row as it is on screen now (mid-animation included).
  if (typeof window !== "undefined" && rows.current.size > 0) {
    const m = new Map<string, number>();
    for (const [id, el] of rows.current) m.set(id, el.getBoundingClientRect().top);
    before.current = m;
  }

  useLayoutEffect(() => {
    const reduce = prefersReducedMotion();
    const hadRows = before.current.size > 0;
    for (const [id, el] of rows.current) {
      const from = before.current.get(id);
      for (const a of el.getAnimations()) if (a.id === "flip") a.cancel();
      if (reduce || typeof el.animate !== "function") continue;
      const to = el.getBoundingClientRect().top;
      if (from === undefined) {
        if (hadRows) {
          const a = el.animate(
            [
              { opacity: 0, transform: "translateY(8px)" },
              { opacity: 1, transform: "none" },
            ],
            { duration: MOVE_MS, easing: "ease-out" },
          );
          a.id = "flip";
        }
      } else if (Math.abs(from - to) > 0.5) {
        const a = el.animate([{ transform: `translateY(${from - to}px)` }, { transform: "none" }], {
          duration: MOVE_MS,
          easing: "cubic-bezier(0.2, 0.8, 0.2, 1)",
        });
        a.id = "flip";
      }
    }
    before.current = new Map();
    prevScores.current = new Map((top?.entries ?? []).map((e) => [e.user_id, e.score]));
    prevRanks.current = new Map((top?.entries ?? []).map((e) => [e.user_id, e.rank]));
  }, [top]);

  const entries: readonly Entry[] = top?.entries ?? [];
  return (
    <table className="board" data-board={board} data-seq={top?.seq ?? ""} aria-describedby={`${board}-meta`}>
      <caption>
        <span className="caption-row">
          <span className="caption-title">{title}</span>
          <span className="caption-meta" id={`${board}-meta`}>
            {top ? `top ${Math.min(limit, entries.length)} of ${top.total.toLocaleString()} players` : ""}
          </span>
        </span>
      </caption>
      <EntriesHead format={format} />
      <tbody>
        {entries.map((e) => {
          const oldScore = prevScores.current.get(e.user_id);
          const oldRank = prevRanks.current.get(e.user_id);
          const scoreChanged = oldScore !== undefined && oldScore !== e.score;
          // A row that just entered the top N moved up too.
          const entered = oldRank === undefined && prevRanks.current.size > 0;
          const move = entered ? "up" : oldRank === undefined ? "" : e.rank < oldRank ? "up" : e.rank > oldRank ? "down" : "";
          return (
            <tr
              key={e.user_id}
              ref={(el) => {
                if (el) rows.current.set(e.user_id, el);
                else rows.current.delete(e.user_id);
              }}
              data-user={e.user_id}
              className={[
                e.user_id === highlight ? "me" : "",
                e.rank <= 3 ? `podium podium-${e.rank}` : "",
                move ? `moved-${move}` : "",
              ]
                .filter(Boolean)
                .join(" ")}
            >
              <td className="col-rank">
                <span className="rank-badge">{e.rank}</span>
                {move && (
                  <span className={`move move-${move}`} aria-hidden="true" key={`${e.rank}:${oldRank}`}>
                    {move === "up" ? "▲" : "▼"}
                  </span>
                )}
              </td>
              <th scope="row" className="col-name">
                {/* One line each, cut with an ellipsis; the title holds the whole text. */}
                <span className="name-line">
                  <span className="name" title={nameOf(e)}>
                    {nameOf(e)}
                  </span>
                </span>
                {e.display_name && e.display_name !== e.user_id && (
                  <span className="uid" title={e.user_id}>
                    {e.user_id}
                  </span>
                )}
              </th>
              <td className={`col-score${scoreChanged ? " changed" : ""}`} key={`${e.user_id}:${e.score}`}>
                {formatScore(e.score, format)}
              </td>
            </tr>
          );
        })}
        {top && entries.length === 0 && (
          <tr className="empty">
            <td colSpan={3}>No scores on this board yet.</td>
          </tr>
        )}
        {!top && (
          <tr className="empty">
            <td colSpan={3}>
              {error
                ? error.code === "not_found"
                  ? `Board “${board}” does not exist.`
                  : `Cannot follow this board: ${error.detail}`
                : "Waiting for the live board…"}
            </td>
          </tr>
        )}
      </tbody>
    </table>
  );
});
