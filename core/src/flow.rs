//! The per-request flow both shells share: what a decision means on the wire.
//!
//! [`crate::policy`] decides; this module turns a decision into what a shell must do — the
//! local reply (status, Jira error body, content-type, `WWW-Authenticate`), the identity
//! rewrite (which headers go, which are set), the filter-state values, the counter to move
//! and the begun audit line — as plain data. The proxy-wasm shell (`src/filter.rs`) and the
//! Envoy dynamic-module shell (`native/src/filter.rs`) only apply these plans with their
//! host's calls, so neither can drift from the other in what a request gets.

use std::net::IpAddr;

use crate::audit::{Entry, PartialLine};
use crate::config::Config;
use crate::policy::{self, Extras, Grant, Pending, Reason, Refusal, ShadowRule, Subject};
use crate::reply;

/// What the audit line and the rewrite need of a request, as received.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub target: &'a str,
    /// `x-request-id`.
    pub request_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    /// A `cookie` header is there (to remove on an allowed request).
    pub cookie: bool,
    /// The run-as header is there (to remove on an allowed request).
    pub run_as: bool,
    /// Start of the request, Unix ms (host clock).
    pub start_ms: i64,
}

/// The request line, owned: kept by a stream while its body is buffered.
#[derive(Debug, Clone, Default)]
pub struct HeldLine {
    pub method: String,
    pub target: String,
    pub request_id: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub cookie: bool,
    pub run_as: bool,
    pub start_ms: i64,
}

impl HeldLine {
    pub fn of(req: &RequestLine) -> HeldLine {
        HeldLine {
            method: req.method.to_owned(),
            target: req.target.to_owned(),
            request_id: req.request_id.map(str::to_owned),
            client_ip: req.client_ip,
            cookie: req.cookie,
            run_as: req.run_as,
            start_ms: req.start_ms,
        }
    }

    pub fn line(&self) -> RequestLine<'_> {
        RequestLine {
            method: &self.method,
            target: &self.target,
            request_id: self.request_id.as_deref(),
            client_ip: self.client_ip,
            cookie: self.cookie,
            run_as: self.run_as,
            start_ms: self.start_ms,
        }
    }
}

/// The headers a client may never send (SPEC §2 step 1): removed from every request.
pub fn identity_headers(config: &Config) -> impl Iterator<Item = &str> {
    std::iter::once(config.identity.header.as_str())
        .chain(config.identity.header_underscored.as_deref())
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: String,
}

/// A reply for a request the filter cannot handle (fail closed): Jira's error shape.
pub fn failure_reply(status: u16, message: &str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", reply::CONTENT_TYPE)],
        body: reply::error_body(message),
    }
}

/// Filter state for access logs (SPEC §12): `(key, value)` under the shell's namespace
/// (`tokengate.token_id`, `tokengate.user`, `tokengate.decision`, `tokengate.reason`).
pub type State<'c> = Vec<(&'static str, &'c str)>;

fn state<'c>(
    config: &'c Config,
    token: Option<usize>,
    user: Option<&'c str>,
    decision: &'static str,
    reason: Reason,
) -> State<'c> {
    let mut out = Vec::with_capacity(4);
    if let Some(t) = token.and_then(|i| config.tokens.get(i)) {
        out.push(("tokengate.token_id", t.id.as_str()));
    }
    if let Some(u) = user {
        out.push(("tokengate.user", u));
    }
    out.push(("tokengate.decision", decision));
    out.push(("tokengate.reason", reason.as_str()));
    out
}

struct Verdict<'a> {
    token: Option<usize>,
    user: Option<&'a str>,
    acting_as: Option<&'a str>,
    allowed: bool,
    reason: &'a str,
    rule: Option<usize>,
    extras: Extras,
}

