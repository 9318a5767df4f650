//! `tokenctl explain` and the service's `/api/v1/explain`: the decision the filter would take for one request, and why.
//!
//! The decision is the filter's own: [`policy::decide_headers`] then, for a buffered body,
//! [`policy::decide_body`]. The per-line trace comes from the restriction module's
//! [`crate::restriction::Restrictions::explain`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::canonical::{self, Query};
use crate::config::Config;
use crate::policy::{self, Decision, RequestHeaders};
use crate::reply;
use crate::restriction::{Explanation, Outcome, RequestView};
use serde_json::{json, Map, Value};

/// The request as given on the command line.
pub struct Request {
    pub method: String,
    /// `:path` as Envoy would see it: path and query, as sent.
    pub target: String,
    /// Lowercase name → values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Option<Vec<u8>>,
    /// `source.address`, when given.
    pub client: Option<String>,
}

struct Headers<'a>(&'a Request);

impl RequestHeaders for Headers<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        // The host joins repeated headers with a comma.
        self.0
            .headers
            .get(&name.to_ascii_lowercase())
            .map(|v| Cow::Owned(v.join(",").into_bytes()))
    }
    fn count(&self, name: &str) -> usize {
        self.0
            .headers
            .get(&name.to_ascii_lowercase())
            .map_or(0, Vec::len)
    }
    fn source_address(&self) -> Option<Cow<'_, [u8]>> {
        self.0
            .client
            .as_deref()
            .map(|c| Cow::Borrowed(c.as_bytes()))
    }
}

/// Turns `--url` (a full URL or a path with query) into the `:path` Envoy sees.
pub fn target_of(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = if let Some(i) = url.find("://") {
        let after = url.get(i + 3..).unwrap_or("");
        match after.find(['/', '?']) {
            Some(j) => {
                let t = after.get(j..).unwrap_or("/");
                if t.starts_with('?') {
                    format!("/{t}")
                } else {
                    t.to_owned()
                }
            }
            None => "/".to_owned(),
        }
    } else if url.starts_with('/') {
        url.to_owned()
    } else {
        return Err(format!(
            "--url `{url}` is neither a full URL (https://jira.example.com/rest/...) nor a path starting with `/`"
        ));
    };
    // curl never sends the fragment.
    let rest = rest.split('#').next().unwrap_or("").to_owned();
    if rest.bytes().any(|c| c <= b' ' || c == 0x7f) {
        return Err(
            "--url contains spaces or control characters: percent-encode them (%20)".into(),
        );
    }
    Ok(rest)
}

/// Parses a `--header 'Name: value'`.
pub fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("--header `{h}` needs the form 'Name: value'"))?;
    let name = name.trim();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
    if !ok {
        return Err(format!(
            "--header `{h}`: `{name}` is not a valid header name"
        ));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
}

pub struct Outcome2 {
    pub json: Value,
    pub text: String,
    pub denied: bool,
}

/// The SPEC §19 parts of the decision, as the audit line reports them.
fn push_extras(j: &mut Map<String, Value>, text: &mut String, e: policy::Extras) {
    match e.shadow {
        policy::ShadowRule::Absent => {}
        policy::ShadowRule::NotEvaluated => {
            text.push_str("  shadow lines: not evaluated\n");
            j.insert("shadow_rule".into(), Value::Null);
        }
        policy::ShadowRule::Line(0) => {
            text.push_str(
                "  shadow lines: none matches (enforced, they would refuse this request)\n",
            );
            j.insert("shadow_rule".into(), json!(0));
        }
        policy::ShadowRule::Line(n) => {
            text.push_str(&format!("  shadow lines: line {n} matches\n"));
            j.insert("shadow_rule".into(), json!(n));
        }
    }
    if let Some(previous) = e.previous_secret {
        let which = if previous { "previous" } else { "current" };
        text.push_str(&format!("  secret: {which}\n"));
        j.insert("secret".into(), json!(which));
    }
}

