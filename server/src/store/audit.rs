//! Audit lines and per-token usage (SPEC §16): a batch is stored whole, with its id and the
//! usage it adds, in one transaction, or not at all.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;
use tokengate_core::record::Record;

use super::{Result, Store, StoreError};

/// Rows per INSERT: 17 parameters each stays far below both databases' limits.
const CHUNK: usize = 100;

/// `GET /api/v1/audit` filters.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub token: Option<String>,
    pub user: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: i64,
    /// (ts, seq) of the last line of the previous page (newest first).
    pub cursor: Option<(i64, i64)>,
}

/// Allowed and refused calls of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    pub day_ms: i64,
    pub allowed: i64,
    pub denied: i64,
}

fn record_from(r: &AnyRow) -> Result<(i64, Record)> {
    let query: String = r.try_get("query")?;
    Ok((
        r.try_get("seq")?,
        Record {
            ts_ms: r.try_get("ts")?,
            request_id: r.try_get("request_id")?,
            token_id: r.try_get("token_id")?,
            token_name: r.try_get("token_name")?,
            user: r.try_get("user_name")?,
            acting_as: r.try_get("acting_as")?,
            client_ip: r.try_get("client_ip")?,
            method: r.try_get("method")?,
            path: r.try_get("path")?,
            query: serde_json::from_str(&query).unwrap_or_default(),
            allowed: r.try_get::<String, _>("decision")? == "allow",
            reason: r.try_get("reason")?,
            rule: r.try_get("rule")?,
            status: r.try_get("status")?,
            duration_ms: r.try_get("duration_ms")?,
            extra: r.try_get("extra")?,
        },
    ))
}

#[derive(Default)]
struct UsageDelta {
    calls: i64,
    allowed: i64,
    denied: i64,
    last: Option<(i64, Option<String>)>,
}

