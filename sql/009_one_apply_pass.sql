-- Player rows locked in memory, read once, computed once (issue 11). sql/008's lb_submit probed every player row
-- for a first guess of its value, ran lb_apply from that guess (so that a new row could be inserted with its
-- final value), locked the rows with an INSERT .. ON CONFLICT DO UPDATE WHERE false (which writes a row's header
-- and WAL only to lock it), read the locked values, ran lb_apply again and updated what differed.
-- Now the batch takes one transaction-level advisory lock per player (board, season, user), in key order after
-- the boards and the session ids; reads the players' values once; runs lb_apply once; then inserts the new
-- players' rows with their final values and updates the others' where something changed, in one statement. A
-- player whose every submission is out of range is never inserted (sql/008 inserted, then deleted the row).
-- Why the advisory lock is enough: every writer of player rows other than a batch (moderation, a season's reset)
-- takes the board row FOR UPDATE, which a batch's FOR SHARE keeps out; batches exclude each other per player.
-- Statuses, values, versions, names, metadata, cache debts and the results are those of sql/008 (the same tests
-- pin them); lb_apply gains a column `n` (the player had no row). Measured in docs/performance.md.
DROP FUNCTION lb_apply(text[], text[], bigint[], smallint[], text[], text[], bigint[]);

-- The operator of each submission's board (decr: subtract; from nothing: -score), in batch order per player,
-- from each player's value `kold`:
-- (submission index, 0 accepted | 3 out of range, value after it, whether it produced that value: always, but
-- for `best` only when it set a new best, whether the player had no value before the batch). Pure computation,
-- no table is written. (sql/009: `n` added; nested loops off as sql/008 set.)
CREATE FUNCTION lb_apply(p_board text[], p_user text[], p_score bigint[], p_st smallint[],
                         kb text[], ku text[], kold bigint[])
RETURNS TABLE (i bigint, code smallint, v bigint, p boolean, n boolean)
LANGUAGE plpgsql STABLE SET enable_nestloop = off AS $fn$
#variable_conflict use_column
DECLARE
    r   record;
    cur bigint;
    nxt bigint;
    pb  text;
    pu  text;
    m   constant bigint := 9007199254740991;
BEGIN
    FOR r IN
        SELECT t.i, t.b, t.u, t.s, lb.operator AS op, lb.sort_order AS so, k.old
        FROM unnest(p_board, p_user, p_score, p_st) WITH ORDINALITY AS t(b, u, s, st, i)
        JOIN unnest(kb, ku, kold) AS k(b, u, old) ON (k.b, k.u) = (t.b, t.u)
        JOIN leaderboards lb ON lb.id = t.b
        WHERE t.st IN (0, 3)
        ORDER BY t.b, t.u, t.i
    LOOP
        IF pb IS DISTINCT FROM r.b OR pu IS DISTINCT FROM r.u THEN
            pb := r.b; pu := r.u; cur := r.old;
        END IF;
        nxt := CASE
            WHEN r.op = 'decr' THEN coalesce(cur, 0) - r.s
            WHEN cur IS NULL OR r.op = 'set' THEN r.s
            WHEN r.op = 'incr' THEN cur + r.s
            WHEN r.so = 'desc' THEN greatest(cur, r.s)
            ELSE least(cur, r.s) END;
        i := r.i;
        n := r.old IS NULL;
        IF nxt BETWEEN -m AND m THEN
            p := r.op <> 'best' OR cur IS NULL OR nxt <> cur;
            cur := nxt; code := 0; v := nxt;
        ELSE
            code := 3; v := NULL; p := false;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

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
    fresh    boolean[];  -- per submission: its player had no row before this batch (lb_apply's n)
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

    -- 2. The player rows of the live season: lock the players, read what they have, compute, then insert the
    --    new players' rows and update the others' where something changed.
    SELECT array_agg(k.b ORDER BY k.b, k.u), array_agg(k.u ORDER BY k.b, k.u), array_agg(k.s ORDER BY k.b, k.u)
    INTO kb, ku, ks
    FROM (SELECT DISTINCT t.b, t.u, t.s FROM unnest(p_board, p_user, st, rs) AS t(b, u, code, s) WHERE t.code = 0) k;
    IF kb IS NOT NULL THEN
        -- Hold every player of the batch against the other batches until COMMIT: a transaction-level advisory
        -- lock per (board, season, user), taken in key order after the boards and the session ids (one global
        -- order: concurrent batches never deadlock). Every other writer of player rows (moderation, a season's
        -- reset) takes the board FOR UPDATE, which this batch's FOR SHARE keeps out until COMMIT. So what the
        -- next statement reads is what the batch computes from, and nobody else inserts a row for these players
        -- until COMMIT.
        PERFORM pg_advisory_xact_lock(15, k.h)
        FROM (SELECT DISTINCT hashtext(concat_ws('/', t.b, t.s, t.u)) AS h FROM unnest(kb, ku, ks) AS t(b, u, s)
              ORDER BY 1) k;

        SELECT array_agg(l.value ORDER BY k.i) INTO kold  -- null: no row yet
        FROM unnest(kb, ku, ks) WITH ORDINALITY AS k(b, u, s, i)
        LEFT JOIN LATERAL (SELECT l.value FROM leaderboard l
                           WHERE l.board_id = k.b AND l.season = k.s AND l.user_id = k.u LIMIT 1) l ON true;

        SELECT array_agg(coalesce(a.code, t.code) ORDER BY t.i), array_agg(a.v ORDER BY t.i),
               array_agg(coalesce(a.p, false) ORDER BY t.i), array_agg(coalesce(a.n, false) ORDER BY t.i)
        INTO st, val, prod, fresh
        FROM unnest(st) WITH ORDINALITY AS t(code, i)
        LEFT JOIN lb_apply(p_board, p_user, p_score, st, kb, ku, kold) a ON a.i = t.i;

        -- Per player with an accepted submission: the latest value (and its season), and the metadata of the
        -- latest submission that produced one (kept when none did: a `best` not beaten; a change of metadata
        -- alone is a new version too). A player whose every submission was out of range gets no row.
        -- The UPDATE reaches its rows by ctid, by a nested loop (a TID probe per row): with nested loops off,
        -- the planner would rather hash-join the whole table (see sql/008). Nothing here joins two arrays.
        SET LOCAL enable_nestloop = on;
        WITH f AS MATERIALIZED (
            SELECT t.b, t.u, (array_agg(t.s ORDER BY t.i DESC))[1] AS s, (array_agg(t.v ORDER BY t.i DESC))[1] AS v,
                   bool_or(t.pr) AS has_md, (array_agg(p_meta[t.i::int] ORDER BY t.i DESC) FILTER (WHERE t.pr))[1] AS md,
                   bool_or(t.n) AS n
            FROM unnest(p_board, p_user, st, val, rs, prod, fresh) WITH ORDINALITY AS t(b, u, code, v, s, pr, n, i)
            WHERE t.code = 0 GROUP BY t.b, t.u
        ), ins AS (
            INSERT INTO leaderboard (board_id, season, user_id, value, sort_key, version, metadata)
            SELECT f.b, f.s, f.u, f.v, CASE WHEN lb.sort_order = 'desc' THEN -f.v ELSE f.v END,
                   nextval('leaderboard_version_seq'), f.md
            FROM f JOIN leaderboards lb ON lb.id = f.b
            WHERE f.n
            ORDER BY f.b, f.u
            RETURNING board_id, user_id
        ), upd AS (
            UPDATE leaderboard l
            SET value = f.v, sort_key = CASE WHEN lb.sort_order = 'desc' THEN -f.v ELSE f.v END,
                version = nextval('leaderboard_version_seq'), updated_at = now(),
                metadata = CASE WHEN f.has_md THEN f.md ELSE l.metadata END
            FROM f
            CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM leaderboard x
                                WHERE x.board_id = f.b AND x.season = f.s AND x.user_id = f.u LIMIT 1) r
            JOIN leaderboards lb ON lb.id = f.b
            WHERE NOT f.n AND l.ctid = r.tid
              AND (l.value <> f.v OR (f.has_md AND l.metadata IS DISTINCT FROM f.md))
        )
        SELECT coalesce(array_agg(ins.board_id), '{}'), coalesce(array_agg(ins.user_id), '{}') INTO fb, fu FROM ins;
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
