-- no-transaction
-- Herald 0002 (SQLite). Kept in lockstep with migrations/postgres/0002.
--
-- SQLite cannot add a CHECK to an existing table: the tables are rebuilt
-- (create new, copy, drop, rename). Dropping a parent table with foreign
-- keys on would run its ON DELETE CASCADE actions and empty the children, and
-- `PRAGMA foreign_keys` is a no-op inside a transaction, so this migration
-- manages its own transaction with foreign keys off (hence no-transaction);
-- and since cascades do not fire here, the merge deletes dependents itself.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

-- 1. One identity per address: merge subscribers whose addresses differ only
-- in case (see EmailAddress::canonical). The lowest id is kept; what was
-- merged into it is recorded in merged_subscribers (removed with the kept
-- subscriber on erasure, so no address outlives an erasure) and as an
-- `admin-change` consent event with method `merge-case-duplicates`.
CREATE TABLE merged_subscribers (
    merged_id    BIGINT PRIMARY KEY,
    kept_id      BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    merged_email TEXT NOT NULL,
    merged_at    BIGINT NOT NULL
);
CREATE INDEX merged_subscribers_by_kept ON merged_subscribers (kept_id);

INSERT INTO merged_subscribers (merged_id, kept_id, merged_email, merged_at)
SELECT s.id, k.kept_id, s.email, CAST(strftime('%s', 'now') AS BIGINT) * 1000
FROM subscribers s
JOIN (SELECT lower(email) AS email_key, MIN(id) AS kept_id
      FROM subscribers GROUP BY lower(email) HAVING COUNT(*) > 1) k
  ON lower(s.email) = k.email_key
WHERE s.id <> k.kept_id;

-- The kept subscriber gets a subscription wherever a merged one had one…
INSERT INTO subscriptions (subscriber_id, newsletter_id, state, created_at, updated_at,
                           confirmed_at, unsubscribed_at, last_confirmation_at, soft_bounces)
SELECT m.kept_id, sub.newsletter_id, 'pending', MIN(sub.created_at), MAX(sub.updated_at),
       MAX(sub.confirmed_at), MAX(sub.unsubscribed_at), MAX(sub.last_confirmation_at), MAX(sub.soft_bounces)
FROM subscriptions sub JOIN merged_subscribers m ON m.merged_id = sub.subscriber_id
WHERE NOT EXISTS (SELECT 1 FROM subscriptions k
                  WHERE k.subscriber_id = m.kept_id AND k.newsletter_id = sub.newsletter_id)
GROUP BY m.kept_id, sub.newsletter_id;

-- …in the most restrictive state of the group: complained > bounced >
-- unsubscribed > confirmed > pending. A pending duplicate is only an
-- unconfirmed request, so it does not revoke consent another spelling gave;
-- any refusal wins over everything.
UPDATE subscriptions SET
    state = CASE (SELECT MAX(CASE g.state WHEN 'complained' THEN 5 WHEN 'bounced' THEN 4
                                          WHEN 'unsubscribed' THEN 3 WHEN 'confirmed' THEN 2 ELSE 1 END)
                  FROM subscriptions g
                  WHERE g.newsletter_id = subscriptions.newsletter_id
                    AND (g.subscriber_id = subscriptions.subscriber_id
                         OR g.subscriber_id IN (SELECT m.merged_id FROM merged_subscribers m
                                                WHERE m.kept_id = subscriptions.subscriber_id)))
            WHEN 5 THEN 'complained' WHEN 4 THEN 'bounced' WHEN 3 THEN 'unsubscribed'
            WHEN 2 THEN 'confirmed' ELSE 'pending' END,
    unsubscribed_at = (SELECT MAX(g.unsubscribed_at) FROM subscriptions g
                       WHERE g.newsletter_id = subscriptions.newsletter_id
                         AND (g.subscriber_id = subscriptions.subscriber_id
                              OR g.subscriber_id IN (SELECT m.merged_id FROM merged_subscribers m
                                                     WHERE m.kept_id = subscriptions.subscriber_id)))
WHERE subscriber_id IN (SELECT kept_id FROM merged_subscribers);

DELETE FROM subscriptions WHERE subscriber_id IN (SELECT merged_id FROM merged_subscribers);

UPDATE consent_events
SET subscriber_id = (SELECT m.kept_id FROM merged_subscribers m WHERE m.merged_id = consent_events.subscriber_id)
WHERE subscriber_id IN (SELECT merged_id FROM merged_subscribers);

INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, source, method)
SELECT DISTINCT m.kept_id, sub.newsletter_id, 'admin-change', CAST(strftime('%s', 'now') AS BIGINT) * 1000, 'migration:0002', 'merge-case-duplicates'
FROM merged_subscribers m JOIN subscriptions sub ON sub.subscriber_id = m.kept_id;

UPDATE confirmation_tokens
SET subscriber_id = (SELECT m.kept_id FROM merged_subscribers m WHERE m.merged_id = confirmation_tokens.subscriber_id)
WHERE subscriber_id IN (SELECT merged_id FROM merged_subscribers);

