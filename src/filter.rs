//! The proxy-wasm shell: host calls in, [`tokengate_core::policy`] decisions out.
//!
//! One compiled [`Config`] per root context (shared by `Rc` with the streams it creates, so
//! a config update leaves in-flight requests on the set they started with) and a small
//! per-stream object. Host calls go through [`crate::host`], which returns every status as a
//! `Result` (the SDK's wrappers panic on unexpected ones, and a panic traps the VM); only
//! metric definitions, the audit call and `done` use the SDK's, from the root context.
//!
//! Audit (SPEC §11): a stream begins its line when the filter decides and finishes it in
//! `on_log`, then queues it in its root context's [`audit::Queue`] (shared by `Rc<RefCell>`).
//! Only the root context sends: HTTP calls made from a stream die with the stream, and their
//! answers come back to the context that made them. The root flushes on its tick; a stream
//! that fills a batch shortens the root's tick to 1 ms (the tick period belongs to the root
//! context whichever context sets it) and the root puts it back.

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};

use tokengate_core::audit::{self, PartialLine, Queue};
use tokengate_core::config::{self, Config};
use tokengate_core::flow::{self, HeaderOp, HeldLine, Reply, RequestLine};
use tokengate_core::ip;
use tokengate_core::policy::{self, Decision, Grant, Pending, Reason, Refusal, RequestHeaders};

use crate::headermap::HeaderBlock;
use crate::host;

