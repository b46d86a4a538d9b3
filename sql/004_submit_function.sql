-- One group-commit batch in one statement: the writer calls lb_submit() once per batch (one round trip, one
-- transaction) instead of eight statements. Same semantics as before (docs/protocol.md):
--   * session_id is the idempotency key: a session already logged, or repeated in this batch, is a duplicate
--     when it carries the same (board, user, score), an idempotency conflict otherwise;
--   * the board's operator applies in batch order, per player; a submission whose result would leave
--     ±(2^53-1) is refused (and not logged) without failing the others, and so is a repeat of it;
--   * rows are locked in (board, user) order and sessions inserted in session_id order, so concurrent batches
--     (writer lanes, other processes) never deadlock; a row another transaction inserted meanwhile is locked
--     and its submissions recomputed from the value that transaction committed;
--   * every changed row takes a fresh version; each board with accepted submissions gets a cache_intents row.
-- Returns one row per submission, in batch order:
--   status     0 accepted, 1 duplicate, 2 idempotency conflict, 3 out of range
--   value      the board value after this submission (a duplicate: the current value; refused: null)
--   key_value, sort_key, version, name: the player's committed row after the batch (for the cache)
--   intent     the board's cache_intents row (accepted submissions only)
CREATE FUNCTION lb_submit(p_sid uuid[], p_board text[], p_user text[], p_score bigint[], p_name text[])
RETURNS TABLE (
    status smallint, value bigint, key_value bigint, sort_key bigint, version bigint, name text, intent bigint
)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    val      bigint[] := array_fill(NULL::bigint, ARRAY[cardinality(p_sid)]);
    st       smallint[];
    inserted uuid[];
    todo_b   text[];  -- players (board, user) still to compute and write
    todo_u   text[];
    kb text[]; ku text[]; kold bigint[]; knew bigint[]; ksort text[];
    r        record;
    cur      bigint;
    nxt      bigint;
    attempt  int := 0;
    m        constant bigint := 9007199254740991;
