//! Console sessions (SPEC §17): digests of session secrets only, with the time each was
//! last used (idle timeout).

use sqlx::Row;

use super::{Result, Store};

impl Store {
    pub async fn insert_session(&self, digest: &str, admin: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO console_sessions (digest, admin, created_at, last_seen) VALUES ($1, $2, $3, $3)",
        )
        .bind(digest)
        .bind(admin)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The admin and last use of a session, if it exists.
    pub async fn session(&self, digest: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query("SELECT admin, last_seen FROM console_sessions WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("admin")?, r.try_get("last_seen")?)),
            None => None,
        })
    }

    pub async fn touch_session(&self, digest: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE console_sessions SET last_seen = $1 WHERE digest = $2")
            .bind(now)
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, digest: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE digest = $1")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sessions idle since before `cutoff` go.
    pub async fn delete_sessions_before(&self, cutoff: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE last_seen < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
