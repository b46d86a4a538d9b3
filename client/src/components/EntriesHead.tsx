import { scoreHeading } from "../format";
import type { ScoreFormat } from "../types";

/** The header row every table of entries shares: rank, player, and the score in the board's format. */
export function EntriesHead({ format }: { format: ScoreFormat }) {
  return (
    <thead>
      <tr>
        <th scope="col" className="col-rank">
          Rank
        </th>
        <th scope="col" className="col-name">
          Player
        </th>
        <th scope="col" className="col-score">
          {scoreHeading(format)}
        </th>
      </tr>
    </thead>
  );
}
