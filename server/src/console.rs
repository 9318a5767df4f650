//! The web console (SPEC §17): server-rendered pages on `--listen`, a little JavaScript
//! served from the binary, and console sessions, which the API's [`crate::api::Admin`] also
//! accepts (with the `x-csrf-token` header on unsafe methods).
//!
//! Security, in numbers (README "Console"):
//! - Session cookie `tg_session`: 256 random bits (43 base62 characters), `HttpOnly`,
//!   `SameSite=Strict`, `Path=/`, `Secure` when the request came over HTTPS
//!   (`X-Forwarded-Proto: https` from the proxy in front). The database keeps only the
//!   cookie's SHA-256 digest. Idle timeout 8 h; sign-out deletes the session.
//! - CSRF: every form carries a token, and the API wants it as `x-csrf-token` from a session;
//!   it is SHA-256("csrf:" + the session secret), so it is neither stored nor derivable from
//!   the stored digest. Missing or wrong: 403.
//! - Sign-in: each consecutive failure of an admin delays the answer by 250 ms × the number
//!   of failures (at most 2 s); the 5th consecutive failure locks the admin for 15 minutes,
//!   during which the password is not even checked. A success resets the count;
//!   `tokengate-server admin add NAME` (a new password) unlocks. Unknown names get the same
//!   Argon2id work and a 1 s delay. Every success and failure is in the admin log
//!   (`admin.login`, `admin.login_failed`).
//! - Every answer: a Content-Security-Policy without inline script or style
//!   (`script-src 'self'`), `frame-ancestors 'none'` and `X-Frame-Options: DENY`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`; pages are
//!   `Cache-Control: no-store`.

mod html;
mod pages;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use crate::api::ApiError;
use crate::secret;
use crate::store::{Audit, StoreError};
use crate::{now_ms, App};

use html::{esc, Frame};

pub const COOKIE: &str = "tg_session";
const SESSION_SECRET_LEN: usize = 43;
pub const IDLE_MS: i64 = 8 * 3600 * 1000;
/// `last_seen` is written at most this often per session.
const TOUCH_MS: i64 = 60_000;
pub const LOCK_AFTER: i64 = 5;
pub const LOCK_MS: i64 = 15 * 60 * 1000;
const DELAY_STEP_MS: u64 = 250;
const DELAY_MAX_MS: u64 = 2000;
const UNKNOWN_DELAY_MS: u64 = 1000;

/// A signed-in console session.
pub struct Signed {
    pub admin: String,
    pub csrf: String,
    digest: String,
}

fn csrf_of(session_secret: &str) -> String {
    secret::sha256_hex(&format!("csrf:{session_secret}"))
}

fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| v.len() == SESSION_SECRET_LEN && v.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// The session a request's cookie names, if it is known and not idle for more than 8 h.
pub async fn session(headers: &HeaderMap, app: &App) -> Result<Option<Signed>, StoreError> {
    let Some(s) = cookie_secret(headers) else {
        return Ok(None);
    };
    let digest = secret::sha256_hex(&s);
    let Some((admin, last_seen)) = app.store.session(&digest).await? else {
        return Ok(None);
    };
    let now = now_ms();
    if now - last_seen > IDLE_MS {
        app.store.delete_session(&digest).await?;
        return Ok(None);
    }
    // An admin removed from the CLI loses the console at once.
    if app.store.admin(&admin).await?.is_none() {
        app.store.delete_session(&digest).await?;
        return Ok(None);
    }
    if now - last_seen > TOUCH_MS {
        app.store.touch_session(&digest, now).await?;
    }
    Ok(Some(Signed {
        admin,
        csrf: csrf_of(&s),
        digest,
    }))
}

/// For the API: the admin of a console session; unsafe methods also need `x-csrf-token`.
pub async fn session_admin(parts: &Parts, app: &App) -> Result<Option<String>, ApiError> {
    let Some(s) = session(&parts.headers, app).await? else {
        return Ok(None);
    };
    if !parts.method.is_safe() && !csrf_header_ok(&parts.headers, &s) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a console session needs the x-csrf-token header for this request",
        ));
    }
    Ok(Some(s.admin))
}

fn csrf_header_ok(headers: &HeaderMap, s: &Signed) -> bool {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| secret::same_secret(v, &s.csrf))
}

/// The form's `csrf` field matches the session.
pub fn csrf_form_ok(form: &HashMap<String, String>, s: &Signed) -> bool {
    form.get("csrf")
        .is_some_and(|v| secret::same_secret(v, &s.csrf))
}

pub fn csrf_refused(s: &Signed) -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form did not carry the console's CSRF token (it may come from another site, or \
         from a page older than your session). Nothing was changed. Reload the page and try again.",
        Some(s),
    )
}

/// Create forms already answered (their `nonce`), so that a reload or Back of the shown-once
/// page, which re-sends the form, cannot create a second token. Per instance; the oldest go
/// beyond 10,000.
fn used_nonces() -> &'static std::sync::Mutex<std::collections::VecDeque<String>> {
    static USED: OnceLock<std::sync::Mutex<std::collections::VecDeque<String>>> = OnceLock::new();
    USED.get_or_init(Default::default)
}