BEGIN
    -- 1. Log the first occurrence of each session; one logged before is a duplicate or a conflict.
    WITH firsts AS (
        SELECT DISTINCT ON (t.sid) t.sid, t.b, t.u, t.s
        FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS t(sid, b, u, s, i) ORDER BY t.sid, t.i
    ), ins AS (
        INSERT INTO game_sessions (session_id, board_id, user_id, score)
        SELECT f.sid, f.b, f.u, f.s FROM firsts f ORDER BY f.sid
        ON CONFLICT (session_id) DO NOTHING
        RETURNING session_id
    )
    SELECT coalesce(array_agg(ins.session_id), '{}') INTO inserted FROM ins;

    SELECT array_agg(c.code ORDER BY c.i) INTO st
    FROM (
        SELECT t.i, CASE
            WHEN n.sid IS NOT NULL AND t.i = f.i THEN 0
            WHEN g.session_id IS NOT NULL THEN CASE WHEN (g.board_id, g.user_id, g.score) = (t.b, t.u, t.s) THEN 1 ELSE 2 END
            WHEN (f.b, f.u, f.s) = (t.b, t.u, t.s) THEN 1
            ELSE 2 END::smallint AS code
        FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS t(sid, b, u, s, i)
        JOIN (SELECT DISTINCT ON (x.sid) x.sid, x.b, x.u, x.s, x.i
              FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS x(sid, b, u, s, i)
              ORDER BY x.sid, x.i) f ON f.sid = t.sid
        LEFT JOIN unnest(inserted) AS n(sid) ON n.sid = t.sid
        LEFT JOIN game_sessions g ON g.session_id = t.sid AND n.sid IS NULL
    ) c;

    -- 2. Lock the rows the new submissions touch; apply each board's operator in batch order, per player.
    SELECT array_agg(k.b ORDER BY k.b, k.u), array_agg(k.u ORDER BY k.b, k.u) INTO todo_b, todo_u
    FROM (SELECT DISTINCT t.b, t.u FROM unnest(p_board, p_user, st) AS t(b, u, code) WHERE t.code = 0) k;

    WHILE todo_b IS NOT NULL LOOP
        attempt := attempt + 1;
        IF attempt > 3 THEN
            RAISE EXCEPTION 'could not settle concurrent inserts of new leaderboard rows';
        END IF;
        PERFORM 1 FROM leaderboard l JOIN unnest(todo_b, todo_u) AS k(b, u) ON (l.board_id, l.user_id) = (k.b, k.u)
        ORDER BY l.board_id, l.user_id FOR UPDATE OF l;

        kb := '{}'; ku := '{}'; kold := '{}'; knew := '{}'; ksort := '{}';
        FOR r IN
            SELECT t.i, t.b, t.u, t.s, lb.operator AS op, lb.sort_order AS so, l.value AS old
            FROM unnest(p_board, p_user, p_score) WITH ORDINALITY AS t(b, u, s, i)
            JOIN unnest(todo_b, todo_u) AS k(b, u) ON (k.b, k.u) = (t.b, t.u)
            JOIN leaderboards lb ON lb.id = t.b
            LEFT JOIN leaderboard l ON (l.board_id, l.user_id) = (t.b, t.u)
            WHERE st[t.i] IN (0, 3)
            ORDER BY t.b, t.u, t.i
        LOOP
            IF cardinality(kb) = 0 OR kb[cardinality(kb)] <> r.b OR ku[cardinality(ku)] <> r.u THEN
                kb := kb || r.b; ku := ku || r.u; kold := kold || r.old; knew := knew || r.old; ksort := ksort || r.so;
            END IF;
            cur := knew[cardinality(knew)];
            nxt := CASE
                WHEN cur IS NULL OR r.op = 'set' THEN r.s
                WHEN r.op = 'incr' THEN cur + r.s
                WHEN r.so = 'desc' THEN greatest(cur, r.s)
                ELSE least(cur, r.s) END;
            IF nxt BETWEEN -m AND m THEN
                st[r.i] := 0; val[r.i] := nxt; knew[cardinality(knew)] := nxt;
            ELSE
                st[r.i] := 3; val[r.i] := NULL;
            END IF;
        END LOOP;

        -- A player new on a board needs a users row; a submission with a name renames (the latest name wins).
        INSERT INTO users (user_id, display_name)
        SELECT DISTINCT ON (t.u) t.u, t.nm
        FROM unnest(p_board, p_user, p_name) WITH ORDINALITY AS t(b, u, nm, i)
        JOIN unnest(kb, ku, kold) AS k(b, u, old) ON (k.b, k.u) = (t.b, t.u)
        WHERE st[t.i] = 0 AND (t.nm IS NOT NULL OR k.old IS NULL)
        ORDER BY t.u, (t.nm IS NOT NULL) DESC, t.i DESC
        ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name
        WHERE EXCLUDED.display_name IS NOT NULL AND users.display_name IS DISTINCT FROM EXCLUDED.display_name;

        UPDATE leaderboard l
        SET value = k.v, sort_key = CASE WHEN k.so = 'desc' THEN -k.v ELSE k.v END,
            version = nextval('leaderboard_version_seq'), updated_at = now()
        FROM unnest(kb, ku, kold, knew, ksort) AS k(b, u, old, v, so)
        WHERE (l.board_id, l.user_id) = (k.b, k.u) AND k.old IS NOT NULL AND k.v <> k.old;

        -- A new row another transaction inserted since the lock: lock it and recompute (next round).
        WITH ins AS (
            INSERT INTO leaderboard (board_id, user_id, value, sort_key, version)
            SELECT k.b, k.u, k.v, CASE WHEN k.so = 'desc' THEN -k.v ELSE k.v END, nextval('leaderboard_version_seq')
            FROM unnest(kb, ku, kold, knew, ksort) AS k(b, u, old, v, so)
            WHERE k.old IS NULL AND k.v IS NOT NULL
            ORDER BY k.b, k.u
            ON CONFLICT (board_id, user_id) DO NOTHING
            RETURNING board_id, user_id
        )
        SELECT array_agg(k.b ORDER BY k.b, k.u), array_agg(k.u ORDER BY k.b, k.u) INTO todo_b, todo_u
        FROM unnest(kb, ku, kold, knew) AS k(b, u, old, v)
        LEFT JOIN ins ON (ins.board_id, ins.user_id) = (k.b, k.u)
        WHERE k.old IS NULL AND k.v IS NOT NULL AND ins.board_id IS NULL;
    END LOOP;

    -- 3. A refused submission is not logged; a repeat in this batch of a refused one is refused alike.
    SELECT array_agg(CASE WHEN t.code = 1 AND st[f.i] = 3 AND n.sid IS NOT NULL THEN 3::smallint ELSE t.code END
                     ORDER BY t.i) INTO st
    FROM unnest(p_sid, st) WITH ORDINALITY AS t(sid, code, i)
    JOIN (SELECT DISTINCT ON (x.sid) x.sid, x.i FROM unnest(p_sid) WITH ORDINALITY AS x(sid, i) ORDER BY x.sid, x.i) f
      ON f.sid = t.sid
    LEFT JOIN unnest(inserted) AS n(sid) ON n.sid = t.sid;
    DELETE FROM game_sessions g USING unnest(p_sid, st) AS t(sid, code)
    WHERE t.code = 3 AND g.session_id = t.sid AND t.sid = ANY (inserted);

    -- 4. One row per submission with the player's committed row after the batch; a cache debt per board.
    RETURN QUERY
    WITH rows AS (
        SELECT l.board_id, l.user_id, l.value, l.sort_key, l.version, us.display_name
        FROM leaderboard l
        JOIN (SELECT DISTINCT t.b, t.u FROM unnest(p_board, p_user, st) AS t(b, u, code) WHERE t.code IN (0, 1)) k
          ON (l.board_id, l.user_id) = (k.b, k.u)
        JOIN users us ON us.user_id = l.user_id
    ), owed AS (
        INSERT INTO cache_intents (board_id, users)
        SELECT t.b, array_agg(DISTINCT t.u) FROM unnest(p_board, p_user, st) AS t(b, u, code) WHERE t.code = 0
        GROUP BY t.b
        RETURNING board_id, id
    )
    SELECT st[t.i], CASE st[t.i] WHEN 0 THEN val[t.i] WHEN 1 THEN rw.value END,
           rw.value, rw.sort_key, rw.version, rw.display_name, o.id
    FROM unnest(p_board, p_user) WITH ORDINALITY AS t(b, u, i)
    LEFT JOIN rows rw ON (rw.board_id, rw.user_id) = (t.b, t.u)
    LEFT JOIN owed o ON o.board_id = t.b AND st[t.i] = 0
    ORDER BY t.i;
END
$fn$;
