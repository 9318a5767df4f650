-- Least privilege and rotation (SPEC §19): shadow lines, and an older secret accepted until a
-- time (rotation with overlap; `previous_since` is when it was rotated out).
ALTER TABLE tokens ADD COLUMN shadow_limit_to TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tokens ADD COLUMN previous_sha256 TEXT;
ALTER TABLE tokens ADD COLUMN previous_since BIGINT;
ALTER TABLE tokens ADD COLUMN previous_until BIGINT;
