//! The admin API under `/api/v1` (SPEC §15): thin handlers that parse, call the store and
//! the core, and map every error to one JSON shape in one place ([`ApiError`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokengate_core::{explain, snippet, time, token};

use crate::plugin::{self, Invalid};
use crate::publish;
use crate::secret;
use crate::store::{Audit, StoreError, TokenQuery, TokenRow};
use crate::{now_ms, App};

const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------- errors

/// Every API error: `{"error", "field"?, "line"?, "column"?}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }
    fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::from(Invalid::new(field, message))
    }
    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no {what}"))
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        let mut body = Map::new();
        body.insert("error".into(), json!(e.message));
        if let Some(f) = e.field.filter(|f| !f.is_empty()) {
            body.insert("field".into(), json!(f));
        }
        if let Some(l) = e.line {
            body.insert("line".into(), json!(l));
        }
        if let Some(c) = e.column {
            body.insert("column".into(), json!(c));
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: Value::Object(body),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found("such object"),
            StoreError::Conflict(_) => {
                ApiError::conflict("an object with this id or secret already exists")
            }
            StoreError::Db(m) => {
                // The detail goes to the log, not to the client.
                tracing::error!("database: {m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tokengate-server\""),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------- auth

/// The signed-in admin: an API key (`Authorization: Bearer tga_…`) or a console session.
pub struct Admin(pub String);

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "sign in or give an admin API key (Authorization: Bearer tga_…)",
            )
        };
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let value = auth.to_str().map_err(|_| unauthorized())?;
            let (scheme, key) = value.split_once(' ').ok_or_else(unauthorized)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(unauthorized());
            }
            let key = key.trim();
            if !key.starts_with(secret::ADMIN_KEY_PREFIX) {
                return Err(unauthorized());
            }
            return match app.store.admin_for_key(&secret::sha256_hex(key)).await? {
                Some(admin) => Ok(Admin(admin)),
                None => Err(unauthorized()),
            };
        }
        match crate::console::session_admin(parts, app).await? {
            Some(admin) => Ok(Admin(admin)),
            None => Err(unauthorized()),
        }
    }
}

// ---------------------------------------------------------------------------- routes

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route(
            "/api/v1/tokens/{id}",
            get(get_token).patch(patch_token).delete(delete_token),
        )
        .route("/api/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/api/v1/tokens/{id}/suggest", get(suggest_lines))
        .route("/api/v1/tokens/{id}/rotate", post(rotate_token))
        .route("/api/v1/tokens/{id}/promote", post(promote_shadow))
        .route("/api/v1/tokens/{id}/shadow", get(shadow_report))
        .route("/api/v1/settings", get(get_settings).put(put_settings))
        .route("/api/v1/config", get(get_config))
        .route("/api/v1/fleet", get(get_fleet))
        .route("/api/v1/explain", post(post_explain))
        .route("/api/v1/admin-log", get(get_admin_log))
        .route("/api/v1/audit", get(crate::audit::query))
        .route(
            "/audit",
            post(crate::audit::receive).layer(axum::extract::DefaultBodyLimit::max(32 << 20)),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("such endpoint") })
}

fn parse_body(body: &Bytes) -> ApiResult<Map<String, Value>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::from(Invalid {
            message: format!("the body is not JSON: {e}"),
            field: None,
            line: Some(e.line()),
            column: Some(e.column()),
        })
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad("", "the body must be a JSON object")),
    }
}

fn only(body: &Map<String, Value>, allowed: &[&str]) -> ApiResult<()> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(
            k,
            format!("unknown field `{k}` (allowed: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn opt_str<'a>(body: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(key, format!("`{key}` must be a string"))),
    }
}

fn str_list(body: &Map<String, Value>, key: &str) -> ApiResult<Option<Vec<String>>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad(&format!("{key}[{i}]"), "must be a string"))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(ApiError::bad(
            key,
            format!("`{key}` must be a list of strings"),
        )),
    }
}

/// `limit_to`: a list, or one string with `\n` or `<br>` between lines (as the original
/// app's API returns them). Blank lines between are dropped.
fn lines(body: &Map<String, Value>, key: &str) -> ApiResult<Option<Vec<String>>> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(Some(split_lines(s))),
        _ => str_list(body, key),
    }
}

