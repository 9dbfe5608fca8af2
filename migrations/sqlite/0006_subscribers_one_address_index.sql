-- no-transaction
-- Herald 0006 (SQLite). Kept in lockstep with migrations/postgres/0006.
--
-- Since 0002 one address is one reader through the unique index on
-- lower(email) (EmailAddress::canonical). The column's own UNIQUE from 0001
-- is implied by it (equal addresses have equal lower-case forms) and cost a
-- second index that every import row, erasure and lookup wrote or kept in
-- cache for nothing. SQLite cannot drop a column constraint, so the table is
-- rebuilt as in 0002: foreign keys off (dropping a parent with them on would
-- run its ON DELETE actions), hence no-transaction and an explicit one.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE subscribers_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    email      TEXT NOT NULL,
    name       TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    last_import_id TEXT,
    created_at BIGINT NOT NULL
);
INSERT INTO subscribers_new (id, email, name, attributes, last_import_id, created_at)
SELECT id, email, name, attributes, last_import_id, created_at FROM subscribers ORDER BY id;
-- AUTOINCREMENT never hands out an id again, not even that of an erased
-- reader above the highest id left: carry the counter over.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'subscribers_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'subscribers_new');
UPDATE sqlite_sequence
SET seq = MAX(seq, COALESCE((SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'subscribers'), 0))
WHERE name = 'subscribers_new';
DROP TABLE subscribers;
ALTER TABLE subscribers_new RENAME TO subscribers;
CREATE UNIQUE INDEX subscribers_canonical_email ON subscribers (lower(email));

COMMIT;
PRAGMA foreign_keys = ON;
