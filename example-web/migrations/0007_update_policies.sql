-- How each account's devices are kept up to date: automatic updates on or
-- off, and a version they stay on. No row: automatic, newest.
CREATE TABLE update_policies (
    owner TEXT PRIMARY KEY,
    automatic BIGINT NOT NULL,
    pinned TEXT,
    updated_at BIGINT NOT NULL
);
