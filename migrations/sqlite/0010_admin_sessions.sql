-- Herald 0010 (SQLite): the editors' web page (/admin): password logins,
-- sessions and failed-login tracking. Kept in lockstep with
-- migrations/postgres/0010.

-- argon2id in PHC string form (`herald editor passwd`); NULL = this editor
-- cannot log in to /admin (API tokens are separate).
ALTER TABLE editors ADD COLUMN password_hash TEXT;

-- Only the SHA-256 of a session id is stored: a database leak logs nobody
-- in. The CSRF token is per session and useless without the cookie.
CREATE TABLE admin_sessions (
    id_hash      TEXT PRIMARY KEY,
    editor_id    BIGINT NOT NULL REFERENCES editors(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    -- The absolute end; the idle end is last_seen_at + the idle timeout.
    expires_at   BIGINT NOT NULL
);
CREATE INDEX admin_sessions_by_editor ON admin_sessions (editor_id);

-- Failed logins per account ('email:' + canonical address, whether or not
-- an editor has it) and per client ('ip:' + address): the slow-down and
-- lockout of /admin/login.
CREATE TABLE admin_login_failures (
    subject         TEXT PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failed_at  BIGINT NOT NULL,
    locked_until    BIGINT
);
