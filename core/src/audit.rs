//! Audit lines and their delivery (SPEC §11), without host calls.
//!
//! * [`Entry`] is what the shell knows when it decides on a request; [`Entry::begin`] writes
//!   the NDJSON line up to the two fields known only when the stream ends, and
//!   [`PartialLine::finish`] adds `status` and `duration_ms`. The line is the only allocation;
//!   nothing is serialized through serde.
//! * [`Queue`] is the bounded per-worker queue: batching, one batch in flight at a time,
//!   in-order retry with capped exponential backoff, drop-oldest accounting, and "what to send
//!   now, and when to wake up next" as functions of a clock the shell passes in.
//!
//! A line never holds the token, any part of it, or the body: [`Entry`] has no field for them.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;

use crate::canonical;
use crate::config::AuditConfig;
use crate::text::{push_ip, push_json_string, push_uint};
use crate::time::push_rfc3339_ms;

/// First retry delay after a failed batch; doubled per consecutive failure.
pub const BACKOFF_INITIAL_MS: i64 = 250;
/// Largest retry delay: after an outage, delivery resumes at most this long after the sink
/// returns.
pub const BACKOFF_MAX_MS: i64 = 5_000;
/// How long after its timeout a batch still counts as in flight before the queue gives up on
/// the host's answer and treats it as failed (the answer, should it still come, is ignored).
pub const IN_FLIGHT_GRACE_MS: i64 = 1_000;
/// A timer that fires this early still counts as due (host clock and timer clock differ).
const TIMER_SLACK_MS: i64 = 5;

/// What the filter knew when it decided on a request.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Start of the request, Unix ms (host clock).
    pub ts_ms: i64,
    /// Envoy's `x-request-id`.
    pub request_id: Option<&'a str>,
    pub token_id: Option<&'a str>,
    pub token_name: Option<&'a str>,
    /// The token's bound user, or the Basic username for a user-less token.
    pub user: Option<&'a str>,
    /// The acting user on allowed requests; `None` on refusals.
    pub acting_as: Option<&'a str>,
    /// The client address, without the port.
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// `:path` as received; the line carries its path and its decoded parameter names.
    pub target: &'a str,
    pub allowed: bool,
    /// [`crate::policy::Reason::as_str`].
    pub reason: &'a str,
    /// 1-based restriction line that allowed the request.
    pub rule: Option<usize>,
    /// SPEC §19 `secret`: `"current"` or `"previous"`; `None` leaves it out (no previous secret).
    pub secret: Option<&'a str>,
    /// SPEC §19 `shadow_rule`: `None` leaves it out (no shadow lines), `Some(None)` is `null`.
    pub shadow_rule: Option<Option<usize>>,
}

/// A line begun at decision time, finished when the stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialLine {
    head: String,
    /// The SPEC §19 fields, written after `duration_ms` (empty, unallocated, without them).
    tail: String,
}

fn push_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => push_json_string(out, v),
        None => out.push_str("null"),
    }
}

impl Entry<'_> {
    /// Writes every field up to and including `rule`, in SPEC order.
    pub fn begin(&self) -> PartialLine {
        let (path, query) = canonical::split_target(self.target);
        let mut out = String::with_capacity(
            240 + self.target.len()
                + self.request_id.map_or(0, str::len)
                + self.token_name.map_or(0, str::len)
                + 2 * self.user.map_or(0, str::len),
        );
        out.push_str("{\"ts\":\"");
        push_rfc3339_ms(&mut out, self.ts_ms);
        out.push_str("\",\"request_id\":");
        push_opt_str(&mut out, self.request_id);
        out.push_str(",\"token_id\":");
        push_opt_str(&mut out, self.token_id);
        out.push_str(",\"token_name\":");
        push_opt_str(&mut out, self.token_name);
        out.push_str(",\"user\":");
        push_opt_str(&mut out, self.user);
        out.push_str(",\"acting_as\":");
        push_opt_str(&mut out, self.acting_as);
        out.push_str(",\"client_ip\":");
        match self.client_ip {
            Some(ip) => {
                out.push('"');
                push_ip(&mut out, ip);
                out.push('"');
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"method\":");
        push_json_string(&mut out, self.method);
        out.push_str(",\"path\":");
        push_json_string(&mut out, path);
        out.push_str(",\"query\":");
        push_query_names(&mut out, query);
        out.push_str(",\"decision\":");
        out.push_str(if self.allowed {
            "\"allow\""
        } else {
            "\"deny\""
        });
        out.push_str(",\"reason\":");
        push_json_string(&mut out, self.reason);
        out.push_str(",\"rule\":");
        match self.rule {
            Some(r) => push_uint(&mut out, u64::try_from(r).unwrap_or(u64::MAX)),
            None => out.push_str("null"),
        }
        let mut tail = String::new();
        if let Some(rule) = self.shadow_rule {
            tail.push_str(",\"shadow_rule\":");
            match rule {
                Some(r) => push_uint(&mut tail, u64::try_from(r).unwrap_or(u64::MAX)),
                None => tail.push_str("null"),
            }
        }
        if let Some(secret) = self.secret {
            tail.push_str(",\"secret\":");
            push_json_string(&mut tail, secret);
        }
        PartialLine { head: out, tail }
    }
}

