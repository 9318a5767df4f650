//! The proxy-wasm shell: host calls in, [`crate::policy`] decisions out.
//!
//! One compiled [`Config`] per root context (shared by `Rc` with the streams it creates, so
//! a config update leaves in-flight requests on the set they started with) and a small
//! per-stream object. Host calls go through `proxy_wasm::hostcalls`, whose `Result`s are
//! handled here: the trait helpers of the SDK unwrap them, and a panic traps the VM.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::config::{self, Config};
use crate::policy::{self, Decision, Grant, Pending, Reason, Refusal, RequestHeaders};
use crate::reply;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Counter ids (SPEC §12). Defined once per VM; a failed definition disables that counter.
#[derive(Default)]
struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    passthrough: Option<u32>,
    by_reason: Vec<(Reason, Option<u32>)>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Metrics {
            allowed: counter("tokengate.allowed"),
            denied: counter("tokengate.denied"),
            passthrough: counter("tokengate.passthrough"),
            by_reason: Reason::DENIALS
                .iter()
                .map(|r| (*r, counter(&format!("tokengate.denied.{}", r.as_str()))))
                .collect(),
        }
    }

    fn bump(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn denied(&self, reason: Reason) {
        Self::bump(self.denied);
        Self::bump(
            self.by_reason
                .iter()
                .find(|(r, _)| *r == reason)
                .and_then(|(_, id)| *id),
        );
    }
}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) | Err(_) => Vec::new(),
        };
        match config::load(&bytes) {
            Ok(cfg) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "tokengate: configuration loaded: {} token(s)",
                        cfg.tokens.len()
                    ),
                );
                self.config = Some(Rc::new(cfg));
                if self.metrics.is_none() {
                    self.metrics = Some(Rc::new(Metrics::define()));
                }
                true
            }
            Err(e) => {
                // Envoy refuses the config (start-up fails; an update keeps the old one).
                log(
                    LogLevel::Error,
                    &format!("tokengate: configuration rejected: {e}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config (never loaded) a stream must not pass unchecked: refuse all.
        Some(Box::new(Stream {
            config: self.config.clone(),
            metrics: self.metrics.clone().unwrap_or_default(),
            pending: None,
            body_size: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Request headers read through the host while they are held.
struct HostHeaders;

impl RequestHeaders for HostHeaders {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn count(&mut self, name: &str) -> usize {
        // Custom headers are separate entries (only inline ones such as Authorization are
        // comma-joined), and the single-value getter returns the first: count the map.
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .map(|all| all.iter().filter(|(n, _)| n == name).count())
            .unwrap_or(usize::MAX)
    }

    fn source_address(&mut self) -> Option<Vec<u8>> {
        hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
    }
}

struct Stream {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    /// Set while the body of a request is being buffered for a JsonData decision.
    pending: Option<Pending>,
    body_size: usize,
}

impl Context for Stream {}

impl Stream {
    fn now_ms() -> i64 {
        // Without a clock every expiring token counts as expired: fail closed.
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .unwrap_or(i64::MAX)
    }

    fn deny(&mut self, config: &Config, refusal: &Refusal) -> Action {
        self.metrics.denied(refusal.reason);
        self.set_state(
            config,
            refusal.subject.token,
            refusal.subject.user.as_deref(),
            "deny",
            refusal.reason,
        );
        let body = reply::error_body(&refusal.message);
        let mut headers = vec![("content-type", reply::CONTENT_TYPE)];
        if refusal.status == 401 {
            for challenge in reply::challenges(config.auth_methods) {
                headers.push(("www-authenticate", challenge));
            }
        }
        if hostcalls::send_http_response(u32::from(refusal.status), headers, Some(body.as_bytes()))
            .is_err()
        {
            log(
                LogLevel::Error,
                "tokengate: could not send the local reply; resetting the request",
            );
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    /// Rewrites the identity for the upstream (SPEC §9). If any header change fails, the
    /// request is refused rather than forwarded half-rewritten.
    fn allow(&mut self, config: &Config, grant: &Grant) -> Action {
        let id = &config.identity;
        let upstream_auth = policy::upstream_authorization(config, &grant.acting_as);
        let rewritten = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization")
            .and_then(|()| hostcalls::remove_map_value(MapType::HttpRequestHeaders, "cookie"))
            .and_then(|()| {
                hostcalls::remove_map_value(MapType::HttpRequestHeaders, &id.run_as_header)
            })
            .and_then(|()| {
                hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    &id.header,
                    Some(grant.acting_as.as_bytes()),
                )
            })
            .and_then(|()| match upstream_auth {
                Some(v) => hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    "authorization",
                    Some(v.as_bytes()),
                ),
                None => Ok(()),
            });
        if rewritten.is_err() {
            log(
                LogLevel::Error,
                "tokengate: could not rewrite request headers; refusing",
            );
            let _ = hostcalls::send_http_response(
                500,
                vec![("content-type", reply::CONTENT_TYPE)],
                Some(reply::error_body("internal error").as_bytes()),
            );
            return Action::Pause;
        }
        Metrics::bump(self.metrics.allowed);
        self.set_state(
            config,
            Some(grant.token),
            Some(&grant.user),
            "allow",
            Reason::Ok,
        );
        Action::Continue
    }

    /// Filter state for access logs (SPEC §12).
    fn set_state(
        &self,
        config: &Config,
        token: Option<usize>,
        user: Option<&str>,
        decision: &str,
        reason: Reason,
    ) {
        let token_id = token
            .and_then(|i| config.tokens.get(i))
            .map(|t| t.id.as_str());
        let set = |key: &str, value: Option<&str>| {
            if let Some(v) = value {
                let _ = hostcalls::set_property(vec![key], Some(v.as_bytes()));
            }
        };
        set("tokengate.token_id", token_id);
        set("tokengate.user", user);
        set("tokengate.decision", Some(decision));
        set("tokengate.reason", Some(reason.as_str()));
    }

    fn finish_body(&mut self, config: &Config) -> Action {
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let body = if self.body_size == 0 {
            Vec::new()
        } else {
            match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, self.body_size) {
                Ok(b) => b.unwrap_or_default(),
                Err(_) => {
                    let refusal = Refusal {
                        status: 400,
                        reason: Reason::BadRequest,
                        message: "request body unavailable".into(),
                        subject: policy::Subject {
                            token: Some(pending.grant.token),
                            user: Some(pending.grant.user.clone()),
                        },
                    };
                    return self.deny(config, &refusal);
                }
            }
        };
        match policy::decide_body(config, &pending, &body) {
            Ok(grant) => self.allow(config, &grant),
            Err(refusal) => self.deny(config, &refusal),
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            let _ = hostcalls::send_http_response(
                503,
                vec![("content-type", reply::CONTENT_TYPE)],
                Some(reply::error_body("tokengate is not configured").as_bytes()),
            );
            return Action::Pause;
        };
        // Step 1 of SPEC §2, for every request: a client never supplies its own identity.
        let mut stripped =
            hostcalls::remove_map_value(MapType::HttpRequestHeaders, &config.identity.header);
        if let Some(alt) = &config.identity.header_underscored {
            stripped = stripped
                .and_then(|()| hostcalls::remove_map_value(MapType::HttpRequestHeaders, alt));
        }
        if stripped.is_err() {
            let _ = hostcalls::send_http_response(
                500,
                vec![("content-type", reply::CONTENT_TYPE)],
                Some(reply::error_body("internal error").as_bytes()),
            );
            return Action::Pause;
        }
        let mut headers = HostHeaders;
        let method = headers.header(":method").unwrap_or_default();
        let Some(target) = headers.header(":path") else {
            Metrics::bump(self.metrics.passthrough);
            return Action::Continue;
        };
        // Envoy refuses non-ASCII request lines before filters; lossy decoding cannot
        // therefore merge two different targets.
        let method = String::from_utf8_lossy(&method);
        let target = String::from_utf8_lossy(&target);
        match policy::decide_headers(
            &config,
            &method,
            &target,
            &mut headers,
            Self::now_ms(),
            end_of_stream,
        ) {
            Decision::Pass => {
                Metrics::bump(self.metrics.passthrough);
                Action::Continue
            }
            Decision::Allow(grant) => self.allow(&config, &grant),
            Decision::Deny(refusal) => self.deny(&config, &refusal),
            Decision::Buffer(pending) => {
                self.pending = Some(pending);
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Pause;
        };
        if self.pending.is_none() {
            return Action::Continue;
        }
        self.body_size = body_size;
        if u64::try_from(body_size).map_or(true, |n| n > config.max_body_bytes) {
            if let Some(pending) = self.pending.take() {
                let refusal = Refusal {
                    status: 413,
                    reason: Reason::BodyTooLarge,
                    message: "request body too large".into(),
                    subject: policy::Subject {
                        token: Some(pending.grant.token),
                        user: Some(pending.grant.user),
                    },
                };
                return self.deny(&config, &refusal);
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(&config)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // With trailers, the body never reports end of stream: decide here.
        let Some(config) = self.config.clone() else {
            return Action::Pause;
        };
        if self.pending.is_none() {
            return Action::Continue;
        }
        self.finish_body(&config)
    }
}
