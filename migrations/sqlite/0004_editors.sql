-- Herald 0004 (SQLite): editors of the HTTP API, their bearer tokens and the
-- stored answers of idempotent requests. Kept in lockstep with
-- migrations/postgres/0004.

CREATE TABLE editors (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    email      TEXT NOT NULL,
    name       TEXT,
    created_at BIGINT NOT NULL
);
-- One editor per address, compared like subscribers (EmailAddress::canonical).
CREATE UNIQUE INDEX editors_canonical_email ON editors (lower(email));

-- Only the SHA-256 of a token is kept: a database leak lets nobody in.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    editor_id    BIGINT NOT NULL REFERENCES editors(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_by_editor ON api_tokens (editor_id);

-- The first answer to a mutating request carrying an Idempotency-Key,
-- replayed for a retry with the same key. `request_hash` covers the method,
-- path and body, so the same key on a different request is refused.
CREATE TABLE idempotency_keys (
    editor_id     BIGINT NOT NULL REFERENCES editors(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    http_status   BIGINT,
    content_type  TEXT,
    body          BLOB,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (editor_id, key)
);