impl PartialLine {
    /// Adds `status` (the code sent downstream; `None`: no response was sent) and
    /// `duration_ms`, closes the object and ends the line with `\n`.
    pub fn finish(self, status: Option<u32>, duration_ms: i64) -> String {
        let mut out = self.head;
        out.push_str(",\"status\":");
        match status {
            Some(s) => push_uint(&mut out, u64::from(s)),
            None => out.push_str("null"),
        }
        out.push_str(",\"duration_ms\":");
        push_uint(&mut out, u64::try_from(duration_ms).unwrap_or(0));
        out.push_str(&self.tail);
        out.push_str("}\n");
        out
    }
}

/// Above this many parameters, first appearances are tracked in a set rather than by
/// rescanning (which allocates nothing but is quadratic).
const QUERY_SCAN_MAX: usize = 16;

/// Raw `name` parts of a query, split as [`canonical::Query::raw_pairs`] splits them (empty
/// parts and empty names skipped). Works on malformed queries too: refusals are audited.
fn raw_names(query: &str) -> impl Iterator<Item = &str> {
    query
        .split('&')
        .map(|p| p.split_once('=').map_or(p, |(n, _)| n))
        .filter(|n| !n.is_empty())
}

/// Writes the decoded parameter names as a JSON array, in order of first appearance.
pub fn push_query_names(out: &mut String, query: &str) {
    out.push('[');
    let mut first = true;
    let mut emit = |out: &mut String, name: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        push_json_string(out, name);
    };
    if raw_names(query).nth(QUERY_SCAN_MAX).is_none() {
        for (i, raw) in raw_names(query).enumerate() {
            let name = canonical::decode_component(raw);
            if !raw_names(query)
                .take(i)
                .any(|earlier| canonical::decode_component(earlier) == name)
            {
                emit(out, &name);
            }
        }
    } else {
        let mut seen: HashSet<Cow<'_, str>> = HashSet::new();
        for raw in raw_names(query) {
            let name = canonical::decode_component(raw);
            if !seen.contains(&name) {
                emit(out, &name);
                seen.insert(name);
            }
        }
    }
    out.push(']');
}

/// Delivery settings the queue needs (from [`AuditConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub flush_interval_ms: i64,
    pub batch_max_lines: usize,
    pub queue_max_lines: usize,
    /// 0: no timeout.
    pub timeout_ms: i64,
}

impl From<&AuditConfig> for Limits {
    fn from(c: &AuditConfig) -> Limits {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Limits {
            flush_interval_ms: ms(c.flush_interval_ms).max(1),
            batch_max_lines: c.batch_max_lines.max(1),
            queue_max_lines: c.queue_max_lines.max(c.batch_max_lines).max(1),
            timeout_ms: ms(c.timeout_ms),
        }
    }
}

/// A batch to POST: the NDJSON body of the first `lines` queued lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub body: String,
    pub lines: usize,
    /// `x-tokengate-batch`: the first 128 bits of the body's SHA-256, in hex. A retry sends
    /// the same lines, so the same id; lines carry their own time and request id, so two
    /// different batches never share one, across workers, VMs and restarts alike, with no
    /// random source (wasm32 has none) and no state to keep.
    pub id: String,
}

/// The batch id of a body (see [`Batch::id`]).
pub fn batch_id(body: &[u8]) -> String {
    let d = crate::digest::sha256(body);
    let mut hex = crate::digest::to_hex(&d);
    hex.truncate(32);
    hex
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    lines: usize,
    /// The host's call id, once the dispatch succeeded.
    token: Option<u32>,
    /// Past this the host's answer is no longer awaited.
    deadline_ms: Option<i64>,
}

/// The effect of a batch's result on the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Lines delivered (`tokengate.audit.sent`).
    pub sent: u64,
    /// Failed attempts (`tokengate.audit.failed`): 0 or 1.
    pub failed: u64,
    /// Whether this result ended a run of failures (delivery resumed).
    pub recovered: bool,
}

