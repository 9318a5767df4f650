-- Notices to --notify-url (SPEC §19): one row per event, deduplicated by `dedupe`, sent at
-- least once (retried until the receiver answers 2xx).
CREATE TABLE notices (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe      TEXT NOT NULL UNIQUE,
    event       TEXT NOT NULL,
    token_id    TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    sent_at     BIGINT,
    attempts    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX notices_unsent ON notices (sent_at, seq);
