-- Boards: what a leaderboard is and how submissions change it.
CREATE TABLE leaderboards (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    title       text NOT NULL,
    sort_order  text NOT NULL DEFAULT 'desc' CHECK (sort_order IN ('desc', 'asc')),
    operator    text NOT NULL DEFAULT 'incr' CHECK (operator IN ('incr', 'best', 'set')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO leaderboards (id, title, sort_order, operator) VALUES ('global', 'Global', 'desc', 'incr');

-- user_id uses the "C" collation so Postgres orders ties exactly like Redis (byte order).
CREATE TABLE users (
    user_id       text COLLATE "C" PRIMARY KEY,
    display_name  text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Append-only log: one row per accepted submission; session_id is the idempotency key. Only the writer inserts
-- here, after checking the board and in the same transaction as the user row, so the log carries no foreign
-- keys or secondary indexes: each would cost every submission a lookup.
CREATE TABLE game_sessions (
    session_id    uuid PRIMARY KEY,
    board_id      text NOT NULL,
    user_id       text COLLATE "C" NOT NULL,
    score         bigint NOT NULL,
    submitted_at  timestamptz NOT NULL DEFAULT now()
);

-- Every write takes a fresh value from this sequence: a row's version only grows, so the cache can refuse a
-- stale write, and the board's push `seq` can be restored from max(version) after Redis is lost.
CREATE SEQUENCE leaderboard_version_seq;

-- One row per board and user. sort_key = -value on desc boards, value on asc boards, so "better" is always
-- "smaller sort_key" and one ascending index serves ranks and listings for both orders (as in Redis).
CREATE TABLE leaderboard (
    board_id    text NOT NULL REFERENCES leaderboards (id),
    user_id     text COLLATE "C" NOT NULL REFERENCES users (user_id) DEFERRABLE INITIALLY DEFERRED,
    value       bigint NOT NULL CHECK (value BETWEEN -9007199254740991 AND 9007199254740991),
    sort_key    bigint NOT NULL,
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, user_id)
);
CREATE INDEX leaderboard_rank_idx ON leaderboard (board_id, sort_key, user_id);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'submit', 'read')),
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