proxy_wasm::main! {{
    host::install_logger();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Answers a request the filter cannot handle (no config, a host call that failed) instead of
/// letting it through unchecked.
fn fail_closed(status: u16, message: &str) -> Action {
    let _ = send(&flow::failure_reply(status, message));
    Action::Pause
}

/// A local reply as [`tokengate_core::flow`] planned it.
fn send(r: &Reply) -> Result<(), host::Failed> {
    host::send_local_response(u32::from(r.status), &r.headers, r.body.as_bytes())
}

/// Counter ids (SPEC §12). Defined once per VM; a failed definition disables that counter.
#[derive(Default)]
struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    passthrough: Option<u32>,
    by_reason: Vec<(Reason, Option<u32>)>,
    /// Audit lines delivered (2xx).
    audit_sent: Option<u32>,
    /// Failed delivery attempts (batches).
    audit_failed: Option<u32>,
    /// Audit lines given up on (queue full, or undeliverable when a root context closed).
    audit_dropped: Option<u32>,
    /// Gauge: lines held. Moved by deltas, so the gauge Envoy keeps per name sums the workers.
    audit_queued: Option<u32>,
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
            audit_sent: counter("tokengate.audit.sent"),
            audit_failed: counter("tokengate.audit.failed"),
            audit_dropped: counter("tokengate.audit.dropped"),
            audit_queued: hostcalls::define_metric(MetricType::Gauge, "tokengate.audit.queued")
                .ok(),
        }
    }

    fn bump(id: Option<u32>) {
        Self::add(id, 1);
    }

    /// Counters only move up: the SDK panics on a zero or negative increment.
    fn add(id: Option<u32>, n: u64) {
        if let (Some(id), Ok(n)) = (id, i64::try_from(n)) {
            if n > 0 {
                let _ = host::increment_metric(id, n);
            }
        }
    }

    /// Gauge by delta (never zero).
    fn shift(id: Option<u32>, delta: i64) {
        if let Some(id) = id {
            if delta != 0 {
                let _ = host::increment_metric(id, delta);
            }
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

/// Audit delivery state of one root context, shared with its streams.
#[derive(Default)]
struct AuditState {
    /// `None` without an `audit` section: lines go to the Envoy log.
    queue: Option<Queue>,
    /// The root's tick period as last set, in ms (0: none).
    tick_ms: u64,
    /// The queue length the gauge was last moved to.
    reported_queued: usize,
    /// The root context is gone (or going): late lines go to the Envoy log.
    closed: bool,
}

type SharedAudit = Rc<RefCell<AuditState>>;

/// Writes an audit line to the Envoy log (no `audit` section, or no queue left to take it).
fn log_line(prefix: &str, line: &str) {
    log::info!("tokengate audit{prefix}: {}", line.trim_end());
}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
    audit: SharedAudit,
    /// Set by `on_done` when a final flush is under way: give up at this time.
    closing_deadline_ms: Option<i64>,
    /// `on_done` answered false: the host waits for `done`.
    awaiting_done: bool,
}

impl Root {
    fn metrics(&self) -> Rc<Metrics> {
        self.metrics.clone().unwrap_or_default()
    }

    /// Sets up (or keeps) the queue for a newly loaded config.
    fn configure_audit(&mut self, cfg: &Config, now_ms: i64) {
        let Ok(mut st) = self.audit.try_borrow_mut() else {
            return;
        };
        match (&cfg.audit, st.queue.as_mut()) {
            (Some(a), Some(q)) => q.set_limits(audit::Limits::from(a)),
            (Some(a), None) => st.queue = Some(Queue::new(audit::Limits::from(a), now_ms)),
            (None, Some(_)) => {
                // Audit switched off: what is still held goes to the Envoy log.
                if let Some(mut q) = st.queue.take() {
                    for line in q.abandon() {
                        log_line(" (audit switched off)", &line);
                    }
                }
            }
            (None, None) => {}
        }
    }
}

thread_local! {
    /// Lines a replaced configuration's root context could not deliver, waiting for the root
    /// context that replaced it in this VM (one VM per worker thread).
    static HANDOFF: RefCell<VecDeque<String>> = const { RefCell::new(VecDeque::new()) };
}

impl Root {
    /// Takes over lines a replaced configuration left in this VM. A closing root context
    /// takes none; without an audit section they go to the Envoy log.
    fn adopt_handoff(&mut self) {
        let Some(lines) = HANDOFF.with(|h| {
            h.try_borrow_mut()
                .ok()
                .filter(|h| !h.is_empty())
                .map(|mut h| std::mem::take(&mut *h))
        }) else {
            return;
        };
        let metrics = self.metrics();
        let Ok(mut st) = self.audit.try_borrow_mut() else {
            return;
        };
        match st.queue.as_mut() {
            Some(q) if !q.is_closing() => {
                let n = lines.len();
                let dropped = q.adopt(lines);
                Metrics::add(metrics.audit_dropped, dropped);
                log::info!(
                    "tokengate: audit: took over {n} line(s) from the replaced configuration"
                );
            }
            Some(_) => HANDOFF.with(|h| {
                if let Ok(mut h) = h.try_borrow_mut() {
                    let mut lines = lines;
                    lines.append(&mut h);
                    *h = lines;
                }
            }),
            None => {
                Metrics::add(metrics.audit_dropped, lines.len() as u64);
                for line in &lines {
                    log_line(" (audit switched off)", line);
                }
            }
        }
    }

    /// Sends what is due, moves the audit counters and gauge, re-arms the tick, and finishes a
    /// closing root context. Runs in the root context (tick, call answers, configure, done),
    /// so the answer to a call comes back here.
    fn pump(&mut self, now_ms: i64) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        self.adopt_handoff();
        let Some(dest) = cfg.audit.as_ref() else {
            return;
        };
        let metrics = self.metrics();
        let Ok(mut st) = self.audit.try_borrow_mut() else {
            return;
        };
        let st = &mut *st;
        let Some(q) = st.queue.as_mut() else {
            return;
        };
        if let Some(batch) = q.poll(now_ms) {
            let mut headers = vec![
                (":method", "POST"),
                (":path", dest.path.as_str()),
                (":authority", dest.authority.as_str()),
                ("content-type", "application/x-ndjson"),
                ("x-tokengate-batch", batch.id.as_str()),
            ];
            if let Some(auth) = dest.authorization.as_deref() {
                headers.push(("authorization", auth));
            }
            let timeout = Duration::from_millis(dest.timeout_ms);
            match hostcalls::dispatch_http_call(
                &dest.cluster,
                headers,
                Some(batch.body.as_bytes()),
                vec![],
                timeout,
            ) {
                Ok(token) => q.dispatched(token),
                Err(status) => {
                    let outcome = q.complete(None, false, now_ms);
                    Metrics::add(metrics.audit_failed, outcome.failed);
                    if q.failures() == 1 {
                        log::warn!(
                                "tokengate: audit batch of {} line(s) could not be sent to cluster `{}` ({status:?}); retrying with backoff",
                                batch.lines, dest.cluster
                            );
                    }
                }
            }
        }
        if q.is_closing() {
            let expired = self.closing_deadline_ms.is_some_and(|d| now_ms >= d);
            // A closing root context tries once: a failure ends it too.
            if q.is_drained() || expired || (q.failures() > 0 && !q.in_flight()) {
                let left = q.hand_off();
                if !left.is_empty() {
                    // The configuration that replaces this one, in this VM, sends them (SPEC
                    // §11); only a VM shutting down while the receiver is away loses them.
                    log::warn!(
                        "tokengate: audit: {} line(s) could not be delivered before the configuration was replaced; the next configuration of this worker sends them",
                        left.len()
                    );
                    HANDOFF.with(|h| {
                        if let Ok(mut h) = h.try_borrow_mut() {
                            h.extend(left);
                        }
                    });
                }
                Self::sync_gauge(&metrics, 0, &mut st.reported_queued);
                st.closed = true;
                self.closing_deadline_ms = None;
                if self.awaiting_done {
                    self.awaiting_done = false;
                    let _ = hostcalls::done();
                }
                return;
            }
        }
        let wake = u64::try_from(q.next_wake_ms(now_ms)).unwrap_or(1);
        Self::sync_gauge(&metrics, q.len(), &mut st.reported_queued);
        if wake != st.tick_ms
            && host::set_tick_period_ms(u32::try_from(wake).unwrap_or(u32::MAX)).is_ok()
        {
            st.tick_ms = wake;
        }
    }

    fn sync_gauge(metrics: &Metrics, len: usize, reported: &mut usize) {
        let delta =
            i64::try_from(len).unwrap_or(i64::MAX) - i64::try_from(*reported).unwrap_or(i64::MAX);
        Metrics::shift(metrics.audit_queued, delta);
        *reported = len;
    }
}