pub fn nonce_used(nonce: &str) -> bool {
    let used = used_nonces().lock().unwrap_or_else(|e| e.into_inner());
    used.iter().any(|n| n == nonce)
}

pub fn mark_nonce(nonce: &str) {
    let mut used = used_nonces().lock().unwrap_or_else(|e| e.into_inner());
    if used.len() >= 10_000 {
        used.pop_front();
    }
    used.push_back(nonce.to_owned());
}

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Signed, Response> {
        match session(&parts.headers, app).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/tokens", |p| p.as_str())
                    .to_owned();
                let target = if parts.method.is_safe() {
                    format!("/signin?next={}", html::url_enc(&next))
                } else {
                    "/signin".to_owned()
                };
                Err(Redirect::to(&target).into_response())
            }
            Err(e) => Err(store_error_page(e, None)),
        }
    }
}

pub fn store_error_page(e: StoreError, s: Option<&Signed>) -> Response {
    match e {
        StoreError::NotFound => {
            message_page(StatusCode::NOT_FOUND, "Not found", "No such object.", s)
        }
        StoreError::Conflict(_) => message_page(
            StatusCode::CONFLICT,
            "Conflict",
            "An object with this id already exists.",
            s,
        ),
        StoreError::Db(m) => {
            tracing::error!("database: {m}");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                "The database does not answer. Try again in a moment.",
                s,
            )
        }
    }
}

pub fn message_page(status: StatusCode, title: &str, text: &str, s: Option<&Signed>) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"message\">{}</p><p><a href=\"/tokens\">Back to the tokens</a></p>",
        esc(title),
        esc(text)
    );
    let frame = Frame {
        title,
        admin: s.map(|s| s.admin.as_str()),
        csrf: s.map(|s| s.csrf.as_str()),
        nav: "",
    };
    (status, axum::response::Html(html::page(&frame, &body))).into_response()
}

// ---------------------------------------------------------------------------- headers

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

// ---------------------------------------------------------------------------- routes

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/tokens") }))
        .route("/signin", get(signin_page).post(signin))
        .route("/signout", post(signout))
        .route("/tokens", get(pages::tokens))
        .route(
            "/tokens/new",
            get(pages::new_token).post(pages::create_token),
        )
        .route("/tokens/{id}", get(pages::token))
        .route("/tokens/{id}/explain", post(pages::explain))
        .route(
            "/tokens/{id}/edit",
            get(pages::edit_token).post(pages::save_token),
        )
        .route(
            "/tokens/{id}/revoke",
            get(pages::confirm_revoke).post(pages::revoke),
        )
        .route(
            "/tokens/{id}/delete",
            get(pages::confirm_delete).post(pages::delete),
        )
        .route(
            "/tokens/{id}/suggest",
            get(pages::suggest).post(pages::add_shadow),
        )
        .route(
            "/tokens/{id}/promote",
            get(pages::confirm_promote).post(pages::promote),
        )
        .route(
            "/tokens/{id}/rotate",
            get(pages::confirm_rotate).post(pages::rotate),
        )
        .route("/console/check", post(pages::check_lines))
        .route("/audit-log", get(pages::audit_log))
        .route("/audit-log/export", get(pages::audit_export))
        .route("/fleet", get(pages::fleet))
        .route("/settings", get(pages::settings).post(pages::save_settings))
        .route("/admin-log", get(pages::admin_log))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../assets/console.js"),
    )
        .into_response()
}

// ---------------------------------------------------------------------------- sign-in

fn safe_next(next: Option<&String>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.clone(),
        _ => "/tokens".to_owned(),
    }
}

fn signin_form(status: StatusCode, name: &str, next: &str, error: Option<&str>) -> Response {
    let err = error.map_or(String::new(), |e| {
        format!(
            "<div class=\"banner banner-error\" role=\"alert\" id=\"signin-error\">{}</div>",
            esc(e)
        )
    });
    let body = format!(
        "<div class=\"signin\"><h1>Sign in to tokengate</h1>{err}\
         <form method=\"post\" action=\"/signin\" class=\"form\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <div class=\"field\"><label for=\"name\">Admin name</label>\
         <input id=\"name\" name=\"name\" autocomplete=\"username\" required value=\"{name}\" autofocus></div>\
         <div class=\"field\"><label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></div>\
         <button type=\"submit\" class=\"primary\">Sign in</button></form>\
         <p class=\"hint\">Admins are added on the server: <code>tokengate-server admin add NAME</code> \
         (the password on stdin). Five failed sign-ins in a row lock the admin for 15 minutes.</p></div>",
        next = esc(next),
        name = esc(name),
    );
    let frame = Frame {
        title: "Sign in",
        admin: None,
        csrf: None,
        nav: "",
    };
    (status, axum::response::Html(html::page(&frame, &body))).into_response()
}

