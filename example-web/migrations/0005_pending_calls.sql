-- Calls sent to a device and not answered yet, kept while several replicas
-- share devices: a device that reconnects to another replica still gets
-- them, and a result finds the replica whose caller waits (docs/CLUSTER.md).
CREATE TABLE pending_calls (
    call_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    call TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX pending_calls_device ON pending_calls (device_id, created_at);
