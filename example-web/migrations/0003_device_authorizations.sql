-- Device authorization requests (RFC 8628): a device asks for a code and a
-- signed-in person approves it on /device. Only hashes of the codes are kept.
CREATE TABLE device_authorizations (
    id TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    host_version TEXT NOT NULL,
    address TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT REFERENCES users (id),
    decided_at BIGINT,
    interval_secs BIGINT NOT NULL,
    last_polled_at BIGINT
);
CREATE INDEX device_authorizations_user_code ON device_authorizations (user_code_hash, created_at);
