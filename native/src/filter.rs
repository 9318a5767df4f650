//! The per-config object, the per-stream object and the request flow of the native shell.
//!
//! [`Compiled`] is built once per filter config on the main thread (`config_new`) and shared
//! by `Arc` with every stream on every worker; a config update leaves in-flight requests on
//! the set they started with. [`Stream`] is the small per-request object. Decisions come from
//! [`tokengate_core::policy`]; what they mean on the wire (reply, rewrite, filter state, audit
//! line) from [`tokengate_core::flow`], which the wasm shell (`src/filter.rs`) applies too.
//!
//! Audit delivery (SPEC §11): streams finish their line in `on_stream_complete` and push it
//! into the config's [`Queue`] (one per filter config, behind a mutex, shared by the workers).
//! Sending happens on the main thread: a small ticker thread commits a config-scheduler event
//! at the queue's next wake-up, a stream that fills a batch commits one at once, and
//! `on_config_scheduled` POSTs the batch with the config-level HTTP callout; its answer comes
//! back in `on_config_callout_done`, which moves the queue (retry with backoff as in the core).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use tokengate_core::audit::{self, PartialLine, Queue};
use tokengate_core::config::{self, Config};
use tokengate_core::flow::{self, HeaderOp, HeldLine, Reply, RequestLine};
use tokengate_core::ip;
use tokengate_core::policy::{self, Decision, Grant, Pending, Reason, Refusal, RequestHeaders};

use crate::host::{ConfigHost, Filter, Headers, Scheduler};

/// Unix time in ms (the native shell has the system clock).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(i64::MAX)
}

fn log_line(prefix: &str, line: &str) {
    log::info!("tokengate audit{prefix}: {}", line.trim_end());
}

/// Counter and gauge ids (SPEC §12), defined once per filter config. Envoy names them
/// `<metrics_namespace>.<name>`; the default namespace is `dynamicmodulescustom`.
#[derive(Default)]
struct Metrics {
    allowed: Option<usize>,
    denied: Option<usize>,
    passthrough: Option<usize>,
    by_reason: Vec<(Reason, Option<usize>)>,
    audit_sent: Option<usize>,
    audit_failed: Option<usize>,
    audit_dropped: Option<usize>,
    audit_queued: Option<usize>,
}

impl Metrics {
    fn define(host: &ConfigHost) -> Metrics {
        Metrics {
            allowed: host.define_counter("tokengate.allowed"),
            denied: host.define_counter("tokengate.denied"),
            passthrough: host.define_counter("tokengate.passthrough"),
            by_reason: Reason::DENIALS
                .iter()
                .map(|r| {
                    (
                        *r,
                        host.define_counter(&format!("tokengate.denied.{}", r.as_str())),
                    )
                })
                .collect(),
            audit_sent: host.define_counter("tokengate.audit.sent"),
            audit_failed: host.define_counter("tokengate.audit.failed"),
            audit_dropped: host.define_counter("tokengate.audit.dropped"),
            audit_queued: host.define_gauge("tokengate.audit.queued"),
        }
    }

    fn reason(&self, reason: Reason) -> Option<usize> {
        self.by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .and_then(|(_, id)| *id)
    }
}

/// Scheduler events.
pub const EVENT_PUMP: u64 = 1;

/// Every live filter config, so that one being replaced can hand its undelivered audit lines
/// to its successor (SPEC §11: a token-set update loses no lines). Envoy creates the new
/// config before it destroys the old one.
static LIVE: Mutex<Vec<Weak<Compiled>>> = Mutex::new(Vec::new());

struct AuditState {
    queue: Queue,
    /// The config is gone: late lines go to the Envoy log.
    closed: bool,
}

