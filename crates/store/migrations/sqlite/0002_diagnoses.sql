-- netprobe history, schema version 2 (SQLite): diagnoses taken when a check turned unhealthy.
--
-- Same portability rules as 0001: Unix epoch milliseconds in INTEGER, JSON as TEXT.
-- `finding_ids` is a JSON array of the finding ids (kebab-case), in the diagnosis' order, so a
-- listing needs no parse of the whole document; `diagnosis` is the whole diagnosis, opaque to the
-- store.

CREATE TABLE diagnoses (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name  TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    conclusion  TEXT    NOT NULL,
    finding_ids TEXT    NOT NULL,
    diagnosis   TEXT    NOT NULL
);

CREATE INDEX diagnoses_check_time ON diagnoses (check_name, at_ms);
CREATE INDEX diagnoses_time ON diagnoses (at_ms);
