-- Plans that do not depend on statistics (issue 11). lb_submit's statements are planned once per connection and
-- then reused (PL/pgSQL caches a generic plan after five calls). Planned while a table has no statistics yet
-- (a fresh database: the first minute of a deployment, before autovacuum's first ANALYZE), two things went
-- wrong and stayed wrong while the table grew, until an ANALYZE invalidated the plans:
--   * a join of the batch's arrays against `leaderboard` became a hash join over a sequential scan;
--   * a probe by (board_id, season, user_id) used leaderboard_rank_idx (board_id, season, sort_key, user_id),
--     which reads the player's whole board, instead of the primary key: with no statistics both are estimated
--     at one row, and on a tie the planner keeps the index it considered first, the most recently created.
-- Measured on a fresh database (100 closed-loop WebSocket clients): Postgres spent 280-490 us of CPU per
-- submission instead of ~65 us. Now every player row is probed from a LATERAL subquery (LIMIT 1 keeps it from
-- being flattened into a join the planner could turn into a scan), the UPDATE finds its rows by the ctid a
-- probe returned, and the primary key is rebuilt here so that it is the newer index and wins the tie. The
-- result is a nested loop of primary-key probes, O(batch) whatever the statistics say (pinned by
-- tests/test_store.py). Semantics are those of sql/007, unchanged.
--
-- The batch's arrays were joined with each other by nested loops, too: the planner estimates an unnest() of a
-- parameter at a few rows, so a batch of 500 compared 500 x 500 pairs in lb_apply, the UPDATE and the INSERT
-- (20-35 ms per statement, measured with pg_stat_statements; Postgres at 190-290 us per submission in big
-- batches instead of ~45). Both functions now run with enable_nestloop off: the arrays are hash- or
-- merge-joined, O(batch). That is safe because every access to a large table here goes through a LATERAL
-- subquery (a nested loop is its only plan, so it stays one, with its primary-key probe inside), an
-- ON CONFLICT arbiter or an `= ANY (array)` index condition -- never through a join the planner could now
-- turn into a scan (the log's "logged before?" check is such a LATERAL probe now, and the rare DELETE of
-- refused rows from the log takes `= ANY`). The UPDATE of the player rows, and the rare DELETE of a row
-- inserted for nothing, reach their rows by ctid, which only a nested loop does without a scan: they run with
-- nested loops on (SET LOCAL, restored at the function's exit), and join no two arrays.
--
-- Rebuilding the primary key takes the table's lock for as long as building one index on it takes (about a
-- second per million rows): the upgrade to this version pauses submissions for that long.
ALTER TABLE leaderboard DROP CONSTRAINT leaderboard_pkey;
ALTER TABLE leaderboard ADD PRIMARY KEY (board_id, season, user_id);

CREATE OR REPLACE FUNCTION lb_submit(p_sid uuid[], p_board text[], p_user text[], p_score bigint[], p_name text[],
                          p_window interval DEFAULT interval '30 days', p_meta jsonb[] DEFAULT NULL)
RETURNS TABLE (
    status smallint, value bigint, season integer, key_value bigint, sort_key bigint, version bigint, name text,
    changed boolean, intent bigint, meta text
)
LANGUAGE plpgsql SET enable_nestloop = off AS $fn$
#variable_conflict use_column
DECLARE
    st       smallint[];
    val      bigint[];
    rs       integer[];  -- the season of each submission
    inserted uuid[];
    kb       text[];    -- the players (board, user) with new submissions, in (board, user) order
    ku       text[];
    ks       integer[]; -- and their board's live season
    kold     bigint[];  -- their value before this batch (null: no row)
    fb       text[] := '{}';  -- the rows this batch inserted
    fu       text[] := '{}';
    banned   boolean[] := '{}';  -- per submission (empty: nobody in this batch is banned)
    prod     boolean[];  -- per submission: it produced its player's value (lb_apply's p)
