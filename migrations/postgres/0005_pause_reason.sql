-- Herald 0005 (PostgreSQL): why the engine paused an issue (a relay that refuses
-- our login, a message the relay refuses, a run of policy refusals, a relay
-- unreachable for long). Set only while the issue is paused by the engine;
-- any status change (resume, cancel, an editor's pause) clears it.
-- Kept in lockstep with migrations/sqlite/0005.

ALTER TABLE issues ADD COLUMN pause_reason TEXT;
