-- Tokens, settings, admins and the admin log (SPEC §15). Times are Unix milliseconds.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    user_name   TEXT,
    sha256      TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    revoked_by  TEXT,
    ips         TEXT NOT NULL,
    run_as      TEXT NOT NULL,
    limit_to    TEXT NOT NULL
);
CREATE INDEX tokens_user ON tokens (user_name);
CREATE INDEX tokens_expires ON tokens (expires_at);

-- Per-token usage, counted as audit lines are stored (SPEC §16).
CREATE TABLE token_usage (
    token_id        TEXT PRIMARY KEY,
    calls           BIGINT NOT NULL DEFAULT 0,
    allowed         BIGINT NOT NULL DEFAULT 0,
    denied          BIGINT NOT NULL DEFAULT 0,
    last_used_at    BIGINT,
    last_client_ip  TEXT
);
CREATE INDEX token_usage_last_used ON token_usage (last_used_at);

-- Key/value: `plugin` (the settings JSON), `audit_authorization` (the receiver's credential).
CREATE TABLE settings (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);

-- One row: the configuration generation, bumped in the transaction of every change.
CREATE TABLE config_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL,
    changed_at  BIGINT NOT NULL
);
INSERT INTO config_state (id, generation, changed_at) VALUES (1, 1, 0);

CREATE TABLE admins (
    name            TEXT PRIMARY KEY,
    password_hash   TEXT,
    created_at      BIGINT NOT NULL,
    failed_logins   BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT
);

CREATE TABLE admin_keys (
    sha256      TEXT PRIMARY KEY,
    admin       TEXT NOT NULL REFERENCES admins (name) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE admin_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    admin   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    detail  TEXT
);
CREATE INDEX admin_log_at ON admin_log (at);

-- Envoys connected to any instance (ECDS), with their last ACK/NACK.
CREATE TABLE nodes (
    node_id         TEXT PRIMARY KEY,
    cluster         TEXT NOT NULL,
    instance        TEXT NOT NULL,
    acked_version   TEXT,
    last_error      TEXT,
    connected_at    BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    connected       BIGINT NOT NULL
);