/// Lifetime totals of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub produced: u64,
    pub sent: u64,
    pub dropped: u64,
    pub failed_batches: u64,
}

/// The per-worker audit queue. Lines leave it only when a batch holding them was acknowledged
/// (`sent`) or when it is full (`dropped`, oldest first); a failed batch stays at the front
/// and is retried first, so lines arrive in the order they were queued.
#[derive(Debug)]
pub struct Queue {
    limits: Limits,
    /// Every held line, oldest first; the first `in_flight.lines` are being sent.
    lines: VecDeque<String>,
    in_flight: Option<InFlight>,
    /// Consecutive failed attempts.
    failures: u32,
    /// Size of the batch that failed last: its retry holds exactly these lines, so it
    /// keeps its id (lines queued meanwhile go in later batches).
    retry_lines: Option<usize>,
    /// No attempt before this time (backoff after a failure).
    retry_at_ms: Option<i64>,
    /// The next timer flush.
    next_flush_ms: i64,
    /// Closing (config replaced or VM shutting down): send everything now.
    closing: bool,
    totals: Totals,
}

impl Queue {
    pub fn new(limits: Limits, now_ms: i64) -> Queue {
        Queue {
            limits,
            lines: VecDeque::new(),
            in_flight: None,
            failures: 0,
            retry_lines: None,
            retry_at_ms: None,
            next_flush_ms: now_ms.saturating_add(limits.flush_interval_ms),
            closing: false,
            totals: Totals::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// New settings for a queue that keeps its lines (a root context configured again).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Lines held, in flight included (`tokengate.audit.queued`).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn in_flight_lines(&self) -> usize {
        self.in_flight.map_or(0, |f| f.lines)
    }

    /// Queues a line (ending in `\n`). Returns how many lines were dropped to make room: the
    /// oldest line not being sent, or this line itself when every held line is in flight.
    pub fn push(&mut self, line: String) -> u64 {
        self.totals.produced += 1;
        if self.lines.len() < self.limits.queue_max_lines {
            self.lines.push_back(line);
            return 0;
        }
        self.totals.dropped += 1;
        // Lines of a batch in flight or awaiting its retry stay: the retry must be the same.
        let oldest_unsent = self.in_flight_lines().max(self.retry_lines.unwrap_or(0));
        if self.lines.remove(oldest_unsent).is_some() {
            self.lines.push_back(line);
        }
        1
    }

    /// Whether a full batch waits and could go at once: the shell then asks for an early
    /// timer instead of waiting for the flush interval.
    pub fn wants_kick(&self) -> bool {
        self.in_flight.is_none()
            && self.retry_at_ms.is_none()
            && self.lines.len() >= self.limits.batch_max_lines
    }

    /// The batch to send now, if any; its lines are then in flight until [`Queue::dispatched`]
    /// and [`Queue::complete`]. Due: a retry whose backoff has passed, a full batch, the
    /// flush timer, or closing. One batch at a time, so retries keep the order.
    pub fn poll(&mut self, now_ms: i64) -> Option<Batch> {
        if let Some(f) = self.in_flight {
            if f.deadline_ms.is_some_and(|d| now_ms >= d) {
                // The host never answered: count it as failed and retry later.
                self.fail(now_ms);
            }
            return None;
        }
        let timer_due = now_ms.saturating_add(TIMER_SLACK_MS) >= self.next_flush_ms;
        if self.lines.is_empty() {
            if timer_due {
                self.next_flush_ms = now_ms.saturating_add(self.limits.flush_interval_ms);
            }
            return None;
        }
        if let Some(at) = self.retry_at_ms {
            if now_ms < at {
                return None;
            }
        }
        let due = self.closing
            || self.failures > 0
            || timer_due
            || self.lines.len() >= self.limits.batch_max_lines;
        if !due {
            return None;
        }
        if timer_due {
            self.next_flush_ms = now_ms.saturating_add(self.limits.flush_interval_ms);
        }
        let n = self
            .retry_lines
            .unwrap_or(self.limits.batch_max_lines)
            .min(self.lines.len());
        let size = self.lines.iter().take(n).map(String::len).sum();
        let mut body = String::with_capacity(size);
        for line in self.lines.iter().take(n) {
            body.push_str(line);
        }
        self.in_flight = Some(InFlight {
            lines: n,
            token: None,
            deadline_ms: (self.limits.timeout_ms > 0).then(|| {
                now_ms
                    .saturating_add(self.limits.timeout_ms)
                    .saturating_add(IN_FLIGHT_GRACE_MS)
            }),
        });
        let id = batch_id(body.as_bytes());
        Some(Batch { body, lines: n, id })
    }

    /// The host accepted the call for the batch in flight.
    pub fn dispatched(&mut self, token: u32) {
        if let Some(f) = self.in_flight.as_mut() {
            f.token = Some(token);
        }
    }

    /// The result for call `token` (`None`: the dispatch itself failed). `ok`: a 2xx status.
    /// A result that is not for the batch in flight (one given up on) changes nothing.
    pub fn complete(&mut self, token: Option<u32>, ok: bool, now_ms: i64) -> Outcome {
        let Some(f) = self.in_flight else {
            return Outcome::default();
        };
        if f.token != token {
            return Outcome::default();
        }
        if !ok {
            return self.fail(now_ms);
        }
        self.in_flight = None;
        let n = f.lines.min(self.lines.len());
        self.lines.drain(..n);
        let sent = u64::try_from(n).unwrap_or(u64::MAX);
        self.totals.sent += sent;
        let recovered = self.failures > 0;
        self.failures = 0;
        self.retry_lines = None;
        self.retry_at_ms = None;
        Outcome {
            sent,
            failed: 0,
            recovered,
        }
    }

    fn fail(&mut self, now_ms: i64) -> Outcome {
        if let Some(f) = self.in_flight {
            self.retry_lines = Some(f.lines);
        }
        self.in_flight = None;
        self.failures = self.failures.saturating_add(1);
        self.totals.failed_batches += 1;
        self.retry_at_ms = Some(now_ms.saturating_add(backoff_ms(self.failures)));
        Outcome {
            sent: 0,
            failed: 1,
            recovered: false,
        }
    }

    /// Milliseconds until [`Queue::poll`] should run again, between 1 and the flush interval.
    pub fn next_wake_ms(&self, now_ms: i64) -> i64 {
        let at = match (self.in_flight, self.retry_at_ms) {
            (Some(f), _) => f.deadline_ms.unwrap_or(self.next_flush_ms),
            (None, Some(retry)) if !self.lines.is_empty() => retry,
            _ if self.closing && !self.lines.is_empty() => now_ms,
            _ => self.next_flush_ms,
        };
        at.saturating_sub(now_ms)
            .clamp(1, self.limits.flush_interval_ms)
    }

    /// Config replaced or VM shutting down: everything held is due now, batch after batch.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Whether a closing queue has nothing left to do.
    pub fn is_drained(&self) -> bool {
        self.lines.is_empty() && self.in_flight.is_none()
    }

    /// Takes over lines another queue could not deliver (a replaced configuration's, in the
    /// same VM): being older, they go ahead of this queue's own lines, in their order, behind
    /// only a batch in flight (which cannot change). A batch awaiting its retry is re-formed
    /// with them in front: it was refused, so nothing of it was stored. Past
    /// `queue_max_lines` the oldest of them are dropped; returns how many.
    pub fn adopt(&mut self, lines: VecDeque<String>) -> u64 {
        self.retry_lines = None;
        let at = self.in_flight_lines().min(self.lines.len());
        let room = self.limits.queue_max_lines.saturating_sub(self.lines.len());
        let skip = lines.len().saturating_sub(room);
        let dropped = u64::try_from(skip).unwrap_or(u64::MAX);
        self.totals.dropped += dropped;
        self.totals.produced += u64::try_from(lines.len()).unwrap_or(u64::MAX);
        for (i, line) in lines.into_iter().skip(skip).enumerate() {
            self.lines.insert(at + i, line);
        }
        dropped
    }

    /// Gives up on every held line and hands them back, oldest first,
    /// so that the shell can still write them to the Envoy log (counted as dropped).
    pub fn abandon(&mut self) -> VecDeque<String> {
        let lines = self.hand_off();
        self.totals.dropped += u64::try_from(lines.len()).unwrap_or(u64::MAX);
        lines
    }

    /// Hands every held line over, oldest first, for the next configuration's queue in the
    /// same VM ([`Queue::adopt`]); not counted as dropped.
    pub fn hand_off(&mut self) -> VecDeque<String> {
        let lines = std::mem::take(&mut self.lines);
        self.in_flight = None;
        self.retry_lines = None;
        lines
    }
}

/// Delay before retry number `failures` (1-based): 250 ms doubling, at most 5 s.
pub fn backoff_ms(failures: u32) -> i64 {
    let shift = failures.saturating_sub(1).min(20);
    BACKOFF_INITIAL_MS
        .saturating_mul(1_i64 << shift)
        .min(BACKOFF_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Query;

    fn entry() -> Entry<'static> {
        Entry {
            ts_ms: 1_798_761_600_250,
            request_id: Some("4f1c-9a"),
            token_id: Some("ci-bot"),
            token_name: Some("CI \"bot\""),
            user: Some("ansible@jira.pl"),
            acting_as: Some("alice"),
            client_ip: Some(IpAddr::from([10, 1, 2, 3])),
            method: "POST",
            target: "/rest/api/2/issue/KANBAN-100/comment?expand=x&fields=a&expand=y",
            allowed: true,
            reason: "ok",
            rule: Some(2),
            secret: None,
            shadow_rule: None,
        }
    }

    fn parse(line: &str) -> serde_json::Value {
        assert!(line.ends_with('\n'), "{line:?}");
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        serde_json::from_str(line.trim_end()).unwrap()
    }

    #[test]
    fn line_has_every_field_in_order() {
        let line = entry().begin().finish(Some(201), 37);
        assert_eq!(
            line,
            concat!(
                r#"{"ts":"2027-01-01T00:00:00.250Z","request_id":"4f1c-9a","token_id":"ci-bot","#,
                r#""token_name":"CI \"bot\"","user":"ansible@jira.pl","acting_as":"alice","#,
                r#""client_ip":"10.1.2.3","method":"POST","path":"/rest/api/2/issue/KANBAN-100/comment","#,
                r#""query":["expand","fields"],"decision":"allow","reason":"ok","rule":2,"#,
                r#""status":201,"duration_ms":37}"#,
                "\n"
            )
        );
        let v = parse(&line);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = crate::record::FIELDS.to_vec();
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn refusal_with_nulls() {
        let e = Entry {
            request_id: None,
            token_id: None,
            token_name: None,
            user: None,
            acting_as: None,
            client_ip: None,
            method: "GET",
            target: "/rest/api/2/myself",
            allowed: false,
            reason: "unknown_token",
            rule: None,
            ..entry()
        };
        let v = parse(&e.begin().finish(None, -3));
        for k in [
            "request_id",
            "token_id",
            "token_name",
            "user",
            "acting_as",
            "client_ip",
            "rule",
            "status",
        ] {
            assert!(v[k].is_null(), "{k}");
        }
        assert_eq!(v["query"], serde_json::json!([]));
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["reason"], "unknown_token");
        assert_eq!(v["duration_ms"], 0);
        assert_eq!(v["path"], "/rest/api/2/myself");
    }

    #[test]
    fn escapes_and_ipv6() {
        let e = Entry {
            user: Some("we\u{1}ird\"\\\nname"),
            acting_as: None,
            request_id: Some("a\"b"),
            client_ip: Some("fd00::1".parse().unwrap()),
            target: "/rest/x%22y\u{2028}?",
            ..entry()
        };
        let line = e.begin().finish(Some(403), 1);
        let v = parse(&line);
        assert_eq!(v["user"], "we\u{1}ird\"\\\nname");
        assert_eq!(v["request_id"], "a\"b");
        assert_eq!(v["client_ip"], "fd00::1");
        assert_eq!(v["path"], "/rest/x%22y\u{2028}");
        assert_eq!(v["query"], serde_json::json!([]));
        assert!(!line.contains('\u{2028}'));
    }

    fn names(q: &str) -> Vec<String> {
        let mut out = String::new();
        push_query_names(&mut out, q);
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn query_names_decoded_in_first_order() {
        assert_eq!(names(""), Vec::<String>::new());
        assert_eq!(names("a=1&b=2&a=3"), ["a", "b"]);
        assert_eq!(
            names("jql=x&my+name=1&my%20name=2&&=v&flag"),
            ["jql", "my name", "flag"]
        );
        assert_eq!(names("%C3%A9t%C3%A9=1"), ["été"]);
        // malformed encodings are refused by the policy but still audited, leniently
        assert_eq!(names("a%zz=1&b%=2"), ["a%zz", "b%"]);
        // many parameters take the set path; same answer
        let many: Vec<String> = (0..40).map(|i| format!("p{}=v", i % 25)).collect();
        let want: Vec<String> = (0..25).map(|i| format!("p{i}")).collect();
        assert_eq!(names(&many.join("&")), want);
    }

    #[test]
    fn query_names_agree_with_canonical_query() {
        for q in [
            "a=1&b=2&a=3",
            "x&y=&=z&&x=2",
            "q=%2B&r+s=1&r%20s=2",
            "k=v&%6B=w",
            "",
        ] {
            let want = Query::parse(q).unwrap().names();
            assert_eq!(names(q), want, "{q}");
        }
    }

    fn limits(batch: usize, queue: usize) -> Limits {
        Limits {
            flush_interval_ms: 1000,
            batch_max_lines: batch,
            queue_max_lines: queue,
            timeout_ms: 2000,
        }
    }

    fn line(i: usize) -> String {
        format!("{{\"n\":{i}}}\n")
    }

    fn numbers(body: &str) -> Vec<usize> {
        body.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap() as usize
            })
            .collect()
    }

