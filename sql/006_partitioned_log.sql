-- Issue 14: a log that can be kept for years. game_sessions becomes a table partitioned by month on submitted_at
-- (UTC months, named game_sessions_YYYY_MM, plus game_sessions_default), so an old month is detached or dropped
-- at once instead of by a long DELETE. docs/operations.md, "The submission log", says who creates and drops them.
--
-- A partitioned table cannot have a unique index on session_id alone (every unique index must contain the
-- partition key), so lb_submit no longer relies on ON CONFLICT (session_id): it locks each session id
-- (lb_lock_sessions) and looks it up in the partitions of the idempotency window. The primary key
-- (session_id, submitted_at) serves that lookup in each partition.

-- The partitions, from the month of p_from (default: now) to the current month + p_ahead, that do not exist yet;
-- rows the DEFAULT partition holds for a month are moved into that month's new partition. Returns what it did.
-- Each month is created as a plain table and then attached: ATTACH takes SHARE UPDATE EXCLUSIVE on game_sessions,
-- which does not block submissions (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE).
CREATE FUNCTION lb_log_partitions(p_ahead integer, p_from timestamptz DEFAULT NULL)
RETURNS TABLE (created text, moved bigint)
LANGUAGE plpgsql SET timezone = 'UTC' AS $fn$  -- UTC months, whatever the session's time zone
DECLARE
    m  timestamptz;
    hi timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(14, 0);  -- one maintainer at a time (the service's processes, `leaderboard maintain`)
    p_from := least(coalesce(p_from, now()), (SELECT min(d.submitted_at) FROM game_sessions_default d), now());
    FOR m IN
        SELECT generate_series(date_trunc('month', p_from, 'UTC'),
                               date_trunc('month', now(), 'UTC') + make_interval(months => p_ahead), interval '1 month')
    LOOP
        created := 'game_sessions_' || to_char(m, 'YYYY_MM');
        CONTINUE WHEN to_regclass(quote_ident(created)) IS NOT NULL;
        hi := m + interval '1 month';
        EXECUTE format('CREATE TABLE %I (LIKE game_sessions INCLUDING DEFAULTS)', created);
        EXECUTE format('WITH d AS (DELETE FROM game_sessions_default WHERE submitted_at >= %L AND submitted_at < %L '
                       'RETURNING *) INSERT INTO %I SELECT * FROM d', m, hi, created);
        GET DIAGNOSTICS moved = ROW_COUNT;
        EXECUTE format('ALTER TABLE game_sessions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', created, m, hi);
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- Lock the session ids of a batch until the transaction ends, in one global order (so concurrent batches never
-- deadlock): whoever holds a session id's lock is the only one that may log it. Keys are (14, uuid_hash): two
-- ids sharing a hash only wait for each other.
CREATE FUNCTION lb_lock_sessions(p_sid uuid[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(14, k.h)
    FROM (SELECT DISTINCT uuid_hash(t.sid) AS h FROM unnest(p_sid) AS t(sid) ORDER BY 1) k;
END
$fn$;

-- The conversion, rows in place (every column kept: LIKE copies names, types, collations, NOT NULL, defaults).
-- It runs in the migrations' transaction: submissions wait for it (it rewrites the table once).
ALTER TABLE game_sessions RENAME TO game_sessions_unpartitioned;
ALTER TABLE game_sessions_unpartitioned RENAME CONSTRAINT game_sessions_pkey TO game_sessions_unpartitioned_pkey;
CREATE TABLE game_sessions (LIKE game_sessions_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (submitted_at);
-- The safety net: a submission never fails for want of its month's partition (see lb_log_partitions).
CREATE TABLE game_sessions_default PARTITION OF game_sessions DEFAULT;
SELECT count(*) FROM lb_log_partitions(3, (SELECT min(submitted_at) FROM game_sessions_unpartitioned));
INSERT INTO game_sessions SELECT * FROM game_sessions_unpartitioned;
ALTER TABLE game_sessions ADD PRIMARY KEY (session_id, submitted_at);
DROP TABLE game_sessions_unpartitioned;

-- lb_submit (sql/005) with step 1 changed (see the comment there); every other step is as in 005.
DROP FUNCTION lb_submit(uuid[], text[], text[], bigint[], text[]);

-- p_window: the idempotency window (LEADERBOARD_IDEMPOTENCY_WINDOW_DAYS): a session id logged longer ago than
-- this is not looked for, so a retry within the window is a duplicate and the same id reused after it is new.
CREATE FUNCTION lb_submit(p_sid uuid[], p_board text[], p_user text[], p_score bigint[], p_name text[],
                          p_window interval DEFAULT interval '30 days')
RETURNS TABLE (
    status smallint, value bigint, season integer, key_value bigint, sort_key bigint, version bigint, name text,
    changed boolean, intent bigint
)
LANGUAGE plpgsql AS $fn$
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
BEGIN
    -- 0. The live season of each board, held against a reset until this transaction ends.
    PERFORM 1 FROM leaderboards lb WHERE lb.id IN (SELECT DISTINCT t.b FROM unnest(p_board) AS t(b))
    ORDER BY lb.id FOR SHARE;

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
        SELECT DISTINCT ON (t.sid) t.sid, t.b, t.u, t.s
        FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS t(sid, b, u, s, i) ORDER BY t.sid, t.i
    ), ins AS (
        INSERT INTO game_sessions (session_id, board_id, user_id, score, season)
        SELECT f.sid, f.b, f.u, f.s, lb.season FROM firsts f JOIN leaderboards lb ON lb.id = f.b
        WHERE NOT EXISTS (SELECT 1 FROM game_sessions g WHERE g.session_id = f.sid
                          AND g.submitted_at > now() - p_window AND g.submitted_at < now() + interval '1 day')
        ORDER BY f.sid
        RETURNING session_id
    )
    SELECT coalesce(array_agg(ins.session_id), '{}') INTO inserted FROM ins;

    SELECT array_agg(c.code ORDER BY c.i), array_agg(c.season ORDER BY c.i) INTO st, rs
    FROM (
        SELECT t.i, CASE
            WHEN n.sid IS NOT NULL AND t.i = f.i THEN 0
            WHEN g.session_id IS NOT NULL THEN CASE WHEN (g.board_id, g.user_id, g.score) = (t.b, t.u, t.s) THEN 1 ELSE 2 END
            WHEN (f.b, f.u, f.s) = (t.b, t.u, t.s) THEN 1
            ELSE 2 END::smallint AS code,
            coalesce(g.season, lb.season) AS season
        FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS t(sid, b, u, s, i)
        JOIN (SELECT DISTINCT ON (x.sid) x.sid, x.b, x.u, x.s, x.i
              FROM unnest(p_sid, p_board, p_user, p_score) WITH ORDINALITY AS x(sid, b, u, s, i)
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
        LEFT JOIN leaderboard l ON (l.board_id, l.season, l.user_id) = (k.b, k.s, k.u);

        WITH guess AS (
            SELECT DISTINCT ON (t.b, t.u) t.b, t.u, a.v
            FROM lb_apply(p_board, p_user, p_score, st, kb, ku, kold) a
            JOIN unnest(p_board, p_user) WITH ORDINALITY AS t(b, u, i) ON t.i = a.i
            WHERE a.code = 0 ORDER BY t.b, t.u, a.i DESC
        ), ins AS (
            INSERT INTO leaderboard AS l (board_id, season, user_id, value, sort_key, version)
            SELECT k.b, k.s, k.u, coalesce(g.v, 0),
                   CASE WHEN lb.sort_order = 'desc' THEN -coalesce(g.v, 0) ELSE coalesce(g.v, 0) END,
                   CASE WHEN k.old IS NULL THEN nextval('leaderboard_version_seq') ELSE 0 END  -- 0: see the UPDATE
            FROM unnest(kb, ku, ks, kold) AS k(b, u, s, old)
            JOIN leaderboards lb ON lb.id = k.b
            LEFT JOIN guess g ON (g.b, g.u) = (k.b, k.u) AND k.old IS NULL
            ORDER BY k.b, k.u
            ON CONFLICT (board_id, season, user_id) DO UPDATE SET value = l.value WHERE false
            RETURNING l.board_id, l.user_id
        )
        SELECT coalesce(array_agg(ins.board_id), '{}'), coalesce(array_agg(ins.user_id), '{}') INTO fb, fu FROM ins;

        -- What each player really had: nothing for the rows just inserted, the locked row's value otherwise.
        SELECT array_agg(CASE WHEN f.b IS NULL THEN l.value END ORDER BY k.i) INTO kold
        FROM unnest(kb, ku, ks) WITH ORDINALITY AS k(b, u, s, i)
        JOIN leaderboard l ON (l.board_id, l.season, l.user_id) = (k.b, k.s, k.u)
        LEFT JOIN unnest(fb, fu) AS f(b, u) ON (f.b, f.u) = (k.b, k.u);

        SELECT array_agg(coalesce(a.code, t.code) ORDER BY t.i), array_agg(a.v ORDER BY t.i) INTO st, val
        FROM unnest(st) WITH ORDINALITY AS t(code, i)
        LEFT JOIN lb_apply(p_board, p_user, p_score, st, kb, ku, kold) a ON a.i = t.i;

        UPDATE leaderboard l
        SET value = f.v, sort_key = CASE WHEN lb.sort_order = 'desc' THEN -f.v ELSE f.v END,
            version = nextval('leaderboard_version_seq'), updated_at = now()
        FROM (
            SELECT DISTINCT ON (t.b, t.u) t.b, t.u, t.s, t.v
            FROM unnest(p_board, p_user, st, val, rs) WITH ORDINALITY AS t(b, u, code, v, s, i)
            WHERE t.code = 0 ORDER BY t.b, t.u, t.i DESC
        ) f
        JOIN leaderboards lb ON lb.id = f.b
        WHERE (l.board_id, l.season, l.user_id) = (f.b, f.s, f.u) AND (l.value <> f.v OR l.version = 0);

        IF 3 = ANY (st) THEN  -- a row just inserted for a player whose every submission was out of range goes
            DELETE FROM leaderboard l USING unnest(fb, fu) AS f(b, u)
            JOIN leaderboards lb ON lb.id = f.b
            WHERE (l.board_id, l.season, l.user_id) = (f.b, lb.season, f.u)
              AND NOT EXISTS (SELECT 1 FROM unnest(p_board, p_user, st) AS t(b, u, code)
                              WHERE (t.b, t.u) = (f.b, f.u) AND t.code = 0);
        END IF;
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
        DELETE FROM game_sessions g USING unnest(p_sid, st) AS t(sid, code)  -- sql/006: only this batch's row
        WHERE t.code = 3 AND g.session_id = t.sid AND t.sid = ANY (inserted) AND g.submitted_at = now();
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
        SELECT l.board_id, l.season, l.user_id, l.value, l.sort_key, l.version, us.display_name,
               l.xmin = pg_current_xact_id()::xid AS mine
        FROM leaderboard l
        JOIN (SELECT DISTINCT t.b, t.u, t.s FROM unnest(p_board, p_user, st, rs) AS t(b, u, code, s)
              WHERE t.code IN (0, 1)) k
          ON (l.board_id, l.season, l.user_id) = (k.b, k.s, k.u)
        JOIN users us ON us.user_id = l.user_id
    ), owed AS (
        INSERT INTO cache_intents (board_id, season, users)
        SELECT r.board_id, r.season, array_agg(r.user_id ORDER BY r.user_id) FROM rows r WHERE r.mine
        GROUP BY r.board_id, r.season
        RETURNING board_id, id
    )
    SELECT st[t.i::int], CASE st[t.i::int] WHEN 0 THEN val[t.i::int] WHEN 1 THEN rw.value END, rs[t.i::int],
           rw.value, rw.sort_key, rw.version, rw.display_name, coalesce(rw.mine, false), o.id
    FROM unnest(p_board, p_user) WITH ORDINALITY AS t(b, u, i)
    LEFT JOIN rows rw ON (rw.board_id, rw.season, rw.user_id) = (t.b, rs[t.i::int], t.u)
    LEFT JOIN owed o ON o.board_id = t.b AND rw.mine
    ORDER BY t.i;
END
$fn$;