impl Context for Root {
    /// Config replaced or VM shutting down: one last flush of what is held. `false` keeps the
    /// context alive until the flush is answered; `pump` then calls `done`.
    fn on_done(&mut self) -> bool {
        let now = host::now_ms().unwrap_or(0);
        let timeout_ms = self
            .config
            .as_ref()
            .and_then(|c| c.audit.as_ref())
            .map_or(0, |a| i64::try_from(a.timeout_ms).unwrap_or(i64::MAX));
        let busy = match self.audit.try_borrow_mut() {
            Ok(mut st) => match st.queue.as_mut() {
                Some(q) if !q.is_drained() => {
                    q.close();
                    true
                }
                _ => {
                    st.closed = true;
                    false
                }
            },
            Err(_) => false,
        };
        if !busy {
            return true;
        }
        self.closing_deadline_ms = Some(
            now.saturating_add(if timeout_ms > 0 { timeout_ms } else { 5_000 })
                .saturating_add(audit::IN_FLIGHT_GRACE_MS),
        );
        self.pump(now);
        let finished = self.audit.try_borrow().map_or(true, |st| st.closed);
        // Otherwise pump calls done() once the last batch is answered or given up on.
        self.awaiting_done = !finished;
        finished
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        // No `:status` (reset, timeout, no upstream) is a failure like a non-2xx one.
        let status = host::call_response_status().map(|b| String::from_utf8_lossy(&b).into_owned());
        let ok = status
            .as_deref()
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| (200..300).contains(&s));
        let now = host::now_ms().unwrap_or(0);
        let metrics = self.metrics();
        if let Ok(mut st) = self.audit.try_borrow_mut() {
            if let Some(q) = st.queue.as_mut() {
                let outcome = q.complete(Some(token_id), ok, now);
                Metrics::add(metrics.audit_sent, outcome.sent);
                Metrics::add(metrics.audit_failed, outcome.failed);
                let cluster = self
                    .config
                    .as_ref()
                    .and_then(|c| c.audit.as_ref())
                    .map_or("", |a| a.cluster.as_str());
                if outcome.failed > 0 && q.failures() == 1 {
                    log::warn!(
                            "tokengate: audit sink (cluster `{cluster}`) answered {}; retrying with backoff, {} line(s) queued",
                            status.as_deref().unwrap_or("nothing"),
                            q.len()
                        );
                } else if outcome.recovered {
                    log::info!("tokengate: audit sink (cluster `{cluster}`) accepts batches again");
                }
            }
        }
        self.pump(now);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = host::plugin_configuration().unwrap_or_default();
        match config::load(&bytes) {
            Ok(cfg) => {
                log::info!(
                    "tokengate: configuration loaded: {} token(s)",
                    cfg.tokens.len()
                );
                let now = host::now_ms().unwrap_or(0);
                self.configure_audit(&cfg, now);
                self.config = Some(Rc::new(cfg));
                if self.metrics.is_none() {
                    self.metrics = Some(Rc::new(Metrics::define()));
                }
                self.pump(now);
                true
            }
            Err(e) => {
                // Envoy refuses the config (start-up fails; an update keeps the old one).
                log::error!("tokengate: configuration rejected: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.pump(host::now_ms().unwrap_or(0));
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config (never loaded) a stream must not pass unchecked: refuse all.
        Some(Box::new(Stream {
            config: self.config.clone(),
            metrics: self.metrics.clone().unwrap_or_default(),
            pending: None,
            body_size: 0,
            audit: self.audit.clone(),
            start_ms: 0,
            line: None,
            held: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The request headers of a request on a protected path, read in one host call.
///
/// A token request needs up to a dozen headers (credential, run-as, method overrides, body
/// headers, request id) and whether the cookie and identity headers are present: one map
/// read replaces a host call for each, and the block is looked into where the host wrote it.
/// Pass-through requests never build one.
struct Snapshot {
    headers: HeaderBlock,
    /// `source.address`, read at most once.
    source: OnceCell<Option<Vec<u8>>>,
}

impl Snapshot {
    fn read() -> Option<Snapshot> {
        let headers = host::request_headers().ok()?;
        Some(Snapshot {
            headers,
            source: OnceCell::new(),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.headers.has(name)
    }

    fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.source_address().and_then(|a| {
            std::str::from_utf8(&a)
                .ok()
                .and_then(ip::parse_source_address)
        })
    }
}

impl RequestHeaders for Snapshot {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        // Envoy's own single-value getter answers the first entry: so does this.
        self.headers.get(name).map(Cow::Borrowed)
    }

    fn count(&self, name: &str) -> usize {
        self.headers.count(name)
    }

    fn source_address(&self) -> Option<Cow<'_, [u8]>> {
        self.source
            .get_or_init(|| host::property(b"source\0address").ok().flatten())
            .as_deref()
            .map(Cow::Borrowed)
    }
}

struct Stream {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    /// Set while the body of a request is being buffered for a JsonData decision.
    pending: Option<Pending>,
    body_size: usize,
    audit: SharedAudit,
    /// Start of the request (Unix ms, host clock).
    start_ms: i64,
    /// The audit line, begun when the filter decided; finished and queued in `on_log`.
    line: Option<PartialLine>,
    /// The request line of a request whose body is being buffered.
    held: Option<HeldLine>,
}

impl Context for Stream {}

impl Stream {
    fn deny(&mut self, config: &Config, refusal: &Refusal, req: &RequestLine) -> Action {
        let d = flow::deny(config, refusal, req);
        self.metrics.denied(d.reason);
        for (k, v) in &d.state {
            let _ = host::set_property(k.as_bytes(), v.as_bytes());
        }
        self.line = Some(d.line);
        if send(&d.reply).is_err() {
            log::error!("tokengate: could not send the local reply; resetting the request");
            let _ = host::reset_request();
        }
        Action::Pause
    }

    /// Rewrites the identity for the upstream (SPEC §9). If any header change fails, the
    /// request is refused rather than forwarded half-rewritten.
    fn allow(&mut self, config: &Config, grant: &Grant, req: &RequestLine) -> Action {
        let a = flow::allow(config, grant, req);
        let rewritten = a.rewrite.iter().try_for_each(|op| match op {
            HeaderOp::Remove(name) => host::remove_request_header(name),
            HeaderOp::Set(name, value) => host::replace_request_header(name, value.as_bytes()),
        });
        if rewritten.is_err() {
            log::error!("tokengate: could not rewrite request headers; refusing");
            let (r, line) = flow::Allowance::failed(config, grant, req);
            self.line = Some(line);
            let _ = send(&r);
            return Action::Pause;
        }
        Metrics::bump(self.metrics.allowed);
        for (k, v) in &a.state {
            let _ = host::set_property(k.as_bytes(), v.as_bytes());
        }
        self.line = Some(a.line);
        Action::Continue
    }

    fn finish_body(&mut self, config: &Config) -> Action {
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let held = self.held.take().unwrap_or_default();
        let body = if self.body_size == 0 {
            Vec::new()
        } else {
            match host::request_body(self.body_size) {
                Ok(b) => b,
                Err(_) => {
                    return self.deny(config, &flow::body_unavailable(&pending), &held.line())
                }
            }
        };
        match policy::decide_body(config, &pending, &body) {
            Ok(grant) => self.allow(config, &grant, &held.line()),
            Err(refusal) => self.deny(config, &refusal, &held.line()),
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return fail_closed(503, "tokengate is not configured");
        };
        // One host call for every request, protected or not: the map answers the path, the
        // headers a token request needs, and which identity headers are there to strip (a
        // removal is a host call even when the header is absent). Reading `:path` alone and
        // then the map on protected paths took two; blind removals one or two more.
        let Some(headers) = Snapshot::read() else {
            // Without the headers neither the path nor the identity can be checked.
            return fail_closed(500, "internal error");
        };
        // Step 1 of SPEC §2, for every request: a client never supplies its own identity.
        let mut stripped = Ok(());
        for name in flow::identity_headers(&config) {
            if headers.has(name) {
                stripped = stripped.and_then(|()| host::remove_request_header(name));
            }
        }
        if stripped.is_err() {
            return fail_closed(500, "internal error");
        }
        // Envoy refuses non-ASCII request lines before filters; lossy decoding cannot
        // therefore merge two different targets.
        let Some(target) = headers.headers.get(":path").map(String::from_utf8_lossy) else {
            // No `:path` (CONNECT): nothing under protected_paths.
            Metrics::bump(self.metrics.passthrough);
            return Action::Continue;
        };
        if !policy::is_protected(&config, &target) {
            Metrics::bump(self.metrics.passthrough);
            return Action::Continue;
        }
        // Borrowed from the header block, like the target (no copy per request).
        let method = headers
            .headers
            .get(":method")
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let now = host::now_ms();
        // Without a clock every expiring token counts as expired: fail closed.
        let decision = policy::decide_protected(
            &config,
            &method,
            &target,
            &headers,
            now.unwrap_or(i64::MAX),
            end_of_stream,
        );
        if decision == Decision::Pass {
            Metrics::bump(self.metrics.passthrough);
            return Action::Continue;
        }
        // Decided (or to be decided on the body): audited, so take what the line needs
        // while the headers are held.
        self.start_ms = now.unwrap_or(0);
        let request_id = headers
            .headers
            .get("x-request-id")
            .map(String::from_utf8_lossy);
        let req = RequestLine {
            method: &method,
            target: &target,
            request_id: request_id.as_deref(),
            client_ip: headers.client_ip(),
            cookie: headers.has("cookie"),
            run_as: headers.has(&config.identity.run_as_header),
            start_ms: self.start_ms,
        };
        match decision {
            Decision::Pass => Action::Continue,
            Decision::Allow(grant) => self.allow(&config, &grant, &req),
            Decision::Deny(refusal) => self.deny(&config, &refusal, &req),
            Decision::Buffer(pending) => {
                self.held = Some(HeldLine::of(&req));
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
        let too_large = self
            .pending
            .as_ref()
            .and_then(|p| flow::body_limit(&config, p, body_size));
        if let Some(refusal) = too_large {
            self.pending = None;
            let held = self.held.take().unwrap_or_default();
            return self.deny(&config, &refusal, &held.line());
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

    /// The stream ended: finish the audit line with the status sent downstream and the
    /// duration, and queue it. Pass-through requests have no line and cost nothing here.
    fn on_log(&mut self) {
        let Some(partial) = self.line.take() else {
            return;
        };
        // Envoy hands `response.code` over as a little-endian int64; absent: no response.
        let status = host::property(b"response\0code")
            .ok()
            .flatten()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_le_bytes)
            .and_then(|c| u32::try_from(c).ok())
            .filter(|c| *c > 0);
        let now = host::now_ms().unwrap_or(self.start_ms);
        let line = partial.finish(status, now.saturating_sub(self.start_ms));
        let Ok(mut st) = self.audit.try_borrow_mut() else {
            log_line("", &line);
            return;
        };
        let st = &mut *st;
        let queue = if st.closed { None } else { st.queue.as_mut() };
        let Some(q) = queue else {
            log_line("", &line);
            return;
        };
        Metrics::add(self.metrics.audit_dropped, q.push(line));
        // A full batch: have the root's tick fire now rather than at the flush interval.
        if q.wants_kick() && st.tick_ms != 1 && host::set_tick_period_ms(1).is_ok() {
            st.tick_ms = 1;
        }
    }
}
