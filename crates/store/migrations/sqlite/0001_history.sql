-- netprobe history, schema version 1 (SQLite).
--
-- Kept portable on purpose so the PostgreSQL migration is a near copy:
-- timestamps are Unix epoch milliseconds in INTEGER (BIGINT there), JSON is TEXT,
-- booleans are 0/1 INTEGER (BOOLEAN there), and no SQLite-only column types are used.
-- The check column is `check_name` because CHECK is a reserved word in SQL.
-- AUTOINCREMENT: ids are never reused after pruning, like a PostgreSQL identity column.

CREATE TABLE results (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name       TEXT    NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    success          INTEGER NOT NULL CHECK (success IN (0, 1)),
    reason           TEXT,
    message          TEXT    NOT NULL,
    duration_seconds REAL    NOT NULL,
    details          TEXT    NOT NULL
);

-- Per-check history reads: WHERE check_name = ? AND started_at_ms >= ? ORDER BY started_at_ms DESC.
CREATE INDEX results_check_time ON results (check_name, started_at_ms);
-- Retention: DELETE ... WHERE started_at_ms < ? across all checks.
CREATE INDEX results_time ON results (started_at_ms);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    results    TEXT    NOT NULL
);

CREATE INDEX events_check_time ON events (check_name, at_ms);
CREATE INDEX events_time ON events (at_ms);