pub fn split_lines(s: &str) -> Vec<String> {
    tokengate_core::restriction::split_text(s)
}

fn expiry(body: &Map<String, Value>, now: i64) -> ApiResult<Option<i64>> {
    let at = opt_str(body, "expires")?;
    let days = body.get("expires_in_days").filter(|v| !v.is_null());
    match (at, days) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "expires",
            "give `expires` or `expires_in_days`, not both",
        )),
        (Some(t), None) => time::parse_rfc3339(t)
            .map(Some)
            .ok_or_else(|| ApiError::bad("expires", format!("`{t}` is not an RFC 3339 time"))),
        (None, Some(d)) => match d.as_u64() {
            Some(d @ 1..=36_500) => Ok(Some(
                now.saturating_add(i64::try_from(d).unwrap_or(0) * DAY_MS),
            )),
            _ => Err(ApiError::bad(
                "expires_in_days",
                "must be a whole number of days, 1 to 36500",
            )),
        },
        (None, None) => Ok(None),
    }
}

// ---------------------------------------------------------------------------- tokens

fn status_of(t: &TokenRow, now: i64) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

fn ts(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| json!(time::format_rfc3339_ms(m)))
}

pub fn token_json(t: &TokenRow, now: i64) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "user": t.user,
        "sha256": t.sha256,
        "created_at": time::format_rfc3339_ms(t.created_at),
        "created_by": t.created_by,
        "expires": t.expires_at.map(plugin::rfc3339_s),
        "status": status_of(t, now),
        "revoked_at": ts(t.revoked_at),
        "revoked_by": t.revoked_by,
        "ips": t.ips,
        "run_as": t.run_as,
        "limit_to": t.limit_to,
        "shadow_limit_to": t.shadow_limit_to,
        "previous": t.previous.as_ref().map(|p| json!({
            "sha256": p.sha256,
            "since": time::format_rfc3339_ms(p.since),
            "until": time::format_rfc3339_ms(p.until),
        })),
        "usage": {
            "calls": t.usage.calls,
            "allowed": t.usage.allowed,
            "denied": t.usage.denied,
            "last_used_at": ts(t.usage.last_used_at),
            "last_client_ip": t.usage.last_client_ip,
        },
    })
}

#[derive(serde::Deserialize)]
struct ListParams {
    status: Option<String>,
    user: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn limit_of(raw: Option<&str>, default: i64, max: i64) -> ApiResult<i64> {
    match raw {
        None | Some("") => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                "limit",
                format!("`limit` must be 1 to {max}"),
            )),
        },
    }
}