fn begin_line(config: &Config, req: &RequestLine, v: &Verdict) -> PartialLine {
    let token = v.token.and_then(|i| config.tokens.get(i));
    Entry {
        ts_ms: req.start_ms,
        request_id: req.request_id,
        token_id: token.map(|t| t.id.as_str()),
        token_name: token.map(|t| t.name.as_str()),
        user: v.user,
        acting_as: v.acting_as,
        client_ip: req.client_ip,
        method: req.method,
        target: req.target,
        allowed: v.allowed,
        reason: v.reason,
        rule: v.rule,
        secret: v
            .extras
            .previous_secret
            .map(|p| if p { "previous" } else { "current" }),
        shadow_rule: match v.extras.shadow {
            ShadowRule::Absent => None,
            ShadowRule::NotEvaluated => Some(None),
            ShadowRule::Line(n) => Some(Some(n)),
        },
    }
    .begin()
}

/// What a refused request gets.
#[derive(Debug)]
pub struct Denial<'c> {
    pub reply: Reply,
    /// The reason to count (`tokengate.denied` and `tokengate.denied.<reason>`).
    pub reason: Reason,
    pub state: State<'c>,
    pub line: PartialLine,
}

pub fn deny<'c>(config: &'c Config, refusal: &'c Refusal, req: &RequestLine) -> Denial<'c> {
    let line = begin_line(
        config,
        req,
        &Verdict {
            token: refusal.subject.token,
            user: refusal.subject.user.as_deref(),
            acting_as: None,
            allowed: false,
            reason: refusal.reason.as_str(),
            rule: None,
            extras: refusal.subject.extras,
        },
    );
    let mut headers = vec![("content-type", reply::CONTENT_TYPE)];
    if refusal.status == 401 {
        for challenge in reply::challenges(config.auth_methods) {
            headers.push(("www-authenticate", *challenge));
        }
    }
    Denial {
        reply: Reply {
            status: refusal.status,
            headers,
            body: reply::error_body(&refusal.message),
        },
        reason: refusal.reason,
        state: state(
            config,
            refusal.subject.token,
            refusal.subject.user.as_deref(),
            "deny",
            refusal.reason,
        ),
        line,
    }
}

/// One change to the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderOp<'a> {
    Remove(&'a str),
    Set(&'a str, &'a str),
}

/// What an allowed request gets (SPEC §9): apply `rewrite` in order; if any change fails,
/// answer [`Allowance::failed`] instead of forwarding a half-rewritten request.
#[derive(Debug)]
pub struct Allowance<'c> {
    pub rewrite: Vec<HeaderOp<'c>>,
    pub state: State<'c>,
    pub line: PartialLine,
}

pub fn allow<'c>(config: &'c Config, grant: &'c Grant, req: &RequestLine) -> Allowance<'c> {
    let id = &config.identity;
    let mut rewrite = Vec::with_capacity(4);
    // The client's credential goes; with an upstream credential configured, replacing the
    // header removes it in the same call (Envoy keeps one `authorization` entry).
    match policy::upstream_authorization(config, &grant.acting_as) {
        Some(v) => rewrite.push(HeaderOp::Set("authorization", v)),
        None => rewrite.push(HeaderOp::Remove("authorization")),
    }
    if req.cookie {
        rewrite.push(HeaderOp::Remove("cookie"));
    }
    if req.run_as {
        rewrite.push(HeaderOp::Remove(&id.run_as_header));
    }
    rewrite.push(HeaderOp::Set(&id.header, &grant.acting_as));
    Allowance {
        rewrite,
        state: state(
            config,
            Some(grant.token),
            Some(&grant.user),
            "allow",
            Reason::Ok,
        ),
        line: begin_line(
            config,
            req,
            &Verdict {
                token: Some(grant.token),
                user: Some(&grant.user),
                acting_as: Some(&grant.acting_as),
                allowed: true,
                reason: Reason::Ok.as_str(),
                rule: grant.rule,
                extras: grant.extras,
            },
        ),
    }
}