    #[test]
    fn limits_from_config() {
        let c = AuditConfig {
            cluster: "c".into(),
            authority: "a".into(),
            path: "/p".into(),
            flush_interval_ms: 250,
            batch_max_lines: 10,
            queue_max_lines: 100,
            timeout_ms: 0,
            authorization: None,
        };
        assert_eq!(
            Limits::from(&c),
            Limits {
                flush_interval_ms: 250,
                batch_max_lines: 10,
                queue_max_lines: 100,
                timeout_ms: 0
            }
        );
    }

    #[test]
    fn timer_flushes_partial_batch() {
        let mut q = Queue::new(limits(10, 100), 0);
        assert_eq!(q.poll(10), None);
        q.push(line(1));
        q.push(line(2));
        assert_eq!(q.poll(500), None, "not due before the timer");
        assert_eq!(q.next_wake_ms(500), 500);
        let b = q.poll(1000).unwrap();
        assert_eq!((numbers(&b.body), b.lines), (vec![1, 2], 2));
        assert!(q.in_flight());
        q.dispatched(7);
        assert_eq!(q.poll(1001), None, "one batch at a time");
        assert_eq!(
            q.complete(Some(7), true, 1010),
            Outcome {
                sent: 2,
                failed: 0,
                recovered: false
            }
        );
        assert!(q.is_empty());
        assert_eq!(q.next_wake_ms(1010), 990, "next timer flush at 2000");
    }

