//! `--audit-forward URL`: stored audit lines re-sent to a log pipeline (Vector's or Fluent
//! Bit's HTTP source, or another tokengate-server's `/audit`) as NDJSON POSTs, at least once
//! and in order. While the pipeline is away the lines wait in a bounded queue and are retried
//! with backoff; past the bound the oldest are dropped and counted
//! (`tokengate_server_forward_dropped_total`).
//!
//! Each POST carries `x-tokengate-batch` (the same on its retries), so a receiver that
//! deduplicates, as tokengate-server does, stores a retried batch once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokengate_core::audit::batch_id;
use tokengate_core::record::Record;
use tokio::sync::Notify;

pub struct Forwarder {
    url: String,
    authorization: Option<String>,
    max_lines: usize,
    batch_lines: usize,
    queue: Mutex<VecDeque<String>>,
    wake: Notify,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl Forwarder {
    pub fn new(url: String, authorization: Option<String>, max_lines: usize) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            url,
            authorization,
            max_lines: max_lines.max(1),
            batch_lines: 500,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Lines of a batch just committed, in order.
    pub fn push(&self, lines: &[Record]) {
        if let Ok(mut q) = self.queue.lock() {
            for r in lines {
                if q.len() >= self.max_lines {
                    q.pop_front();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                q.push_back(r.to_line() + "\n");
            }
        }
        self.wake.notify_one();
    }

    pub fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Sends batch after batch; a failed batch is retried (same lines, same id) with backoff
    /// from 250 ms to 10 s.
    pub async fn run(self: Arc<Self>) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("--audit-forward: no HTTP client: {e}");
                return;
            }
        };
        let mut failures: u32 = 0;
        // A retry resends the same lines (so the same id), not what arrived meanwhile.
        let mut retry_n: Option<usize> = None;
        loop {
            let (body, n) = {
                let Ok(q) = self.queue.lock() else { return };
                let n = retry_n.unwrap_or(self.batch_lines).min(q.len());
                (q.iter().take(n).map(String::as_str).collect::<String>(), n)
            };
            if n == 0 {
                self.wake.notified().await;
                continue;
            }
            let id = batch_id(body.as_bytes());
            let mut req = client
                .post(&self.url)
                .header("content-type", "application/x-ndjson")
                .header("x-tokengate-batch", &id)
                .body(body);
            if let Some(a) = &self.authorization {
                req = req.header("authorization", a);
            }
            let ok = matches!(req.send().await, Ok(r) if r.status().is_success());
            if ok {
                if let Ok(mut q) = self.queue.lock() {
                    // Lines dropped meanwhile came off the front: take at most what is left.
                    let k = n.min(q.len());
                    q.drain(..k);
                }
                self.sent.fetch_add(n as u64, Ordering::Relaxed);
                if failures > 0 {
                    tracing::info!("--audit-forward: the pipeline answers again");
                }
                failures = 0;
                retry_n = None;
            } else {
                retry_n = Some(n);
                failures = failures.saturating_add(1);
                self.failed.fetch_add(1, Ordering::Relaxed);
                if failures == 1 {
                    tracing::warn!(url = %self.url, "--audit-forward: the pipeline does not take batches; retrying with backoff");
                }
                let ms = (250u64 << failures.min(6).saturating_sub(1)).min(10_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
}
