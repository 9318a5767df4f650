//! The decision for one request (SPEC §2, §4–§8), independent of the host.
//!
//! The shell hands over the method and target it always reads, plus a [`RequestHeaders`]
//! through which the core fetches only the headers a decision needs, so a pass-through
//! request costs as few host calls as possible.

use std::borrow::Cow;

use crate::canonical::{self, Query};
use crate::config::{Config, Token, UnknownCredentials};
use crate::credential::{self, Credential, CredentialError, Scheme};
use crate::ip;
use crate::media;
use crate::restriction::{BodyVerdict, HeadVerdict, RequestView};

/// Request headers as the host holds them (lowercase names; repeats comma-joined).
pub trait RequestHeaders {
    /// The first value of a header (Envoy comma-joins repeats of inline headers such as
    /// `Authorization`; other repeats are separate entries).
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>>;
    /// How many entries named `name` the request has (called only on rare paths: it may
    /// read the whole header map).
    fn count(&self, name: &str) -> usize;
    /// Envoy's `source.address` (`ip:port`).
    fn source_address(&self) -> Option<Cow<'_, [u8]>>;
}

/// Method-override headers: the method checked must be the method the app serves.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Why a request was decided as it was; the audit `reason` and the counter suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    UnknownToken,
    UnknownCredentials,
    MalformedCredentials,
    Expired,
    Revoked,
    UserMismatch,
    MethodScheme,
    Ip,
    RunAs,
    Restricted,
    BadRequest,
    BodyTooLarge,
    MediaType,
}

/// The audit reason of a request refused because a host call failed (not a policy decision).
pub const INTERNAL_ERROR: &str = "internal_error";

impl Reason {
    /// Every reason an audit line may carry (SPEC §11), in SPEC order.
    pub fn audit_reasons() -> impl Iterator<Item = &'static str> {
        std::iter::once(Reason::Ok.as_str())
            .chain(Reason::DENIALS.iter().map(|r| r.as_str()))
            .chain(std::iter::once(INTERNAL_ERROR))
    }

    /// Whether `s` is a reason an audit line may carry.
    pub fn is_audit_reason(s: &str) -> bool {
        Reason::audit_reasons().any(|r| r == s)
    }

    pub const DENIALS: [Reason; 13] = [
        Reason::UnknownToken,
        Reason::UnknownCredentials,
        Reason::MalformedCredentials,
        Reason::Expired,
        Reason::Revoked,
        Reason::UserMismatch,
        Reason::MethodScheme,
        Reason::Ip,
        Reason::RunAs,
        Reason::Restricted,
        Reason::BadRequest,
        Reason::BodyTooLarge,
        Reason::MediaType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::UnknownToken => "unknown_token",
            Reason::UnknownCredentials => "unknown_credentials",
            Reason::MalformedCredentials => "malformed_credentials",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::UserMismatch => "user_mismatch",
            Reason::MethodScheme => "method_scheme",
            Reason::Ip => "ip",
            Reason::RunAs => "run_as",
            Reason::Restricted => "restricted",
            Reason::BadRequest => "bad_request",
            Reason::BodyTooLarge => "body_too_large",
            Reason::MediaType => "media_type",
        }
    }
}

/// Who a request was identified as, as far as it got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// Index into `Config::tokens`.
    pub token: Option<usize>,
    /// The token's bound user, or the Basic username for a user-less token.
    pub user: Option<String>,
    pub extras: Extras,
}

/// `shadow_rule` of the audit line (SPEC §19).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShadowRule {
    /// The token has no shadow lines: the field is left out.
    #[default]
    Absent,
    /// Not evaluated (`null`): refused before the lines, or only a shadow JsonData line could
    /// match a body the filter does not buffer.
    NotEvaluated,
    /// The 1-based shadow line that matched; 0: none (the request would have been refused).
    Line(usize),
}

/// What the audit line reports beyond SPEC §11 (SPEC §19).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// `Some(true)`: the previous secret was used; `None`: the token has no previous secret.
    pub previous_secret: Option<bool>,
    pub shadow: ShadowRule,
}

/// A refused request: answered locally, nothing reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: Reason,
    pub message: Cow<'static, str>,
    pub subject: Subject,
}

/// An allowed token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub token: usize,
    pub user: String,
    pub acting_as: String,
    /// The 1-based restriction line that allowed it; `None` for an unrestricted token.
    pub rule: Option<usize>,
    pub extras: Extras,
}

/// A request whose decision waits for its body (a JsonData line can still match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub grant: Grant,
    method: String,
    path: String,
    query: String,
    form_body: bool,
    /// A shadow JsonData line can match: evaluate it on the body being buffered anyway.
    shadow_needs_body: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a token request: forward untouched (the identity header is stripped regardless).
    Pass,
    Deny(Refusal),
    Allow(Grant),
    /// Buffer the body, then call [`decide_body`].
    Buffer(Pending),
}

