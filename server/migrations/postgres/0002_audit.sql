-- Audit lines from the filter (SPEC §11, §16). Times are Unix milliseconds.
CREATE TABLE audit_lines (
    seq          BIGSERIAL PRIMARY KEY,
    ts           BIGINT NOT NULL,
    request_id   TEXT NOT NULL,
    token_id     TEXT,
    token_name   TEXT,
    user_name    TEXT,
    acting_as    TEXT,
    client_ip    TEXT,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    query        TEXT NOT NULL,
    decision     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    rule         BIGINT,
    status       BIGINT,
    duration_ms  BIGINT NOT NULL,
    extra        TEXT
);
-- The queries admins make: one token over a time range, one user over a time range, and
-- everything newest first.
CREATE INDEX audit_token_ts ON audit_lines (token_id, ts);
CREATE INDEX audit_user_ts ON audit_lines (user_name, ts);
CREATE INDEX audit_ts ON audit_lines (ts);

-- Batches already stored (x-tokengate-batch), so a retried batch is stored once.
CREATE TABLE audit_batches (
    id           TEXT PRIMARY KEY,
    received_at  BIGINT NOT NULL,
    lines        BIGINT NOT NULL
);
CREATE INDEX audit_batches_received ON audit_batches (received_at);
