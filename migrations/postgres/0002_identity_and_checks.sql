-- Herald 0002 (PostgreSQL). Kept in lockstep with migrations/sqlite/0002.
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
SELECT s.id, k.kept_id, s.email, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
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
SELECT DISTINCT m.kept_id, sub.newsletter_id, 'admin-change', (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, 'migration:0002', 'merge-case-duplicates'
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
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_state_check
    CHECK (state IN ('pending', 'confirmed', 'unsubscribed', 'bounced', 'complained'));
ALTER TABLE consent_events ADD CONSTRAINT consent_events_kind_check
    CHECK (kind IN ('request', 'confirm', 'unsubscribe', 'resubscribe', 'import', 'admin-change', 'bounce'));
ALTER TABLE items ADD CONSTRAINT items_state_check
    CHECK (state IN ('draft', 'ready', 'published'));
ALTER TABLE issues ADD CONSTRAINT issues_status_check
    CHECK (status IN ('draft', 'sending', 'paused', 'cancelled', 'sent'));
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('queued', 'sending', 'sent', 'retry_wait', 'failed', 'skipped', 'cancelled'));
