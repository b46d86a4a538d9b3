import { formatScore, nameOf } from "../format";
import type { PlayerRank, ScoreFormat } from "../types";
import { EntriesHead } from "./EntriesHead";

/** The players around one player (a rank lookup's `around`), that player marked. */
export function AroundTable({ data, format }: { data: PlayerRank; format: ScoreFormat }) {
  return (
    <table className="around">
      <caption>
        <span className="trunc" title={nameOf(data)}>
          Around {nameOf(data)}
        </span>
      </caption>
      <EntriesHead format={format} />
      <tbody>
        {data.around.map((e) => (
          <tr
            key={e.user_id}
            className={e.user_id === data.user_id ? "me" : undefined}
            aria-current={e.user_id === data.user_id ? "true" : undefined}
          >
            <td className="col-rank">{e.rank}</td>
            <th scope="row" className="col-name">
              <span className="name" title={nameOf(e)}>
                {nameOf(e)}
              </span>
            </th>
            <td className="col-score">{formatScore(e.score, format)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
