-- The state store (Postgres). u64 hashes are stored as their i64 bit pattern; times are unix ms.

-- What each sync last sent. Most runs rewrite fingerprints in place; the spare page room lets
-- those updates stay HOT (no index churn) since no indexed column changes.
CREATE TABLE synced_rows (
    sync         TEXT   NOT NULL,
    key_hash     BIGINT NOT NULL,
    key          TEXT   NOT NULL,
    fingerprint  BIGINT NOT NULL,
    record_id    TEXT,
    synced_at_ms BIGINT NOT NULL,
    PRIMARY KEY (sync, key_hash)
) WITH (fillfactor = 90);

CREATE TABLE runs (
    id             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync           TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    full_refresh   BOOLEAN NOT NULL,
    started_at_ms  BIGINT  NOT NULL,
    finished_at_ms BIGINT,
    added          BIGINT  NOT NULL DEFAULT 0,
    changed        BIGINT  NOT NULL DEFAULT 0,
    removed        BIGINT  NOT NULL DEFAULT 0,
    unchanged      BIGINT  NOT NULL DEFAULT 0,
    invalid        BIGINT  NOT NULL DEFAULT 0,
    rejected       BIGINT  NOT NULL DEFAULT 0,
    api_calls      BIGINT  NOT NULL DEFAULT 0,
    throttled      BIGINT  NOT NULL DEFAULT 0,
    error          TEXT
);

CREATE INDEX runs_by_sync ON runs (sync, id);
-- Start-up recovery looks only for runs a crashed process left behind.
CREATE INDEX runs_running ON runs (id) WHERE status = 'running';

CREATE TABLE run_rejections (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sync     TEXT   NOT NULL,
    key      TEXT   NOT NULL,
    category TEXT   NOT NULL,
    message  TEXT   NOT NULL,
    at_ms    BIGINT NOT NULL
);

CREATE INDEX run_rejections_by_run ON run_rejections (run_id, id);