async fn list_tokens(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let limit = limit_of(p.limit.as_deref(), 100, 1000)?;
    if let Some(s) = p.status.as_deref().filter(|s| !s.is_empty()) {
        if !["active", "expired", "revoked", "expiring", "unused"].contains(&s) {
            return Err(ApiError::bad(
                "status",
                "status is one of active, expired, revoked, expiring, unused",
            ));
        }
    }
    let now = now_ms();
    // One more than asked tells whether there is a next page.
    let q = TokenQuery {
        status: p.status,
        user: p.user,
        q: p.q,
        limit: limit + 1,
        cursor: p.cursor,
    };
    let mut rows = app.store.list_tokens(&q, now).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = if more {
        rows.last().map(|t| t.id.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "tokens": rows.iter().map(|t| token_json(t, now)).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// An id from the name (the core's rule, as `tokenctl import` uses), made unique with a suffix.
async fn id_for(app: &App, name: &str) -> ApiResult<String> {
    let mut base = tokengate_core::token::id_from_name(name);
    if base.is_empty() {
        base = "token".into();
    }
    if !app.store.id_exists(&base).await? {
        return Ok(base);
    }
    for _ in 0..8 {
        let candidate = format!(
            "{base}-{}",
            secret::random_base62(6).map_err(internal)?.to_lowercase()
        );
        if !app.store.id_exists(&candidate).await? {
            return Ok(candidate);
        }
    }
    Err(ApiError::conflict("could not find a free id; give one"))
}

/// Stores an edited token (edit, rotate, promote): checked by the core against the current
/// settings first, logged with the change, then pushed.
async fn save_token(
    app: &App,
    t: &TokenRow,
    admin: &str,
    action: &str,
    detail: String,
    now: i64,
) -> ApiResult<()> {
    let settings = publish::settings(&app.store).await.map_err(internal)?;
    plugin::check_token(&settings, &plugin::token_entry(t))?;
    let log = Audit {
        admin,
        action,
        target: Some(&t.id),
        detail: Some(detail),
    };
    app.store.update_token(t, log, now).await?;
    app.publisher.changed();
    app.metrics.changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A store error about token `id`: 404 names the token.
fn token_error(e: StoreError, id: &str) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(&format!("token `{id}`")),
        o => o.into(),
    }
}

/// `days=` of a window over the audit lines, 1 to 366.
fn days_param(raw: Option<&str>, default: i64) -> ApiResult<i64> {
    match raw.filter(|d| !d.is_empty()) {
        None => Ok(default),
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (1..=366).contains(&n) => Ok(n),
            _ => Err(ApiError::bad("days", "`days` must be 1 to 366")),
        },
    }
}

fn internal(e: String) -> ApiError {
    tracing::error!("{e}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Snippets for the create answer: the shared implementation `tokenctl new` prints too.
fn snippets(app: &App, user: Option<&str>, secret_text: &str) -> Value {
    let url = format!(
        "{}/rest/api/2/myself",
        app.opts.public_url.trim_end_matches('/')
    );
    let s = snippet::Secret::Literal(secret_text);
    json!({
        "curl_basic": snippet::curl(&url, user, &s, false),
        "curl_bearer": snippet::curl(&url, user, &s, true),
        "javascript": snippet::javascript(&url, user, &s, user.is_some()),
    })
}

pub(crate) async fn create_token(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_body(&body)?;
    only(
        &body,
        &[
            "name",
            "id",
            "user",
            "expires",
            "expires_in_days",
            "ips",
            "run_as",
            "limit_to",
            "shadow_limit_to",
            "token",
        ],
    )?;
    let now = now_ms();
    let name = opt_str(&body, "name")?
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad("name", "a token needs a `name`"))?
        .to_owned();
    let id = match opt_str(&body, "id")? {
        Some(id) => id.to_owned(),
        None => id_for(&app, &name).await?,
    };
    let imported = opt_str(&body, "token")?.map(str::to_owned);
    let (secret_text, sha256) = match &imported {
        Some(t) => {
            // The core's rules for a plaintext token (printable ASCII, no spaces or commas).
            let probe = json!({"id": id, "name": name, "token": t});
            plugin::check_token(&json!({}), &probe)?;
            (None, secret::sha256_hex(t))
        }
        None => {
            let t = token::generate().map_err(internal)?;
            let d = secret::sha256_hex(&t);
            (Some(t), d)
        }
    };
    let row = TokenRow {
        id: id.clone(),
        name,
        user: opt_str(&body, "user")?.map(str::to_owned),
        sha256,
        created_at: now,
        created_by: admin.clone(),
        expires_at: expiry(&body, now)?,
        revoked_at: None,
        revoked_by: None,
        ips: str_list(&body, "ips")?.unwrap_or_default(),
        run_as: str_list(&body, "run_as")?.unwrap_or_default(),
        limit_to: lines(&body, "limit_to")?.unwrap_or_default(),
        shadow_limit_to: lines(&body, "shadow_limit_to")?.unwrap_or_default(),
        previous: None,
        usage: Default::default(),
    };
    let settings = publish::settings(&app.store).await.map_err(internal)?;
    plugin::check_token(&settings, &plugin::token_entry(&row))?;
    app.store
        .insert_token(
            &row,
            Audit {
                admin: &admin,
                action: "token.create",
                target: Some(&id),
                detail: Some(format!(
                    "user {}{}",
                    row.user.as_deref().unwrap_or("(any)"),
                    if imported.is_some() {
                        "; imported an existing secret"
                    } else {
                        ""
                    }
                )),
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) if imported.is_some() => ApiError::conflict(format!(
                "a token with id `{id}` or with this secret already exists"
            )),
            StoreError::Conflict(_) => {
                ApiError::conflict(format!("a token with id `{id}` already exists"))
            }
            other => other.into(),
        })?;
    app.publisher.changed();
    app.metrics.changes.fetch_add(1, Ordering::Relaxed);
    let mut answer = Map::new();
    answer.insert("token".into(), token_json(&row, now));
    if let Some(s) = &secret_text {
        answer.insert("secret".into(), json!(s));
        answer.insert("snippets".into(), snippets(&app, row.user.as_deref(), s));
    }
    let mut r = (StatusCode::CREATED, Json(Value::Object(answer))).into_response();
    // The secret is in this answer only: no cache may keep it.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

async fn get_token(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = app
        .store
        .token(&id)
        .await
        .map_err(|e| token_error(e, &id))?;
    Ok(Json(token_json(&t, now_ms())))
}

async fn secure_mode(app: &App) -> ApiResult<bool> {
    let s = publish::settings(&app.store).await.map_err(internal)?;
    Ok(s.get("secure_mode")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

pub(crate) async fn patch_token(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    for fixed in [
        "id",
        "user",
        "sha256",
        "token",
        "created_at",
        "created_by",
        "status",
        "revoked_at",
        "revoked_by",
        "usage",
    ] {
        if body.contains_key(fixed) {
            return Err(ApiError::bad(fixed, format!("`{fixed}` cannot be changed")));
        }
    }
    only(
        &body,
        &[
            "name",
            "limit_to",
            "ips",
            "run_as",
            "expires",
            "expires_in_days",
            "shadow_limit_to",
        ],
    )?;
    let mut t = app
        .store
        .token(&id)
        .await
        .map_err(|e| token_error(e, &id))?;
    if secure_mode(&app).await? {
        return Err(ApiError::conflict(
            "secure mode: tokens cannot be changed, only revoked or deleted",
        ));
    }
    if t.revoked_at.is_some() {
        return Err(ApiError::conflict("the token is revoked; create a new one"));
    }
    let now = now_ms();
    let mut changed = Vec::new();
    if let Some(name) = opt_str(&body, "name")? {
        let name = name.trim();
        if name.is_empty() {
            return Err(ApiError::bad("name", "`name` cannot be empty"));
        }
        t.name = name.to_owned();
        changed.push("name");
    }
    if let Some(l) = lines(&body, "limit_to")? {
        t.limit_to = l;
        changed.push("limit_to");
    }
    if let Some(l) = lines(&body, "shadow_limit_to")? {
        t.shadow_limit_to = l;
        changed.push("shadow_limit_to");
    }
    if let Some(ips) = str_list(&body, "ips")? {
        t.ips = ips;
        changed.push("ips");
    }
    if let Some(r) = str_list(&body, "run_as")? {
        t.run_as = r;
        changed.push("run_as");
    }
    if let Some(e) = expiry(&body, now)? {
        // Never a later expiry: a token's life only shortens, as in the original feature.
        if t.expires_at.is_some_and(|old| e > old) {
            return Err(ApiError::conflict(
                "the expiry can only be brought forward, never extended",
            ));
        }
        t.expires_at = Some(e);
        changed.push("expires");
    }
    if changed.is_empty() {
        return Ok(Json(token_json(&t, now)));
    }
    save_token(
        &app,
        &t,
        &admin,
        "token.edit",
        format!("changed {}", changed.join(", ")),
        now,
    )
    .await?;
    Ok(Json(token_json(&t, now)))
}

pub(crate) async fn revoke_token(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let log = Audit {
        admin: &admin,
        action: "token.revoke",
        target: Some(&id),
        detail: None,
    };
    let fresh = app
        .store
        .revoke_token(&id, log, now)
        .await
        .map_err(|e| token_error(e, &id))?;
    if fresh {
        app.publisher.changed();
        app.metrics.changes.fetch_add(1, Ordering::Relaxed);
    }
    let t = app.store.token(&id).await?;
    Ok(Json(token_json(&t, now)))
}

/// `POST /api/v1/tokens/{id}/rotate {"grace_hours": N}` (SPEC §19): a new secret, shown once;
/// the old one keeps working for N hours (default 24, at most 720), so scripts can switch over.
pub(crate) async fn rotate_token(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = if body.is_empty() {
        Map::new()
    } else {
        parse_body(&body)?
    };
    only(&body, &["grace_hours"])?;
    // Hours, fractions allowed (0.5 = 30 minutes).
    let grace = match body.get("grace_hours") {
        None | Some(Value::Null) => 24.0,
        Some(v) => match v.as_f64() {
            Some(h) if (0.0..=720.0).contains(&h) => h,
            _ => {
                return Err(ApiError::bad(
                    "grace_hours",
                    "`grace_hours` must be 0 to 720",
                ))
            }
        },
    };
    #[allow(clippy::cast_possible_truncation)]
    let grace_ms = (grace * 3_600_000.0) as i64;
    let mut t = app
        .store
        .token(&id)
        .await
        .map_err(|e| token_error(e, &id))?;
    if t.revoked_at.is_some() {
        return Err(ApiError::conflict("the token is revoked; create a new one"));
    }
    let now = now_ms();
    let secret_text = token::generate().map_err(internal)?;
    t.previous = (grace_ms > 0).then(|| crate::store::PreviousSecret {
        sha256: t.sha256.clone(),
        since: now,
        until: now + grace_ms,
    });
    t.sha256 = secret::sha256_hex(&secret_text);
    save_token(
        &app,
        &t,
        &admin,
        "token.rotate",
        format!("new secret; the previous one works for {grace} h"),
        now,
    )
    .await?;
    let mut answer = Map::new();
    answer.insert("token".into(), token_json(&t, now));
    answer.insert("secret".into(), json!(secret_text));
    answer.insert(
        "snippets".into(),
        snippets(&app, t.user.as_deref(), &secret_text),
    );
    let mut r = (StatusCode::OK, Json(Value::Object(answer))).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// `GET /api/v1/tokens/{id}/shadow?days=7`: how the shadow lines would have decided the
/// token's calls (per line: calls it matched; `would_refuse`: calls none matched).
pub(crate) async fn shadow_report(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(id): Path<String>,
    Query(p): Query<SuggestParams>,
) -> ApiResult<Json<Value>> {
    let days = days_param(p.days.as_deref(), 7)?;
    let t = app
        .store
        .token(&id)
        .await
        .map_err(|e| token_error(e, &id))?;
    let mut per_line = vec![0i64; t.shadow_limit_to.len()];
    let (mut would_refuse, mut not_evaluated, mut previous_secret) = (0i64, 0i64, 0i64);
    for (extra, n) in app
        .store
        .extra_counts(&id, now_ms() - days * DAY_MS)
        .await?
    {
        let Ok(v) = serde_json::from_str::<Value>(&extra) else {
            continue;
        };
        match v.get("shadow_rule") {
            Some(Value::Null) => not_evaluated += n,
            Some(r) => match r.as_u64() {
                Some(0) => would_refuse += n,
                Some(k) => {
                    if let Some(slot) = usize::try_from(k - 1)
                        .ok()
                        .and_then(|i| per_line.get_mut(i))
                    {
                        *slot += n;
                    }
                }
                None => {}
            },
            None => {}
        }
        if v.get("secret").and_then(Value::as_str) == Some("previous") {
            previous_secret += n;
        }
    }
    Ok(Json(json!({
        "token": id,
        "days": days,
        "lines": t.shadow_limit_to.iter().zip(&per_line).enumerate().map(|(i, (l, n))| json!({
            "line": i + 1, "source": l, "calls": n,
        })).collect::<Vec<_>>(),
        "would_refuse": would_refuse,
        "not_evaluated": not_evaluated,
        "previous_secret_calls": previous_secret,
    })))
}

/// `POST /api/v1/tokens/{id}/promote`: the shadow lines become the enforced lines, in one
/// change (SPEC §19).
pub(crate) async fn promote_shadow(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut t = app
        .store
        .token(&id)
        .await
        .map_err(|e| token_error(e, &id))?;
    if secure_mode(&app).await? {
        return Err(ApiError::conflict(
            "secure mode: tokens cannot be changed, only revoked or deleted",
        ));
    }
    if t.shadow_limit_to.is_empty() {
        return Err(ApiError::conflict(
            "the token has no shadow lines to promote",
        ));
    }
    let now = now_ms();
    t.limit_to = std::mem::take(&mut t.shadow_limit_to);
    save_token(
        &app,
        &t,
        &admin,
        "token.promote",
        format!("{} shadow line(s) now enforced", t.limit_to.len()),
        now,
    )
    .await?;
    Ok(Json(token_json(&t, now)))
}

pub(crate) async fn delete_token(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let log = Audit {
        admin: &admin,
        action: "token.delete",
        target: Some(&id),
        detail: None,
    };
    app.store
        .delete_token(&id, log, now_ms())
        .await
        .map_err(|e| token_error(e, &id))?;
    app.publisher.changed();
    app.metrics.changes.fetch_add(1, Ordering::Relaxed);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub(crate) struct SuggestParams {
    pub(crate) days: Option<String>,
}

/// `GET /api/v1/tokens/{id}/suggest?days=30`: lines that cover every allowed call of the token
/// in the window, as narrow as the calls allow (SPEC §19).
pub(crate) async fn suggest_lines(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(id): Path<String>,
    Query(p): Query<SuggestParams>,
) -> ApiResult<Json<Value>> {
    let days = days_param(p.days.as_deref(), 30)?;
    app.store
        .token(&id)
        .await
        .map_err(|e| token_error(e, &id))?;
    let calls = app.store.call_counts(&id, now_ms() - days * DAY_MS).await?;
    let lines = crate::suggest::suggest(&calls);
    Ok(Json(json!({
        "token": id,
        "days": days,
        "calls": calls.iter().map(|c| c.2).sum::<i64>(),
        "distinct_calls": calls.len(),
        "lines": lines.iter().map(|l| json!({
            "line": l.line, "methods": l.methods, "calls": l.calls, "examples": l.examples,
        })).collect::<Vec<_>>(),
    })))
}

// ---------------------------------------------------------------------------- settings, config, fleet

async fn get_settings(State(app): State<Arc<App>>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(publish::settings(&app.store).await.map_err(internal)?))
}

pub(crate) async fn put_settings(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let settings = Value::Object(parse_body(&body)?);
    plugin::check_settings(&settings)?;
    // Every stored token must still load under the new settings.
    let tokens = app.store.all_tokens().await?;
    plugin::build(&settings, "Bearer x", &tokens)?;
    app.store
        .put_plugin_settings(
            &settings,
            Audit {
                admin: &admin,
                action: "settings.update",
                target: None,
                detail: Some(settings.to_string()),
            },
            now_ms(),
        )
        .await?;
    app.publisher.changed();
    app.metrics.changes.fetch_add(1, Ordering::Relaxed);
    Ok(Json(settings))
}

async fn get_config(State(app): State<Arc<App>>, _admin: Admin) -> ApiResult<Json<Value>> {
    let snap = app.publisher.current();
    Ok(Json(json!({
        "version": snap.version,
        "configuration": plugin::redacted(&snap.config),
    })))
}

/// A node counts as connected while its instance keeps refreshing it.
const NODE_STALE_MS: i64 = 15_000;

async fn get_fleet(State(app): State<Arc<App>>, _admin: Admin) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let nodes = app.store.nodes().await?;
    Ok(Json(json!({
        "version": app.publisher.current().version,
        "nodes": nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "cluster": n.cluster,
            "acked_version": n.acked_version,
            "last_error": n.last_error,
            "connected_at": time::format_rfc3339_ms(n.connected_at),
            "last_seen": time::format_rfc3339_ms(n.last_seen),
            "connected": n.connected && now - n.last_seen < NODE_STALE_MS,
            "instance": n.instance,
        })).collect::<Vec<_>>(),
    })))
}

// ---------------------------------------------------------------------------- explain

async fn post_explain(
    State(app): State<Arc<App>>,
    _admin: Admin,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    only(&body, &["method", "url", "headers", "body", "client_ip"])?;
    let method = opt_str(&body, "method")?.unwrap_or("GET").trim().to_owned();
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic() || c == b'-') {
        return Err(ApiError::bad(
            "method",
            format!("`{method}` is not an HTTP method"),
        ));
    }
    let url =
        opt_str(&body, "url")?.ok_or_else(|| ApiError::bad("url", "give the request's `url`"))?;
    let target = explain::target_of(url).map_err(|e| ApiError::bad("url", e))?;
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match body.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, h) in items.iter().enumerate() {
                let pair = h.as_array().filter(|p| p.len() == 2);
                let (Some(k), Some(v)) = (
                    pair.and_then(|p| p.first()).and_then(Value::as_str),
                    pair.and_then(|p| p.get(1)).and_then(Value::as_str),
                ) else {
                    return Err(ApiError::bad(
                        &format!("headers[{i}]"),
                        "each header is [name, value]",
                    ));
                };
                headers
                    .entry(k.to_ascii_lowercase())
                    .or_default()
                    .push(v.to_owned());
            }
        }
        Some(_) => {
            return Err(ApiError::bad(
                "headers",
                "`headers` is a list of [name, value]",
            ))
        }
    }
    let req_body = opt_str(&body, "body")?.map(|b| b.as_bytes().to_vec());
    if let Some(b) = &req_body {
        headers
            .entry("content-length".into())
            .or_insert_with(|| vec![b.len().to_string()]);
    }
    let client = match opt_str(&body, "client_ip")? {
        None => None,
        Some(ip) => match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => Some(format!("[{v6}]:0")),
            Ok(v4) => Some(format!("{v4}:0")),
            Err(_) => return Err(ApiError::bad("client_ip", "not an IP address")),
        },
    };
    let req = explain::Request {
        method,
        target,
        headers,
        body: req_body,
        client,
    };
    let snap = app.publisher.current();
    let out = explain::explain(&snap.compiled, &req, now_ms());
    Ok(Json(out.json))
}

