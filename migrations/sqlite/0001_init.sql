-- Herald schema (SQLite). Kept in lockstep with migrations/postgres.
-- Times are BIGINT milliseconds since the Unix epoch on both backends.

CREATE TABLE instance_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE newsletters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    slug             TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    from_mailbox     TEXT NOT NULL,
    reply_to         TEXT,
    postal_address   TEXT NOT NULL,
    list_id          TEXT NOT NULL,
    subject_template TEXT NOT NULL,
    preheader        TEXT NOT NULL DEFAULT '',
    lang             TEXT NOT NULL DEFAULT 'en',
    created_at       BIGINT NOT NULL
);

CREATE TABLE subscribers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    email      TEXT NOT NULL UNIQUE,
    name       TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    last_import_id TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE subscriptions (
    subscriber_id        BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    newsletter_id        BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    state                TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    confirmed_at         BIGINT,
    unsubscribed_at      BIGINT,
    last_confirmation_at BIGINT,
    soft_bounces         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber_id, newsletter_id)
);
CREATE INDEX subscriptions_by_newsletter ON subscriptions (newsletter_id, state);

CREATE TABLE confirmation_tokens (
    token_hash    TEXT PRIMARY KEY,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    newsletter_id BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);

-- Append-only. subscriber_id becomes NULL when a subscriber is erased.
CREATE TABLE consent_events (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id        BIGINT REFERENCES subscribers(id) ON DELETE SET NULL,
    newsletter_id        BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL,
    at                   BIGINT NOT NULL,
    ip                   TEXT,
    user_agent           TEXT,
    source               TEXT NOT NULL,
    consent_text_version TEXT,
    method               TEXT
);
CREATE INDEX consent_events_by_subscriber ON consent_events (subscriber_id, at);

-- Addresses never mailed again without a fresh confirmation. The address is
-- kept only as its SHA-256 after an erasure.
CREATE TABLE suppressions (
    address_hash TEXT PRIMARY KEY,
    email        TEXT,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE items (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    newsletter_id BIGINT NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    state         TEXT NOT NULL,
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
CREATE INDEX items_by_state ON items (newsletter_id, state);

CREATE TABLE issues (
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
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    send_started_at BIGINT,
    completed_at  BIGINT,
    final_counts  TEXT,
    UNIQUE (newsletter_id, number)
);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    issue_id        BIGINT NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    subscriber_id   BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    state           TEXT NOT NULL,
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
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_by_issue ON deliveries (issue_id, state);
CREATE INDEX deliveries_sent_at ON deliveries (sent_at);

CREATE TABLE delivery_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id BIGINT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    code        BIGINT,
    enhanced    TEXT,
    reply       TEXT,
    outcome     TEXT NOT NULL,
    worker_id   TEXT NOT NULL
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id);

CREATE INDEX suppressions_by_email ON suppressions (email);

-- The intro and title waiting for the next issue (from `items import` of a
-- digest file); consumed by compose.
CREATE TABLE issue_drafts (
    newsletter_id BIGINT PRIMARY KEY REFERENCES newsletters(id) ON DELETE CASCADE,
    title         TEXT,
    subject       TEXT,
    preheader     TEXT,
    intro         TEXT,
    updated_at    BIGINT NOT NULL
);
