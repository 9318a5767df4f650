//! Notices (SPEC §19): JSON POSTs to `--notify-url` for `token.expiring` (14, 3 and 1 days
//! before), `token.unused` (no allowed call for `--unused-notice-days`), `token.revoked`,
//! `token.secret_previous_used` (the old secret of a rotated token used after half its grace
//! period); and
//! the optional `--revoke-unused-after-days` auto-revoke.
//!
//! A scan (every `--notify-scan-seconds`) turns what is due into rows of the `notices` table,
//! each under a key naming the event and its occasion (`token.expiring:ci:3:<expiry>`), so an
//! event is queued once however often the scan sees it, by any instance. A sender delivers
//! queued rows in order, at least once: a row is marked sent only after a 2xx, and retried with
//! backoff (250 ms to 30 s) while the receiver is away.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokengate_core::time;

use crate::store::{Audit, Store, TokenQuery};
use crate::{now_ms, App};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: Option<String>,
    pub unused_days: i64,
    pub revoke_unused_after_days: Option<i64>,
    pub scan: Duration,
}

fn at_text(now: i64) -> String {
    time::format_rfc3339_ms(now)
}

/// The notices due now, as (dedupe key, event, token id, body).
async fn due(
    store: &Store,
    s: &Settings,
    now: i64,
) -> crate::store::Result<Vec<(String, String, String, String)>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_tokens(
                &TokenQuery {
                    limit: 1000,
                    cursor: cursor.clone(),
                    ..Default::default()
                },
                now,
            )
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id.clone());
        for t in &page {
            let at = time::format_rfc3339_ms(now);
            if let Some(rev) = t.revoked_at {
                // Revoked within the last day (older revocations predate the notices).
                if now - rev < DAY_MS {
                    out.push((
                        format!("token.revoked:{}:{rev}", t.id),
                        "token.revoked".into(),
                        t.id.clone(),
                        json!({"event": "token.revoked", "token_id": t.id, "at": at,
                               "revoked_at": time::format_rfc3339_ms(rev), "revoked_by": t.revoked_by})
                        .to_string(),
                    ));
                }
                continue;
            }
            if let Some(exp) = t.expires_at {
                if exp <= now {
                    continue;
                }
                // The nearest threshold passed: 14, then 3, then 1 day before.
                if let Some(d) = [1i64, 3, 14].into_iter().find(|d| exp - now <= d * DAY_MS) {
                    out.push((
                        format!("token.expiring:{}:{d}:{exp}", t.id),
                        "token.expiring".into(),
                        t.id.clone(),
                        json!({"event": "token.expiring", "token_id": t.id, "at": at,
                               "expires": time::format_rfc3339_ms(exp), "days": d, "user": t.user})
                        .to_string(),
                    ));
                }
            }
            // The old secret still in use after half the grace period: a script was missed.
            if let Some(p) = &t.previous {
                let half = p.since + (p.until - p.since) / 2;
                if now >= half && now < p.until {
                    if let Some(at) = store.previous_secret_used(&t.id, half).await? {
                        out.push((
                            format!("token.secret_previous_used:{}:{}", t.id, p.until),
                            "token.secret_previous_used".into(),
                            t.id.clone(),
                            json!({"event": "token.secret_previous_used", "token_id": t.id, "at": at_text(now),
                                   "last_used_at": time::format_rfc3339_ms(at),
                                   "until": time::format_rfc3339_ms(p.until)})
                            .to_string(),
                        ));
                    }
                }
            }
            let last_use = t.usage.last_used_at.unwrap_or(t.created_at);
            if now - last_use >= s.unused_days * DAY_MS {
                out.push((
                    format!("token.unused:{}:{last_use}", t.id),
                    "token.unused".into(),
                    t.id.clone(),
                    json!({"event": "token.unused", "token_id": t.id, "at": at,
                           "last_used_at": t.usage.last_used_at.map(time::format_rfc3339_ms),
                           "days": s.unused_days})
                    .to_string(),
                ));
            }
        }
        if page.len() < 1000 {
            break;
        }
    }
    Ok(out)
}

/// Revokes active tokens with no allowed call for `days` (nor since their creation).
async fn auto_revoke(app: &App, days: i64, now: i64) -> crate::store::Result<usize> {
    let tokens = app.store.all_tokens().await?;
    let mut n = 0;
    for t in tokens {
        if t.revoked_at.is_some() || t.expires_at.is_some_and(|e| e <= now) {
            continue;
        }
        let last_use = t.usage.last_used_at.unwrap_or(t.created_at);
        if now - last_use < days * DAY_MS {
            continue;
        }
        let log = Audit {
            admin: "tokengate-server",
            action: "token.revoke",
            target: Some(&t.id),
            detail: Some(format!(
                "no allowed call for {days} days (--revoke-unused-after-days)"
            )),
        };
        if app.store.revoke_token(&t.id, log, now).await? {
            tracing::info!(token = %t.id, "revoked: unused for {days} days");
            n += 1;
        }
    }
    if n > 0 {
        app.publisher.changed();
    }
    Ok(n)
}

/// The scan loop (queues what is due, auto-revokes).
pub async fn scan(app: Arc<App>, s: Settings) {
    loop {
        let now = now_ms();
        if let Some(days) = s.revoke_unused_after_days {
            if let Err(e) = auto_revoke(&app, days, now).await {
                tracing::warn!("auto-revoke: {e}");
            }
        }
        if s.url.is_some() {
            match due(&app.store, &s, now).await {
                Ok(items) => {
                    for (key, event, token, body) in items {
                        if let Err(e) = app
                            .store
                            .queue_notice(&key, &event, &token, &body, now)
                            .await
                        {
                            tracing::warn!("queueing a notice: {e}");
                        }
                    }
                    app.notify_wake.notify_one();
                }
                Err(e) => tracing::warn!("notices: {e}"),
            }
        }
        tokio::time::sleep(s.scan).await;
    }
}

/// The sender: queued notices in order, each until a 2xx.
pub async fn send(app: Arc<App>, url: String) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("--notify-url: no HTTP client: {e}");
            return;
        }
    };
    let mut failures: u32 = 0;
    loop {
        let next = match app.store.next_notice(now_ms()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("notices: {e}");
                None
            }
        };
        let Some((seq, body)) = next else {
            tokio::select! {
                () = app.notify_wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        let ok = matches!(
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-tokengate-notice", seq.to_string())
                .body(body)
                .send()
                .await,
            Ok(r) if r.status().is_success()
        );
        if ok {
            if let Err(e) = app.store.notice_sent(seq, now_ms()).await {
                tracing::warn!("notices: {e}");
            }
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            if failures == 1 {
                tracing::warn!(url = %url, "--notify-url does not take notices; retrying with backoff");
            }
            let ms = (250u64 << failures.min(7).saturating_sub(1)).min(30_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}
