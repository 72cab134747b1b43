-- The state store (SQLite). u64 hashes are stored as their i64 bit pattern; times are unix ms.

-- What each sync last sent. WITHOUT ROWID: the table is the (sync, key_hash) b-tree itself,
-- so upserts touch one b-tree instead of a rowid table plus an index.
CREATE TABLE synced_rows (
    sync         TEXT    NOT NULL,
    key_hash     INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  INTEGER NOT NULL,
    record_id    TEXT,
    synced_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sync, key_hash)
) WITHOUT ROWID;

-- AUTOINCREMENT so a pruned run's id is never handed to a later run.
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    sync           TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    full_refresh   INTEGER NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    added          INTEGER NOT NULL DEFAULT 0,
    changed        INTEGER NOT NULL DEFAULT 0,
    removed        INTEGER NOT NULL DEFAULT 0,
    unchanged      INTEGER NOT NULL DEFAULT 0,
    invalid        INTEGER NOT NULL DEFAULT 0,
    rejected       INTEGER NOT NULL DEFAULT 0,
    api_calls      INTEGER NOT NULL DEFAULT 0,
    throttled      INTEGER NOT NULL DEFAULT 0,
    error          TEXT
);

CREATE INDEX runs_by_sync ON runs (sync, id);
-- Start-up recovery looks only for runs a crashed process left behind.
CREATE INDEX runs_running ON runs (id) WHERE status = 'running';

CREATE TABLE run_rejections (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sync     TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    category TEXT    NOT NULL,
    message  TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL
);

CREATE INDEX run_rejections_by_run ON run_rejections (run_id, id);
