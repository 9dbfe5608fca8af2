-- Herald 0009 (SQLite): reports that arrive after the relay said yes (issue
-- #11). Kept in lockstep with migrations/postgres/0009.
--
-- 1. Two new state spellings: a delivery `bounced` after it was `sent`, and
-- a consent event `complaint`. Both CHECKs only widen, so every stored row
-- still satisfies them, and SQLite's documented shortcut for such a change
-- applies (https://sqlite.org/lang_altertable.html, "Making Other Kinds Of
-- Table Schema Changes"): edit the CHECK text in the schema instead of
-- rebuilding deliveries, which takes the time of copying and re-indexing
-- every row (a million and more on a busy list) while holding the write lock.
-- `writable_schema = RESET` makes this connection read the edited schema;
-- the throw-away table moves the schema cookie, so every other connection
-- reads it too before its next statement.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''failed'', ''skipped'', ''cancelled'')', '''failed'', ''skipped'', ''cancelled'', ''bounced'')')
WHERE type = 'table' AND name = 'deliveries';
UPDATE sqlite_master
SET sql = replace(sql, '''admin-change'', ''bounce'')', '''admin-change'', ''bounce'', ''complaint'')')
WHERE type = 'table' AND name = 'consent_events';
PRAGMA writable_schema = RESET;
CREATE TABLE herald_0009_schema_cookie (x INTEGER);
DROP TABLE herald_0009_schema_cookie;

-- 2. One row per report, whatever way it came in (`bounce::apply`). The
-- matched issue/subscriber/newsletter/delivery are NULL when the report is
-- about none (a test copy, a confirmation, an erased reader's old token).
-- An erased subscriber's reports go with them (they hold the address).
-- `raw` is the message as received, kept until `raw_purge_at`
-- (bounce.keep_raw after `received_at`; NULL when not kept at all).
CREATE TABLE bounce_reports (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at       BIGINT NOT NULL,
    source            TEXT NOT NULL CONSTRAINT bounce_reports_source_check
                      CHECK (source IN ('smtp', 'imap', 'import', 'ses', 'postmark', 'mailgun', 'sendgrid')),
    kind              TEXT NOT NULL CONSTRAINT bounce_reports_kind_check
                      CHECK (kind IN ('bounce', 'delay', 'complaint', 'auto_reply', 'unrecognised')),
    matched_by        TEXT CONSTRAINT bounce_reports_matched_by_check
                      CHECK (matched_by IN ('verp', 'message_id', 'recipient')),
    issue_id          BIGINT REFERENCES issues(id) ON DELETE SET NULL,
    subscriber_id     BIGINT REFERENCES subscribers(id) ON DELETE CASCADE,
    newsletter_id     BIGINT REFERENCES newsletters(id) ON DELETE CASCADE,
    delivery_id       BIGINT REFERENCES deliveries(id) ON DELETE SET NULL,
    recipient         TEXT,
    action            TEXT,
    status_code       TEXT,
    diagnostic        TEXT,
    remote_mta        TEXT,
    feedback_type     TEXT,
    provider_event_id TEXT,
    effect            TEXT NOT NULL CONSTRAINT bounce_reports_effect_check
                      CHECK (effect IN ('suppressed', 'soft_bounce', 'soft_bounce_limit', 'complaint', 'delivery_failed', 'not_about_the_list', 'ignored', 'unmatched')),
    summary           TEXT,
    raw               BLOB,
    raw_purge_at      BIGINT,
    UNIQUE (source, provider_event_id)
);
CREATE INDEX bounce_reports_by_issue ON bounce_reports (issue_id, effect);
CREATE INDEX bounce_reports_by_delivery ON bounce_reports (delivery_id);
CREATE INDEX bounce_reports_by_subscriber ON bounce_reports (subscriber_id);
CREATE INDEX bounce_reports_raw_purge ON bounce_reports (raw_purge_at) WHERE raw IS NOT NULL;
