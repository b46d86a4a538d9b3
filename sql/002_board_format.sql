-- How the UI shows a board's values: plain numbers, or times in milliseconds / seconds.
ALTER TABLE leaderboards ADD COLUMN format text NOT NULL DEFAULT 'number'
    CHECK (format IN ('number', 'time_ms', 'time_s'));
