//! The database: tokens, settings, admins, the admin log and the fleet, on SQLite or
//! PostgreSQL.
//!
//! One SQL implementation serves both through sqlx's `Any` driver: the statements below are
//! plain SQL that both databases read the same way (`$N` parameters, `ON CONFLICT`, integers
//! for times and flags), and what differs, the DDL, lives in one migration set per database
//! (`migrations/sqlite`, `migrations/postgres`), applied on start. `tests/service` runs every
//! API and push test against each database.
//!
//! Every change that alters what Envoys are sent bumps `config_state.generation` in the same
//! transaction, with its admin-log entry: a change is pushed, logged and stored together, or
//! not at all. Times are Unix milliseconds.

mod audit;
mod sessions;

pub use audit::AuditQuery;

use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug)]
pub enum StoreError {
    /// A unique key already exists (id or digest).
    Conflict(String),
    NotFound,
    Db(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "{m}"),
            StoreError::NotFound => write!(f, "not found"),
            StoreError::Db(m) => write!(f, "database error: {m}"),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict(d.message().to_owned());
            }
        }
        StoreError::Db(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Per-token usage (SPEC §16).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub calls: i64,
    pub allowed: i64,
    pub denied: i64,
    pub last_used_at: Option<i64>,
    pub last_client_ip: Option<String>,
}

/// A stored token: never its secret, only the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub user: Option<String>,
    pub sha256: String,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub ips: Vec<String>,
    pub run_as: Vec<String>,
    pub limit_to: Vec<String>,
    /// SPEC §19: evaluated and reported, never enforced.
    pub shadow_limit_to: Vec<String>,
    /// SPEC §19: the secret it replaced, accepted until `until`.
    pub previous: Option<PreviousSecret>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub sha256: String,
    pub since: i64,
    pub until: i64,
}

/// The token list's filters (`GET /api/v1/tokens`).
#[derive(Debug, Clone, Default)]
pub struct TokenQuery {
    pub status: Option<String>,
    pub user: Option<String>,
    pub q: Option<String>,
    pub limit: i64,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: i64,
    pub at: i64,
    pub admin: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub cluster: String,
    pub instance: String,
    pub acked_version: Option<String>,
    pub last_error: Option<String>,
    pub connected_at: i64,
    pub last_seen: i64,
    pub connected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRow {
    pub name: String,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub keys: i64,
}

/// An admin-log entry written in the same transaction as the change it records.
pub struct Audit<'a> {
    pub admin: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub detail: Option<String>,
}

const TOKEN_COLUMNS: &str = "t.id, t.name, t.user_name, t.sha256, t.created_at, t.created_by, \
     t.expires_at, t.revoked_at, t.revoked_by, t.ips, t.run_as, t.limit_to, \
     t.shadow_limit_to, t.previous_sha256, t.previous_since, t.previous_until, \
     COALESCE(u.calls, 0) AS calls, COALESCE(u.allowed, 0) AS allowed, \
     COALESCE(u.denied, 0) AS denied, u.last_used_at, u.last_client_ip";

const DAY_MS: i64 = 86_400_000;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(text).unwrap_or_default()
}

