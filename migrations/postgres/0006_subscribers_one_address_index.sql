-- Herald 0006 (PostgreSQL). Kept in lockstep with migrations/sqlite/0006.
--
-- Since 0002 one address is one reader through the unique index on
-- lower(email) (EmailAddress::canonical). The column's own UNIQUE from 0001
-- is implied by it (equal addresses have equal lower-case forms) and cost a
-- second index that every import row wrote for nothing.
ALTER TABLE subscribers DROP CONSTRAINT IF EXISTS subscribers_email_key;
