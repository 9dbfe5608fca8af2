-- no-transaction
-- Herald 0003 (SQLite): the weekly scheduler. Kept in lockstep with
-- migrations/postgres/0003.
--
-- The issues CHECK gains 'scheduled'; SQLite cannot alter a CHECK, so the
-- table is rebuilt as in 0002 (foreign keys off, own transaction, so that
-- dropping the old table does not cascade into deliveries).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE issues_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    newsletter_id BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    number        BIGINT NOT NULL,
    slug          TEXT NOT NULL UNIQUE,
    title         TEXT NOT NULL,
    subject       TEXT NOT NULL,
    preheader     TEXT NOT NULL,
    intro         TEXT NOT NULL,
    html          TEXT NOT NULL,
    text_body     TEXT NOT NULL,
    web_html      TEXT NOT NULL,
    status        TEXT NOT NULL CONSTRAINT issues_status_check
                  CHECK (status IN ('draft', 'sending', 'paused', 'cancelled', 'sent', 'scheduled')),
    created_at    BIGINT NOT NULL,
    send_started_at BIGINT,
    completed_at  BIGINT,
    final_counts  TEXT,
    UNIQUE (newsletter_id, number)
);
INSERT INTO issues_new SELECT * FROM issues;
DROP TABLE issues;
ALTER TABLE issues_new RENAME TO issues;

-- One row per newsletter that has a schedule (today the config's default
-- newsletter; the table lets others have one later). `checked_until`: every
-- slot up to this instant has its schedule_runs row; NULL until the first
-- scheduler round, so a new schedule does not back-fill the past.
CREATE TABLE schedules (
    newsletter_id     BIGINT PRIMARY KEY REFERENCES newsletters(id) ON DELETE CASCADE,
    expression        TEXT NOT NULL,
    timezone          TEXT NOT NULL,
    on_empty          TEXT NOT NULL CONSTRAINT schedules_on_empty_check
                      CHECK (on_empty IN ('skip', 'send_anyway')),
    catch_up_ms       BIGINT NOT NULL,
    jitter_ms         BIGINT NOT NULL,
    preview_before_ms BIGINT NOT NULL,
    preview_to        TEXT NOT NULL,
    checked_until     BIGINT,
    updated_at        BIGINT NOT NULL
);

-- Exactly once per slot: the unique (newsletter, slot) row is written before
-- anything is composed; its state moves forward under a lease.
CREATE TABLE schedule_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    newsletter_id BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    slot_at       BIGINT NOT NULL,
    jitter_ms     BIGINT NOT NULL,
    fire_at       BIGINT NOT NULL,
    preview_at    BIGINT,
    state         TEXT NOT NULL CONSTRAINT schedule_runs_state_check
                  CHECK (state IN ('pending', 'composed', 'waiting', 'held', 'enqueued', 'skipped', 'missed', 'cancelled', 'failed')),
    reason        TEXT,
    issue_id      BIGINT REFERENCES issues(id) ON DELETE SET NULL,
    lease_until   BIGINT,
    worker_id     TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (newsletter_id, slot_at)
);
CREATE INDEX schedule_runs_by_state ON schedule_runs (state);

CREATE TABLE one_off_sends (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    issue_id    BIGINT NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    send_at     BIGINT NOT NULL,
    timezone    TEXT NOT NULL,
    state       TEXT NOT NULL CONSTRAINT one_off_sends_state_check
                CHECK (state IN ('waiting', 'sent', 'cancelled', 'failed')),
    reason      TEXT,
    lease_until BIGINT,
    worker_id   TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX one_off_sends_by_state ON one_off_sends (state, send_at);

COMMIT;
PRAGMA foreign_keys = ON;
