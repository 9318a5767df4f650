//! The console's pages (SPEC §17). Changes go through the API's own handlers
//! ([`crate::api`]), so the console and `/api/v1` validate, log and push alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde_json::{json, Map, Value};
use tokengate_core::{config, credential, explain as core_explain, record, snippet, time};

use super::html::{self, csrf_field, esc, lozenge, time_el, url_enc, Frame};
use super::{csrf_form_ok, csrf_refused, message_page, store_error_page, Signed};
use crate::api::{self, Admin, ApiError};
use crate::plugin;
use crate::publish;
use crate::secret;
use crate::store::{AuditQuery, StoreError, TokenQuery, TokenRow};
use crate::{now_ms, App};

const DAY_MS: i64 = 86_400_000;
const PAGE: usize = 50;

type Params = HashMap<String, String>;

fn param<'a>(p: &'a Params, k: &str) -> &'a str {
    p.get(k).map_or("", |v| v.trim())
}

fn render(s: &Signed, status: StatusCode, title: &str, nav: &str, body: &str) -> Response {
    let f = Frame {
        title,
        admin: Some(&s.admin),
        csrf: Some(&s.csrf),
        nav,
    };
    (status, Html(html::page(&f, body))).into_response()
}

/// Status and JSON body of one of the API's own answers.
async fn answer<T: IntoResponse>(r: Result<T, ApiError>) -> (StatusCode, Value) {
    let resp = match r {
        Ok(x) => x.into_response(),
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn settings_of(app: &App) -> Value {
    publish::settings(&app.store)
        .await
        .unwrap_or_else(|_| json!({}))
}

fn secure_mode(settings: &Value) -> bool {
    settings
        .get("secure_mode")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn qs(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url_enc(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn status_of(t: &TokenRow, now: i64) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

fn badges(t: &TokenRow, now: i64) -> String {
    let st = status_of(t, now);
    let mut out = lozenge(
        match st {
            "active" => "success",
            "revoked" => "removed",
            _ => "default",
        },
        st,
    );
    if st == "active" {
        if t.expires_at.is_some_and(|e| e <= now + 14 * DAY_MS) {
            out.push(' ');
            out.push_str(&lozenge("moved", "expiring soon"));
        }
        if t.usage.last_used_at.is_none_or(|u| u < now - 90 * DAY_MS) {
            out.push(' ');
            out.push_str(&lozenge("new", "unused"));
        }
    }
    out
}

fn flash(p: &Params) -> String {
    let text = match param(p, "done") {
        "revoked" => {
            "The token is revoked. Envoys refuse it within seconds (401 \"token revoked\")."
        }
        "deleted" => "The token is deleted.",
        "saved" => "The token is saved and pushed to every Envoy.",
        "settings" => "The settings are saved and pushed to every Envoy.",
        "shadowed" => {
            "The shadow lines are saved and pushed to every Envoy: they are evaluated on every \
             call of the token and never enforced. Watch their counts under Least privilege."
        }
        "promoted" => {
            "The shadow lines are now the token's restriction lines, enforced by every Envoy \
             within seconds."
        }
        _ => return String::new(),
    };
    format!(
        "<div class=\"banner banner-success\" role=\"status\">{}</div>",
        esc(text)
    )
}

// ---------------------------------------------------------------------------- tokens list

const SORTS: [(&str, &str); 7] = [
    ("name", "Token"),
    ("user", "User"),
    ("status", "Status"),
    ("expires", "Expires"),
    ("last_used", "Last used"),
    ("calls", "Calls"),
    ("created", "Created"),
];

pub async fn tokens(s: Signed, State(app): State<Arc<App>>, Query(p): Query<Params>) -> Response {
    let now = now_ms();
    let status = param(&p, "status");
    let status = if ["active", "expired", "revoked", "expiring", "unused"].contains(&status) {
        status
    } else {
        ""
    };
    let (q, user) = (param(&p, "q"), param(&p, "user"));
    let query = TokenQuery {
        status: Some(status.to_owned()).filter(|s| !s.is_empty()),
        user: Some(user.to_owned()).filter(|s| !s.is_empty()),
        q: Some(q.to_owned()).filter(|s| !s.is_empty()),
        limit: 100_000,
        cursor: None,
    };
    let mut rows = match app.store.list_tokens(&query, now).await {
        Ok(r) => r,
        Err(e) => return store_error_page(e, Some(&s)),
    };
    let users: BTreeSet<String> = match app.store.all_tokens().await {
        Ok(all) => all.into_iter().filter_map(|t| t.user).collect(),
        Err(e) => return store_error_page(e, Some(&s)),
    };
    let sort = match param(&p, "sort") {
        k if SORTS.iter().any(|(n, _)| *n == k) => k,
        _ => "name",
    };
    let desc = param(&p, "dir") == "desc";
    rows.sort_by(|a, b| {
        let o = match sort {
            "user" => a.user.cmp(&b.user),
            "status" => status_of(a, now).cmp(status_of(b, now)),
            "expires" => a
                .expires_at
                .unwrap_or(i64::MAX)
                .cmp(&b.expires_at.unwrap_or(i64::MAX)),
            "last_used" => a.usage.last_used_at.cmp(&b.usage.last_used_at),
            "calls" => a.usage.calls.cmp(&b.usage.calls),
            "created" => a.created_at.cmp(&b.created_at),
            _ => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
        }
        .then_with(|| a.id.cmp(&b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    let total = rows.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = param(&p, "page")
        .parse::<usize>()
        .unwrap_or(1)
        .clamp(1, pages);
    let shown: Vec<&TokenRow> = rows.iter().skip((page - 1) * PAGE).take(PAGE).collect();
    let dir = if desc { "desc" } else { "asc" };
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=\"page-head\"><h1>Tokens</h1><a class=\"button primary\" href=\"/tokens/new\">Create token</a></div>{}",
        flash(&p)
    );
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/tokens\" role=\"search\" aria-label=\"Filter tokens\">\
         <div class=\"field\"><label for=\"f-q\">Search id or name</label><input id=\"f-q\" name=\"q\" type=\"search\" value=\"{}\"></div>\
         <div class=\"field\"><label for=\"f-status\">Status</label><select id=\"f-status\" name=\"status\">",
        esc(q)
    );
    for (v, label) in [
        ("", "Any"),
        ("active", "Active"),
        ("expiring", "Expiring within 14 days"),
        ("unused", "Unused for 90 days"),
        ("expired", "Expired"),
        ("revoked", "Revoked"),
    ] {
        let sel = if v == status { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    let _ = write!(
        b,
        "</select></div><div class=\"field\"><label for=\"f-user\">User</label>\
         <input id=\"f-user\" name=\"user\" list=\"users\" value=\"{}\"><datalist id=\"users\">",
        esc(user)
    );
    for u in &users {
        let _ = write!(b, "<option value=\"{}\"></option>", esc(u));
    }
    let _ = write!(
        b,
        "</datalist></div><input type=\"hidden\" name=\"sort\" value=\"{sort}\"><input type=\"hidden\" name=\"dir\" value=\"{dir}\">\
         <div class=\"field actions\"><button type=\"submit\">Filter</button> <a href=\"/tokens\">Clear</a></div></form>"
    );
    let _ = write!(
        b,
        "<p class=\"count\" id=\"count\">{total} token{}{}</p>",
        if total == 1 { "" } else { "s" },
        if pages > 1 {
            format!(", page {page} of {pages}")
        } else {
            String::new()
        }
    );
    if shown.is_empty() {
        b.push_str(
            "<p class=\"empty\">No tokens match. <a href=\"/tokens/new\">Create one</a>.</p>",
        );
    } else {
        b.push_str("<div class=\"table-wrap\"><table class=\"data\" aria-describedby=\"count\"><thead><tr>");
        for (key, label) in SORTS {
            let (aria, next_dir, arrow) = if key == sort {
                if desc {
                    (" aria-sort=\"descending\"", "asc", " ▼")
                } else {
                    (" aria-sort=\"ascending\"", "desc", " ▲")
                }
            } else {
                ("", "asc", "")
            };
            let href = qs(&[
                ("q", q),
                ("status", status),
                ("user", user),
                ("sort", key),
                ("dir", next_dir),
            ]);
            let _ = write!(
                b,
                "<th scope=\"col\"{aria}><a href=\"/tokens{}\">{label}{arrow}</a></th>",
                esc(&href)
            );
        }
        b.push_str("</tr></thead><tbody>");
        for t in shown {
            let _ = write!(
                b,
                "<tr><td><a href=\"/tokens/{}\">{}</a><div class=\"sub mono\">{}</div></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=\"num\">{} <span class=\"sub\">({} allowed, {} refused)</span></td><td>{}</td></tr>",
                esc(&url_enc(&t.id)),
                esc(&t.name),
                esc(&t.id),
                t.user.as_deref().map_or("<span class=\"muted\">any (Basic)</span>".to_owned(), esc),
                badges(t, now),
                time_el(t.expires_at),
                time_el(t.usage.last_used_at),
                t.usage.calls,
                t.usage.allowed,
                t.usage.denied,
                time_el(Some(t.created_at)),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    if pages > 1 {
        b.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
        let link = |n: usize| {
            qs(&[
                ("q", q),
                ("status", status),
                ("user", user),
                ("sort", sort),
                ("dir", dir),
                ("page", &n.to_string()),
            ])
        };
        if page > 1 {
            let _ = write!(
                b,
                "<a href=\"/tokens{}\" rel=\"prev\">← Previous</a>",
                esc(&link(page - 1))
            );
        }
        if page < pages {
            let _ = write!(
                b,
                "<a href=\"/tokens{}\" rel=\"next\">Next →</a>",
                esc(&link(page + 1))
            );
        }
        b.push_str("</nav>");
    }
    render(&s, StatusCode::OK, "Tokens", "tokens", &b)
}

// ---------------------------------------------------------------------------- token form

/// Restriction lines of a textarea: the non-blank lines, and for each its line number in
/// the textarea (so the core's line numbers map back to what the admin sees).
fn lines_of(text: &str) -> (Vec<String>, Vec<usize>) {
    let mut lines = Vec::new();
    let mut at = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_end_matches('\r');
        if !l.trim().is_empty() {
            lines.push(l.to_owned());
            at.push(i + 1);
        }
    }
    (lines, at)
}

fn list_of(text: &str) -> Vec<String> {
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An error from the API, placed at the field (and for a restriction line, at its line in
/// the textarea).
struct FieldError {
    message: String,
    field: String,
    line: Option<usize>,
    column: Option<usize>,
    text: Option<String>,
}

fn field_error(body: &Value, lines_text: &str) -> FieldError {
    let message = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("the request was refused")
        .to_owned();
    let field = body
        .get("field")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let col = body
        .get("column")
        .and_then(Value::as_u64)
        .and_then(|c| usize::try_from(c).ok());
    let line = body
        .get("line")
        .and_then(Value::as_u64)
        .and_then(|c| usize::try_from(c).ok());
    if field.starts_with("limit_to") {
        let (lines, at) = lines_of(lines_text);
        let idx = line.and_then(|l| l.checked_sub(1));
        let ta_line = idx.and_then(|i| at.get(i).copied());
        let text = idx.and_then(|i| lines.get(i).cloned());
        return FieldError {
            message,
            field,
            line: ta_line,
            column: col,
            text,
        };
    }
    FieldError {
        message,
        field,
        line: None,
        column: None,
        text: None,
    }
}

/// The `limit_to` error box, as the live check also fills it (see console.js).
fn lines_error_html(e: Option<&FieldError>) -> String {
    let mut out = String::from(
        "<div id=\"limit_to-error\" class=\"line-error\" role=\"status\" aria-live=\"polite\">",
    );
    if let Some(e) = e.filter(|e| e.field.starts_with("limit_to")) {
        let pos = match (e.line, e.column) {
            (Some(l), Some(c)) => format!("Line {l}, column {c}: "),
            (Some(l), None) => format!("Line {l}: "),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<p class=\"error-text\">{}{}</p>",
            esc(&pos),
            esc(&e.message)
        );
        if let (Some(t), Some(c)) = (&e.text, e.column) {
            let caret = format!(
                "{}^",
                " ".repeat(t.chars().count().min(c.saturating_sub(1)))
            );
            let _ = write!(
                out,
                "<pre class=\"excerpt\">{}\n{}</pre>",
                esc(t),
                esc(&caret)
            );
        }
    }
    out.push_str("</div>");
    out
}

#[derive(Default)]
struct TokenForm {
    name: String,
    id: String,
    user: String,
    expires_days: String,
    expires_date: String,
    ips: String,
    run_as: String,
    limit_to: String,
    nonce: String,
}

impl TokenForm {
    fn from(f: &Params) -> TokenForm {
        let g = |k: &str| f.get(k).cloned().unwrap_or_default();
        TokenForm {
            name: g("name"),
            id: g("id"),
            user: g("user"),
            expires_days: g("expires_days"),
            expires_date: g("expires_date"),
            ips: g("ips"),
            run_as: g("run_as"),
            limit_to: g("limit_to"),
            nonce: g("nonce"),
        }
    }
}

fn text_field(
    id: &str,
    label: &str,
    value: &str,
    extra: &str,
    help: &str,
    err: Option<&FieldError>,
) -> String {
    let e = err.filter(|e| e.field == id || e.field.starts_with(&format!("{id}[")));
    let help_id = format!("{id}-help");
    let mut out = format!(
        "<div class=\"field{}\"><label for=\"{id}\">{label}</label>",
        if e.is_some() { " invalid" } else { "" }
    );
    let _ =
        write!(
        out,
        "<input id=\"{id}\" name=\"{id}\" value=\"{}\" {extra} aria-describedby=\"{help_id}\"{}>",
        esc(value),
        if e.is_some() { " aria-invalid=\"true\"" } else { "" }
    );
    if let Some(e) = e {
        let _ = write!(out, "<p class=\"error-text\">{}</p>", esc(&e.message));
    }
    let _ = write!(out, "<p class=\"help\" id=\"{help_id}\">{help}</p></div>");
    out
}

fn area_field(id: &str, label: &str, value: &str, help: &str, err: Option<&FieldError>) -> String {
    let e = err.filter(|e| e.field == id || e.field.starts_with(&format!("{id}[")));
    let mut out = format!(
        "<div class=\"field{}\"><label for=\"{id}\">{label}</label>",
        if e.is_some() { " invalid" } else { "" }
    );
    let _ = write!(
        out,
        "<textarea id=\"{id}\" name=\"{id}\" rows=\"3\" spellcheck=\"false\" aria-describedby=\"{id}-help\"{}>{}</textarea>",
        if e.is_some() { " aria-invalid=\"true\"" } else { "" },
        esc(value)
    );
    if let Some(e) = e {
        let _ = write!(out, "<p class=\"error-text\">{}</p>", esc(&e.message));
    }
    let _ = write!(out, "<p class=\"help\" id=\"{id}-help\">{help}</p></div>");
    out
}

fn lines_field(value: &str, err: Option<&FieldError>) -> String {
    let invalid = err.is_some_and(|e| e.field.starts_with("limit_to"));
    format!(
        "<div class=\"field wide{}\"><label for=\"limit_to\">Restriction lines</label>\
         <textarea id=\"limit_to\" name=\"limit_to\" rows=\"6\" class=\"mono\" spellcheck=\"false\" \
         data-check=\"/console/check\" aria-describedby=\"limit_to-help limit_to-error\"{}>{}</textarea>\
         <p class=\"help\" id=\"limit_to-help\">One line each: <code>[METHODS]URL-REGEX</code> then optional \
         <code>[QueryParam::NAME==REGEX]</code> and <code>[JsonData::NODE==REGEX]</code>; e.g. \
         <code>[get]/rest/api/2/issue/KAN-.*</code>. A request must match one line. None: every protected URL. \
         Lines are checked by the filter's own parser as you type.</p>{}</div>",
        if invalid { " invalid" } else { "" },
        if invalid { " aria-invalid=\"true\"" } else { "" },
        esc(value),
        lines_error_html(err)
    )
}

/// An API error about `api_field`, for the form field `form_field`.
fn renamed(err: Option<&FieldError>, api_field: &str, form_field: &str) -> Option<FieldError> {
    err.filter(|e| e.field == api_field).map(|e| FieldError {
        message: e.message.clone(),
        field: form_field.to_owned(),
        line: None,
        column: None,
        text: None,
    })
}

fn error_banner(err: Option<&FieldError>) -> String {
    match err {
        None => String::new(),
        Some(e) => format!(
            "<div class=\"banner banner-error\" role=\"alert\">Nothing was saved: {}{}</div>",
            if e.field.is_empty() {
                String::new()
            } else {
                format!("<code>{}</code>: ", esc(&e.field))
            },
            esc(&e.message)
        ),
    }
}

fn new_form(s: &Signed, f: &TokenForm, err: Option<&FieldError>, status: StatusCode) -> Response {
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> /</p><h1>Create token</h1>{}\
         <form method=\"post\" action=\"/tokens/new\" class=\"form\" novalidate>{}\
         <input type=\"hidden\" name=\"nonce\" value=\"{}\">",
        error_banner(err),
        csrf_field(&s.csrf),
        esc(&f.nonce)
    );
    b.push_str(&text_field(
        "name",
        "Name (required)",
        &f.name,
        "required maxlength=\"200\"",
        "A label for people: what uses this token.",
        err,
    ));
    b.push_str(&text_field(
        "id",
        "Id",
        &f.id,
        "maxlength=\"100\" class=\"mono\"",
        "Optional; made from the name when empty. Appears in audit lines.",
        err,
    ));
    b.push_str(&text_field("user", "User", &f.user, "autocomplete=\"off\"", "The Jira/Confluence user the token acts as (Basic must name this user, Bearer acts as them). Empty: any user, Basic only.", err));
    b.push_str("<fieldset class=\"field\"><legend>Expiry</legend><div class=\"row\">");
    b.push_str(&text_field(
        "expires_days",
        "Expires in days",
        &f.expires_days,
        "type=\"number\" min=\"1\" max=\"36500\" inputmode=\"numeric\"",
        "1 to 36500.",
        renamed(err, "expires_in_days", "expires_days").as_ref(),
    ));
    b.push_str(&text_field(
        "expires_date",
        "or on",
        &f.expires_date,
        "type=\"date\"",
        "At the end of that day (UTC). Both empty: never.",
        renamed(err, "expires", "expires_date").as_ref(),
    ));
    b.push_str("</div></fieldset>");
    b.push_str(&area_field("ips", "Client addresses", &f.ips, "Optional allow-list, one per line or comma-separated: <code>10.0.0.0/8</code>, <code>192.0.2.7</code>. Empty: any address.", err));
    b.push_str(&area_field("run_as", "Run as", &f.run_as, "Optional users this token may act for with the <code>contextUser</code> header; <code>*</code> = anyone.", err));
    b.push_str(&lines_field(&f.limit_to, err));
    b.push_str("<div class=\"form-actions\"><button type=\"submit\" class=\"primary\">Create token</button> <a href=\"/tokens\">Cancel</a></div></form>");
    render(s, status, "Create token", "tokens", &b)
}

pub async fn new_token(s: Signed) -> Response {
    let f = TokenForm {
        nonce: secret::random_base62(22).unwrap_or_default(),
        ..Default::default()
    };
    new_form(&s, &f, None, StatusCode::OK)
}

fn token_body(f: &TokenForm, for_create: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(f.name.trim()));
    if for_create {
        if !f.id.trim().is_empty() {
            m.insert("id".into(), json!(f.id.trim()));
        }
        if !f.user.trim().is_empty() {
            m.insert("user".into(), json!(f.user.trim()));
        }
        let days = f.expires_days.trim();
        if !days.is_empty() {
            m.insert(
                "expires_in_days".into(),
                days.parse::<u64>()
                    .map_or_else(|_| json!(days), |d| json!(d)),
            );
        }
    }
    let date = f.expires_date.trim();
    if !date.is_empty() {
        m.insert("expires".into(), json!(format!("{date}T23:59:59Z")));
    }
    m.insert("ips".into(), json!(list_of(&f.ips)));
    m.insert("run_as".into(), json!(list_of(&f.run_as)));
    m.insert("limit_to".into(), json!(lines_of(&f.limit_to).0));
    m
}

pub async fn create_token(
    s: Signed,
    State(app): State<Arc<App>>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let f = TokenForm::from(&form);
    if !f.nonce.is_empty() && super::nonce_used(&f.nonce) {
        return message_page(
            StatusCode::CONFLICT,
            "Already created",
            "This form was sent before and its token was created then (its secret was shown \
             once and is not shown again). Nothing new was created. See the tokens list.",
            Some(&s),
        );
    }
    let body = Value::Object(token_body(&f, true)).to_string();
    let (status, out) = answer(
        api::create_token(
            State(app.clone()),
            Admin(s.admin.clone()),
            Bytes::from(body),
        )
        .await,
    )
    .await;
    if status != StatusCode::CREATED {
        let e = field_error(&out, &f.limit_to);
        return new_form(&s, &f, Some(&e), status);
    }
    if !f.nonce.is_empty() {
        super::mark_nonce(&f.nonce);
    }
    shown_once(&s, &app, &out, false)
}

/// The one page that shows a secret: the answer to the create POST itself (never a redirect,
/// so the secret is in no URL), `no-store`.
fn shown_once(s: &Signed, app: &App, out: &Value, rotated: bool) -> Response {
    let tok = out.get("token").cloned().unwrap_or(Value::Null);
    let id = tok.get("id").and_then(Value::as_str).unwrap_or("");
    let name = tok.get("name").and_then(Value::as_str).unwrap_or("");
    let user = tok.get("user").and_then(Value::as_str);
    let secret_text = out.get("secret").and_then(Value::as_str).unwrap_or("");
    let url = format!(
        "{}/rest/api/2/myself",
        app.opts.public_url.trim_end_matches('/')
    );
    let sec = snippet::Secret::Literal(secret_text);
    let snippets = [
        (
            "curl_basic",
            "curl, Basic",
            snippet::curl(&url, user, &sec, false),
        ),
        (
            "curl_bearer",
            "curl, Bearer",
            snippet::curl(&url, user, &sec, true),
        ),
        (
            "javascript",
            "JavaScript (fetch)",
            snippet::javascript(&url, user, &sec, user.is_some()),
        ),
    ];
    let previous_note = if !rotated {
        String::new()
    } else if let Some(until) = tok
        .get("previous")
        .and_then(|p| p.get("until"))
        .and_then(Value::as_str)
    {
        format!(
            "<p class=\"banner banner-info\" id=\"previous-note\">The previous secret keeps working until \
             <time datetime=\"{}\">{}</time>; after that Envoys answer 401 “token expired” for it.</p>",
            esc(until),
            esc(&until.replace('T', " ").replace('Z', " UTC")),
        )
    } else {
        "<p class=\"banner banner-info\" id=\"previous-note\">The previous secret no longer works.</p>".to_owned()
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> /</p><h1>{}: {}</h1>\
         <div class=\"banner banner-warning\" role=\"alert\"><strong>Copy the token now: it will not be shown again.</strong> \
         tokengate keeps only its SHA-256 digest. If it is lost, revoke it and create a new one.</div>{}\
         <div class=\"secret-box\"><label for=\"secret\">Token <span class=\"mono\">{}</span></label>\
         <div class=\"copyrow\"><input id=\"secret\" class=\"mono\" readonly value=\"{}\" autocomplete=\"off\" spellcheck=\"false\">\
         <button type=\"button\" data-copy=\"secret\">Copy</button></div><p class=\"help\" role=\"status\" id=\"copy-status\"></p></div>\
         <h2>Use it</h2><div class=\"field wide\"><label for=\"snippet-url\">URL for the snippets</label>\
         <input id=\"snippet-url\" class=\"mono\" value=\"{}\" data-user=\"{}\" data-has-user=\"{}\"></div>",
        if rotated { "New secret" } else { "Token created" },
        esc(name),
        previous_note,
        esc(id),
        esc(secret_text),
        esc(&url),
        esc(user.unwrap_or("")),
        if user.is_some() { "1" } else { "" },
    );
    for (key, label, text) in &snippets {
        let _ = write!(
            b,
            "<div class=\"snippet\"><div class=\"snippet-head\"><h3 id=\"h-{key}\">{label}</h3>\
             <button type=\"button\" data-copy=\"snippet-{key}\" aria-describedby=\"h-{key}\">Copy</button></div>\
             <pre id=\"snippet-{key}\" tabindex=\"0\" aria-labelledby=\"h-{key}\">{}</pre></div>",
            esc(text)
        );
    }
    let _ = write!(
        b,
        "<p class=\"form-actions\"><a class=\"button primary\" href=\"/tokens/{}\">Done: go to the token</a> \
         <a href=\"/tokens\">Back to the tokens</a></p>",
        esc(&url_enc(id))
    );
    let title = if rotated {
        "New secret"
    } else {
        "Token created"
    };
    let mut r = render(s, StatusCode::OK, title, "tokens", &b);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /console/check` (JSON, `x-csrf-token`): the restriction lines (and addresses) of
/// the form, checked by the core as the filter would load them.
pub async fn check_lines(
    s: Signed,
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !super::csrf_header_ok(&headers, &s) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the x-csrf-token header is missing or wrong",
        )
        .into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = v.get("limit_to").and_then(Value::as_str).unwrap_or("");
    let (lines, _) = lines_of(text);
    let settings = settings_of(&app).await;
    let entry = json!({
        "id": "check",
        "sha256": "0".repeat(64),
        "limit_to": lines,
    });
    match plugin::check_token(&settings, &entry) {
        Ok(()) => Json(json!({"ok": true, "lines": lines.len()})).into_response(),
        Err(e) => {
            let body =
                json!({"error": e.message, "field": e.field, "line": e.line, "column": e.column});
            let fe = field_error(&body, text);
            Json(json!({
                "ok": false,
                "error": fe.message,
                "field": fe.field,
                "line": fe.line,
                "column": fe.column,
                "text": fe.text,
            }))
            .into_response()
        }
    }
}

// ---------------------------------------------------------------------------- token detail

async fn load(app: &App, s: &Signed, id: &str) -> Result<TokenRow, Response> {
    app.store.token(id).await.map_err(|e| match e {
        StoreError::NotFound => message_page(
            StatusCode::NOT_FOUND,
            "No such token",
            &format!("There is no token with id `{id}` (it may have been deleted)."),
            Some(s),
        ),
        e => store_error_page(e, Some(s)),
    })
}

fn chart(days: &[(i64, i64, i64)]) -> String {
    let max = days.iter().map(|(_, a, d)| a + d).max().unwrap_or(0).max(1);
    let (total_a, total_d): (i64, i64) =
        days.iter().fold((0, 0), |(x, y), (_, a, d)| (x + a, y + d));
    let (w, h, left, top, bottom) = (720i64, 200i64, 40i64, 10i64, 24i64);
    let plot_h = h - top - bottom;
    let n = i64::try_from(days.len()).unwrap_or(30).max(1);
    let step = (w - left) / n;
    let mut out = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-title chart-desc\" focusable=\"false\">\
         <title id=\"chart-title\">Calls per day, last 30 days</title>\
         <desc id=\"chart-desc\">{total_a} allowed and {total_d} refused calls in the last 30 days; the busiest day had {max}.</desc>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" class=\"axis\"/>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">0</text>",
        top + plot_h,
        top + plot_h,
        left - 6,
        top + 10,
        left - 6,
        top + plot_h,
    );
    for (i, (day, a, d)) in days.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let x = left + i * step + 3;
        let bw = (step - 6).max(2);
        let ha = a * plot_h / max;
        let hd = d * plot_h / max;
        let label = html::when(Some(*day));
        let date = label.get(0..10).unwrap_or("");
        let _ = write!(
            out,
            "<g><title>{date}: {a} allowed, {d} refused</title>\
             <rect x=\"{x}\" y=\"{}\" width=\"{bw}\" height=\"{ha}\" class=\"bar-allowed\"/>\
             <rect x=\"{x}\" y=\"{}\" width=\"{bw}\" height=\"{hd}\" class=\"bar-refused\"/></g>",
            top + plot_h - ha,
            top + plot_h - ha - hd,
        );
        if (i % 7 == 0 && i < n - 4) || i == n - 1 {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                x + bw / 2,
                h - 6,
                esc(date.get(5..).unwrap_or(date))
            );
        }
    }
    out.push_str(
        "</svg><figcaption><span class=\"key key-allowed\"></span> allowed \
         <span class=\"key key-refused\"></span> refused</figcaption></figure>",
    );
    out
}

struct ExplainForm {
    method: String,
    url: String,
    headers: String,
    body: String,
    client_ip: String,
}

fn recent_calls_table(lines: &[(i64, record::Record)], show_token: bool) -> String {
    let mut b = String::from("<div class=\"table-wrap\"><table class=\"data\"><thead><tr><th scope=\"col\">Time (UTC)</th>");
    if show_token {
        b.push_str("<th scope=\"col\">Token</th>");
    }
    b.push_str("<th scope=\"col\">User</th><th scope=\"col\">Client</th><th scope=\"col\">Method</th><th scope=\"col\">Path</th>\
                <th scope=\"col\">Decision</th><th scope=\"col\">Reason</th><th scope=\"col\">Line</th><th scope=\"col\">Status</th><th scope=\"col\">ms</th></tr></thead><tbody>");
    for (_, r) in lines {
        let _ = write!(b, "<tr><td>{}</td>", time_el(Some(r.ts_ms)));
        if show_token {
            let _ = write!(
                b,
                "<td>{}</td>",
                r.token_id.as_deref().map_or(
                    "<span class=\"muted\">—</span>".to_owned(),
                    |t| format!(
                        "<a href=\"/tokens/{}\" class=\"mono\">{}</a>",
                        esc(&url_enc(t)),
                        esc(t)
                    )
                )
            );
        }
        let user = match (&r.user, &r.acting_as) {
            (Some(u), Some(a)) if u != a => {
                format!("{} <span class=\"sub\">as {}</span>", esc(u), esc(a))
            }
            (Some(u), _) => esc(u),
            _ => "<span class=\"muted\">—</span>".into(),
        };
        let _ = write!(
            b,
            "<td>{user}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono path\">{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(r.client_ip.as_deref().unwrap_or("—")),
            esc(&r.method),
            esc(&r.path),
            if r.query.is_empty() { String::new() } else { format!("<span class=\"sub\">?{}</span>", esc(&r.query.join("&"))) },
            if r.allowed { lozenge("success", "allow") } else { lozenge("removed", "deny") },
            esc(&r.reason),
            r.rule.map_or("—".into(), |n| n.to_string()),
            r.status.map_or("—".into(), |n| n.to_string()),
            r.duration_ms,
        );
    }
    b.push_str("</tbody></table></div>");
    b
}

async fn token_page(
    app: &Arc<App>,
    s: &Signed,
    id: &str,
    p: &Params,
    explained: Option<(&ExplainForm, Result<core_explain::Outcome2, String>)>,
) -> Response {
    let t = match load(app, s, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let now = now_ms();
    let settings = settings_of(app).await;
    let secure = secure_mode(&settings);
    let today = now - now.rem_euclid(DAY_MS);
    let from = today - 29 * DAY_MS;
    let counts: BTreeMap<i64, (i64, i64)> = match app.store.calls_per_day(&t.id, from).await {
        Ok(rows) => rows
            .into_iter()
            .map(|d| (d.day_ms, (d.allowed, d.denied)))
            .collect(),
        Err(e) => return store_error_page(e, Some(s)),
    };
    let days: Vec<(i64, i64, i64)> = (0..30)
        .map(|i| {
            let d = from + i * DAY_MS;
            let (a, r) = counts.get(&d).copied().unwrap_or((0, 0));
            (d, a, r)
        })
        .collect();
    let recent = match app
        .store
        .audit_lines(&AuditQuery {
            token: Some(t.id.clone()),
            limit: 20,
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return store_error_page(e, Some(s)),
    };
    let eid = esc(&url_enc(&t.id));
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> /</p><div class=\"page-head\"><h1>{} {}</h1><div class=\"actions\">",
        esc(&t.name),
        badges(&t, now)
    );
    if t.revoked_at.is_none() {
        if secure {
            b.push_str("<span class=\"muted\" id=\"secure-note\">Secure mode: tokens cannot be edited, only revoked or deleted.</span> ");
        } else {
            let _ = write!(
                b,
                "<a class=\"button\" href=\"/tokens/{eid}/edit\">Edit</a> "
            );
        }
        let _ = write!(
            b,
            "<a class=\"button danger\" href=\"/tokens/{eid}/revoke\">Revoke</a> "
        );
    }
    let _ = write!(
        b,
        "<a class=\"button danger-subtle\" href=\"/tokens/{eid}/delete\">Delete</a></div></div>{}",
        flash(p)
    );
    let list = |items: &[String]| {
        if items.is_empty() {
            "<span class=\"muted\">any</span>".to_owned()
        } else {
            items
                .iter()
                .map(|i| format!("<code>{}</code>", esc(i)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let lines = if t.limit_to.is_empty() {
        "<span class=\"muted\">none: every protected URL</span>".to_owned()
    } else {
        let mut o = String::from("<ol class=\"lines mono\">");
        for l in &t.limit_to {
            let _ = write!(o, "<li>{}</li>", esc(l));
        }
        o.push_str("</ol>");
        o
    };
    let _ = write!(
        b,
        "<section aria-labelledby=\"h-settings\"><h2 id=\"h-settings\">Settings</h2><dl class=\"props\">\
         <dt>Id</dt><dd class=\"mono\">{}</dd><dt>User</dt><dd>{}</dd>\
         <dt>Created</dt><dd>{} by {}</dd><dt>Expires</dt><dd>{}</dd>{}\
         <dt>Client addresses</dt><dd>{}</dd><dt>Run as</dt><dd>{}</dd><dt>Restriction lines</dt><dd>{}</dd>\
         <dt>SHA-256 of the secret</dt><dd class=\"mono digest\">{}</dd>\
         <dt>Usage</dt><dd>{} calls ({} allowed, {} refused); last used {} from <span class=\"mono\">{}</span></dd></dl></section>",
        esc(&t.id),
        t.user.as_deref().map_or("<span class=\"muted\">any user, Basic only</span>".to_owned(), esc),
        time_el(Some(t.created_at)),
        esc(&t.created_by),
        t.expires_at.map_or("<span class=\"muted\">never</span>".to_owned(), |e| time_el(Some(e))),
        t.revoked_at.map_or(String::new(), |r| format!(
            "<dt>Revoked</dt><dd>{} by {}</dd>",
            time_el(Some(r)),
            esc(t.revoked_by.as_deref().unwrap_or("?"))
        )),
        list(&t.ips),
        list(&t.run_as),
        lines,
        esc(&t.sha256),
        t.usage.calls,
        t.usage.allowed,
        t.usage.denied,
        time_el(t.usage.last_used_at),
        esc(t.usage.last_client_ip.as_deref().unwrap_or("—")),
    );
    b.push_str(&least_privilege(app, s, &t, secure, now).await);
    let _ = write!(
        b,
        "<section aria-labelledby=\"h-chart\"><h2 id=\"h-chart\">Calls per day</h2>{}</section>",
        chart(&days)
    );
    let _ = write!(
        b,
        "<section aria-labelledby=\"h-recent\"><h2 id=\"h-recent\">Recent calls</h2>{}<p><a href=\"/audit-log?token={}\">All calls of this token in the audit log</a></p></section>",
        if recent.is_empty() {
            "<p class=\"empty\" id=\"no-calls\">No calls yet.</p>".to_owned()
        } else {
            recent_calls_table(&recent, false)
        },
        esc(&url_enc(&t.id))
    );
    let default_url = format!(
        "{}/rest/api/2/myself",
        app.opts.public_url.trim_end_matches('/')
    );
    let (ef, result) = match &explained {
        Some((f, r)) => (
            ExplainForm {
                method: f.method.clone(),
                url: f.url.clone(),
                headers: f.headers.clone(),
                body: f.body.clone(),
                client_ip: f.client_ip.clone(),
            },
            Some(r),
        ),
        None => (
            ExplainForm {
                method: "GET".into(),
                url: default_url,
                headers: String::new(),
                body: String::new(),
                client_ip: String::new(),
            },
            None,
        ),
    };
    let _ = write!(
        b,
        "<section aria-labelledby=\"h-explain\"><h2 id=\"h-explain\">Explain: would this token be allowed?</h2>\
         <form method=\"post\" action=\"/tokens/{eid}/explain#h-explain\" class=\"form explain\">{}\
         <div class=\"row\"><div class=\"field narrow\"><label for=\"x-method\">Method</label><input id=\"x-method\" name=\"method\" value=\"{}\" list=\"methods\" class=\"mono\">\
         <datalist id=\"methods\"><option value=\"GET\"></option><option value=\"POST\"></option><option value=\"PUT\"></option><option value=\"DELETE\"></option><option value=\"PATCH\"></option><option value=\"HEAD\"></option></datalist></div>\
         <div class=\"field grow\"><label for=\"x-url\">URL</label><input id=\"x-url\" name=\"url\" value=\"{}\" class=\"mono\"></div></div>\
         <div class=\"row\"><div class=\"field grow\"><label for=\"x-headers\">Headers</label><textarea id=\"x-headers\" name=\"headers\" rows=\"2\" class=\"mono\" aria-describedby=\"x-headers-help\">{}</textarea>\
         <p class=\"help\" id=\"x-headers-help\">One <code>Name: value</code> per line. The token's own credential is added for you.</p></div>\
         <div class=\"field grow\"><label for=\"x-body\">Body</label><textarea id=\"x-body\" name=\"body\" rows=\"2\" class=\"mono\" aria-describedby=\"x-body-help\">{}</textarea>\
         <p class=\"help\" id=\"x-body-help\">For JsonData lines; add <code>Content-Type: application/json</code>.</p></div>\
         <div class=\"field narrow\"><label for=\"x-ip\">Client address</label><input id=\"x-ip\" name=\"client_ip\" value=\"{}\" class=\"mono\"></div></div>\
         <div class=\"form-actions\"><button type=\"submit\">Explain</button></div></form>",
        csrf_field(&s.csrf),
        esc(&ef.method),
        esc(&ef.url),
        esc(&ef.headers),
        esc(&ef.body),
        esc(&ef.client_ip),
    );
    if let Some(r) = result {
        match r {
            Ok(out) => {
                let j = &out.json;
                let decision = j.get("decision").and_then(Value::as_str).unwrap_or("?");
                let badge = match decision {
                    "allow" => lozenge("success", "allowed"),
                    "deny" => lozenge("removed", "refused"),
                    other => lozenge("default", other),
                };
                let mut summary = String::new();
                if let Some(st) = j.get("status").and_then(Value::as_u64) {
                    let _ = write!(summary, " {st}");
                }
                if let Some(m) = j.get("message").and_then(Value::as_str) {
                    let _ = write!(summary, " “{}”", esc(m));
                }
                if let Some(rule) = j.get("rule").and_then(Value::as_u64) {
                    let _ = write!(summary, ", by line {rule}");
                }
                let _ = write!(
                    b,
                    "<div class=\"explain-result\" id=\"explain-result\" role=\"status\"><p><strong>Decision:</strong> {badge}{summary}</p><pre>{}</pre></div>",
                    esc(&out.text)
                );
            }
            Err(e) => {
                let _ = write!(
                    b,
                    "<div class=\"banner banner-error\" id=\"explain-result\" role=\"alert\">{}</div>",
                    esc(e)
                );
            }
        }
    }
    b.push_str("</section>");
    render(s, StatusCode::OK, &t.name, "tokens", &b)
}

pub async fn token(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    token_page(&app, &s, &id, &p, None).await
}

/// The explain tester: the filter's decision for this token alone (under the current
/// settings), with a stand-in secret put in place of its digest, so no secret is needed.
fn explain_for(
    settings: &Value,
    t: &TokenRow,
    f: &ExplainForm,
) -> Result<core_explain::Outcome2, String> {
    let stand_in = "tg_console_explain_stand_in";
    let mut entry = plugin::token_entry(t);
    if let Some(m) = entry.as_object_mut() {
        m.insert("sha256".into(), json!(secret::sha256_hex(stand_in)));
    }
    let mut cfg = settings.as_object().cloned().unwrap_or_default();
    cfg.insert("tokens".into(), json!([entry]));
    let compiled = config::from_value(&Value::Object(cfg)).map_err(|e| e.message)?;
    let method = f.method.trim().to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic() || c == b'-') {
        return Err(format!("`{method}` is not an HTTP method"));
    }
    let target = core_explain::target_of(&f.url).map_err(|e| format!("URL: {e}"))?;
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in f.headers.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) =
            core_explain::parse_header(line).map_err(|e| format!("header `{line}`: {e}"))?;
        if k != "authorization" {
            headers.entry(k).or_default().push(v);
        }
    }
    let methods = settings
        .get("auth_methods")
        .and_then(Value::as_str)
        .unwrap_or("basic");
    let auth = if methods == "bearer" {
        format!("Bearer {stand_in}")
    } else {
        let user = t.user.as_deref().unwrap_or("someone");
        format!(
            "Basic {}",
            credential::encode_base64(format!("{user}:{stand_in}").as_bytes())
        )
    };
    headers.insert("authorization".into(), vec![auth]);
    let body = (!f.body.is_empty()).then(|| f.body.as_bytes().to_vec());
    if let Some(b) = &body {
        headers
            .entry("content-length".into())
            .or_insert_with(|| vec![b.len().to_string()]);
    }
    let client = match f.client_ip.trim() {
        "" => None,
        ip => match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => Some(format!("[{v6}]:0")),
            Ok(v4) => Some(format!("{v4}:0")),
            Err(_) => return Err(format!("`{ip}` is not an IP address")),
        },
    };
    let req = core_explain::Request {
        method,
        target,
        headers,
        body,
        client,
    };
    Ok(core_explain::explain(&compiled, &req, now_ms()))
}

pub async fn explain(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let t = match load(&app, &s, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let g = |k: &str| form.get(k).cloned().unwrap_or_default();
    let f = ExplainForm {
        method: g("method"),
        url: g("url"),
        headers: g("headers"),
        body: g("body"),
        client_ip: g("client_ip"),
    };
    let settings = settings_of(&app).await;
    let r = explain_for(&settings, &t, &f);
    token_page(&app, &s, &id, &Params::new(), Some((&f, r))).await
}

// ---------------------------------------------------------------------------- edit

fn edit_form(
    s: &Signed,
    t: &TokenRow,
    f: &TokenForm,
    err: Option<&FieldError>,
    status: StatusCode,
) -> Response {
    let eid = esc(&url_enc(&t.id));
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> / <a href=\"/tokens/{eid}\">{}</a> /</p><h1>Edit token</h1>{}\
         <form method=\"post\" action=\"/tokens/{eid}/edit\" class=\"form\" novalidate>{}\
         <p class=\"help\">Id <code>{}</code>, user {} (neither can change). Every change is pushed to all Envoys and logged.</p>",
        esc(&t.name),
        error_banner(err),
        csrf_field(&s.csrf),
        esc(&t.id),
        t.user.as_deref().map_or("any".to_owned(), |u| format!("<code>{}</code>", esc(u))),
    );
    b.push_str(&text_field(
        "name",
        "Name",
        &f.name,
        "required maxlength=\"200\"",
        "A label for people.",
        err,
    ));
    b.push_str(&text_field(
        "expires_date",
        "Expire earlier, on",
        &f.expires_date,
        "type=\"date\"",
        &format!(
            "At the end of that day (UTC). Currently: {}. An expiry can only be brought forward, never extended.",
            t.expires_at.map_or("never".to_owned(), |e| html::when(Some(e)))
        ),
        err.filter(|e| e.field == "expires" || e.message.contains("expiry")).map(|e| FieldError {
            message: e.message.clone(),
            field: "expires_date".into(),
            line: None,
            column: None,
            text: None,
        }).as_ref(),
    ));
    b.push_str(&area_field(
        "ips",
        "Client addresses",
        &f.ips,
        "One per line or comma-separated. Empty: any address.",
        err,
    ));
    b.push_str(&area_field(
        "run_as",
        "Run as",
        &f.run_as,
        "Users this token may act for; <code>*</code> = anyone.",
        err,
    ));
    b.push_str(&lines_field(&f.limit_to, err));
    let _ = write!(b, "<div class=\"form-actions\"><button type=\"submit\" class=\"primary\">Save</button> <a href=\"/tokens/{eid}\">Cancel</a></div></form>");
    render(s, status, "Edit token", "tokens", &b)
}

async fn editable(app: &App, s: &Signed, id: &str) -> Result<TokenRow, Response> {
    let t = load(app, s, id).await?;
    if secure_mode(&settings_of(app).await) {
        return Err(message_page(
            StatusCode::CONFLICT,
            "Secure mode",
            "In secure mode tokens cannot be changed, only revoked or deleted.",
            Some(s),
        ));
    }
    if t.revoked_at.is_some() {
        return Err(message_page(
            StatusCode::CONFLICT,
            "Revoked",
            "The token is revoked; create a new one.",
            Some(s),
        ));
    }
    Ok(t)
}

pub async fn edit_token(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    let t = match editable(&app, &s, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let f = TokenForm {
        name: t.name.clone(),
        ips: t.ips.join("\n"),
        run_as: t.run_as.join("\n"),
        limit_to: t.limit_to.join("\n"),
        ..Default::default()
    };
    edit_form(&s, &t, &f, None, StatusCode::OK)
}

pub async fn save_token(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let t = match editable(&app, &s, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let f = TokenForm::from(&form);
    let body = Value::Object(token_body(&f, false)).to_string();
    let (status, out) = answer(
        api::patch_token(
            State(app.clone()),
            Admin(s.admin.clone()),
            Path(id.clone()),
            Bytes::from(body),
        )
        .await,
    )
    .await;
    if status != StatusCode::OK {
        let e = field_error(&out, &f.limit_to);
        return edit_form(&s, &t, &f, Some(&e), status);
    }
    Redirect::to(&format!("/tokens/{}?done=saved", url_enc(&id))).into_response()
}

// ---------------------------------------------------------------------------- revoke, delete

fn confirm(s: &Signed, t: &TokenRow, action: &str) -> Response {
    let eid = esc(&url_enc(&t.id));
    let class = if action == "promote" {
        "primary"
    } else {
        "danger"
    };
    let (title, text, button) = match action {
        "revoke" => (
            "Revoke token",
            "Every Envoy refuses it within seconds with 401 “token revoked”. This cannot be undone; the token stays listed as revoked.",
            "Revoke token",
        ),
        "promote" => (
            "Promote shadow lines",
            "The shadow lines become the token's restriction lines, replacing the current ones, and every Envoy enforces them within seconds: calls they would refuse are answered 403 from then on. Written to the admin log.",
            "Promote to enforced",
        ),
        _ => (
            "Delete token",
            "The token and its usage totals are removed; Envoys answer 401 “unknown token” for it. Its audit lines stay. This cannot be undone.",
            "Delete token",
        ),
    };
    let b = format!(
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> / <a href=\"/tokens/{eid}\">{}</a> /</p><h1>{title}?</h1>\
         <div class=\"banner banner-warning\"><p><strong>{}</strong> (<code>{}</code>{})</p><p>{text}</p></div>\
         <form method=\"post\" action=\"/tokens/{eid}/{action}\" class=\"form\">{}\
         {}<div class=\"form-actions\"><button type=\"submit\" class=\"{class}\">{button}</button> <a href=\"/tokens/{eid}\">Cancel</a></div></form>",
        esc(&t.name),
        esc(&t.name),
        esc(&t.id),
        t.user.as_deref().map_or(String::new(), |u| format!(", user {}", esc(u))),
        csrf_field(&s.csrf),
        if action == "promote" {
            let mut o = String::from("<p>Lines to enforce:</p><ol class=\"lines mono\">");
            for l in &t.shadow_limit_to {
                let _ = write!(o, "<li>{}</li>", esc(l));
            }
            o.push_str("</ol>");
            o
        } else {
            String::new()
        },
    );
    render(s, StatusCode::OK, title, "tokens", &b)
}

pub async fn confirm_revoke(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    match load(&app, &s, &id).await {
        Ok(t) => confirm(&s, &t, "revoke"),
        Err(r) => r,
    }
}

pub async fn confirm_delete(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    match load(&app, &s, &id).await {
        Ok(t) => confirm(&s, &t, "delete"),
        Err(r) => r,
    }
}

fn api_failed(s: &Signed, status: StatusCode, out: &Value) -> Response {
    message_page(
        status,
        "Not done",
        out.get("error")
            .and_then(Value::as_str)
            .unwrap_or("the request was refused"),
        Some(s),
    )
}

pub async fn revoke(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let (status, out) = answer(
        api::revoke_token(State(app.clone()), Admin(s.admin.clone()), Path(id.clone())).await,
    )
    .await;
    if status != StatusCode::OK {
        return api_failed(&s, status, &out);
    }
    Redirect::to(&format!("/tokens/{}?done=revoked", url_enc(&id))).into_response()
}

pub async fn delete(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let (status, out) = answer(
        api::delete_token(State(app.clone()), Admin(s.admin.clone()), Path(id.clone())).await,
    )
    .await;
    if status != StatusCode::NO_CONTENT {
        return api_failed(&s, status, &out);
    }
    Redirect::to("/tokens?done=deleted").into_response()
}

// ---------------------------------------------------------------------------- least privilege, rotation

fn days_query(days: &str) -> Query<api::SuggestParams> {
    Query(api::SuggestParams {
        days: Some(days.to_owned()),
    })
}

fn count(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn calls_text(n: i64) -> String {
    if n == 1 {
        "1 call".to_owned()
    } else {
        format!("{n} calls")
    }
}

/// The token page's "Least privilege" section (SPEC §19): its shadow lines with the calls each
/// matched and the calls none would allow (the shadow report, 7 days), the previous secret
/// while it works, and the ways on (suggest, promote, rotate).
async fn least_privilege(
    app: &Arc<App>,
    s: &Signed,
    t: &TokenRow,
    secure: bool,
    now: i64,
) -> String {
    let eid = esc(&url_enc(&t.id));
    let live = t.revoked_at.is_none();
    let mut b = String::from(
        "<section aria-labelledby=\"h-lp\" id=\"least-privilege\"><h2 id=\"h-lp\">Least privilege</h2>",
    );
    if t.shadow_limit_to.is_empty() {
        b.push_str(
            "<p id=\"no-shadow\">No shadow lines. Shadow lines are evaluated on every call of the \
             token and never enforced: <em>Suggest lines</em> proposes them from the calls it made.</p>",
        );
    } else {
        let (status, rep) = answer(
            api::shadow_report(
                State(app.clone()),
                Admin(s.admin.clone()),
                Path(t.id.clone()),
                days_query("7"),
            )
            .await,
        )
        .await;
        if status == StatusCode::OK {
            b.push_str(
                "<div class=\"table-wrap\"><table class=\"data\" id=\"shadow-lines\"><caption>Shadow lines and the calls of the last 7 days</caption>\
                 <thead><tr><th scope=\"col\">#</th><th scope=\"col\">Shadow line</th><th scope=\"col\" class=\"num\">Calls it matched</th></tr></thead><tbody>",
            );
            for l in rep
                .get("lines")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = write!(
                    b,
                    "<tr><td class=\"num\">{}</td><td class=\"mono path\">{}</td><td class=\"num\">{}</td></tr>",
                    count(l, "line"),
                    esc(l.get("source").and_then(Value::as_str).unwrap_or("")),
                    count(l, "calls"),
                );
            }
            b.push_str("</tbody></table></div>");
            let refuse = count(&rep, "would_refuse");
            let _ = write!(
                b,
                "<p id=\"would-refuse\">Enforced, these lines <strong>would refuse {}</strong> of the last 7 days.",
                esc(&calls_text(refuse)),
            );
            let skipped = count(&rep, "not_evaluated");
            if skipped > 0 {
                let _ = write!(
                    b,
                    " {} not evaluated (a JsonData line whose body was not read).",
                    esc(&calls_text(skipped))
                );
            }
            b.push_str(" Calls before the shadow lines were set are not counted.</p>");
        } else {
            b.push_str("<p class=\"error-text\">The shadow report is not available.</p>");
        }
    }
    if let Some(p) = t.previous.as_ref().filter(|p| p.until > now) {
        let _ = write!(
            b,
            "<p id=\"previous-secret\">The previous secret (SHA-256 <span class=\"mono\">{}</span>) keeps working until {}.</p>",
            esc(p.sha256.get(0..12).unwrap_or(&p.sha256)),
            time_el(Some(p.until)),
        );
    }
    if live {
        b.push_str("<div class=\"form-actions\">");
        if !secure {
            let _ = write!(
                b,
                "<a class=\"button\" href=\"/tokens/{eid}/suggest\">Suggest lines</a> "
            );
            if !t.shadow_limit_to.is_empty() {
                let _ = write!(
                    b,
                    "<a class=\"button primary\" href=\"/tokens/{eid}/promote\">Promote to enforced</a> "
                );
            }
        }
        let _ = write!(
            b,
            "<a class=\"button\" href=\"/tokens/{eid}/rotate\">Rotate secret</a></div>"
        );
    }
    b.push_str("</section>");
    b
}

/// `GET /tokens/{id}/suggest?days=30`: the lines that cover the token's calls, to add as shadow
/// lines.
pub async fn suggest(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let t = match editable(&app, &s, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let days = match param(&p, "days") {
        "" => "30",
        d => d,
    };
    let (status, out) = answer(
        api::suggest_lines(
            State(app.clone()),
            Admin(s.admin.clone()),
            Path(t.id.clone()),
            days_query(days),
        )
        .await,
    )
    .await;
    if status != StatusCode::OK {
        return api_failed(&s, status, &out);
    }
    let days = count(&out, "days");
    let eid = esc(&url_enc(&t.id));
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> / <a href=\"/tokens/{eid}\">{}</a> /</p><h1>Suggested lines</h1>\
         <p>The narrowest restriction lines that cover every allowed call of the token in the last {days} days \
         ({}, {} distinct): issue keys, numeric ids and dates become patterns, the rest stays literal, methods are kept.</p>\
         <form method=\"get\" action=\"/tokens/{eid}/suggest\" class=\"form inline\"><div class=\"row\">\
         <div class=\"field narrow\"><label for=\"days\">Days</label><input id=\"days\" name=\"days\" type=\"number\" min=\"1\" max=\"400\" value=\"{days}\"></div>\
         <div class=\"field actions\"><button type=\"submit\">Suggest again</button></div></div></form>",
        esc(&t.name),
        esc(&calls_text(count(&out, "calls"))),
        count(&out, "distinct_calls"),
    );
    let lines: Vec<&Value> = out
        .get("lines")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if lines.is_empty() {
        let _ = write!(
            b,
            "<p class=\"empty\" id=\"no-suggestions\">No allowed calls in the last {days} days: nothing to suggest. \
             <a href=\"/tokens/{eid}\">Back to the token</a>.</p>"
        );
        return render(&s, StatusCode::OK, "Suggested lines", "tokens", &b);
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/tokens/{eid}/suggest\" class=\"form\">{}\
         <fieldset><legend>Lines to add as shadow lines</legend>\
         <div class=\"table-wrap\"><table class=\"data\" id=\"suggested\"><thead><tr><th scope=\"col\">Add</th>\
         <th scope=\"col\">Line</th><th scope=\"col\" class=\"num\">Calls</th><th scope=\"col\">Example paths</th></tr></thead><tbody>",
        csrf_field(&s.csrf)
    );
    for (i, l) in lines.iter().enumerate() {
        let line = l.get("line").and_then(Value::as_str).unwrap_or("");
        let examples: Vec<String> = l
            .get("examples")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|e| format!("<code>{}</code>", esc(e)))
            .collect();
        let _ = write!(
            b,
            "<tr><td><input type=\"checkbox\" name=\"line\" id=\"line-{i}\" value=\"{}\" checked></td>\
             <td class=\"mono path\"><label for=\"line-{i}\">{}</label></td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(line),
            esc(line),
            count(l, "calls"),
            examples.join("<br>"),
        );
    }
    let _ = write!(
        b,
        "</tbody></table></div></fieldset>\
         <p class=\"help\">The chosen lines replace the token's shadow lines{}. They are evaluated on every call and never \
         enforced; the token page then counts the calls each matched and those none would allow.</p>\
         <div class=\"form-actions\"><button type=\"submit\" class=\"primary\">Add as shadow lines</button> \
         <a href=\"/tokens/{eid}\">Cancel</a></div></form>",
        if t.shadow_limit_to.is_empty() {
            String::new()
        } else {
            format!(" (now {})", t.shadow_limit_to.len())
        },
    );
    render(&s, StatusCode::OK, "Suggested lines", "tokens", &b)
}

/// `POST /tokens/{id}/suggest`: the checked lines become the token's `shadow_limit_to`.
pub async fn add_shadow(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let csrf: Params = form.iter().filter(|(k, _)| k == "csrf").cloned().collect();
    if !csrf_form_ok(&csrf, &s) {
        return csrf_refused(&s);
    }
    let lines: Vec<&str> = form
        .iter()
        .filter(|(k, v)| k == "line" && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
        .collect();
    if lines.is_empty() {
        return message_page(
            StatusCode::BAD_REQUEST,
            "No line chosen",
            "Choose at least one suggested line to add as a shadow line. Nothing was changed.",
            Some(&s),
        );
    }
    let body = json!({ "shadow_limit_to": lines }).to_string();
    let (status, out) = answer(
        api::patch_token(
            State(app.clone()),
            Admin(s.admin.clone()),
            Path(id.clone()),
            Bytes::from(body),
        )
        .await,
    )
    .await;
    if status != StatusCode::OK {
        return api_failed(&s, status, &out);
    }
    Redirect::to(&format!(
        "/tokens/{}?done=shadowed#least-privilege",
        url_enc(&id)
    ))
    .into_response()
}

pub async fn confirm_promote(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    match editable(&app, &s, &id).await {
        Ok(t) if t.shadow_limit_to.is_empty() => message_page(
            StatusCode::CONFLICT,
            "No shadow lines",
            "The token has no shadow lines to promote. Suggest lines first.",
            Some(&s),
        ),
        Ok(t) => confirm(&s, &t, "promote"),
        Err(r) => r,
    }
}

pub async fn promote(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let (status, out) = answer(
        api::promote_shadow(State(app.clone()), Admin(s.admin.clone()), Path(id.clone())).await,
    )
    .await;
    if status != StatusCode::OK {
        return api_failed(&s, status, &out);
    }
    Redirect::to(&format!("/tokens/{}?done=promoted", url_enc(&id))).into_response()
}

pub async fn confirm_rotate(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    let t = match load(&app, &s, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if t.revoked_at.is_some() {
        return message_page(
            StatusCode::CONFLICT,
            "Revoked",
            "The token is revoked; create a new one.",
            Some(&s),
        );
    }
    let eid = esc(&url_enc(&t.id));
    let b = format!(
        "<p class=\"crumbs\"><a href=\"/tokens\">Tokens</a> / <a href=\"/tokens/{eid}\">{}</a> /</p><h1>Rotate secret?</h1>\
         <div class=\"banner banner-warning\"><p><strong>{}</strong> (<code>{}</code>{})</p>\
         <p>A new secret is made and shown once. The current one keeps working for the grace period, so scripts can switch over; \
         after it, Envoys answer 401 “token expired” for it.</p></div>\
         <form method=\"post\" action=\"/tokens/{eid}/rotate\" class=\"form\">{}\
         <input type=\"hidden\" name=\"nonce\" value=\"{}\">\
         <div class=\"field narrow\"><label for=\"grace_hours\">Grace period in hours</label>\
         <input id=\"grace_hours\" name=\"grace_hours\" type=\"number\" min=\"0\" max=\"720\" step=\"any\" value=\"24\" aria-describedby=\"grace-help\">\
         <p class=\"help\" id=\"grace-help\">0 to 720; 0 ends the current secret at once.</p></div>\
         <div class=\"form-actions\"><button type=\"submit\" class=\"danger\">Rotate secret</button> <a href=\"/tokens/{eid}\">Cancel</a></div></form>",
        esc(&t.name),
        esc(&t.name),
        esc(&t.id),
        t.user.as_deref().map_or(String::new(), |u| format!(", user {}", esc(u))),
        csrf_field(&s.csrf),
        esc(&secret::random_base62(22).unwrap_or_default()),
    );
    render(&s, StatusCode::OK, "Rotate secret", "tokens", &b)
}

/// `POST /tokens/{id}/rotate`: the answer is the shown-once page of the new secret itself.
pub async fn rotate(
    s: Signed,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let nonce = param(&form, "nonce");
    if !nonce.is_empty() && super::nonce_used(nonce) {
        return message_page(
            StatusCode::CONFLICT,
            "Already rotated",
            "This form was sent before and the secret was rotated then (the new secret was shown \
             once and is not shown again). Nothing new was made.",
            Some(&s),
        );
    }
    let grace = param(&form, "grace_hours");
    let grace = if grace.is_empty() { "24" } else { grace };
    let Ok(hours) = grace.parse::<f64>() else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Not done",
            "The grace period must be a number of hours, 0 to 720. Nothing was changed.",
            Some(&s),
        );
    };
    let body = json!({ "grace_hours": hours }).to_string();
    let (status, out) = answer(
        api::rotate_token(
            State(app.clone()),
            Admin(s.admin.clone()),
            Path(id.clone()),
            Bytes::from(body),
        )
        .await,
    )
    .await;
    if status != StatusCode::OK {
        return api_failed(&s, status, &out);
    }
    if !nonce.is_empty() {
        super::mark_nonce(nonce);
    }
    shown_once(&s, &app, &out, true)
}

// ---------------------------------------------------------------------------- audit log

fn time_param(raw: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let full = if raw.len() == 10 {
        format!("{raw}T00:00:00Z")
    } else {
        raw.to_owned()
    };
    time::parse_rfc3339(&full)
        .map(Some)
        .ok_or_else(|| format!("`{raw}` is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

pub async fn audit_log(
    s: Signed,
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Response {
    let (token, user, decision, reason) = (
        param(&p, "token"),
        param(&p, "user"),
        param(&p, "decision"),
        param(&p, "reason"),
    );
    let decision = if decision == "allow" || decision == "deny" {
        decision
    } else {
        ""
    };
    let reason = if tokengate_core::policy::Reason::is_audit_reason(reason) {
        reason
    } else {
        ""
    };
    let (from_raw, to_raw) = (param(&p, "from"), param(&p, "to"));
    let mut problems = Vec::new();
    let from = time_param(from_raw).unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    let to = time_param(to_raw).unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    let cursor = param(&p, "cursor")
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)));
    let some = |v: &str| Some(v.to_owned()).filter(|v| !v.is_empty());
    let q = AuditQuery {
        token: some(token),
        user: some(user),
        decision: some(decision),
        reason: some(reason),
        from,
        to,
        limit: i64::try_from(PAGE).unwrap_or(50) + 1,
        cursor,
    };
    let mut rows = match app.store.audit_lines(&q).await {
        Ok(r) => r,
        Err(e) => return store_error_page(e, Some(&s)),
    };
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let mut b = String::from("<div class=\"page-head\"><h1>Audit log</h1>");
    let filters = [
        ("token", token),
        ("user", user),
        ("decision", decision),
        ("reason", reason),
        ("from", from_raw),
        ("to", to_raw),
    ];
    let export_q: Vec<(&str, String)> = filters
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    let export_pairs: Vec<(&str, &str)> = export_q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _ = write!(
        b,
        "<a class=\"button\" href=\"/audit-log/export{}\" download=\"tokengate-audit.ndjson\">Export NDJSON</a></div>",
        esc(&qs(&export_pairs))
    );
    for pr in &problems {
        let _ = write!(
            b,
            "<div class=\"banner banner-error\" role=\"alert\">{}</div>",
            esc(pr)
        );
    }
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/audit-log\" role=\"search\" aria-label=\"Filter the audit log\">\
         <div class=\"field\"><label for=\"a-token\">Token id</label><input id=\"a-token\" name=\"token\" class=\"mono\" value=\"{}\"></div>\
         <div class=\"field\"><label for=\"a-user\">User</label><input id=\"a-user\" name=\"user\" value=\"{}\"></div>\
         <div class=\"field\"><label for=\"a-decision\">Decision</label><select id=\"a-decision\" name=\"decision\">",
        esc(token),
        esc(user)
    );
    for (v, l) in [("", "Any"), ("allow", "Allowed"), ("deny", "Refused")] {
        let _ = write!(
            b,
            "<option value=\"{v}\"{}>{l}</option>",
            if v == decision { " selected" } else { "" }
        );
    }
    b.push_str("</select></div><div class=\"field\"><label for=\"a-reason\">Reason</label><select id=\"a-reason\" name=\"reason\"><option value=\"\">Any</option>");
    for r in tokengate_core::policy::Reason::audit_reasons() {
        let _ = write!(
            b,
            "<option value=\"{r}\"{}>{r}</option>",
            if r == reason { " selected" } else { "" }
        );
    }
    let _ = write!(
        b,
        "</select></div><div class=\"field\"><label for=\"a-from\">From (UTC, inclusive)</label><input id=\"a-from\" name=\"from\" placeholder=\"YYYY-MM-DD\" value=\"{}\"></div>\
         <div class=\"field\"><label for=\"a-to\">To (UTC, exclusive)</label><input id=\"a-to\" name=\"to\" placeholder=\"YYYY-MM-DDThh:mm:ssZ\" value=\"{}\"></div>\
         <div class=\"field actions\"><button type=\"submit\">Filter</button> <a href=\"/audit-log\">Clear</a></div></form>",
        esc(from_raw),
        esc(to_raw)
    );
    if rows.is_empty() {
        b.push_str("<p class=\"empty\">No audit lines match.</p>");
    } else {
        b.push_str(&recent_calls_table(&rows, true));
    }
    b.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if cursor.is_some() {
        let _ = write!(
            b,
            "<a href=\"/audit-log{}\">⇤ Newest</a>",
            esc(&qs(&export_pairs))
        );
    }
    if more {
        if let Some((seq, r)) = rows.last() {
            let c = format!("{}.{seq}", r.ts_ms);
            let mut pairs = export_pairs.clone();
            pairs.push(("cursor", &c));
            let _ = write!(
                b,
                "<a href=\"/audit-log{}\" rel=\"next\">Older →</a>",
                esc(&qs(&pairs))
            );
        }
    }
    b.push_str("</nav>");
    render(&s, StatusCode::OK, "Audit log", "audit", &b)
}

/// The NDJSON export of the audit page's selection: the API's own export (`Accept:
/// application/x-ndjson`), as a download.
pub async fn audit_export(
    s: Signed,
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Response {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for k in ["token", "user", "decision", "reason", "from", "to"] {
        let v = param(&p, k);
        if v.is_empty() {
            continue;
        }
        let v = if (k == "from" || k == "to") && v.len() == 10 {
            format!("{v}T00:00:00Z")
        } else {
            v.to_owned()
        };
        pairs.push((k.to_owned(), v));
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let uri: Uri = match format!("/api/v1/audit{}", qs(&refs)).parse() {
        Ok(u) => u,
        Err(_) => {
            return message_page(
                StatusCode::BAD_REQUEST,
                "Bad filter",
                "The filter could not be read.",
                Some(&s),
            )
        }
    };
    let Ok(Query(params)) = Query::<crate::audit::Params>::try_from_uri(&uri) else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            "The filter could not be read.",
            Some(&s),
        );
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/x-ndjson"),
    );
    match crate::audit::query(
        State(app.clone()),
        Admin(s.admin.clone()),
        headers,
        Query(params),
    )
    .await
    {
        Ok(mut r) => {
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"tokengate-audit.ndjson\""),
            );
            r
        }
        Err(e) => {
            let (status, out) = answer::<Response>(Err(e)).await;
            api_failed(&s, status, &out)
        }
    }
}

// ---------------------------------------------------------------------------- fleet

pub async fn fleet(s: Signed, State(app): State<Arc<App>>) -> Response {
    let now = now_ms();
    let version = app.publisher.current().version.clone();
    let nodes = match app.store.nodes().await {
        Ok(n) => n,
        Err(e) => return store_error_page(e, Some(&s)),
    };
    let mut b = format!(
        "<h1>Fleet</h1><p>Configuration version now: <strong class=\"mono\" id=\"current-version\">{}</strong>. \
         Every Envoy subscribed by ECDS is listed with the version it accepted and its last refusal (NACK).</p>",
        esc(&version)
    );
    if nodes.is_empty() {
        b.push_str("<p class=\"empty\">No Envoy has connected yet.</p>");
    } else {
        b.push_str("<div class=\"table-wrap\"><table class=\"data\"><thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Cluster</th>\
                    <th scope=\"col\">Connection</th><th scope=\"col\">Accepted version</th><th scope=\"col\">Last NACK error</th>\
                    <th scope=\"col\">Connected at</th><th scope=\"col\">Last seen</th><th scope=\"col\">Instance</th></tr></thead><tbody>");
        for n in &nodes {
            let connected = n.connected && now - n.last_seen < 15_000;
            let ver = match &n.acked_version {
                Some(v) if *v == version => format!(
                    "<span class=\"mono\">{}</span> {}",
                    esc(v),
                    lozenge("success", "current")
                ),
                Some(v) => format!(
                    "<span class=\"mono\">{}</span> {}",
                    esc(v),
                    lozenge("moved", "behind")
                ),
                None => lozenge("default", "none yet"),
            };
            let _ = write!(
                b,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{ver}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono sub\">{}</td></tr>",
                esc(&n.node_id),
                esc(&n.cluster),
                if connected { lozenge("success", "connected") } else { lozenge("removed", "disconnected") },
                n.last_error.as_deref().map_or("<span class=\"muted\">—</span>".to_owned(), |e| format!("<span class=\"error-text\">{}</span>", esc(e))),
                time_el(Some(n.connected_at)),
                time_el(Some(n.last_seen)),
                esc(&n.instance),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    render(&s, StatusCode::OK, "Fleet", "fleet", &b)
}

// ---------------------------------------------------------------------------- settings

fn settings_page(
    s: &Signed,
    settings: &Value,
    version: &str,
    flash_html: &str,
    err: Option<&str>,
    status: StatusCode,
) -> Response {
    let g = |k: &str| settings.get(k);
    let auth = g("auth_methods").and_then(Value::as_str).unwrap_or("basic");
    let secure = secure_mode(settings);
    let paths: Vec<String> = g("protected_paths")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_else(|| vec!["/rest/".into()]);
    let unknown = g("unknown_credentials")
        .and_then(Value::as_str)
        .unwrap_or("passthrough");
    let max_body = g("max_body_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(1_048_576);
    let ident = g("identity");
    let ih = ident
        .and_then(|i| i.get("header"))
        .and_then(Value::as_str)
        .unwrap_or("x-forwarded-user");
    let rh = ident
        .and_then(|i| i.get("run_as_header"))
        .and_then(Value::as_str)
        .unwrap_or("contextUser");
    let mut b = format!("<h1>Settings</h1>{flash_html}");
    if let Some(e) = err {
        let _ = write!(
            b,
            "<div class=\"banner banner-error\" role=\"alert\">Nothing was saved: {}</div>",
            esc(e)
        );
    }
    let _ = write!(
        b,
        "<p>The plugin settings every Envoy is sent with the tokens (configuration version <span class=\"mono\">{}</span>). \
         Saving pushes a new version at once.</p><form method=\"post\" action=\"/settings\" class=\"form\">{}\
         <div class=\"field\"><label for=\"s-auth\">Authentication methods</label><select id=\"s-auth\" name=\"auth_methods\" aria-describedby=\"s-auth-help\">",
        esc(version),
        csrf_field(&s.csrf)
    );
    for (v, l) in [
        ("basic", "Basic only"),
        ("bearer", "Bearer only"),
        ("both", "Basic and Bearer"),
    ] {
        let _ = write!(
            b,
            "<option value=\"{v}\"{}>{l}</option>",
            if v == auth { " selected" } else { "" }
        );
    }
    let _ = write!(
        b,
        "</select><p class=\"help\" id=\"s-auth-help\">Schemes that may carry tokens; a token in another scheme is 401. Tokens without a user work with Basic only.</p></div>\
         <div class=\"field check\"><input type=\"checkbox\" id=\"s-secure\" name=\"secure_mode\" value=\"on\"{} aria-describedby=\"s-secure-help\">\
         <label for=\"s-secure\">Secure mode</label><p class=\"help\" id=\"s-secure-help\">Tokens cannot be edited, only revoked or deleted (as in the original app). \
         The service always sends digests only.</p></div>\
         <div class=\"field\"><label for=\"s-paths\">Protected paths</label><textarea id=\"s-paths\" name=\"protected_paths\" rows=\"3\" class=\"mono\" aria-describedby=\"s-paths-help\">{}</textarea>\
         <p class=\"help\" id=\"s-paths-help\">Path prefixes guarded, one per line; add <code>/jira/rest/</code> for a context path.</p></div>\
         <div class=\"field\"><label for=\"s-unknown\">Credentials that are no token</label><select id=\"s-unknown\" name=\"unknown_credentials\">",
        if secure { " checked" } else { "" },
        esc(&paths.join("\n")),
    );
    for (v, l) in [
        (
            "passthrough",
            "Pass to the app (passwords, Jira PATs keep working)",
        ),
        ("deny", "Refuse with 401"),
    ] {
        let _ = write!(
            b,
            "<option value=\"{v}\"{}>{l}</option>",
            if v == unknown { " selected" } else { "" }
        );
    }
    let _ = write!(
        b,
        "</select></div><div class=\"field\"><label for=\"s-body\">Largest JSON body buffered (bytes)</label><input id=\"s-body\" name=\"max_body_bytes\" type=\"number\" min=\"1\" value=\"{max_body}\"></div>\
         <div class=\"field\"><label for=\"s-ih\">Identity header</label><input id=\"s-ih\" name=\"identity_header\" class=\"mono\" value=\"{}\"></div>\
         <div class=\"field\"><label for=\"s-rh\">Run-as header</label><input id=\"s-rh\" name=\"run_as_header\" class=\"mono\" value=\"{}\"></div>\
         <div class=\"form-actions\"><button type=\"submit\" class=\"primary\">Save and push</button></div></form>",
        esc(ih),
        esc(rh),
    );
    render(s, status, "Settings", "settings", &b)
}

pub async fn settings(s: Signed, State(app): State<Arc<App>>, Query(p): Query<Params>) -> Response {
    let settings = settings_of(&app).await;
    let version = app.publisher.current().version.clone();
    settings_page(&s, &settings, &version, &flash(&p), None, StatusCode::OK)
}

pub async fn save_settings(
    s: Signed,
    State(app): State<Arc<App>>,
    Form(form): Form<Params>,
) -> Response {
    if !csrf_form_ok(&form, &s) {
        return csrf_refused(&s);
    }
    let current = settings_of(&app).await;
    let mut m = current.as_object().cloned().unwrap_or_default();
    let g = |k: &str| form.get(k).map_or("", |v| v.trim());
    m.insert("auth_methods".into(), json!(g("auth_methods")));
    m.insert(
        "secure_mode".into(),
        json!(form.contains_key("secure_mode")),
    );
    m.insert(
        "protected_paths".into(),
        json!(g("protected_paths")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()),
    );
    m.insert(
        "unknown_credentials".into(),
        json!(g("unknown_credentials")),
    );
    match g("max_body_bytes").parse::<u64>() {
        Ok(n) => {
            m.insert("max_body_bytes".into(), json!(n));
        }
        Err(_) => {
            m.insert("max_body_bytes".into(), json!(g("max_body_bytes")));
        }
    }
    let mut ident = m
        .get("identity")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    ident.insert("header".into(), json!(g("identity_header")));
    ident.insert("run_as_header".into(), json!(g("run_as_header")));
    m.insert("identity".into(), Value::Object(ident));
    let attempted = Value::Object(m);
    let (status, out) = answer(
        api::put_settings(
            State(app.clone()),
            Admin(s.admin.clone()),
            Bytes::from(attempted.to_string()),
        )
        .await,
    )
    .await;
    if status != StatusCode::OK {
        let msg = format!(
            "{}{}",
            out.get("field")
                .and_then(Value::as_str)
                .map_or(String::new(), |f| format!("{f}: ")),
            out.get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused")
        );
        let version = app.publisher.current().version.clone();
        return settings_page(&s, &attempted, &version, "", Some(&msg), status);
    }
    Redirect::to("/settings?done=settings").into_response()
}

// ---------------------------------------------------------------------------- admin log

pub async fn admin_log(
    s: Signed,
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Response {
    let cursor = param(&p, "cursor").parse::<i64>().ok();
    let mut rows = match app
        .store
        .admin_log(i64::try_from(PAGE).unwrap_or(50) + 1, cursor)
        .await
    {
        Ok(r) => r,
        Err(e) => return store_error_page(e, Some(&s)),
    };
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let mut b =
        String::from("<h1>Admin log</h1><p>Every change and every sign-in, newest first.</p>");
    if rows.is_empty() {
        b.push_str("<p class=\"empty\">Nothing yet.</p>");
    } else {
        b.push_str("<div class=\"table-wrap\"><table class=\"data\"><thead><tr><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Admin</th>\
                    <th scope=\"col\">Action</th><th scope=\"col\">Target</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
        for e in &rows {
            let kind = match e.action.as_str() {
                "admin.login_failed" | "token.revoke" | "token.delete" => "removed",
                "admin.login" => "default",
                _ => "success",
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"detail\">{}</td></tr>",
                time_el(Some(e.at)),
                esc(&e.admin),
                lozenge(kind, &e.action),
                esc(e.target.as_deref().unwrap_or("—")),
                esc(e.detail.as_deref().unwrap_or("")),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    b.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if cursor.is_some() {
        b.push_str("<a href=\"/admin-log\">⇤ Newest</a>");
    }
    if more {
        if let Some(e) = rows.last() {
            let _ = write!(
                b,
                "<a href=\"/admin-log?cursor={}\" rel=\"next\">Older →</a>",
                e.seq
            );
        }
    }
    b.push_str("</nav>");
    render(&s, StatusCode::OK, "Admin log", "admin-log", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_line_numbers_map_to_textarea_lines() {
        let text = "[get]/rest/a\n\n  \n/rest/(?<=x)\r\n";
        let (lines, at) = lines_of(text);
        assert_eq!(lines, vec!["[get]/rest/a", "/rest/(?<=x)"]);
        assert_eq!(at, vec![1, 4]);
        let e = field_error(
            &json!({"error": "look-behind", "field": "limit_to[1]", "line": 2, "column": 7}),
            text,
        );
        assert_eq!((e.line, e.column), (Some(4), Some(7)));
        assert_eq!(e.text.as_deref(), Some("/rest/(?<=x)"));
        let html = lines_error_html(Some(&e));
        assert!(html.contains("Line 4, column 7: look-behind"));
        assert!(html.contains("/rest/(?&lt;=x)\n      ^"));
    }

    #[test]
    fn lists_split_on_lines_and_commas() {
        assert_eq!(
            list_of("10.0.0.0/8, 127.0.0.1\n\n::1"),
            vec!["10.0.0.0/8", "127.0.0.1", "::1"]
        );
        assert_eq!(qs(&[("q", "a b&c"), ("status", "")]), "?q=a%20b%26c");
        assert_eq!(qs(&[("q", "")]), "");
    }
}
