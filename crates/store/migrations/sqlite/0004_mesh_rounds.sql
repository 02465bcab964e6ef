-- netprobe history, schema version 3 (SQLite): per-round aggregates of the node latency mesh.
--
-- Same portability rules as 0001: Unix epoch milliseconds in INTEGER, JSON as TEXT. One row per
-- (pair, round), never per packet; `stats` is the round's aggregates (RTT summary, loss, jitter,
-- nanosecond times), opaque to the store.

CREATE TABLE mesh_rounds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source_node TEXT    NOT NULL,
    target_node TEXT    NOT NULL,
    target_ip   TEXT    NOT NULL,
    protocol    TEXT    NOT NULL,
    started_ms  INTEGER NOT NULL,
    stats       TEXT    NOT NULL
);

CREATE INDEX mesh_rounds_target_time ON mesh_rounds (target_node, started_ms);
CREATE INDEX mesh_rounds_time ON mesh_rounds (started_ms);
