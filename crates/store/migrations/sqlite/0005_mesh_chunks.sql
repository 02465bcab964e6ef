-- netprobe history, schema version 5 (SQLite): the mesh's per-round aggregates, stored in chunks.
--
-- One row holds consecutive rounds of one pair (source agent → target address): what the agent
-- gathered for that pair since its last write (it writes every pair's open chunk together, every
-- 30 s). In `mesh_rounds` (0004) an agent with 1,000 peers at a 1 s interval wrote 1,000 rows a
-- second, each landing on its own leaf of the per-target index: most of the agent's SQLite time,
-- and ~480 bytes a round. A chunk row costs one index entry per pair per write instead.
--
-- `first_ms`/`last_ms` are the start times of the chunk's first and last rounds (Unix epoch
-- milliseconds), `rounds` how many it holds; `data` is their encoding, opaque to the store: the
-- agent's compact format (first byte 0x01), or, for the rows converted from `mesh_rounds` below,
-- a JSON array of `stats` objects (first byte `[`). Pruning removes a chunk once its
-- last round is older than the retention.

CREATE TABLE mesh_chunks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source_node TEXT    NOT NULL,
    target_node TEXT    NOT NULL,
    target_ip   TEXT    NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_ms     INTEGER NOT NULL,
    rounds      INTEGER NOT NULL,
    data        BLOB    NOT NULL
);

CREATE INDEX mesh_chunks_pair_time ON mesh_chunks (target_node, target_ip, last_ms);
CREATE INDEX mesh_chunks_time ON mesh_chunks (last_ms);

-- Rounds stored by an earlier netprobe: the newest million are copied, each as a chunk of its own
-- (a JSON array of one round), read in rowid order (no sort: one this size would be held in
-- memory, temp_store = MEMORY). Bounded so that the upgrade takes seconds on the largest stores (a
-- week of 1,000 peers at a 1 s interval is 600 million rows); for the same reason `mesh_rounds` is
-- not dropped here (that reads every page of it): it is no longer written or read, and pruning
-- empties it with the retention. A row whose `stats` is not JSON could not be read back before
-- either; it is not copied.
INSERT INTO mesh_chunks (source_node, target_node, target_ip, first_ms, last_ms, rounds, data)
SELECT source_node, target_node, target_ip, started_ms, started_ms, 1,
       CAST('[' || stats || ']' AS BLOB)
FROM (SELECT * FROM mesh_rounds ORDER BY id DESC LIMIT 1000000)
WHERE json_valid(stats);