fn refuse(
    status: u16,
    reason: Reason,
    message: impl Into<Cow<'static, str>>,
    subject: &Subject,
) -> Decision {
    Decision::Deny(Refusal {
        status,
        reason,
        message: message.into(),
        subject: subject.clone(),
    })
}

/// Whether a `:path` falls under `protected_paths` (SPEC §2 step 2), judged on a leniently
/// decoded and normalized form so that no spelling of a protected path escapes.
pub fn is_protected(config: &Config, target: &str) -> bool {
    let (raw_path, _) = canonical::split_target(target);
    canonical::protection_paths(raw_path)
        .iter()
        .any(|p| config.is_protected(p))
}

/// Decides from the request headers. `end_of_stream`: the request has no body.
pub fn decide_headers(
    config: &Config,
    method: &str,
    target: &str,
    req: &impl RequestHeaders,
    now_ms: i64,
    end_of_stream: bool,
) -> Decision {
    if !is_protected(config, target) {
        return Decision::Pass;
    }
    decide_protected(config, method, target, req, now_ms, end_of_stream)
}

/// [`decide_headers`] for a target already known to be protected (the shell checks that
/// first, to read the header map only for protected requests, and need not check twice).
pub fn decide_protected(
    config: &Config,
    method: &str,
    target: &str,
    req: &impl RequestHeaders,
    now_ms: i64,
    end_of_stream: bool,
) -> Decision {
    let (raw_path, raw_query) = canonical::split_target(target);
    let Some(authorization) = req.header("authorization") else {
        return Decision::Pass;
    };
    let nobody = Subject::default();
    let credential = match credential::parse(&authorization) {
        Ok(c) => c,
        Err(CredentialError::Multiple) => {
            return refuse(
                400,
                Reason::BadRequest,
                "more than one Authorization header",
                &nobody,
            )
        }
        Err(CredentialError::Malformed(m)) => {
            return refuse(401, Reason::MalformedCredentials, m, &nobody)
        }
    };
    let unknown = || match config.unknown_credentials {
        UnknownCredentials::Passthrough => Decision::Pass,
        UnknownCredentials::Deny => refuse(
            401,
            Reason::UnknownCredentials,
            "unknown credentials",
            &Subject::default(),
        ),
    };
    let Some(secret) = credential.token() else {
        return unknown();
    };
    let Some((index, token, previous)) = config.find_secret(secret) else {
        // Our own prefix makes a mistyped or deleted token recognisable: never hand it on.
        if secret.starts_with("tg_") {
            return refuse(401, Reason::UnknownToken, "unknown token", &nobody);
        }
        return unknown();
    };
    let user = match (&token.user, &credential) {
        (Some(bound), _) => bound.clone(),
        (None, Credential::Basic { user, .. }) => user.clone(),
        (None, _) => String::new(),
    };
    let mut subject = Subject {
        token: Some(index),
        user: (!user.is_empty()).then(|| user.clone()),
        extras: Extras {
            previous_secret: token.previous.map(|_| previous),
            shadow: if token.shadow.is_some() {
                ShadowRule::NotEvaluated
            } else {
                ShadowRule::Absent
            },
        },
    };

    // The previous secret of a rotated token works until its `until`, then reads as expired.
    if previous && token.previous.is_some_and(|p| p.until_ms <= now_ms) {
        return refuse(401, Reason::Expired, "token expired", &subject);
    }
    if let Some(refusal) = check_token(config, token, &credential, &subject, now_ms) {
        return refusal;
    }
    if !token.ips.is_empty() {
        let client = req.source_address().and_then(|a| {
            std::str::from_utf8(&a)
                .ok()
                .and_then(ip::parse_source_address)
        });
        if !client.is_some_and(|c| token.ips.iter().any(|cidr| cidr.contains(c))) {
            return refuse(
                403,
                Reason::Ip,
                "client address not allowed for this token",
                &subject,
            );
        }
    }
    let acting_as = match req.header(&config.identity.run_as_header) {
        None => user.clone(),
        Some(raw) => {
            // Two run-as headers would let the filter and the app read different users.
            if req.count(&config.identity.run_as_header) != 1 {
                return refuse(
                    400,
                    Reason::BadRequest,
                    "more than one run-as header",
                    &subject,
                );
            }
            let Some(wanted) = std::str::from_utf8(&raw)
                .ok()
                .map(str::to_owned)
                .filter(|w| crate::config::valid_username(w).is_ok())
            else {
                return refuse(400, Reason::BadRequest, "invalid run-as header", &subject);
            };
            if wanted.eq_ignore_ascii_case(&user) {
                user.clone()
            } else if let Some(listed) = token.run_as.find(&wanted) {
                // The configured spelling, as for the bound user.
                listed.to_owned()
            } else if token.run_as.anyone {
                wanted
            } else {
                return refuse(
                    403,
                    Reason::RunAs,
                    "token may not act as this user",
                    &subject,
                );
            }
        }
    };
    let mut grant = Grant {
        token: index,
        user,
        acting_as,
        rule: None,
        extras: subject.extras,
    };

    // The canonical request (§7): decide on the bytes the app will act on, or refuse.
    for name in METHOD_OVERRIDE_HEADERS {
        if req.header(name).is_some() {
            return refuse(
                400,
                Reason::BadRequest,
                "method override headers are not allowed",
                &subject,
            );
        }
    }
    let path = match canonical::decode_path(raw_path) {
        Ok(p) => p,
        Err(m) => return refuse(400, Reason::BadRequest, m, &subject),
    };
    let query = match Query::parse(raw_query) {
        Ok(q) => q,
        Err(m) => return refuse(400, Reason::BadRequest, m, &subject),
    };
    let form_body = form_body(&token.restrictions, req);
    let view = RequestView {
        method,
        path: &path,
        query,
        form_body,
    };
    let verdict = token.restrictions.evaluate_head(&view);
    // Shadow lines never decide and never make the filter buffer a body it would not buffer
    // anyway (SPEC §19).
    let mut shadow_needs_body = false;
    if let Some(shadow) = &token.shadow {
        subject.extras.shadow = match shadow.evaluate_head(&view) {
            HeadVerdict::Allow(rule) => ShadowRule::Line(rule.unwrap_or(0)),
            HeadVerdict::Deny => ShadowRule::Line(0),
            HeadVerdict::NeedBody => {
                shadow_needs_body = verdict == HeadVerdict::NeedBody;
                ShadowRule::NotEvaluated
            }
        };
        grant.extras = subject.extras;
    }
    match verdict {
        HeadVerdict::Allow(rule) => Decision::Allow(Grant { rule, ..grant }),
        HeadVerdict::Deny => refuse(
            403,
            Reason::Restricted,
            "token not allowed for this request",
            &subject,
        ),
        // No body and none declared (a plain GET): no JsonData node can exist, so only a
        // header-only line could have allowed it, and none did. A declared empty body
        // (`Content-Length: 0`, which Envoy reports the same way) is judged as a body: 400.
        HeadVerdict::NeedBody
            if end_of_stream
                && ["content-length", "content-type", "transfer-encoding"]
                    .iter()
                    .all(|h| req.header(h).is_none()) =>
        {
            refuse(
                403,
                Reason::Restricted,
                "token not allowed for this request",
                &subject,
            )
        }
        HeadVerdict::NeedBody => {
            if let Err(m) = media::check_content_encoding(req.header("content-encoding").as_deref())
            {
                return refuse(415, Reason::MediaType, m, &subject);
            }
            if let Err(m) = media::check_content_type(req.header("content-type").as_deref()) {
                return refuse(415, Reason::MediaType, m, &subject);
            }
            if let Some(len) = req.header("content-length") {
                match std::str::from_utf8(&len)
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok())
                {
                    Some(n) if n > config.max_body_bytes => {
                        return refuse(
                            413,
                            Reason::BodyTooLarge,
                            "request body too large",
                            &subject,
                        )
                    }
                    Some(_) => {}
                    None => {
                        return refuse(400, Reason::BadRequest, "invalid content-length", &subject)
                    }
                }
            }
            let pending = Pending {
                grant,
                method: method.to_owned(),
                path: path.into_owned(),
                query: raw_query.to_owned(),
                form_body,
                shadow_needs_body,
            };
            if end_of_stream {
                return match decide_body(config, &pending, &[]) {
                    Ok(g) => Decision::Allow(g),
                    Err(r) => Decision::Deny(r),
                };
            }
            Decision::Buffer(pending)
        }
    }
}

