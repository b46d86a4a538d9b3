-- What each committed batch still owes Redis. A batch inserts one row per board it wrote, in its own
-- transaction; the row is deleted once the cache write is done. A row that outlives a few seconds means the
-- process died (or failed) between COMMIT and the cache write: any process re-applies those players' committed
-- rows to Redis (version-checked, so it is idempotent) and deletes the row. See ranks.py (repair).
CREATE TABLE cache_intents (
    id        bigserial PRIMARY KEY,
    board_id  text NOT NULL,
    users     text[] NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cache_intents_at_idx ON cache_intents (at);
