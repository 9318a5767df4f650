//! The audit receiver (`POST /audit`, SPEC §16) and the audit query API
//! (`GET /api/v1/audit`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokengate_core::record::{self, Record};
use tokengate_core::time;

use crate::api::{Admin, ApiError};
use crate::secret;
use crate::store::AuditQuery;
use crate::{now_ms, App};

/// `POST /audit`: a batch from the filter, stored whole once it is committed, or refused
/// whole.
pub async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| secret::same_secret(v, &app.audit_authorization));
    if !authorized {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "audit batches need the service's audit credential",
        )
        .into_response();
    }
    let batch = headers
        .get("x-tokengate-batch")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if batch.is_empty() || batch.len() > 128 || !batch.bytes().all(|c| c.is_ascii_graphic()) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "x-tokengate-batch: 1 to 128 visible characters",
        )
        .into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "the batch is not UTF-8").into_response();
    };
    let mut lines: Vec<Record> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match record::parse_line(line) {
            Ok(r) => lines.push(r),
            Err(e) => {
                app.metrics
                    .audit_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("line {}: {e}; nothing of this batch was stored", i + 1),
                )
                .into_response();
            }
        }
    }
    if lines.is_empty() {
        return ApiError::new(StatusCode::BAD_REQUEST, "an empty batch").into_response();
    }
    match app.store.insert_audit_batch(batch, &lines, now_ms()).await {
        Ok(true) => {
            app.metrics
                .audit_lines
                .fetch_add(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(f) = &app.forwarder {
                f.push(&lines);
            }
            Json(json!({"stored": lines.len()})).into_response()
        }
        Ok(false) => {
            app.metrics
                .audit_duplicates
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Json(json!({"stored": 0, "duplicate": true})).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct Params {
    token: Option<String>,
    user: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn bad(field: &str, msg: &str) -> ApiError {
    ApiError::from(crate::plugin::Invalid::new(field, msg))
}

fn query_of(p: &Params) -> Result<AuditQuery, ApiError> {
    let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    let when = |o: &Option<String>, f: &str| -> Result<Option<i64>, ApiError> {
        match nonempty(o) {
            None => Ok(None),
            Some(t) => time::parse_rfc3339(&t)
                .map(Some)
                .ok_or_else(|| bad(f, "an RFC 3339 time")),
        }
    };
    let decision = nonempty(&p.decision);
    if let Some(d) = &decision {
        if d != "allow" && d != "deny" {
            return Err(bad("decision", "`decision` is allow or deny"));
        }
    }
    let reason = nonempty(&p.reason);
    if let Some(r) = &reason {
        if !tokengate_core::policy::Reason::is_audit_reason(r) {
            return Err(bad("reason", "not one of SPEC §11's reasons"));
        }
    }
    let limit = match nonempty(&p.limit) {
        None => 100,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(bad("limit", "`limit` must be 1 to 1000")),
        },
    };
    let cursor = match nonempty(&p.cursor) {
        None => None,
        Some(c) => {
            let (a, b) = c
                .split_once('.')
                .ok_or_else(|| bad("cursor", "not a cursor from this API"))?;
            Some((
                a.parse()
                    .map_err(|_| bad("cursor", "not a cursor from this API"))?,
                b.parse()
                    .map_err(|_| bad("cursor", "not a cursor from this API"))?,
            ))
        }
    };
    Ok(AuditQuery {
        token: nonempty(&p.token),
        user: nonempty(&p.user),
        decision,
        reason,
        from: when(&p.from, "from")?,
        to: when(&p.to, "to")?,
        limit,
        cursor,
    })
}

/// `GET /api/v1/audit`: a page as JSON, or with `Accept: application/x-ndjson` the whole
/// selection streamed page by page (never built in memory).
pub async fn query(
    State(app): State<Arc<App>>,
    _admin: Admin,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Response, ApiError> {
    let mut q = query_of(&p)?;
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if ndjson {
        q.limit = 1000;
        let store = app.store.clone();
        let stream = async_stream(store, q);
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(r);
    }
    let want = q.limit;
    q.limit = want + 1;
    let mut rows = app.store.audit_lines(&q).await?;
    let more = rows.len() > usize::try_from(want).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(want).unwrap_or(usize::MAX));
    let next = if more {
        rows.last().map(|(seq, r)| format!("{}.{seq}", r.ts_ms))
    } else {
        None
    };
    // Written by hand around the lines so that each keeps the §11 field order.
    let mut body = String::from("{\"lines\":[");
    for (i, (_, r)) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&r.to_line());
    }
    body.push_str("],\"next\":");
    body.push_str(&Value::from(next).to_string());
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn async_stream(
    store: crate::store::Store,
    q: AuditQuery,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(q), move |state| {
        let store = store.clone();
        async move {
            let mut q = state?;
            match store.audit_lines(&q).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let mut out = String::new();
                    for (_, r) in &rows {
                        out.push_str(&r.to_line());
                        out.push('\n');
                    }
                    let full = rows.len() as i64 >= q.limit;
                    let next = rows.last().map(|(seq, r)| (r.ts_ms, *seq));
                    q.cursor = next;
                    Some((Ok(Bytes::from(out)), full.then_some(q)))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    })
}