/// Whether the request carries a form body that the app would read parameters from (only
/// looked at for tokens with QueryParam lines; a repeated Content-Type counts as one: the
/// filter cannot tell which the app reads). Tomcat's `getParameterValues` merges an
/// `application/x-www-form-urlencoded` body's parameters with the query's, so a QueryParam
/// condition checked on the query alone would pass `?permissions=true` with a body of
/// `permissions=false` (found by the differential tests against Tomcat, tests/tomcat/).
pub fn form_body(
    restrictions: &crate::restriction::Restrictions,
    req: &impl RequestHeaders,
) -> bool {
    restrictions.has_query_lines()
        && (media::is_form(req.header("content-type").as_deref()) || req.count("content-type") > 1)
}

/// Revocation, expiry, user binding and scheme, in the order SPEC §2 gives.
fn check_token(
    config: &Config,
    token: &Token,
    credential: &Credential,
    subject: &Subject,
    now_ms: i64,
) -> Option<Decision> {
    if token.revoked {
        return Some(refuse(401, Reason::Revoked, "token revoked", subject));
    }
    if token.expires_ms.is_some_and(|t| t <= now_ms) {
        return Some(refuse(401, Reason::Expired, "token expired", subject));
    }
    let scheme = credential.scheme()?;
    if !config.auth_methods.allows(scheme) {
        return Some(refuse(
            401,
            Reason::MethodScheme,
            "authentication scheme not enabled for tokens",
            subject,
        ));
    }
    match (&token.user, credential) {
        (Some(bound), Credential::Basic { user, .. }) if !user.eq_ignore_ascii_case(bound) => {
            Some(refuse(
                401,
                Reason::UserMismatch,
                "token does not belong to this user",
                subject,
            ))
        }
        (None, Credential::Basic { user, .. }) if user.is_empty() => Some(refuse(
            401,
            Reason::UserMismatch,
            "a username is required with this token",
            subject,
        )),
        (None, _) if scheme == Scheme::Bearer => Some(refuse(
            401,
            Reason::MethodScheme,
            "this token is not bound to a user: use Basic authentication with a username",
            subject,
        )),
        _ => None,
    }
}