struct Audit {
    state: Mutex<AuditState>,
    scheduler: Mutex<Option<Scheduler>>,
    /// Ticker stop flag (and the condvar it sleeps on).
    stop: Arc<(Mutex<bool>, Condvar)>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

/// One compiled filter configuration.
pub struct Compiled {
    config: Config,
    host: ConfigHost,
    metrics: Metrics,
    audit: Option<Audit>,
}

impl Compiled {
    /// Parses the `filter_config` bytes (the JSON of SPEC §3). `Err` is logged by the caller
    /// and makes Envoy refuse the configuration.
    pub fn new(host: ConfigHost, bytes: &[u8]) -> Result<Arc<Compiled>, String> {
        let config = config::load(bytes).map_err(|e| e.to_string())?;
        let metrics = Metrics::define(&host);
        let audit = config.audit.as_ref().map(|a| Audit {
            state: Mutex::new(AuditState {
                queue: Queue::new(audit::Limits::from(a), now_ms()),
                closed: false,
            }),
            scheduler: Mutex::new(Some(host.scheduler_new())),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            ticker: Mutex::new(None),
        });
        log::info!(
            "tokengate: configuration loaded: {} token(s)",
            config.tokens.len()
        );
        let compiled = Arc::new(Compiled {
            config,
            host,
            metrics,
            audit,
        });
        compiled.start_ticker();
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&compiled));
        }
        Ok(compiled)
    }

    /// The ticker wakes the main thread when the queue is due (flush interval or backoff).
    fn start_ticker(self: &Arc<Self>) {
        let Some(audit) = &self.audit else {
            return;
        };
        let weak = Arc::downgrade(self);
        let stop = audit.stop.clone();
        let handle = std::thread::Builder::new()
            .name("tokengate-audit".into())
            .spawn(move || loop {
                let wait_ms = match weak.upgrade() {
                    Some(c) => c.next_wake_ms(),
                    None => return,
                };
                let (lock, cvar) = &*stop;
                let Ok(guard) = lock.lock() else { return };
                if *guard {
                    return;
                }
                let Ok((guard, _)) = cvar.wait_timeout(guard, Duration::from_millis(wait_ms))
                else {
                    return;
                };
                if *guard {
                    return;
                }
                drop(guard);
                if let Some(c) = weak.upgrade() {
                    c.kick();
                }
            });
        if let (Ok(h), Ok(mut slot)) = (handle, audit.ticker.lock()) {
            *slot = Some(h);
        }
    }

    fn next_wake_ms(&self) -> u64 {
        let Some(audit) = &self.audit else {
            return 1_000;
        };
        let Ok(st) = audit.state.lock() else {
            return 1_000;
        };
        u64::try_from(st.queue.next_wake_ms(now_ms()))
            .unwrap_or(1)
            .clamp(1, 60_000)
    }

    /// Asks the main thread to pump the queue.
    fn kick(&self) {
        if let Some(audit) = &self.audit {
            if let Ok(s) = audit.scheduler.lock() {
                if let Some(s) = s.as_ref() {
                    s.commit(EVENT_PUMP);
                }
            }
        }
    }

    /// Main thread: sends what is due.
    pub fn pump(&self) {
        let (Some(audit), Some(dest)) = (&self.audit, self.config.audit.as_ref()) else {
            return;
        };
        let Ok(mut st) = audit.state.lock() else {
            return;
        };
        if st.closed {
            return;
        }
        let now = now_ms();
        if let Some(batch) = st.queue.poll(now) {
            match self.host.post(dest, batch.body.as_bytes(), &batch.id) {
                Ok(id) => st.queue.dispatched(u32::try_from(id).unwrap_or(u32::MAX)),
                Err(code) => {
                    let outcome = st.queue.complete(None, false, now);
                    self.host
                        .add_counter(self.metrics.audit_failed, outcome.failed);
                    if st.queue.failures() == 1 {
                        log::warn!(
                                "tokengate: audit batch of {} line(s) could not be sent to cluster `{}` (callout init result {code}); retrying with backoff",
                                batch.lines, dest.cluster
                            );
                    }
                }
            }
        }
        self.host
            .set_gauge(self.metrics.audit_queued, st.queue.len() as u64);
    }

    /// Main thread: the answer to an audit POST.
    pub fn callout_done(&self, id: u64, ok: bool, status: Option<&str>) {
        let (Some(audit), Some(dest)) = (&self.audit, self.config.audit.as_ref()) else {
            return;
        };
        {
            let Ok(mut st) = audit.state.lock() else {
                return;
            };
            let outcome =
                st.queue
                    .complete(Some(u32::try_from(id).unwrap_or(u32::MAX)), ok, now_ms());
            self.host.add_counter(self.metrics.audit_sent, outcome.sent);
            self.host
                .add_counter(self.metrics.audit_failed, outcome.failed);
            if outcome.failed > 0 && st.queue.failures() == 1 {
                log::warn!(
                        "tokengate: audit sink (cluster `{}`) answered {}; retrying with backoff, {} line(s) queued",
                        dest.cluster,
                        status.unwrap_or("nothing"),
                        st.queue.len()
                    );
            } else if outcome.recovered {
                log::info!(
                    "tokengate: audit sink (cluster `{}`) accepts batches again",
                    dest.cluster
                );
            }
        }
        self.pump();
    }

    /// Main thread, config destroyed: stop the ticker, log what was not delivered.
    pub fn close(&self) {
        let Some(audit) = &self.audit else {
            return;
        };
        {
            let (lock, cvar) = &*audit.stop;
            if let Ok(mut g) = lock.lock() {
                *g = true;
            }
            cvar.notify_all();
        }
        if let Ok(mut t) = audit.ticker.lock() {
            if let Some(h) = t.take() {
                let _ = h.join();
            }
        }
        if let Ok(mut s) = audit.scheduler.lock() {
            s.take();
        }
        let left = match audit.state.lock() {
            Ok(mut st) => {
                st.closed = true;
                st.queue.abandon()
            }
            Err(_) => return,
        };
        if left.is_empty() {
            return;
        }
        // The newest other live config with an audit section inherits the lines (queued after
        // what it holds already); without one (Envoy stopping) they go to Envoy's log.
        let heir = LIVE.lock().ok().and_then(|mut live| {
            live.retain(|w| w.strong_count() > 0);
            live.iter()
                .rev()
                .filter_map(Weak::upgrade)
                .find(|c| !std::ptr::eq(Arc::as_ptr(c), self) && c.accepts_lines())
        });
        if let Some(heir) = heir {
            log::info!(
                "tokengate: audit: {} undelivered line(s) handed to the configuration that replaces this one",
                left.len()
            );
            for line in left {
                heir.push_line(line);
            }
            heir.kick();
            return;
        }
        log::warn!(
            "tokengate: audit: {} line(s) could not be delivered before the configuration was replaced; they follow",
            left.len()
        );
        for line in &left {
            log_line(" (undelivered)", line);
        }
    }

    /// Whether this config queues audit lines (has an `audit` section and is not closed).
    fn accepts_lines(&self) -> bool {
        self.audit
            .as_ref()
            .and_then(|a| a.state.lock().ok().map(|st| !st.closed))
            .unwrap_or(false)
    }

    /// A finished line from a worker.
    fn push_line(&self, line: String) {
        let Some(audit) = &self.audit else {
            log_line("", &line);
            return;
        };
        let kick = {
            let Ok(mut st) = audit.state.lock() else {
                log_line("", &line);
                return;
            };
            if st.closed {
                drop(st);
                log_line("", &line);
                return;
            }
            let dropped = st.queue.push(line);
            self.host.add_counter(self.metrics.audit_dropped, dropped);
            st.queue.wants_kick()
        };
        if kick {
            self.kick();
        }
    }
}