impl Allowance<'_> {
    /// The rewrite failed: 500, and the line says so (no reason of §11).
    pub fn failed(config: &Config, grant: &Grant, req: &RequestLine) -> (Reply, PartialLine) {
        let line = begin_line(
            config,
            req,
            &Verdict {
                token: Some(grant.token),
                user: Some(&grant.user),
                acting_as: None,
                allowed: false,
                reason: policy::INTERNAL_ERROR,
                rule: None,
                extras: not_evaluated(grant.extras),
            },
        );
        (failure_reply(500, "internal error"), line)
    }
}

/// The buffered body grew past `max_body_bytes`: 413 (SPEC §8). `None` while within it.
pub fn body_limit(config: &Config, pending: &Pending, size: usize) -> Option<Refusal> {
    u64::try_from(size)
        .map_or(true, |n| n > config.max_body_bytes)
        .then(|| Refusal {
            status: 413,
            reason: Reason::BodyTooLarge,
            message: "request body too large".into(),
            subject: Subject {
                token: Some(pending.grant.token),
                user: Some(pending.grant.user.clone()),
                extras: not_evaluated(pending.grant.extras),
            },
        })
}

/// The host could not hand over the buffered body: 400.
pub fn body_unavailable(pending: &Pending) -> Refusal {
    Refusal {
        status: 400,
        reason: Reason::BadRequest,
        message: "request body unavailable".into(),
        subject: Subject {
            token: Some(pending.grant.token),
            user: Some(pending.grant.user.clone()),
            extras: not_evaluated(pending.grant.extras),
        },
    }
}

/// A request refused before its shadow lines could be judged on the body.
fn not_evaluated(mut e: Extras) -> Extras {
    if e.shadow != ShadowRule::Absent {
        e.shadow = ShadowRule::NotEvaluated;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let text = r#"{"identity": {"upstream_authorization": {"alice": "Bearer pat-a"}},
            "tokens": [{"id": "t1", "name": "T1", "user": "alice",
                        "sha256": "3f51d2e864592d74428a40fb78d73c126e0d1ccbaeb8fa8db59770fdc45d4ae8"}]}"#;
        crate::config::load(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn req() -> RequestLine<'static> {
        RequestLine {
            method: "GET",
            target: "/rest/api/2/myself?x=1",
            request_id: Some("r1"),
            client_ip: None,
            cookie: true,
            run_as: false,
            start_ms: 0,
        }
    }

    #[test]
    fn a_401_carries_the_challenges_and_jira_body() {
        let c = cfg();
        let r = Refusal {
            status: 401,
            reason: Reason::Expired,
            message: "token expired".into(),
            subject: Subject {
                token: Some(0),
                user: Some("alice".into()),
                extras: Extras::default(),
            },
        };
        let d = deny(&c, &r, &req());
        assert_eq!(d.reply.status, 401);
        assert_eq!(
            d.reply.body,
            r#"{"errorMessages":["token expired"],"errors":{}}"#
        );
        assert!(d
            .reply
            .headers
            .contains(&("content-type", reply::CONTENT_TYPE)));
        assert_eq!(
            d.reply
                .headers
                .iter()
                .filter(|(k, _)| *k == "www-authenticate")
                .count(),
            reply::challenges(c.auth_methods).len()
        );
        assert!(d.state.contains(&("tokengate.decision", "deny")));
        assert!(d.state.contains(&("tokengate.token_id", "t1")));
    }

    #[test]
    fn allow_rewrites_in_order() {
        let c = cfg();
        let g = Grant {
            token: 0,
            user: "alice".into(),
            acting_as: "alice".into(),
            rule: None,
            extras: Extras::default(),
        };
        let a = allow(&c, &g, &req());
        assert_eq!(
            a.rewrite,
            vec![
                HeaderOp::Set("authorization", "Bearer pat-a"),
                HeaderOp::Remove("cookie"),
                HeaderOp::Set("x-forwarded-user", "alice"),
            ]
        );
        assert!(a.state.contains(&("tokengate.user", "alice")));
    }
}
