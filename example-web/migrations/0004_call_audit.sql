-- The activity log as an audit trail: who asked for each call, and the paths
-- its input named (JSON array, the first 10).
ALTER TABLE calls ADD COLUMN requested_by TEXT;
ALTER TABLE calls ADD COLUMN paths TEXT;
CREATE INDEX calls_owner_device ON calls (owner, device_id, started_at);