BEGIN
    -- 0. The live season of each board, held against a reset (and a ban) until this transaction ends.
    PERFORM 1 FROM leaderboards lb WHERE lb.id IN (SELECT DISTINCT t.b FROM unnest(p_board) AS t(b))
    ORDER BY lb.id FOR SHARE;
    IF EXISTS (SELECT 1 FROM bans WHERE bans.user_id = ANY (p_user)) THEN
        SELECT array_agg(b.user_id IS NOT NULL ORDER BY t.i) INTO banned
        FROM unnest(p_user) WITH ORDINALITY AS t(u, i) LEFT JOIN bans b ON b.user_id = t.u;
    END IF;

    -- 1. Log the first occurrence of each session (in session_id order) in its board's live season; one
    --    logged before is a duplicate (in the season it counted in) or a conflict, and so is a repeat here.
    --    sql/006: the log is partitioned, so no unique index on session_id: the batch's session ids are locked
    --    (in one global order, after the boards and before the player rows), then looked up in the partitions
    --    of the last p_window only (pruned on submitted_at), and the ones not found are logged. Taken after
    --    the locks, each statement's snapshot sees every session logged by a batch that held one of them. (The
    --    upper bound only prunes the future months and the DEFAULT partition: a row is logged at its
    --    transaction's start, and a batch whose lock this one waited for started less than a day later.)
    PERFORM lb_lock_sessions(p_sid);
    WITH firsts AS (
        SELECT DISTINCT ON (t.sid) t.sid, t.b, t.u, t.s, t.i
        FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS t(sid, b, u, s, i)
        WHERE NOT coalesce(banned[t.i::int], false) ORDER BY t.sid, t.i
    ), ins AS (
        INSERT INTO game_sessions (session_id, board_id, user_id, score, season, ord, metadata)
        SELECT f.sid, f.b, f.u, f.s, lb.season, f.i, p_meta[f.i::int] FROM firsts f JOIN leaderboards lb ON lb.id = f.b
        LEFT JOIN LATERAL (SELECT 1 AS hit FROM game_sessions g WHERE g.session_id = f.sid
                           AND g.submitted_at > now() - p_window AND g.submitted_at < now() + interval '1 day'
                           LIMIT 1) logged ON true
        WHERE logged.hit IS NULL
        ORDER BY f.sid
        RETURNING session_id
    )
    SELECT coalesce(array_agg(ins.session_id), '{}') INTO inserted FROM ins;

    SELECT array_agg(c.code ORDER BY c.i), array_agg(c.season ORDER BY c.i) INTO st, rs
    FROM (
        SELECT t.i, CASE
            WHEN coalesce(banned[t.i::int], false) THEN 5
            WHEN n.sid IS NOT NULL AND t.i = f.i THEN 0
            WHEN g.session_id IS NOT NULL THEN CASE WHEN (g.board_id, g.user_id, g.score) = (t.b, t.u, t.s) THEN 1 ELSE 2 END
            WHEN (f.b, f.u, f.s) = (t.b, t.u, t.s) THEN 1
            ELSE 2 END::smallint AS code,
            coalesce(g.season, lb.season) AS season
        FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS t(sid, b, u, s, i)
        LEFT JOIN (SELECT DISTINCT ON (x.sid) x.sid, x.b, x.u, x.s, x.i
              FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS x(sid, b, u, s, i)
              WHERE NOT coalesce(banned[x.i::int], false)
              ORDER BY x.sid, x.i) f ON f.sid = t.sid
        JOIN leaderboards lb ON lb.id = t.b
        LEFT JOIN unnest(inserted) AS n(sid) ON n.sid = t.sid
        LEFT JOIN LATERAL (  -- the latest in the window (one, even if a shorter window once let an id be reused)
            SELECT g.session_id, g.board_id, g.user_id, g.score, g.season FROM game_sessions g
            WHERE g.session_id = t.sid AND n.sid IS NULL
              AND g.submitted_at > now() - p_window AND g.submitted_at < now() + interval '1 day'
            ORDER BY g.submitted_at DESC LIMIT 1
        ) g ON true
    ) c;

    -- 2. The player rows of the live season: lock them all in one pass, in (board, user) order, inserting the
    --    missing ones with the value computed from nothing and locking the others without changing them; then
    --    compute from what is really there and write what differs.
    SELECT array_agg(k.b ORDER BY k.b, k.u), array_agg(k.u ORDER BY k.b, k.u), array_agg(k.s ORDER BY k.b, k.u)
    INTO kb, ku, ks
    FROM (SELECT DISTINCT t.b, t.u, t.s FROM unnest(p_board, p_user, st, rs) AS t(b, u, code, s) WHERE t.code = 0) k;
    IF kb IS NOT NULL THEN
        SELECT array_agg(l.value ORDER BY k.i) INTO kold  -- a first guess, before the locks
        FROM unnest(kb, ku, ks) WITH ORDINALITY AS k(b, u, s, i)
        LEFT JOIN LATERAL (SELECT l.value FROM leaderboard l
                           WHERE l.board_id = k.b AND l.season = k.s AND l.user_id = k.u LIMIT 1) l ON true;

        WITH applied AS MATERIALIZED (
            SELECT a.i, a.code, a.v, a.p, t.b, t.u FROM lb_apply(p_board, p_user, p_score, st, kb, ku, kold) a
            JOIN unnest(p_board, p_user) WITH ORDINALITY AS t(b, u, i) ON t.i = a.i
        ), guess AS (
            SELECT DISTINCT ON (a.b, a.u) a.b, a.u, a.v FROM applied a WHERE a.code = 0 ORDER BY a.b, a.u, a.i DESC
        ), gm AS (  -- the metadata of the submission that produced the guessed value
            SELECT DISTINCT ON (a.b, a.u) a.b, a.u, p_meta[a.i::int] AS md FROM applied a
            WHERE a.code = 0 AND a.p ORDER BY a.b, a.u, a.i DESC
        ), ins AS (
            INSERT INTO leaderboard AS l (board_id, season, user_id, value, sort_key, version, metadata)
            SELECT k.b, k.s, k.u, coalesce(g.v, 0),
                   CASE WHEN lb.sort_order = 'desc' THEN -coalesce(g.v, 0) ELSE coalesce(g.v, 0) END,
                   CASE WHEN k.old IS NULL THEN nextval('leaderboard_version_seq') ELSE 0 END,  -- 0: see the UPDATE
                   gm.md
            FROM unnest(kb, ku, ks, kold) AS k(b, u, s, old)
            JOIN leaderboards lb ON lb.id = k.b
            LEFT JOIN guess g ON (g.b, g.u) = (k.b, k.u) AND k.old IS NULL
            LEFT JOIN gm ON (gm.b, gm.u) = (k.b, k.u) AND k.old IS NULL
            ORDER BY k.b, k.u
            ON CONFLICT (board_id, season, user_id) DO UPDATE SET value = l.value WHERE false
            RETURNING l.board_id, l.user_id
        )
        SELECT coalesce(array_agg(ins.board_id), '{}'), coalesce(array_agg(ins.user_id), '{}') INTO fb, fu FROM ins;

        -- What each player really had: nothing for the rows just inserted, the locked row's value otherwise.
        SELECT array_agg(CASE WHEN f.b IS NULL THEN l.value END ORDER BY k.i) INTO kold
        FROM unnest(kb, ku, ks) WITH ORDINALITY AS k(b, u, s, i)
        CROSS JOIN LATERAL (SELECT l.value FROM leaderboard l
                            WHERE l.board_id = k.b AND l.season = k.s AND l.user_id = k.u LIMIT 1) l
        LEFT JOIN unnest(fb, fu) AS f(b, u) ON (f.b, f.u) = (k.b, k.u);

        SELECT array_agg(coalesce(a.code, t.code) ORDER BY t.i), array_agg(a.v ORDER BY t.i),
               array_agg(coalesce(a.p, false) ORDER BY t.i) INTO st, val, prod
        FROM unnest(st) WITH ORDINALITY AS t(code, i)
        LEFT JOIN lb_apply(p_board, p_user, p_score, st, kb, ku, kold) a ON a.i = t.i;

        -- The value, and the metadata of the latest submission that produced it (kept when none did: a
        -- `best` not beaten); a change of metadata alone is a new version too.
        -- The two statements that reach player rows by ctid do it by a nested loop (a TID probe per row): with
        -- nested loops off, the planner would rather hash-join the whole table (see the header).
        SET LOCAL enable_nestloop = on;
        UPDATE leaderboard l
        SET value = f.v, sort_key = CASE WHEN lb.sort_order = 'desc' THEN -f.v ELSE f.v END,
            version = nextval('leaderboard_version_seq'), updated_at = now(),
            metadata = CASE WHEN f.has_md THEN f.md ELSE l.metadata END
        FROM (  -- per player: the latest value (and its season), and the metadata of the latest that produced one
            SELECT t.b, t.u, (array_agg(t.s ORDER BY t.i DESC))[1] AS s, (array_agg(t.v ORDER BY t.i DESC))[1] AS v,
                   bool_or(t.pr) AS has_md, (array_agg(p_meta[t.i::int] ORDER BY t.i DESC) FILTER (WHERE t.pr))[1] AS md
            FROM unnest(p_board, p_user, st, val, rs, prod) WITH ORDINALITY AS t(b, u, code, v, s, pr, i)
            WHERE t.code = 0 GROUP BY t.b, t.u
        ) f
        CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM leaderboard x
                            WHERE x.board_id = f.b AND x.season = f.s AND x.user_id = f.u LIMIT 1) r
        JOIN leaderboards lb ON lb.id = f.b
        WHERE l.ctid = r.tid
          AND (l.value <> f.v OR l.version = 0 OR (f.has_md AND l.metadata IS DISTINCT FROM f.md));

        IF 3 = ANY (st) THEN  -- a row just inserted for a player whose every submission was out of range goes
            DELETE FROM leaderboard l USING unnest(fb, fu) AS f(b, u)
            JOIN leaderboards lb ON lb.id = f.b
            CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM leaderboard x
                                WHERE x.board_id = f.b AND x.season = lb.season AND x.user_id = f.u LIMIT 1) r
            WHERE l.ctid = r.tid
              AND NOT EXISTS (SELECT 1 FROM unnest(p_board, p_user, st) AS t(b, u, code)
                              WHERE (t.b, t.u) = (f.b, f.u) AND t.code = 0);
        END IF;
        SET LOCAL enable_nestloop = off;
    END IF;
    val := coalesce(val, array_fill(NULL::bigint, ARRAY[cardinality(st)]));

    -- 3. A refused submission is not logged; a repeat in this batch of a refused one is refused alike.
    IF 3 = ANY (st) THEN
        SELECT array_agg(CASE WHEN t.code = 1 AND st[f.i::int] = 3 AND n.sid IS NOT NULL THEN 3::smallint
                              ELSE t.code END ORDER BY t.i) INTO st
        FROM unnest(p_sid, st) WITH ORDINALITY AS t(sid, code, i)
        JOIN (SELECT DISTINCT ON (x.sid) x.sid, x.i FROM unnest(p_sid) WITH ORDINALITY AS x(sid, i)
              ORDER BY x.sid, x.i) f ON f.sid = t.sid
        LEFT JOIN unnest(inserted) AS n(sid) ON n.sid = t.sid;
        DELETE FROM game_sessions g  -- sql/006: only this batch's row
        WHERE g.session_id = ANY (ARRAY(SELECT t.sid FROM unnest(p_sid, st) AS t(sid, code)
                                        WHERE t.code = 3 AND t.sid = ANY (inserted)))
          AND g.submitted_at = now();
    END IF;

    -- 4. Names: a player new on a board needs a users row; a submission with a name renames (the latest wins).
    IF cardinality(fb) > 0 OR cardinality(array_remove(p_name, NULL)) > 0 THEN
        INSERT INTO users (user_id, display_name)
        SELECT DISTINCT ON (t.u) t.u, t.nm
        FROM unnest(p_board, p_user, p_name, st) WITH ORDINALITY AS t(b, u, nm, code, i)
        LEFT JOIN unnest(fb, fu) AS f(b, u) ON (f.b, f.u) = (t.b, t.u)
        WHERE t.code = 0 AND (t.nm IS NOT NULL OR f.b IS NOT NULL)
        ORDER BY t.u, (t.nm IS NOT NULL) DESC, t.i DESC
        ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name
        WHERE EXCLUDED.display_name IS NOT NULL AND users.display_name IS DISTINCT FROM EXCLUDED.display_name;
    END IF;

    -- 5. One row per submission with the player's committed row (in its season) after the batch; a cache
    --    debt per board (live season).
    RETURN QUERY
    WITH rows AS (
        SELECT l.board_id, l.season, l.user_id, l.value, l.sort_key, l.version, us.display_name, l.metadata, l.mine
        FROM (SELECT DISTINCT t.b, t.u, t.s FROM unnest(p_board, p_user, st, rs) AS t(b, u, code, s)
              WHERE t.code IN (0, 1)) k
        CROSS JOIN LATERAL (SELECT l.board_id, l.season, l.user_id, l.value, l.sort_key, l.version, l.metadata,
                                   l.xmin = pg_current_xact_id()::xid AS mine
                            FROM leaderboard l
                            WHERE l.board_id = k.b AND l.season = k.s AND l.user_id = k.u LIMIT 1) l
        CROSS JOIN LATERAL (SELECT us.display_name FROM users us WHERE us.user_id = l.user_id LIMIT 1) us
    ), owed AS (
        INSERT INTO cache_intents (board_id, season, users)
        SELECT r.board_id, r.season, array_agg(r.user_id ORDER BY r.user_id) FROM rows r WHERE r.mine
        GROUP BY r.board_id, r.season
        RETURNING board_id, id
    )
    SELECT st[t.i::int], CASE st[t.i::int] WHEN 0 THEN val[t.i::int] WHEN 1 THEN rw.value END, rs[t.i::int],
           rw.value, rw.sort_key, rw.version, rw.display_name, coalesce(rw.mine, false), o.id, rw.metadata::text
    FROM unnest(p_board, p_user) WITH ORDINALITY AS t(b, u, i)
    LEFT JOIN rows rw ON (rw.board_id, rw.season, rw.user_id) = (t.b, rs[t.i::int], t.u)
    LEFT JOIN owed o ON o.board_id = t.b AND rw.mine
    ORDER BY t.i;
END
$fn$;

-- lb_apply joins the batch's arrays only (and the few rows of leaderboards): hash joins, never a nested loop.
ALTER FUNCTION lb_apply(text[], text[], bigint[], smallint[], text[], text[], bigint[]) SET enable_nestloop = off;
