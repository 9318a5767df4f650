-- Console sessions (SPEC §17). Only the SHA-256 digest of the cookie's secret is stored;
-- the CSRF token is derived from the secret, so neither can be read back from here.
CREATE TABLE console_sessions (
    digest      TEXT PRIMARY KEY,
    admin       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);
CREATE INDEX console_sessions_admin ON console_sessions (admin);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