// ---------------------------------------------------------------------------- admin log

#[derive(serde::Deserialize)]
struct PageParams {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn get_admin_log(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<Value>> {
    let limit = limit_of(p.limit.as_deref(), 100, 1000)?;
    let cursor = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad("cursor", "not a cursor from this API"))?,
        ),
    };
    let mut rows = app.store.admin_log(limit + 1, cursor).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = if more {
        rows.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(json!({
        "entries": rows.iter().map(|e| json!({
            "at": time::format_rfc3339_ms(e.at),
            "admin": e.admin,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
        "next": next,
    })))
}

// ---------------------------------------------------------------------------- health

async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.store.ping().await {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "version": app.publisher.current().version})),
        )
            .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer",
        )
        .into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let snap = app.publisher.current();
    let m = &app.metrics;
    let f = app.forwarder.as_deref();
    let text = format!(
        "# TYPE tokengate_server_config_generation gauge\ntokengate_server_config_generation {}\n\
         # TYPE tokengate_server_config_tokens gauge\ntokengate_server_config_tokens {}\n\
         # TYPE tokengate_server_config_bytes gauge\ntokengate_server_config_bytes {}\n\
         # TYPE tokengate_server_changes_total counter\ntokengate_server_changes_total {}\n\
         # TYPE tokengate_server_xds_pushes_total counter\ntokengate_server_xds_pushes_total {}\n\
         # TYPE tokengate_server_xds_acks_total counter\ntokengate_server_xds_acks_total {}\n\
         # TYPE tokengate_server_xds_nacks_total counter\ntokengate_server_xds_nacks_total {}\n\
         # TYPE tokengate_server_audit_lines_total counter\ntokengate_server_audit_lines_total {}\n\
         # TYPE tokengate_server_audit_refused_batches_total counter\ntokengate_server_audit_refused_batches_total {}\n\
         # TYPE tokengate_server_audit_duplicate_batches_total counter\ntokengate_server_audit_duplicate_batches_total {}\n\
         # TYPE tokengate_server_forward_sent_total counter\ntokengate_server_forward_sent_total {}\n\
         # TYPE tokengate_server_forward_failed_total counter\ntokengate_server_forward_failed_total {}\n\
         # TYPE tokengate_server_forward_dropped_total counter\ntokengate_server_forward_dropped_total {}\n\
         # TYPE tokengate_server_forward_queued gauge\ntokengate_server_forward_queued {}\n",
        snap.generation,
        snap.tokens,
        snap.bytes,
        m.changes.load(Ordering::Relaxed),
        m.pushes.load(Ordering::Relaxed),
        m.acks.load(Ordering::Relaxed),
        m.nacks.load(Ordering::Relaxed),
        m.audit_lines.load(Ordering::Relaxed),
        m.audit_refused.load(Ordering::Relaxed),
        m.audit_duplicates.load(Ordering::Relaxed),
        f.map_or(0, |f| f.sent.load(Ordering::Relaxed)),
        f.map_or(0, |f| f.failed.load(Ordering::Relaxed)),
        f.map_or(0, |f| f.dropped.load(Ordering::Relaxed)),
        f.map_or(0, |f| f.queued()),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
