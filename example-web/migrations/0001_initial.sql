-- fusion-host reference app: accounts, sessions, and the tables behind the
-- dispatcher's Store trait. Portable across SQLite and PostgreSQL: TEXT ids,
-- BIGINT unix-millisecond timestamps, JSON kept as TEXT.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    host_version TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT,
    revoked_at BIGINT,
    manifest TEXT
);
CREATE INDEX devices_owner ON devices (owner);

CREATE TABLE pairing_codes (
    code_hash TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE proposals (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (id),
    device_id TEXT NOT NULL REFERENCES devices (id),
    tool TEXT NOT NULL,
    input TEXT NOT NULL,
    plan TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    output TEXT,
    error TEXT
);
CREATE INDEX proposals_owner ON proposals (owner, created_at);

CREATE TABLE calls (
    call_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (id),
    device_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    mode TEXT NOT NULL,
    proposal_id TEXT,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    error_code TEXT
);
CREATE INDEX calls_owner ON calls (owner, started_at);