impl Store {
    /// Stores a batch once: `Ok(false)` when a batch with this id was stored before.
    pub async fn insert_audit_batch(
        &self,
        batch_id: &str,
        lines: &[Record],
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO audit_batches (id, received_at, lines) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(batch_id)
        .bind(now)
        .bind(i64::try_from(lines.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if fresh.rows_affected() == 0 {
            return Ok(false);
        }
        for chunk in lines.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO audit_lines (ts, request_id, token_id, token_name, user_name, acting_as, \
                 client_ip, method, path, query, decision, reason, rule, status, duration_ms, extra) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..16 {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", i * 16 + c + 1));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.ts_ms)
                    .bind(r.request_id.clone())
                    .bind(r.token_id.clone())
                    .bind(r.token_name.clone())
                    .bind(r.user.clone())
                    .bind(r.acting_as.clone())
                    .bind(r.client_ip.clone())
                    .bind(r.method.clone())
                    .bind(r.path.clone())
                    .bind(serde_json::to_string(&r.query).unwrap_or_else(|_| "[]".into()))
                    .bind(if r.allowed { "allow" } else { "deny" })
                    .bind(r.reason.clone())
                    .bind(r.rule)
                    .bind(r.status)
                    .bind(r.duration_ms)
                    .bind(r.extra.clone());
            }
            q.execute(&mut *tx).await?;
        }
        let mut usage: BTreeMap<&str, UsageDelta> = BTreeMap::new();
        for r in lines {
            let Some(id) = r.token_id.as_deref() else {
                continue;
            };
            let u = usage.entry(id).or_default();
            u.calls += 1;
            if r.allowed {
                u.allowed += 1;
                if u.last.as_ref().is_none_or(|(ts, _)| r.ts_ms >= *ts) {
                    u.last = Some((r.ts_ms, r.client_ip.clone()));
                }
            } else {
                u.denied += 1;
            }
        }
        for (id, u) in usage {
            let (last_ts, last_ip) = match u.last {
                Some((t, ip)) => (Some(t), ip),
                None => (None, None),
            };
            sqlx::query(
                "INSERT INTO token_usage (token_id, calls, allowed, denied, last_used_at, last_client_ip) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_id) DO UPDATE SET \
                 calls = token_usage.calls + excluded.calls, \
                 allowed = token_usage.allowed + excluded.allowed, \
                 denied = token_usage.denied + excluded.denied, \
                 last_client_ip = CASE WHEN excluded.last_used_at IS NOT NULL AND \
                   (token_usage.last_used_at IS NULL OR excluded.last_used_at >= token_usage.last_used_at) \
                   THEN excluded.last_client_ip ELSE token_usage.last_client_ip END, \
                 last_used_at = CASE WHEN excluded.last_used_at IS NOT NULL AND \
                   (token_usage.last_used_at IS NULL OR excluded.last_used_at >= token_usage.last_used_at) \
                   THEN excluded.last_used_at ELSE token_usage.last_used_at END",
            )
            .bind(id)
            .bind(u.calls)
            .bind(u.allowed)
            .bind(u.denied)
            .bind(last_ts)
            .bind(last_ip)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Newest first, keyset-paged.
    pub async fn audit_lines(&self, f: &AuditQuery) -> Result<Vec<(i64, Record)>> {
        let mut sql = String::from(
            "SELECT seq, ts, request_id, token_id, token_name, user_name, acting_as, client_ip, method, \
             path, query, decision, reason, rule, status, duration_ms, extra FROM audit_lines WHERE 1 = 1",
        );
        let mut n = 0;
        let mut p = || {
            n += 1;
            format!("${n}")
        };
        enum B {
            S(String),
            I(i64),
        }
        let mut binds = Vec::new();
        if let Some(t) = &f.token {
            sql += &format!(" AND token_id = {}", p());
            binds.push(B::S(t.clone()));
        }
        if let Some(u) = &f.user {
            sql += &format!(" AND user_name = {}", p());
            binds.push(B::S(u.clone()));
        }
        if let Some(d) = &f.decision {
            sql += &format!(" AND decision = {}", p());
            binds.push(B::S(d.clone()));
        }
        if let Some(r) = &f.reason {
            sql += &format!(" AND reason = {}", p());
            binds.push(B::S(r.clone()));
        }
        if let Some(from) = f.from {
            sql += &format!(" AND ts >= {}", p());
            binds.push(B::I(from));
        }
        if let Some(to) = f.to {
            sql += &format!(" AND ts < {}", p());
            binds.push(B::I(to));
        }
        if let Some((ts, seq)) = f.cursor {
            let (a, b, c) = (p(), p(), p());
            sql += &format!(" AND (ts < {a} OR (ts = {b} AND seq < {c}))");
            binds.push(B::I(ts));
            binds.push(B::I(ts));
            binds.push(B::I(seq));
        }
        sql += &format!(" ORDER BY ts DESC, seq DESC LIMIT {}", p());
        binds.push(B::I(f.limit));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                B::S(s) => q.bind(s),
                B::I(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(record_from).collect()
    }

    /// Calls per day (UTC) of one token since `from`.
    pub async fn calls_per_day(&self, token: &str, from: i64) -> Result<Vec<DayCount>> {
        let rows = sqlx::query(
            "SELECT (ts / 86400000) AS day, \
             SUM(CASE WHEN decision = 'allow' THEN 1 ELSE 0 END) AS allowed, \
             SUM(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END) AS denied \
             FROM audit_lines WHERE token_id = $1 AND ts >= $2 GROUP BY (ts / 86400000) ORDER BY day",
        )
        .bind(token)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DayCount {
                    day_ms: r.try_get::<i64, _>("day")? * 86_400_000,
                    allowed: r.try_get("allowed")?,
                    denied: r.try_get("denied")?,
                })
            })
            .collect()
    }

    /// Allowed calls of one token since `from`, by (method, path): what `/suggest` reads.
    pub async fn call_counts(&self, token: &str, from: i64) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT method, path, COUNT(*) AS n FROM audit_lines \
             WHERE token_id = $1 AND ts >= $2 AND decision = 'allow' GROUP BY method, path",
        )
        .bind(token)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("method")?, r.try_get("path")?, r.try_get("n")?)))
            .collect()
    }

    /// The SPEC §19 fields of one token's lines since `from`, with their counts (few
    /// distinct values: shadow line numbers, null, and the secret used).
    pub async fn extra_counts(&self, token: &str, from: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT extra, COUNT(*) AS n FROM audit_lines WHERE token_id = $1 AND ts >= $2 \
             AND extra IS NOT NULL GROUP BY extra",
        )
        .bind(token)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("extra")?, r.try_get("n")?)))
            .collect()
    }

    /// When the previous secret of a token was last used since `from` (SPEC §19 notice).
    pub async fn previous_secret_used(&self, token: &str, from: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(ts) AS at FROM audit_lines WHERE token_id = $1 AND ts >= $2 \
             AND extra LIKE '%\"secret\":\"previous\"%'",
        )
        .bind(token)
        .bind(from)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("at")?)
    }

    /// Retention: lines (and batch ids) older than `cutoff` go; usage totals stay.
    pub async fn delete_audit_before(&self, cutoff: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM audit_lines WHERE ts < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM audit_batches WHERE received_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn audit_count(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM audit_lines")
            .fetch_one(&self.pool)
            .await?;
        r.try_get("n").map_err(StoreError::from)
    }
}
