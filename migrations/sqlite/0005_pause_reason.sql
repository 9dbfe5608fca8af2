-- Herald 0005 (SQLite): why the engine paused an issue (a relay that refuses
-- our login, a message the relay refuses, a run of policy refusals, a relay
-- unreachable for long). NULL when an editor paused it, or once resumed.
-- Kept in lockstep with migrations/postgres/0005.

ALTER TABLE issues ADD COLUMN pause_reason TEXT;