async fn signin_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Ok(Some(_)) = session(&headers, &app).await {
        return Redirect::to(&safe_next(q.get("next"))).into_response();
    }
    signin_form(StatusCode::OK, "", &safe_next(q.get("next")), None)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| secret::hash_password("tokengate dummy password").unwrap_or_default())
}

async fn verify(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let h = hash.unwrap_or_else(|| dummy_hash().to_owned());
        secret::verify_password(&password, &h) && known
    })
    .await
    .unwrap_or(false)
}

async fn signin(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let name: String = form
        .get("name")
        .map(|n| n.trim().chars().take(100).collect())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let next = safe_next(form.get("next"));
    let now = now_ms();
    let admin = match app.store.admin(&name).await {
        Ok(a) => a,
        Err(e) => return store_error_page(e, None),
    };
    let log = |detail: String| Audit {
        admin: &name,
        action: "admin.login_failed",
        target: Some(&name),
        detail: Some(detail),
    };
    let Some(admin) = admin else {
        let _ = verify(password, None).await;
        let _ = app.store.log(log("unknown admin".into()), now).await;
        tokio::time::sleep(Duration::from_millis(UNKNOWN_DELAY_MS)).await;
        return signin_form(
            StatusCode::UNAUTHORIZED,
            &name,
            &next,
            Some("Wrong admin name or password."),
        );
    };
    if let Some(until) = admin.locked_until.filter(|u| *u > now) {
        let _ = app
            .store
            .log(
                log("locked: refused without checking the password".into()),
                now,
            )
            .await;
        return signin_form(
            StatusCode::TOO_MANY_REQUESTS,
            &name,
            &next,
            Some(&format!(
                "Too many failed sign-ins: this admin is locked until {} UTC. \
                 Another admin can reset it with `tokengate-server admin add {name}`.",
                html::when(Some(until))
            )),
        );
    }
    if verify(password, admin.password_hash.clone()).await {
        let Ok(s) = secret::random_base62(SESSION_SECRET_LEN) else {
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "No randomness available on the server.",
                None,
            );
        };
        let digest = secret::sha256_hex(&s);
        let stored = async {
            app.store.set_login_state(&name, 0, None).await?;
            let _ = app.store.delete_sessions_before(now - IDLE_MS).await;
            app.store.insert_session(&digest, &name, now).await?;
            app.store
                .log(
                    Audit {
                        admin: &name,
                        action: "admin.login",
                        target: Some(&name),
                        detail: Some("console".into()),
                    },
                    now,
                )
                .await
        };
        if let Err(e) = stored.await {
            return store_error_page(e, None);
        }
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let cookie = format!(
            "{COOKIE}={s}; Path=/; HttpOnly; SameSite=Strict{}",
            if https { "; Secure" } else { "" }
        );
        let mut r = Redirect::to(&next).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    let failed = admin.failed_logins.saturating_add(1);
    let locked = (failed >= LOCK_AFTER).then_some(now + LOCK_MS);
    if let Err(e) = app.store.set_login_state(&name, failed, locked).await {
        return store_error_page(e, None);
    }
    let detail = match locked {
        Some(_) => format!("wrong password ({failed} in a row): locked for 15 minutes"),
        None => format!("wrong password ({failed} in a row)"),
    };
    let _ = app.store.log(log(detail), now).await;
    let delay = (DELAY_STEP_MS * u64::try_from(failed).unwrap_or(1)).min(DELAY_MAX_MS);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if locked.is_some() {
        return signin_form(
            StatusCode::TOO_MANY_REQUESTS,
            &name,
            &next,
            Some("Too many failed sign-ins: this admin is locked for 15 minutes."),
        );
    }
    signin_form(
        StatusCode::UNAUTHORIZED,
        &name,
        &next,
        Some("Wrong admin name or password."),
    )
}

async fn signout(
    s: Signed,
    State(app): State<Arc<App>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    if let Err(e) = app.store.delete_session(&s.digest).await {
        return store_error_page(e, Some(&s));
    }
    let mut r = Redirect::to("/signin").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tg_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        let n = |s: &str| safe_next(Some(&s.to_owned()));
        assert_eq!(n("/tokens/ci?x=1"), "/tokens/ci?x=1");
        assert_eq!(n("//evil.example/"), "/tokens");
        assert_eq!(n("https://evil.example/"), "/tokens");
        assert_eq!(n("/\\evil.example"), "/tokens");
        assert_eq!(safe_next(None), "/tokens");
    }

    #[test]
    fn the_session_cookie_is_read_strictly() {
        let good = "a".repeat(SESSION_SECRET_LEN);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={good}; y=2")).unwrap(),
        );
        assert_eq!(cookie_secret(&h), Some(good));
        h.insert(header::COOKIE, HeaderValue::from_static("tg_session=short"));
        assert_eq!(cookie_secret(&h), None);
        assert_ne!(csrf_of("a"), secret::sha256_hex("a"));
    }
}