/// Decides a buffered request once its whole body is known.
pub fn decide_body(config: &Config, pending: &Pending, body: &[u8]) -> Result<Grant, Refusal> {
    let mut extras = pending.grant.extras;
    let token = config.tokens.get(pending.grant.token);
    if pending.shadow_needs_body {
        if let (Some(shadow), Ok(query)) = (
            token.and_then(|t| t.shadow.as_ref()),
            Query::parse(&pending.query),
        ) {
            let view = RequestView {
                method: &pending.method,
                path: &pending.path,
                query,
                form_body: pending.form_body,
            };
            extras.shadow = match shadow.evaluate_body(&view, body) {
                Ok(BodyVerdict::Allow(line)) => ShadowRule::Line(line),
                Ok(BodyVerdict::Deny) => ShadowRule::Line(0),
                Err(_) => ShadowRule::NotEvaluated,
            };
        }
    }
    let subject = Subject {
        token: Some(pending.grant.token),
        user: Some(pending.grant.user.clone()),
        extras,
    };
    let deny = |status, reason, message: Cow<'static, str>| Refusal {
        status,
        reason,
        message,
        subject: subject.clone(),
    };
    if u64::try_from(body.len()).map_or(true, |n| n > config.max_body_bytes) {
        return Err(deny(
            413,
            Reason::BodyTooLarge,
            "request body too large".into(),
        ));
    }
    let token = token.ok_or_else(|| {
        deny(
            403,
            Reason::Restricted,
            "token not allowed for this request".into(),
        )
    })?;
    let query =
        Query::parse(&pending.query).map_err(|m| deny(400, Reason::BadRequest, m.into()))?;
    let view = RequestView {
        method: &pending.method,
        path: &pending.path,
        query,
        form_body: pending.form_body,
    };
    match token.restrictions.evaluate_body(&view, body) {
        Ok(BodyVerdict::Allow(line)) => Ok(Grant {
            rule: Some(line),
            extras,
            ..pending.grant.clone()
        }),
        Ok(BodyVerdict::Deny) => Err(deny(
            403,
            Reason::Restricted,
            "token not allowed for this request".into(),
        )),
        Err(m) => Err(deny(400, Reason::BadRequest, m.into())),
    }
}