/// The request headers of a protected request, borrowed from Envoy for one hook.
struct Snapshot<'f> {
    filter: &'f Filter,
    headers: Headers,
    source: std::cell::OnceCell<Option<Vec<u8>>>,
}

impl RequestHeaders for Snapshot<'_> {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.headers.get(name).map(std::borrow::Cow::Borrowed)
    }

    fn count(&self, name: &str) -> usize {
        self.headers.count(name)
    }

    fn source_address(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.source
            .get_or_init(|| self.filter.source_address())
            .as_deref()
            .map(std::borrow::Cow::Borrowed)
    }
}

impl Snapshot<'_> {
    fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.source_address().and_then(|a| {
            std::str::from_utf8(&a)
                .ok()
                .and_then(ip::parse_source_address)
        })
    }
}

/// What a hook tells Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward (headers, body or trailers continue).
    Continue,
    /// Hold the request while its body is read.
    Buffer,
    /// A local reply was sent (or the request reset): stop.
    Replied,
}

/// The per-stream object.
pub struct Stream {
    cfg: Arc<Compiled>,
    /// Set while the body of a request is buffered for a JsonData decision.
    pending: Option<(Pending, HeldLine)>,
    start_ms: i64,
    /// The audit line, begun when the filter decided; finished in `on_stream_complete`.
    line: Option<PartialLine>,
}

impl Stream {
    pub fn new(cfg: Arc<Compiled>) -> Stream {
        Stream {
            cfg,
            pending: None,
            start_ms: 0,
            line: None,
        }
    }

    fn deny(&mut self, f: &Filter, refusal: &Refusal, req: &RequestLine) -> Verdict {
        let cfg = self.cfg.clone();
        let d = flow::deny(&cfg.config, refusal, req);
        f.increment_counter(cfg.metrics.denied);
        f.increment_counter(cfg.metrics.reason(d.reason));
        for (k, v) in &d.state {
            f.set_filter_state(k, v);
        }
        self.line = Some(d.line);
        reply(f, &d.reply);
        Verdict::Replied
    }

    /// Rewrites the identity for the upstream (SPEC §9); a failed change refuses with 500.
    fn allow(&mut self, f: &Filter, grant: &Grant, req: &RequestLine) -> Verdict {
        let cfg = self.cfg.clone();
        let a = flow::allow(&cfg.config, grant, req);
        let rewritten = a.rewrite.iter().try_for_each(|op| match op {
            HeaderOp::Remove(name) => f.remove_request_header(name),
            HeaderOp::Set(name, value) => f.set_request_header(name, value.as_bytes()),
        });
        if rewritten.is_err() {
            log::error!("tokengate: could not rewrite request headers; refusing");
            let (r, line) = flow::Allowance::failed(&cfg.config, grant, req);
            self.line = Some(line);
            reply(f, &r);
            return Verdict::Replied;
        }
        f.increment_counter(cfg.metrics.allowed);
        for (k, v) in &a.state {
            f.set_filter_state(k, v);
        }
        self.line = Some(a.line);
        Verdict::Continue
    }