fn list_json(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn token_from(row: &AnyRow) -> Result<TokenRow> {
    let text = |c: &str| -> Result<String> { Ok(row.try_get::<String, _>(c)?) };
    Ok(TokenRow {
        id: text("id")?,
        name: text("name")?,
        user: row.try_get("user_name")?,
        sha256: text("sha256")?,
        created_at: row.try_get("created_at")?,
        created_by: text("created_by")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
        ips: json_list(&text("ips")?),
        run_as: json_list(&text("run_as")?),
        limit_to: json_list(&text("limit_to")?),
        shadow_limit_to: json_list(&text("shadow_limit_to")?),
        previous: match (
            row.try_get::<Option<String>, _>("previous_sha256")?,
            row.try_get::<Option<i64>, _>("previous_since")?,
            row.try_get::<Option<i64>, _>("previous_until")?,
        ) {
            (Some(sha256), Some(since), Some(until)) => Some(PreviousSecret {
                sha256,
                since,
                until,
            }),
            _ => None,
        },
        usage: Usage {
            calls: row.try_get("calls")?,
            allowed: row.try_get("allowed")?,
            denied: row.try_get("denied")?,
            last_used_at: row.try_get("last_used_at")?,
            last_client_ip: row.try_get("last_client_ip")?,
        },
    })
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates. Errors are one line for the
    /// operator: a malformed URL, an unknown scheme, or a database that does not answer
    /// within `timeout`.
    pub async fn open(url: &str, timeout: Duration) -> std::result::Result<Store, String> {
        sqlx::any::install_default_drivers();
        let backend = if let Some(rest) = url.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(format!("`{url}`: sqlite:// needs a file path"));
            }
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(format!(
                "`{}`: unknown database URL scheme (use sqlite://PATH or postgres://…)",
                redact(url)
            ));
        };
        let connect_url = match backend {
            // Create the file on first start; WAL so that readers never wait for the writer.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(timeout);
        opts = match backend {
            // One writer at a time is SQLite's model; a few readers beside it.
            Backend::Sqlite => opts.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => opts.max_connections(16),
        };
        let pool = tokio::time::timeout(timeout, opts.connect(&connect_url))
            .await
            .map_err(|_| {
                format!(
                    "`{}`: the database did not answer within {} s",
                    redact(url),
                    timeout.as_secs()
                )
            })?
            .map_err(|e| format!("`{}`: {}", redact(url), one_line(&e.to_string())))?;
        let migrated = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        };
        migrated
            .map_err(|e| format!("migrating `{}`: {}", redact(url), one_line(&e.to_string())))?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `/healthz`: the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn generation(&self) -> Result<i64> {
        let row = sqlx::query("SELECT generation FROM config_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("generation")?)
    }

    // ------------------------------------------------------------------ settings

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT v FROM settings WHERE k = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("v")?),
            None => None,
        })
    }

    /// Stores a setting only if none is there yet; returns the value that holds (so two
    /// instances starting together agree on one generated value).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO settings (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.setting(key)
            .await?
            .ok_or_else(|| StoreError::Db(format!("setting `{key}` vanished")))
    }

    pub async fn put_plugin_settings(
        &self,
        settings: &Value,
        log: Audit<'_>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO settings (k, v) VALUES ('plugin', $1) ON CONFLICT (k) DO UPDATE SET v = $1",
        )
        .bind(settings.to_string())
        .execute(&mut *tx)
        .await?;
        bump(&mut tx, now).await?;
        write_log(&mut tx, &log, now).await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------ tokens

    pub async fn insert_token(&self, t: &TokenRow, log: Audit<'_>, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (id, name, user_name, sha256, created_at, created_by, expires_at, \
             revoked_at, revoked_by, ips, run_as, limit_to, shadow_limit_to) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.user.as_deref())
        .bind(&t.sha256)
        .bind(t.created_at)
        .bind(&t.created_by)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(t.revoked_by.as_deref())
        .bind(list_json(&t.ips))
        .bind(list_json(&t.run_as))
        .bind(list_json(&t.limit_to))
        .bind(list_json(&t.shadow_limit_to))
        .execute(&mut *tx)
        .await?;
        bump(&mut tx, now).await?;
        write_log(&mut tx, &log, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn id_exists(&self, id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    pub async fn token(&self, id: &str) -> Result<TokenRow> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN token_usage u ON u.token_id = t.id \
             WHERE t.id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        token_from(&row)
    }

    /// Every token, in id order: what the pushed configuration holds.
    pub async fn all_tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN token_usage u ON u.token_id = t.id \
             ORDER BY t.id"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(token_from).collect()
    }

    pub async fn list_tokens(&self, f: &TokenQuery, now: i64) -> Result<Vec<TokenRow>> {
        let mut sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN token_usage u ON u.token_id = t.id \
             WHERE 1 = 1"
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let mut binds: Vec<Bind> = Vec::new();
        let active = |now_p: &str| {
            format!("t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > {now_p})")
        };
        match f.status.as_deref() {
            None | Some("") => {}
            Some("active") => {
                let p = next();
                sql += &format!(" AND {}", active(&p));
                binds.push(Bind::I(now));
            }
            Some("revoked") => sql += " AND t.revoked_at IS NOT NULL",
            Some("expired") => {
                let p = next();
                sql += &format!(" AND t.revoked_at IS NULL AND t.expires_at <= {p}");
                binds.push(Bind::I(now));
            }
            Some("expiring") => {
                let (p, q) = (next(), next());
                sql += &format!(" AND {} AND t.expires_at <= {q}", active(&p));
                binds.push(Bind::I(now));
                binds.push(Bind::I(now.saturating_add(14 * DAY_MS)));
            }
            Some("unused") => {
                let (p, q) = (next(), next());
                sql += &format!(
                    " AND {} AND (u.last_used_at IS NULL OR u.last_used_at < {q})",
                    active(&p)
                );
                binds.push(Bind::I(now));
                binds.push(Bind::I(now.saturating_sub(90 * DAY_MS)));
            }
            Some(_) => return Ok(Vec::new()),
        }
        if let Some(user) = f.user.as_deref().filter(|u| !u.is_empty()) {
            let p = next();
            sql += &format!(" AND LOWER(t.user_name) = LOWER({p})");
            binds.push(Bind::S(user.to_owned()));
        }
        if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
            let p = next();
            sql += &format!(" AND (LOWER(t.id) LIKE {p} OR LOWER(t.name) LIKE {p})");
            let escaped = q.to_lowercase().replace('\\', "").replace(['%', '_'], "");
            binds.push(Bind::S(format!("%{escaped}%")));
        }
        if let Some(c) = f.cursor.as_deref().filter(|c| !c.is_empty()) {
            let p = next();
            sql += &format!(" AND t.id > {p}");
            binds.push(Bind::S(c.to_owned()));
        }
        let p = next();
        sql += &format!(" ORDER BY t.id LIMIT {p}");
        binds.push(Bind::I(f.limit));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::I(i) => query.bind(i),
                Bind::S(s) => query.bind(s),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(token_from).collect()
    }

    /// Writes a token's editable fields and expiry (the caller checked what may change).
    pub async fn update_token(&self, t: &TokenRow, log: Audit<'_>, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tokens SET name = $1, expires_at = $2, ips = $3, run_as = $4, limit_to = $5, \
             shadow_limit_to = $6, sha256 = $7, previous_sha256 = $8, previous_since = $9, \
             previous_until = $10 WHERE id = $11",
        )
        .bind(&t.name)
        .bind(t.expires_at)
        .bind(list_json(&t.ips))
        .bind(list_json(&t.run_as))
        .bind(list_json(&t.limit_to))
        .bind(list_json(&t.shadow_limit_to))
        .bind(&t.sha256)
        .bind(t.previous.as_ref().map(|p| p.sha256.clone()))
        .bind(t.previous.as_ref().map(|p| p.since))
        .bind(t.previous.as_ref().map(|p| p.until))
        .bind(&t.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        bump(&mut tx, now).await?;
        write_log(&mut tx, &log, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes; a token already revoked keeps its first `revoked_at` (and nothing is pushed).
    pub async fn revoke_token(&self, id: &str, log: Audit<'_>, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(log.admin)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 AS one FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return match exists {
                Some(_) => Ok(false),
                None => Err(StoreError::NotFound),
            };
        }
        bump(&mut tx, now).await?;
        write_log(&mut tx, &log, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn delete_token(&self, id: &str, log: Audit<'_>, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM token_usage WHERE token_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        bump(&mut tx, now).await?;
        write_log(&mut tx, &log, now).await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------ admins

    pub async fn add_admin(&self, name: &str, password_hash: Option<&str>, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO admins (name, password_hash, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET password_hash = COALESCE($2, admins.password_hash), \
             failed_logins = 0, locked_until = NULL",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn add_admin_key(&self, name: &str, sha256: &str, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO admins (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO admin_keys (sha256, admin, created_at) VALUES ($1, $2, $3)")
            .bind(sha256)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn admins(&self) -> Result<Vec<AdminRow>> {
        let rows = sqlx::query(
            "SELECT a.name, a.password_hash, a.created_at, a.failed_logins, a.locked_until, \
             (SELECT COUNT(*) FROM admin_keys k WHERE k.admin = a.name) AS keys \
             FROM admins a ORDER BY a.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminRow {
                    name: r.try_get("name")?,
                    password_hash: r.try_get("password_hash")?,
                    created_at: r.try_get("created_at")?,
                    failed_logins: r.try_get("failed_logins")?,
                    locked_until: r.try_get("locked_until")?,
                    keys: r.try_get("keys")?,
                })
            })
            .collect()
    }

    pub async fn admin(&self, name: &str) -> Result<Option<AdminRow>> {
        Ok(self.admins().await?.into_iter().find(|a| a.name == name))
    }

    pub async fn remove_admin(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM admin_keys WHERE admin = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM admins WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The admin an API key's digest belongs to. The digest is the primary key: the lookup
    /// compares digests, never keys, so its timing tells nothing about a key.
    pub async fn admin_for_key(&self, sha256: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT admin FROM admin_keys WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("admin")?),
            None => None,
        })
    }

    /// Records a sign-in attempt's outcome (throttling and lock-out for the console).
    pub async fn set_login_state(
        &self,
        name: &str,
        failed: i64,
        locked_until: Option<i64>,
    ) -> Result<()> {
        sqlx::query("UPDATE admins SET failed_logins = $1, locked_until = $2 WHERE name = $3")
            .bind(failed)
            .bind(locked_until)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ admin log

    pub async fn log(&self, log: Audit<'_>, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        write_log(&mut tx, &log, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Newest first; `cursor`: the `seq` of the last entry of the previous page.
    pub async fn admin_log(&self, limit: i64, cursor: Option<i64>) -> Result<Vec<LogEntry>> {
        let rows = sqlx::query(
            "SELECT seq, at, admin, action, target, detail FROM admin_log \
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(cursor.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LogEntry {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    admin: r.try_get("admin")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------------ notices

    /// Queues a notice once per `dedupe` key; false when it was queued before.
    pub async fn queue_notice(
        &self,
        dedupe: &str,
        event: &str,
        token: &str,
        body: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO notices (dedupe, event, token_id, body, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (dedupe) DO NOTHING",
        )
        .bind(dedupe)
        .bind(event)
        .bind(token)
        .bind(body)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The oldest notice not yet delivered, counting the attempt.
    pub async fn next_notice(&self, _now: i64) -> Result<Option<(i64, String)>> {
        let row =
            sqlx::query("SELECT seq, body FROM notices WHERE sent_at IS NULL ORDER BY seq LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some(r) = row else { return Ok(None) };
        let seq: i64 = r.try_get("seq")?;
        sqlx::query("UPDATE notices SET attempts = attempts + 1 WHERE seq = $1")
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(Some((seq, r.try_get("body")?)))
    }

    pub async fn notice_sent(&self, seq: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE notices SET sent_at = $1 WHERE seq = $2")
            .bind(now)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ fleet

    pub async fn node_connected(
        &self,
        node: &str,
        cluster: &str,
        instance: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (node_id, cluster, instance, connected_at, last_seen, connected) \
             VALUES ($1, $2, $3, $4, $4, 1) ON CONFLICT (node_id) DO UPDATE SET cluster = $2, \
             instance = $3, connected_at = $4, last_seen = $4, connected = 1",
        )
        .bind(node)
        .bind(cluster)
        .bind(instance)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An ACK (`error` None: `version` accepted) or a NACK (`error`: Envoy's message).
    pub async fn node_answered(
        &self,
        node: &str,
        version: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let q = match error {
            None => sqlx::query(
                "UPDATE nodes SET acked_version = $1, last_error = NULL, last_seen = $2 WHERE node_id = $3",
            )
            .bind(version)
            .bind(now)
            .bind(node),
            Some(e) => sqlx::query(
                "UPDATE nodes SET last_error = $1, last_seen = $2 WHERE node_id = $3",
            )
            .bind(e)
            .bind(now)
            .bind(node),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// A stream closed: the node is shown as disconnected (unless it reconnected meanwhile,
    /// possibly to another instance).
    pub async fn node_disconnected(
        &self,
        node: &str,
        instance: &str,
        connected_at: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET connected = 0, last_seen = $1 \
             WHERE node_id = $2 AND instance = $3 AND connected_at = $4",
        )
        .bind(now)
        .bind(node)
        .bind(instance)
        .bind(connected_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps this instance's connected nodes fresh; an instance that died stops doing so,
    /// and its nodes then read as disconnected.
    pub async fn nodes_seen(&self, instance: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET last_seen = $1 WHERE instance = $2 AND connected = 1")
            .bind(now)
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT node_id, cluster, instance, acked_version, last_error, connected_at, last_seen, \
             connected FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    node_id: r.try_get("node_id")?,
                    cluster: r.try_get("cluster")?,
                    instance: r.try_get("instance")?,
                    acked_version: r.try_get("acked_version")?,
                    last_error: r.try_get("last_error")?,
                    connected_at: r.try_get("connected_at")?,
                    last_seen: r.try_get("last_seen")?,
                    connected: r.try_get::<i64, _>("connected")? != 0,
                })
            })
            .collect()
    }
}

enum Bind {
    I(i64),
    S(String),
}

async fn bump(tx: &mut sqlx::Transaction<'_, sqlx::Any>, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE config_state SET generation = generation + 1, changed_at = $1 WHERE id = 1",
    )
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_log(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    log: &Audit<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO admin_log (at, admin, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now)
    .bind(log.admin)
    .bind(log.action)
    .bind(log.target)
    .bind(log.detail.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = url.get(s + 3..at).unwrap_or("");
            let user = creds.split(':').next().unwrap_or("");
            format!(
                "{}{}@{}",
                url.get(..s + 3).unwrap_or(""),
                user,
                url.get(at + 1..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
