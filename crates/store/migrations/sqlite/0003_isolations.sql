-- netprobe history, schema version 3 (SQLite): network isolations and releases (`netprobe
-- isolate` / `netprobe release`), an audit trail: never pruned by retention.
--
-- Same portability rules as 0001: Unix epoch milliseconds in INTEGER, JSON as TEXT.
-- `action` is `isolate` or `release`; `netns` the namespace as the user named it
-- (`netns NAME`, `pid N`); `who` the user that ran the command; `rules` the exact
-- iptables-restore payloads applied, per tool, as a JSON object; `details` the rest (exceptions,
-- impact report), opaque to the store.

CREATE TABLE isolations (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    action    TEXT    NOT NULL,
    netns     TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL,
    who       TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    rules     TEXT    NOT NULL,
    details   TEXT    NOT NULL
);

CREATE INDEX isolations_time ON isolations (at_ms);
