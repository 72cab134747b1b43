-- Follow-up tasks to create in the CRM, written in the same transaction that records the
-- handoff that calls for them. Creating a task is not idempotent in HubSpot, so each carries
-- a deterministic key, stored in the task itself: a task attempted before (attempts > 0) may
-- exist already, and is searched for by that key before it is created again.
CREATE TABLE task_outbox (
    task_key        TEXT    PRIMARY KEY,
    sync            TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    record_id       TEXT    NOT NULL,
    properties      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    last_attempt_ms BIGINT,
    task_id         TEXT,
    error           TEXT,
    created_at_ms   BIGINT  NOT NULL,
    done_at_ms      BIGINT
);

CREATE INDEX task_outbox_pending ON task_outbox (sync, created_at_ms) WHERE state = 'pending';

-- What a run did beyond rows: tasks created, and owners it left in place (owner_policy fill_empty).
ALTER TABLE runs ADD COLUMN tasks_created BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN owners_kept BIGINT NOT NULL DEFAULT 0;