    pub fn on_request_headers(&mut self, f: &Filter, end_of_stream: bool) -> Verdict {
        let cfg = self.cfg.clone();
        let config = &cfg.config;
        // SPEC §2 step 1, for every request: a client never supplies its own identity.
        for name in flow::identity_headers(config) {
            if f.remove_request_header(name).is_err() {
                return fail_closed(f, 500, "internal error");
            }
        }
        // Envoy refuses non-ASCII request lines before filters; lossy decoding cannot merge
        // two different targets.
        let Some(path) = f.request_header(":path") else {
            f.increment_counter(cfg.metrics.passthrough);
            return Verdict::Continue;
        };
        let target = String::from_utf8_lossy(path);
        if !policy::is_protected(config, &target) {
            f.increment_counter(cfg.metrics.passthrough);
            return Verdict::Continue;
        }
        let Some(headers) = f.request_headers() else {
            return fail_closed(f, 500, "internal error");
        };
        let snap = Snapshot {
            filter: f,
            headers,
            source: std::cell::OnceCell::new(),
        };
        let method = snap
            .headers
            .get(":method")
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let now = now_ms();
        let decision =
            policy::decide_protected(config, &method, &target, &snap, now, end_of_stream);
        if decision == Decision::Pass {
            f.increment_counter(cfg.metrics.passthrough);
            return Verdict::Continue;
        }
        self.start_ms = now;
        let request_id = snap
            .headers
            .get("x-request-id")
            .map(String::from_utf8_lossy);
        // Copied: Envoy's header buffers may move once a header is changed.
        let held = HeldLine::of(&RequestLine {
            method: &method,
            target: &target,
            request_id: request_id.as_deref(),
            client_ip: snap.client_ip(),
            cookie: snap.headers.get("cookie").is_some(),
            run_as: snap.headers.get(&config.identity.run_as_header).is_some(),
            start_ms: now,
        });
        // Nothing borrowed from Envoy's header map past this point.
        drop(request_id);
        drop(snap);
        match decision {
            Decision::Pass => Verdict::Continue,
            Decision::Allow(grant) => self.allow(f, &grant, &held.line()),
            Decision::Deny(refusal) => self.deny(f, &refusal, &held.line()),
            Decision::Buffer(pending) => {
                self.pending = Some((pending, held));
                Verdict::Buffer
            }
        }
    }

    pub fn on_request_body(&mut self, f: &Filter, end_of_stream: bool) -> Verdict {
        let Some((pending, _)) = &self.pending else {
            return Verdict::Continue;
        };
        let size = f.request_body_size(true);
        if let Some(refusal) = flow::body_limit(&self.cfg.config, pending, size) {
            let held = self.pending.take().map(|(_, h)| h).unwrap_or_default();
            return self.deny(f, &refusal, &held.line());
        }
        if !end_of_stream {
            return Verdict::Buffer;
        }
        self.finish_body(f, true)
    }

    pub fn on_request_trailers(&mut self, f: &Filter) -> Verdict {
        if self.pending.is_none() {
            return Verdict::Continue;
        }
        self.finish_body(f, false)
    }

    fn finish_body(&mut self, f: &Filter, in_body_hook: bool) -> Verdict {
        let Some((pending, held)) = self.pending.take() else {
            return Verdict::Continue;
        };
        let Some(body) = f.request_body(in_body_hook) else {
            return self.deny(f, &flow::body_unavailable(&pending), &held.line());
        };
        match policy::decide_body(&self.cfg.config, &pending, &body) {
            Ok(grant) => self.allow(f, &grant, &held.line()),
            Err(refusal) => self.deny(f, &refusal, &held.line()),
        }
    }

    /// The stream ended: finish and queue the audit line (pass-through requests have none).
    pub fn on_stream_complete(&mut self, f: &Filter) {
        let Some(partial) = self.line.take() else {
            return;
        };
        let status = f.response_code();
        let line = partial.finish(status, now_ms().saturating_sub(self.start_ms));
        self.cfg.push_line(line);
    }
}

fn reply(f: &Filter, r: &Reply) {
    f.send_response(u32::from(r.status), &r.headers, r.body.as_bytes());
}

/// Answers a request the filter cannot handle instead of letting it through unchecked.
pub fn fail_closed(f: &Filter, status: u16, message: &str) -> Verdict {
    reply(f, &flow::failure_reply(status, message));
    Verdict::Replied
}