    #[test]
    fn timer_slack_counts_as_due() {
        let mut q = Queue::new(limits(10, 100), 0);
        q.push(line(1));
        assert!(q.poll(997).is_some());
    }

    #[test]
    fn empty_timer_moves_on() {
        let mut q = Queue::new(limits(10, 100), 0);
        assert_eq!(q.poll(1000), None);
        assert_eq!(q.next_wake_ms(1000), 1000);
        q.push(line(1));
        assert_eq!(q.poll(1500), None);
        assert!(q.poll(2000).is_some());
    }

    #[test]
    fn full_batch_goes_at_once_and_backlog_drains() {
        let mut q = Queue::new(limits(3, 100), 0);
        for i in 0..7 {
            q.push(line(i));
        }
        assert!(q.wants_kick());
        let b = q.poll(1).unwrap();
        assert_eq!(numbers(&b.body), [0, 1, 2]);
        assert!(!q.wants_kick(), "a batch is in flight");
        q.dispatched(1);
        q.complete(Some(1), true, 2);
        let b = q.poll(2).unwrap();
        assert_eq!(numbers(&b.body), [3, 4, 5]);
        q.dispatched(2);
        q.complete(Some(2), true, 3);
        assert_eq!(q.poll(3), None, "a partial batch waits for the timer");
        assert!(!q.wants_kick());
        let b = q.poll(1000).unwrap();
        assert_eq!(numbers(&b.body), [6]);
        q.dispatched(3);
        q.complete(Some(3), true, 1001);
        assert_eq!(
            q.totals(),
            Totals {
                produced: 7,
                sent: 7,
                dropped: 0,
                failed_batches: 0
            }
        );
    }

