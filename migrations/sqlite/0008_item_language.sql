-- Issue #10: an item's language (BCP 47 tag, canonical spelling, parsed by
-- the application) and the language of the next issue's intro. NULL: the
-- newsletter's language.
ALTER TABLE items ADD COLUMN lang TEXT;
ALTER TABLE issue_drafts ADD COLUMN lang TEXT;