-- Delivery history moves to the kept subscriber where it has none for that
-- issue (one row per issue and subscriber); the rest was the duplicate send.
UPDATE deliveries
SET subscriber_id = (SELECT m.kept_id FROM merged_subscribers m WHERE m.merged_id = deliveries.subscriber_id)
WHERE subscriber_id IN (SELECT merged_id FROM merged_subscribers)
  AND NOT EXISTS (SELECT 1 FROM deliveries k JOIN merged_subscribers m ON m.kept_id = k.subscriber_id
                  WHERE m.merged_id = deliveries.subscriber_id AND k.issue_id = deliveries.issue_id)
  AND id = (SELECT MIN(d2.id) FROM deliveries d2 JOIN merged_subscribers m2 ON m2.merged_id = d2.subscriber_id
            WHERE d2.issue_id = deliveries.issue_id
              AND m2.kept_id = (SELECT m3.kept_id FROM merged_subscribers m3 WHERE m3.merged_id = deliveries.subscriber_id));

DELETE FROM delivery_attempts WHERE delivery_id IN
    (SELECT id FROM deliveries WHERE subscriber_id IN (SELECT merged_id FROM merged_subscribers));
DELETE FROM deliveries WHERE subscriber_id IN (SELECT merged_id FROM merged_subscribers);
DELETE FROM subscribers WHERE id IN (SELECT merged_id FROM merged_subscribers);

-- Uniqueness and lookups by the canonical address. lower() equals
-- EmailAddress::canonical because stored addresses are ASCII.
CREATE UNIQUE INDEX subscribers_canonical_email ON subscribers (lower(email));
DROP INDEX suppressions_by_email;
CREATE INDEX suppressions_by_canonical_email ON suppressions (lower(email));

-- 2. Every state column accepts only the spellings of domain/state.rs
-- (tests/schema.rs compares these lists with `Enum::ALL`). Attempt outcomes
-- and suppression reasons stay open TEXT: they are not closed enums in the code.

CREATE TABLE subscriptions_new (
    subscriber_id        BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    newsletter_id        BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    state                TEXT NOT NULL CONSTRAINT subscriptions_state_check
                         CHECK (state IN ('pending', 'confirmed', 'unsubscribed', 'bounced', 'complained')),
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    confirmed_at         BIGINT,
    unsubscribed_at      BIGINT,
    last_confirmation_at BIGINT,
    soft_bounces         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber_id, newsletter_id)
);
INSERT INTO subscriptions_new SELECT * FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_new RENAME TO subscriptions;
CREATE INDEX subscriptions_by_newsletter ON subscriptions (newsletter_id, state);

CREATE TABLE consent_events_new (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id        BIGINT REFERENCES subscribers(id) ON DELETE SET NULL,
    newsletter_id        BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL CONSTRAINT consent_events_kind_check
                         CHECK (kind IN ('request', 'confirm', 'unsubscribe', 'resubscribe', 'import', 'admin-change', 'bounce')),
    at                   BIGINT NOT NULL,
    ip                   TEXT,
    user_agent           TEXT,
    source               TEXT NOT NULL,
    consent_text_version TEXT,
    method               TEXT
);
INSERT INTO consent_events_new SELECT * FROM consent_events;
DROP TABLE consent_events;
ALTER TABLE consent_events_new RENAME TO consent_events;
CREATE INDEX consent_events_by_subscriber ON consent_events (subscriber_id, at);

CREATE TABLE items_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    newsletter_id BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    state         TEXT NOT NULL CONSTRAINT items_state_check
                  CHECK (state IN ('draft', 'ready', 'published')),
    headline      TEXT NOT NULL,
    outlet        TEXT NOT NULL,
    url           TEXT NOT NULL,
    published_on  TEXT,
    author        TEXT,
    author_role   TEXT,
    summary       TEXT NOT NULL DEFAULT '',
    quote         TEXT,
    section       TEXT,
    issue_id      BIGINT,
    position      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
INSERT INTO items_new SELECT * FROM items;
DROP TABLE items;
ALTER TABLE items_new RENAME TO items;
CREATE INDEX items_by_state ON items (newsletter_id, state);

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
                  CHECK (status IN ('draft', 'sending', 'paused', 'cancelled', 'sent')),
    created_at    BIGINT NOT NULL,
    send_started_at BIGINT,
    completed_at  BIGINT,
    final_counts  TEXT,
    UNIQUE (newsletter_id, number)
);
INSERT INTO issues_new SELECT * FROM issues;
DROP TABLE issues;
ALTER TABLE issues_new RENAME TO issues;

CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    issue_id        BIGINT NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    subscriber_id   BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    state           TEXT NOT NULL CONSTRAINT deliveries_state_check
                    CHECK (state IN ('queued', 'sending', 'sent', 'retry_wait', 'failed', 'skipped', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    worker_id       TEXT,
    first_attempt_at BIGINT,
    last_code       BIGINT,
    last_enhanced   TEXT,
    last_reply      TEXT,
    failure_reason  TEXT,
    sent_at         BIGINT,
    updated_at      BIGINT NOT NULL,
    UNIQUE (issue_id, subscriber_id)
);
INSERT INTO deliveries_new SELECT * FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_by_issue ON deliveries (issue_id, state);
CREATE INDEX deliveries_sent_at ON deliveries (sent_at);

COMMIT;
PRAGMA foreign_keys = ON;