/// The `Authorization` value to inject upstream for the acting user, if configured.
pub fn upstream_authorization<'c>(config: &'c Config, acting_as: &str) -> Option<&'c str> {
    if config.identity.upstream_authorization.is_empty() {
        return None;
    }
    config
        .identity
        .upstream_authorization
        .get(&acting_as.to_ascii_lowercase())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[derive(Default)]
    struct Fake {
        headers: Vec<(String, Vec<u8>)>,
        source: Option<&'static str>,
    }

    impl Fake {
        fn with(mut self, name: &str, value: &str) -> Fake {
            self.headers
                .push((name.to_owned(), value.as_bytes().to_vec()));
            self
        }
        fn basic(self, user: &str, token: &str) -> Fake {
            let raw = format!("{user}:{token}");
            self.with(
                "authorization",
                &format!("Basic {}", crate::credential::encode_base64(raw.as_bytes())),
            )
        }
        fn bearer(self, token: &str) -> Fake {
            self.with("authorization", &format!("Bearer {token}"))
        }
    }

    impl RequestHeaders for Fake {
        fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| Cow::Borrowed(v.as_slice()))
        }
        fn count(&self, name: &str) -> usize {
            self.headers.iter().filter(|(n, _)| n == name).count()
        }
        fn source_address(&self) -> Option<Cow<'_, [u8]>> {
            self.source.map(|s| Cow::Borrowed(s.as_bytes()))
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    fn cfg(extra: &str, tokens: &str) -> Config {
        let text = format!(r#"{{{extra}"tokens":[{tokens}]}}"#);
        config::load(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn decide(c: &Config, method: &str, target: &str, req: Fake) -> Decision {
        decide_headers(c, method, target, &req, NOW, true)
    }

    fn status(d: &Decision) -> (u16, &'static str) {
        match d {
            Decision::Pass => (0, "pass"),
            Decision::Allow(_) => (200, "ok"),
            Decision::Buffer(_) => (100, "buffer"),
            Decision::Deny(r) => (r.status, r.reason.as_str()),
        }
    }

    fn grant(d: Decision) -> Grant {
        match d {
            Decision::Allow(g) => g,
            other => panic!("expected allow, got {other:?}"),
        }
    }

    const BOUND: &str = r#"{"id":"bound","user":"Alice","token":"tg_alice"}"#;
    const ANY: &str = r#"{"id":"any","token":"tg_any"}"#;

    #[test]
    fn pass_through_cases() {
        let c = cfg("", BOUND);
        assert_eq!(
            decide(
                &c,
                "GET",
                "/secure/Dashboard.jspa",
                Fake::default().basic("alice", "tg_alice")
            ),
            Decision::Pass
        );
        assert_eq!(
            decide(&c, "GET", "/rest/api/2/issue/X-1", Fake::default()),
            Decision::Pass
        );
        assert_eq!(
            decide(
                &c,
                "GET",
                "/rest/api/2/issue/X-1",
                Fake::default().basic("alice", "password")
            ),
            Decision::Pass
        );
        assert_eq!(
            decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().with("authorization", "Negotiate abc")
            ),
            Decision::Pass
        );
        // Case-sensitive, as Tomcat is.
        assert_eq!(
            decide(
                &c,
                "GET",
                "/REST/x",
                Fake::default().basic("alice", "tg_alice")
            ),
            Decision::Pass
        );
    }

    #[test]
    fn unknown_credentials_deny() {
        let c = cfg(r#""unknown_credentials":"deny","#, BOUND);
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("alice", "password")
            )),
            (401, "unknown_credentials")
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().with("authorization", "Negotiate abc")
            )),
            (401, "unknown_credentials")
        );
    }

    #[test]
    fn credential_errors() {
        let c = cfg("", BOUND);
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("alice", "tg_nope")
            )),
            (401, "unknown_token")
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().with("authorization", "Basic !!!!")
            )),
            (401, "malformed_credentials")
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().with("authorization", "Bearer a, Bearer b")
            )),
            (400, "bad_request")
        );
    }

    #[test]
    fn bound_token_rules() {
        let c = cfg(r#""auth_methods":"both","#, BOUND);
        let g = grant(decide(
            &c,
            "GET",
            "/rest/x",
            Fake::default().basic("ALICE", "tg_alice"),
        ));
        assert_eq!(
            (g.user.as_str(), g.acting_as.as_str(), g.rule),
            ("Alice", "Alice", None)
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("bob", "tg_alice")
            )),
            (401, "user_mismatch")
        );
        let g = grant(decide(
            &c,
            "GET",
            "/rest/x",
            Fake::default().bearer("tg_alice"),
        ));
        assert_eq!(g.acting_as, "Alice");
        let basic_only = cfg("", BOUND);
        assert_eq!(
            status(&decide(
                &basic_only,
                "GET",
                "/rest/x",
                Fake::default().bearer("tg_alice")
            )),
            (401, "method_scheme")
        );
        let bearer_only = cfg(r#""auth_methods":"bearer","#, BOUND);
        assert_eq!(
            status(&decide(
                &bearer_only,
                "GET",
                "/rest/x",
                Fake::default().basic("alice", "tg_alice")
            )),
            (401, "method_scheme")
        );
    }

    #[test]
    fn userless_token_rules() {
        let c = cfg(r#""auth_methods":"both","#, ANY);
        let g = grant(decide(
            &c,
            "GET",
            "/rest/x",
            Fake::default().basic("Carol", "tg_any"),
        ));
        assert_eq!((g.user.as_str(), g.acting_as.as_str()), ("Carol", "Carol"));
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("", "tg_any")
            )),
            (401, "user_mismatch")
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().bearer("tg_any")
            )),
            (401, "method_scheme")
        );
    }

    #[test]
    fn revoked_and_expired_in_order() {
        let c = cfg(
            "",
            r#"{"id":"r","token":"tg_r","revoked":true,"expires":"2020-01-01T00:00:00Z"},
               {"id":"e","token":"tg_e","expires":"2020-01-01T00:00:00Z"},
               {"id":"f","token":"tg_f","expires":"2099-01-01T00:00:00Z"}"#,
        );
        let d = decide(&c, "GET", "/rest/x", Fake::default().basic("u", "tg_r"));
        assert_eq!(status(&d), (401, "revoked"));
        if let Decision::Deny(r) = d {
            assert_eq!(
                (r.message.as_ref(), r.subject.token),
                ("token revoked", Some(0))
            );
        }
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("u", "tg_e")
            )),
            (401, "expired")
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("u", "tg_f")
            )),
            (200, "ok")
        );
    }

    #[test]
    fn ip_allow_list() {
        let c = cfg(
            "",
            r#"{"id":"i","token":"tg_i","ips":["10.0.0.0/8","127.0.0.1"]}"#,
        );
        let with = |src: Option<&'static str>| {
            Fake {
                source: src,
                ..Fake::default()
            }
            .basic("u", "tg_i")
        };
        assert_eq!(
            status(&decide(&c, "GET", "/rest/x", with(Some("10.1.2.3:5555")))),
            (200, "ok")
        );
        assert_eq!(
            status(&decide(&c, "GET", "/rest/x", with(Some("127.0.0.1:1")))),
            (200, "ok")
        );
        assert_eq!(
            status(&decide(&c, "GET", "/rest/x", with(Some("192.168.0.1:1")))),
            (403, "ip")
        );
        // Unknown client address: fail closed.
        assert_eq!(
            status(&decide(&c, "GET", "/rest/x", with(None))),
            (403, "ip")
        );
        assert_eq!(
            status(&decide(&c, "GET", "/rest/x", with(Some("garbage")))),
            (403, "ip")
        );
    }

    #[test]
    fn run_as_rules() {
        let c = cfg(
            "",
            r#"{"id":"b","user":"alice","token":"tg_b","run_as":["Bob"]},
               {"id":"s","user":"svc","token":"tg_s","run_as":["*"]},
               {"id":"n","token":"tg_n"}"#,
        );
        let run = |token: &str, user: &str, as_user: &str| {
            decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default()
                    .basic(user, token)
                    .with("contextuser", as_user),
            )
        };
        assert_eq!(grant(run("tg_b", "alice", "bob")).acting_as, "Bob");
        assert_eq!(grant(run("tg_b", "alice", "BOB")).acting_as, "Bob");
        let twice = Fake::default()
            .basic("svc", "tg_s")
            .with("contextuser", "bob")
            .with("contextuser", "mallory");
        assert_eq!(
            status(&decide(&c, "GET", "/rest/x", twice)),
            (400, "bad_request")
        );
        assert_eq!(grant(run("tg_b", "alice", "ALICE")).acting_as, "alice");
        assert_eq!(status(&run("tg_b", "alice", "carol")), (403, "run_as"));
        assert_eq!(grant(run("tg_s", "svc", "anyone")).acting_as, "anyone");
        // A user-less token may name its own Basic user, no one else.
        assert_eq!(grant(run("tg_n", "dave", "dave")).acting_as, "dave");
        assert_eq!(status(&run("tg_n", "dave", "erin")), (403, "run_as"));
        // Two run-as headers (comma-joined) or an empty one: refused, not guessed.
        assert_eq!(status(&run("tg_s", "svc", "a,b")), (400, "bad_request"));
        assert_eq!(status(&run("tg_s", "svc", "")), (400, "bad_request"));
        let g = grant(run("tg_b", "alice", "bob"));
        assert_eq!(g.user, "alice");
    }

    #[test]
    fn method_override_refused() {
        let c = cfg("", BOUND);
        for h in METHOD_OVERRIDE_HEADERS {
            let req = Fake::default().basic("alice", "tg_alice").with(h, "DELETE");
            assert_eq!(
                status(&decide(&c, "GET", "/rest/x", req)),
                (400, "bad_request"),
                "{h}"
            );
        }
    }

    #[test]
    fn json_lines_buffer_or_refuse_bodiless() {
        let c = cfg(
            "",
            r#"{"id":"f","token":"tg_f","limit_to":[".*/rest/api/2/filter[JsonData::editable==false]"]}"#,
        );
        let req = || {
            Fake::default()
                .basic("u", "tg_f")
                .with("content-type", "application/json")
        };
        let buffered = req();
        let d = decide_headers(&c, "POST", "/rest/api/2/filter", &buffered, NOW, false);
        assert_eq!(status(&d), (100, "buffer"));
        let Decision::Buffer(pending) = d else {
            panic!("expected buffering, got {d:?}")
        };
        assert_eq!(
            decide_body(&c, &pending, br#"{"editable":false}"#).map(|g| g.rule),
            Ok(Some(1))
        );
        assert_eq!(
            decide_body(&c, &pending, br#"{"editable":true}"#).map_err(|r| r.status),
            Err(403)
        );
        assert_eq!(
            decide_body(&c, &pending, b"").map_err(|r| r.status),
            Err(400)
        );
        // No body at all: nothing for a JsonData line to match.
        let bare = Fake::default().basic("u", "tg_f");
        assert_eq!(
            status(&decide(&c, "GET", "/rest/api/2/filter", bare)),
            (403, "restricted")
        );
        // A declared empty body is not JSON.
        let empty = req().with("content-length", "0");
        assert_eq!(
            status(&decide(&c, "POST", "/rest/api/2/filter", empty)),
            (400, "bad_request")
        );
        let wrong_type = Fake::default()
            .basic("u", "tg_f")
            .with("content-type", "text/plain");
        let d = decide_headers(&c, "POST", "/rest/api/2/filter", &wrong_type, NOW, false);
        assert_eq!(status(&d), (415, "media_type"));
        let big = req().with("content-length", "1048577");
        let d = decide_headers(&c, "POST", "/rest/api/2/filter", &big, NOW, false);
        assert_eq!(status(&d), (413, "body_too_large"));
    }

    #[test]
    fn upstream_authorization_lookup() {
        let c = cfg(
            r#""identity":{"upstream_authorization":{"Alice":"Bearer pat-1"}},"#,
            BOUND,
        );
        assert_eq!(upstream_authorization(&c, "alice"), Some("Bearer pat-1"));
        assert_eq!(upstream_authorization(&c, "bob"), None);
    }

    #[test]
    fn protected_under_every_resolution() {
        let c = cfg("", BOUND);
        // Tomcat dispatches all of these to the /rest/* servlet (tests/tomcat/ found the
        // first two passed through untouched).
        for target in [
            "/rest/%25%32%65%25%32%65/api/2/issue/ABC-1",
            "/rest?x=1/api/2/issue",
            "/rest",
            "/rest;x=1",
            "/x/%252e%252e/rest/api",
        ] {
            assert!(is_protected(&c, target), "{target}");
        }
        for target in ["/restx", "/secure/rest", "/", "/res"] {
            assert!(!is_protected(&c, target), "{target}");
        }
    }

    #[test]
    fn custom_protected_paths() {
        let c = cfg(r#""protected_paths":["/jira/rest/"],"#, BOUND);
        assert_eq!(
            decide(
                &c,
                "GET",
                "/rest/x",
                Fake::default().basic("alice", "tg_nope")
            ),
            Decision::Pass
        );
        assert_eq!(
            status(&decide(
                &c,
                "GET",
                "/jira/rest/x",
                Fake::default().basic("alice", "tg_nope")
            )),
            (401, "unknown_token")
        );
    }

    fn extras(d: &Decision) -> Extras {
        match d {
            Decision::Allow(g) => g.extras,
            Decision::Buffer(p) => p.grant.extras,
            Decision::Deny(r) => r.subject.extras,
            Decision::Pass => Extras::default(),
        }
    }

    #[test]
    fn shadow_lines_report_and_never_decide() {
        let t = r#"{"id":"s","user":"u","token":"tg_shadowtoken","limit_to":["[get,post]/rest/.*"],
            "shadow_limit_to":["[get]/rest/api/2/issue/JRA-[0-9]+","[post]/rest/api/2/issue[JsonData::fields.project.key==JRA]"]}"#;
        let c = cfg(r#""auth_methods":"both","#, t);
        let req = || Fake::default().bearer("tg_shadowtoken");
        let d = decide(&c, "GET", "/rest/api/2/issue/JRA-1", req());
        assert_eq!(
            (status(&d), extras(&d).shadow),
            ((200, "ok"), ShadowRule::Line(1))
        );
        // Allowed, though no shadow line would have: reported as 0, still allowed.
        let d = decide(&c, "GET", "/rest/api/2/project", req());
        assert_eq!(
            (status(&d), extras(&d).shadow),
            ((200, "ok"), ShadowRule::Line(0))
        );
        // Refused stays refused.
        let d = decide(&c, "DELETE", "/rest/api/2/issue/JRA-1", req());
        assert_eq!(
            (status(&d), extras(&d).shadow),
            ((403, "restricted"), ShadowRule::Line(0))
        );
        // A shadow JsonData line never makes the filter buffer: allowed at once, not evaluated.
        let d = decide_headers(
            &c,
            "POST",
            "/rest/api/2/issue",
            &req()
                .with("content-type", "application/json")
                .with("content-length", "9"),
            NOW,
            false,
        );
        assert_eq!(
            (status(&d), extras(&d).shadow),
            ((200, "ok"), ShadowRule::NotEvaluated)
        );
        // Without shadow lines the field is absent.
        let c2 = cfg(
            r#""auth_methods":"both","#,
            r#"{"id":"p","user":"u","token":"tg_plain"}"#,
        );
        let d = decide(&c2, "GET", "/rest/x", Fake::default().bearer("tg_plain"));
        assert_eq!(extras(&d), Extras::default());
    }

    #[test]
    fn a_shadow_json_line_is_judged_on_a_body_buffered_anyway() {
        let t = r#"{"id":"s","user":"u","token":"tg_shadowtoken",
            "limit_to":["[post]/rest/api/2/issue[JsonData::fields.project.key==JRA|KAN]"],
            "shadow_limit_to":["[post]/rest/api/2/issue[JsonData::fields.project.key==JRA]"]}"#;
        let c = cfg(r#""auth_methods":"both","#, t);
        let head = Fake::default()
            .bearer("tg_shadowtoken")
            .with("content-type", "application/json")
            .with("content-length", "30");
        let Decision::Buffer(p) =
            decide_headers(&c, "POST", "/rest/api/2/issue", &head, NOW, false)
        else {
            panic!("expected to buffer");
        };
        let g = decide_body(&c, &p, br#"{"fields":{"project":{"key":"JRA"}}}"#).unwrap();
        assert_eq!(g.extras.shadow, ShadowRule::Line(1));
        let g = decide_body(&c, &p, br#"{"fields":{"project":{"key":"KAN"}}}"#).unwrap();
        assert_eq!(g.extras.shadow, ShadowRule::Line(0));
    }

    #[test]
    fn the_previous_secret_works_until_its_until() {
        let prev = crate::digest::to_hex(&crate::digest::sha256(b"tg_oldsecret"));
        let t = format!(
            r#"{{"id":"r","user":"u","token":"tg_newsecret","previous":{{"sha256":"{prev}","until":"2027-01-15T08:00:01Z"}}}}"#
        );
        let c = cfg(r#""auth_methods":"both","#, &t);
        let d = decide(&c, "GET", "/rest/x", Fake::default().bearer("tg_newsecret"));
        assert_eq!(
            (status(&d), extras(&d).previous_secret),
            ((200, "ok"), Some(false))
        );
        let d = decide(&c, "GET", "/rest/x", Fake::default().bearer("tg_oldsecret"));
        assert_eq!(
            (status(&d), extras(&d).previous_secret),
            ((200, "ok"), Some(true))
        );
        // NOW is 2027-01-15T08:00:00Z: a second later the old secret reads as expired.
        let later = decide_headers(
            &c,
            "GET",
            "/rest/x",
            &Fake::default().bearer("tg_oldsecret"),
            NOW + 1000,
            true,
        );
        assert_eq!(status(&later), (401, "expired"));
        let d = decide(&c, "GET", "/rest/x", Fake::default().bearer("tg_other"));
        assert_eq!(status(&d), (401, "unknown_token"));
    }

    #[test]
    fn a_previous_secret_may_not_be_another_tokens_secret() {
        let a = crate::digest::to_hex(&crate::digest::sha256(b"tg_a"));
        let text = format!(
            r#"{{"tokens":[{{"id":"a","token":"tg_a"}},{{"id":"b","token":"tg_b","previous":{{"sha256":"{a}","until":"2030-01-01T00:00:00Z"}}}}]}}"#
        );
        let e = config::load(text.as_bytes()).unwrap_err();
        assert_eq!(e.field, "tokens[1].previous.sha256");
        let bad = r#"{"tokens":[{"id":"b","token":"tg_b","previous":{"sha256":"xx","until":"2030-01-01T00:00:00Z"}}]}"#;
        assert_eq!(
            config::load(bad.as_bytes()).unwrap_err().field,
            "tokens[0].previous.sha256"
        );
        let bad = r#"{"tokens":[{"id":"b","token":"tg_b","shadow_limit_to":["[get](a"]}]}"#;
        let e = config::load(bad.as_bytes()).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("tokens[0].shadow_limit_to[0]", Some(1))
        );
    }
}