/// Decides and explains.
pub fn explain(config: &Config, req: &Request, now_ms: i64) -> Outcome2 {
    let headers = Headers(req);
    let end_of_stream = req.body.is_none();
    let mut decision = policy::decide_headers(
        config,
        &req.method,
        &req.target,
        &headers,
        now_ms,
        end_of_stream,
    );
    if let Decision::Buffer(pending) = &decision {
        let body = req.body.as_deref().unwrap_or(&[]);
        decision = match policy::decide_body(config, pending, body) {
            Ok(g) => Decision::Allow(g),
            Err(r) => Decision::Deny(r),
        };
    }
    let (raw_path, raw_query) = canonical::split_target(&req.target);
    let mut text = String::new();
    let token_index;
    let mut j = Map::new();
    j.insert("method".into(), json!(req.method));
    j.insert("target".into(), json!(req.target));
    match &decision {
        Decision::Pass => {
            token_index = None;
            let why = if !policy::is_protected(config, &req.target) {
                format!(
                    "the path is not under protected_paths ({})",
                    config.protected_paths.join(", ")
                )
            } else if !req.headers.contains_key("authorization") {
                "no Authorization header: not a token request (the app's own session or login applies)".to_owned()
            } else {
                "the credential is no token of this config and unknown_credentials is passthrough: the app authenticates it (a password, a Jira PAT...)".to_owned()
            };
            text.push_str(&format!("PASS: forwarded untouched; {why}\n"));
            j.insert("decision".into(), json!("pass"));
            j.insert("status".into(), Value::Null);
            j.insert("why".into(), json!(why));
        }
        Decision::Allow(g) => {
            token_index = Some(g.token);
            let t = config.tokens.get(g.token);
            let id = t.map_or("?", |t| t.id.as_str());
            let by = match g.rule {
                Some(n) => format!("restriction line {n}"),
                None => "no restriction lines (unrestricted token)".to_owned(),
            };
            text.push_str(&format!(
                "ALLOW: forwarded upstream as user `{}` (token `{id}`, allowed by {by})\n",
                g.acting_as
            ));
            if g.acting_as != g.user {
                text.push_str(&format!(
                    "  acting as `{}` on behalf of `{}` (run-as)\n",
                    g.acting_as, g.user
                ));
            }
            if let Some(auth) = policy::upstream_authorization(config, &g.acting_as) {
                let scheme = auth.split(' ').next().unwrap_or("");
                text.push_str(&format!(
                    "  upstream Authorization: {scheme} … (identity.upstream_authorization)\n"
                ));
            }
            j.insert("decision".into(), json!("allow"));
            j.insert("status".into(), Value::Null);
            j.insert("reason".into(), json!("ok"));
            j.insert("token_id".into(), json!(id));
            j.insert("user".into(), json!(g.user));
            j.insert("acting_as".into(), json!(g.acting_as));
            j.insert("rule".into(), json!(g.rule));
            push_extras(&mut j, &mut text, g.extras);
        }
        Decision::Deny(r) => {
            token_index = r.subject.token;
            text.push_str(&format!(
                "DENY: {} {} — {}\n  audit reason: {}\n",
                r.status,
                status_text(r.status),
                r.message,
                r.reason.as_str()
            ));
            if let Some(t) = r.subject.token.and_then(|i| config.tokens.get(i)) {
                text.push_str(&format!("  token: `{}` ({})\n", t.id, t.name));
            }
            text.push_str(&format!(
                "  response body: {}\n",
                reply::error_body(&r.message)
            ));
            if r.status == 401 {
                text.push_str(&format!(
                    "  WWW-Authenticate: {}\n",
                    reply::challenges(config.auth_methods).join(", ")
                ));
            }
            if r.reason == policy::Reason::Ip && req.client.is_none() {
                text.push_str(
                    "  hint: this token has `ips`: give the client address with --client-ip\n",
                );
            }
            j.insert("decision".into(), json!("deny"));
            j.insert("status".into(), json!(r.status));
            j.insert("reason".into(), json!(r.reason.as_str()));
            j.insert("message".into(), json!(r.message));
            j.insert(
                "token_id".into(),
                json!(r
                    .subject
                    .token
                    .and_then(|i| config.tokens.get(i))
                    .map(|t| t.id.clone())),
            );
            j.insert("user".into(), json!(r.subject.user));
            push_extras(&mut j, &mut text, r.subject.extras);
        }
        Decision::Buffer(_) => {
            token_index = None;
            text.push_str("BUFFER\n");
            j.insert("decision".into(), json!("buffer"));
        }
    }

    // Per-line trace for the token, when the request is canonical enough to evaluate.
    let trace = token_index
        .and_then(|i| config.tokens.get(i))
        .and_then(|t| {
            let path = canonical::decode_path(raw_path).ok()?;
            let query = Query::parse(raw_query).ok()?;
            let view = RequestView {
                method: &req.method,
                path: &path,
                query,
                form_body: policy::form_body(&t.restrictions, &Headers(req)),
            };
            Some(t.restrictions.explain(&view, req.body.as_deref()))
        });
    if let Some(ex) = &trace {
        append_trace(&mut text, &mut j, ex, &decision);
    }
    let denied = matches!(decision, Decision::Deny(_));
    Outcome2 {
        json: Value::Object(j),
        text,
        denied,
    }
}

fn append_trace(
    text: &mut String,
    j: &mut Map<String, Value>,
    ex: &Explanation,
    decision: &Decision,
) {
    if ex.unrestricted {
        text.push_str(
            "Restriction lines: none (the token may call anything under protected_paths)\n",
        );
        j.insert("lines".into(), json!([]));
        return;
    }
    let reached = match decision {
        Decision::Allow(_) => true,
        Decision::Deny(r) => matches!(
            r.reason,
            policy::Reason::Restricted
                | policy::Reason::MediaType
                | policy::Reason::BodyTooLarge
                | policy::Reason::BadRequest
        ),
        _ => false,
    };
    text.push_str(if reached {
        "Restriction lines (any one matching allows):\n"
    } else {
        "Restriction lines (not reached: the request was refused before them; shown for reference):\n"
    });
    let mut lines = Vec::new();
    for l in &ex.lines {
        let (mark, why) = match &l.outcome {
            Outcome::Matched => ("✓", "matched".to_owned()),
            Outcome::Failed(f) => ("✗", f.to_string()),
        };
        text.push_str(&format!(
            "  {mark} line {}: {}\n      {why}\n",
            l.line, l.source
        ));
        lines.push(json!({
            "line": l.line,
            "source": l.source,
            "matched": l.outcome == Outcome::Matched,
            "why": why,
        }));
    }
    j.insert("lines".into(), Value::Array(lines));
}

pub fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            target_of("https://jira.example.com/rest/api/2/issue/A-1?x=1#f").unwrap(),
            "/rest/api/2/issue/A-1?x=1"
        );
        assert_eq!(target_of("http://h:8080").unwrap(), "/");
        assert_eq!(target_of("http://h?x").unwrap(), "/?x");
        assert_eq!(target_of("/rest/x").unwrap(), "/rest/x");
        assert!(target_of("rest/x").is_err());
        assert!(target_of("/a b").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("Content-Type: application/json").unwrap(),
            ("content-type".into(), "application/json".into())
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
