//! Audit records and their batching (SPEC §11). Filled in by the audit work.
