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
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Envoy's `source.address` (`ip:port`).
    fn source_address(&mut self) -> Option<Vec<u8>>;
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

impl Reason {
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
}

/// A request whose decision waits for its body (a JsonData line can still match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub grant: Grant,
    method: String,
    path: String,
    query: String,
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

/// Decides from the request headers. `end_of_stream`: the request has no body.
pub fn decide_headers(
    config: &Config,
    method: &str,
    target: &str,
    req: &mut impl RequestHeaders,
    now_ms: i64,
    end_of_stream: bool,
) -> Decision {
    let (raw_path, raw_query) = canonical::split_target(target);
    if !config.is_protected(&canonical::protection_path(raw_path)) {
        return Decision::Pass;
    }
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
    let Some((index, token)) = config.find(secret) else {
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
    let subject = Subject {
        token: Some(index),
        user: (!user.is_empty()).then(|| user.clone()),
    };

    if let Some(refusal) = check_token(config, token, &credential, &subject, now_ms) {
        return refusal;
    }
    if !token.ips.is_empty() {
        let client = req
            .source_address()
            .and_then(|a| String::from_utf8(a).ok())
            .and_then(|a| ip::parse_source_address(&a));
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
            let Some(wanted) = String::from_utf8(raw)
                .ok()
                .filter(|w| crate::config::valid_username(w).is_ok())
            else {
                return refuse(400, Reason::BadRequest, "invalid run-as header", &subject);
            };
            if wanted.eq_ignore_ascii_case(&user) {
                user.clone()
            } else if token.run_as.permits(&wanted) {
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
    let grant = Grant {
        token: index,
        user,
        acting_as,
        rule: None,
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
    let view = RequestView {
        method,
        path: &path,
        query,
    };
    match token.restrictions.evaluate_head(&view) {
        HeadVerdict::Allow(rule) => Decision::Allow(Grant { rule, ..grant }),
        HeadVerdict::Deny => refuse(
            403,
            Reason::Restricted,
            "token not allowed for this request",
            &subject,
        ),
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
    let subject = Subject {
        token: Some(pending.grant.token),
        user: Some(pending.grant.user.clone()),
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
    let token = config.tokens.get(pending.grant.token).ok_or_else(|| {
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
    };
    match token.restrictions.evaluate_body(&view, body) {
        Ok(BodyVerdict::Allow(line)) => Ok(Grant {
            rule: Some(line),
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