    #[test]
    fn failed_batch_is_retried_first_with_backoff() {
        let mut q = Queue::new(limits(2, 100), 0);
        for i in 0..3 {
            q.push(line(i));
        }
        let b = q.poll(1).unwrap();
        assert_eq!(numbers(&b.body), [0, 1]);
        q.dispatched(1);
        let o = q.complete(Some(1), false, 10);
        assert_eq!(o.failed, 1);
        assert_eq!(q.failures(), 1);
        q.push(line(3));
        assert_eq!(q.poll(100), None, "backoff");
        assert!(!q.wants_kick(), "no kick while backing off");
        assert_eq!(q.next_wake_ms(100), 160);
        let b = q.poll(260).unwrap();
        assert_eq!(numbers(&b.body), [0, 1], "same lines, same order");
        q.dispatched(2);
        q.complete(Some(2), false, 300);
        assert_eq!(q.poll(700), None, "second backoff is 500 ms");
        let b = q.poll(800).unwrap();
        assert_eq!(numbers(&b.body), [0, 1]);
        q.dispatched(3);
        let o = q.complete(Some(3), true, 810);
        assert!(o.recovered);
        assert_eq!(o.sent, 2);
        let b = q.poll(811).unwrap();
        assert_eq!(numbers(&b.body), [2, 3]);
        q.dispatched(4);
        q.complete(Some(4), true, 812);
        assert_eq!(q.totals().failed_batches, 2);
        assert_eq!(q.totals().sent, 4);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff_ms(1), 250);
        assert_eq!(backoff_ms(2), 500);
        assert_eq!(backoff_ms(3), 1000);
        assert_eq!(backoff_ms(5), 4000);
        assert_eq!(backoff_ms(6), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(u32::MAX), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(0), 250);
    }

    #[test]
    fn dispatch_failure_counts_as_failed_attempt() {
        let mut q = Queue::new(limits(1, 10), 0);
        q.push(line(0));
        assert!(q.poll(0).is_some());
        let o = q.complete(None, false, 0);
        assert_eq!(o.failed, 1);
        assert!(!q.in_flight());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn stale_answers_are_ignored_and_silence_times_out() {
        let mut q = Queue::new(limits(1, 10), 0);
        q.push(line(0));
        q.poll(0).unwrap();
        q.dispatched(5);
        assert_eq!(q.complete(Some(4), true, 1), Outcome::default());
        assert!(q.in_flight());
        assert_eq!(q.next_wake_ms(1), 1000, "clamped to the flush interval");
        assert_eq!(q.poll(2999), None);
        assert_eq!(q.next_wake_ms(2999), 1);
        assert_eq!(q.poll(3000), None, "given up on: now backing off");
        assert!(!q.in_flight());
        assert_eq!(q.totals().failed_batches, 1);
        assert_eq!(
            q.complete(Some(5), true, 3001),
            Outcome::default(),
            "late answer"
        );
        assert_eq!(q.len(), 1);
        let b = q.poll(3250).unwrap();
        assert_eq!(numbers(&b.body), [0]);
    }

    #[test]
    fn no_timeout_means_no_deadline() {
        let mut q = Queue::new(
            Limits {
                timeout_ms: 0,
                ..limits(1, 10)
            },
            0,
        );
        q.push(line(0));
        q.poll(0).unwrap();
        q.dispatched(1);
        assert_eq!(q.poll(1_000_000), None);
        assert!(q.in_flight());
    }

    #[test]
    fn bounded_queue_drops_oldest_unsent_and_counts() {
        let mut q = Queue::new(limits(2, 4), 0);
        for i in 0..4 {
            assert_eq!(q.push(line(i)), 0);
        }
        let b = q.poll(0).unwrap();
        assert_eq!(numbers(&b.body), [0, 1]);
        q.dispatched(1);
        // full: 0 and 1 are in flight, so 2 then 3 go first
        assert_eq!(q.push(line(4)), 1);
        assert_eq!(q.push(line(5)), 1);
        assert_eq!(q.len(), 4);
        q.complete(Some(1), false, 1);
        let b = q.poll(1000).unwrap();
        assert_eq!(numbers(&b.body), [0, 1]);
        q.dispatched(2);
        q.complete(Some(2), true, 1001);
        let b = q.poll(1001).unwrap();
        assert_eq!(numbers(&b.body), [4, 5]);
        q.dispatched(3);
        q.complete(Some(3), true, 1002);
        let t = q.totals();
        assert_eq!((t.produced, t.sent, t.dropped), (6, 4, 2));
        assert_eq!(t.produced, t.sent + t.dropped);
    }

    #[test]
    fn when_everything_is_in_flight_the_new_line_is_dropped() {
        let mut q = Queue::new(limits(2, 2), 0);
        q.push(line(0));
        q.push(line(1));
        q.poll(0).unwrap();
        q.dispatched(1);
        assert_eq!(q.push(line(2)), 1);
        q.complete(Some(1), true, 1);
        assert!(q.is_empty());
        assert_eq!(q.totals().dropped, 1);
    }

    #[test]
    fn sent_plus_dropped_equals_produced_under_churn() {
        // A deterministic outage: every attempt fails for a while, lines keep coming.
        let mut q = Queue::new(limits(5, 20), 0);
        let mut now = 0;
        let mut token = 0;
        let mut delivered = Vec::new();
        for i in 0..500usize {
            q.push(line(i));
            now += 7;
            if let Some(b) = q.poll(now) {
                token += 1;
                q.dispatched(token);
                let ok = !(100..300).contains(&i);
                if ok {
                    delivered.extend(numbers(&b.body));
                }
                q.complete(Some(token), ok, now);
            }
        }
        q.close();
        for _ in 0..1000 {
            now += 5000;
            if let Some(b) = q.poll(now) {
                token += 1;
                q.dispatched(token);
                delivered.extend(numbers(&b.body));
                q.complete(Some(token), true, now);
            }
            if q.is_drained() {
                break;
            }
        }
        let t = q.totals();
        assert_eq!(t.produced, 500);
        assert_eq!(t.sent + t.dropped, t.produced);
        assert_eq!(delivered.len() as u64, t.sent);
        assert!(t.dropped > 0);
        // in order, no duplicates
        assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    }

    #[test]
    fn closing_sends_everything_now() {
        let mut q = Queue::new(limits(2, 10), 0);
        for i in 0..3 {
            q.push(line(i));
        }
        assert!(q.poll(0).is_some());
        q.dispatched(1);
        q.complete(Some(1), true, 1);
        assert_eq!(q.poll(1), None);
        q.close();
        assert_eq!(q.next_wake_ms(1), 1);
        let b = q.poll(1).unwrap();
        assert_eq!(numbers(&b.body), [2]);
        q.dispatched(2);
        q.complete(Some(2), true, 2);
        assert!(q.is_drained());
    }

    #[test]
    fn abandon_counts_drops() {
        let mut q = Queue::new(limits(2, 10), 0);
        for i in 0..3 {
            q.push(line(i));
        }
        q.poll(0).unwrap();
        let lines = q.abandon();
        assert_eq!(
            numbers(&lines.iter().map(String::as_str).collect::<String>()),
            [0, 1, 2]
        );
        assert!(q.is_drained());
        let t = q.totals();
        assert_eq!(t.produced, t.sent + t.dropped);
    }

    #[test]
    fn a_retried_batch_keeps_its_lines_and_id() {
        let limits = Limits {
            flush_interval_ms: 100,
            batch_max_lines: 3,
            queue_max_lines: 5,
            timeout_ms: 0,
        };
        let mut q = Queue::new(limits, 0);
        q.push("a\n".into());
        q.push("b\n".into());
        let first = q.poll(1000).unwrap();
        assert_eq!(first.lines, 2);
        assert_eq!(first.id, batch_id(b"a\nb\n"));
        assert_eq!(first.id.len(), 32);
        q.dispatched(7);
        q.complete(Some(7), false, 1000);
        // Lines queued meanwhile wait for a later batch, and a full queue never drops a line of
        // the batch awaiting its retry.
        for l in ["c\n", "d\n", "e\n", "f\n"] {
            q.push(l.into());
        }
        let retry = q.poll(1000 + backoff_ms(1)).unwrap();
        assert_eq!((retry.lines, retry.body.as_str()), (2, "a\nb\n"));
        assert_eq!(retry.id, first.id);
        q.dispatched(8);
        q.complete(Some(8), true, 2000);
        let next = q.poll(5000).unwrap();
        assert_eq!(next.body, "d\ne\nf\n");
        assert_ne!(next.id, first.id);
    }

    #[test]
    fn adopted_lines_follow_the_batch_in_flight_in_their_order() {
        let limits = Limits {
            flush_interval_ms: 100,
            batch_max_lines: 2,
            queue_max_lines: 5,
            timeout_ms: 0,
        };
        let mut old = Queue::new(limits, 0);
        for l in ["o1\n", "o2\n", "o3\n"] {
            old.push(l.into());
        }
        let left = old.hand_off();
        assert!(old.is_empty() && old.totals().dropped == 0);
        let mut new = Queue::new(
            Limits {
                queue_max_lines: 10,
                ..limits
            },
            0,
        );
        new.push("n1\n".into());
        new.push("n2\n".into());
        let b = new.poll(1000).unwrap();
        assert_eq!(b.body, "n1\nn2\n");
        new.dispatched(1);
        assert_eq!(new.adopt(left), 0);
        new.push("n3\n".into());
        new.complete(Some(1), true, 1000);
        assert_eq!(new.poll(2000).unwrap().body, "o1\no2\n");
        new.dispatched(2);
        new.complete(Some(2), true, 2000);
        assert_eq!(new.poll(3000).unwrap().body, "o3\nn3\n");
        // Beyond the bound the oldest adopted lines go, counted.
        let mut full = Queue::new(limits, 0);
        for l in ["a\n", "b\n", "c\n", "d\n"] {
            full.push(l.into());
        }
        assert_eq!(
            full.adopt(VecDeque::from(vec!["x\n".to_string(), "y\n".to_string()])),
            1
        );
        assert_eq!(full.len(), 5);
        assert_eq!(full.totals().dropped, 1);
    }
}
