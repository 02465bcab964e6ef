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
-- the JSON array of their `stats` objects (first byte `[`). Pruning removes a chunk once its
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

-- Rounds stored by an earlier netprobe: grouped per pair and 30 s window, in start order. A row
-- whose `stats` is not JSON could not be read back before either; it is not carried over.
INSERT INTO mesh_chunks (source_node, target_node, target_ip, first_ms, last_ms, rounds, data)
SELECT source_node, target_node, target_ip, MIN(started_ms), MAX(started_ms), COUNT(*),
       CAST(json_group_array(json(stats) ORDER BY started_ms, id) AS BLOB)
FROM mesh_rounds
WHERE json_valid(stats)
GROUP BY source_node, target_node, target_ip, started_ms / 30000;

DROP TABLE mesh_rounds;
