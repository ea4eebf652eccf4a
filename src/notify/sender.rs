//! The delivery loop: takes due outbox rows (only the oldest pending one per destination and channel, so
//! callbacks to one receiver arrive in order), sends each with a timeout, records the attempt, and either
//! marks it delivered or schedules the next try with exponential backoff and jitter, up to
//! `max_attempts`. Bounded concurrency per destination host; nothing is held in memory but the rows in
//! flight, so a dead receiver costs disk, never memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{NotifyConfig, render};
use crate::meta::Meta;
use crate::meta::notify::{Attempt, OutboxEntry};

/// Largest response body kept in the delivery record.
const MAX_RESPONSE_RECORDED: usize = 16 * 1024;
/// How often the outbox is looked at even without a wake-up (rows due later, or written by another process).
const POLL: Duration = Duration::from_secs(1);
/// Finished callbacks are kept this long (the record queries reach back 7 days), then pruned.
const KEEP_FINISHED: Duration = Duration::from_secs(8 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const COALESCE: Duration = Duration::from_millis(50);

pub struct Sender {
    meta: Meta,
    config: NotifyConfig,
    client: reqwest::Client,
    wake: Arc<Notify>,
    in_flight: Arc<Mutex<HashSet<i64>>>,
    /// Entries whose attempt ended, with the number of the outbox query that was running then. A query
    /// that started before an attempt ended may have read the row as still pending: skipping such rows
    /// is what keeps a delivered callback from being sent a second time.
    finished: Mutex<HashMap<i64, u64>>,
    queries: std::sync::atomic::AtomicU64,
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Sender {
    pub fn new(meta: Meta, config: NotifyConfig, wake: Arc<Notify>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // Callbacks go where they are configured to go; a redirect is the receiver's problem to fix.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Sender {
            meta,
            config,
            client,
            wake,
            in_flight: Arc::default(),
            finished: Mutex::default(),
            queries: Default::default(),
            destinations: Mutex::default(),
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tracker: TaskTracker) {
        let mut pruned_at: Option<Instant> = None;
        loop {
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                match self.meta.prune_callbacks(SystemTime::now() - KEEP_FINISHED).await {
                    Ok(0) => {}
                    Ok(n) => info!(callbacks = n, "pruned delivered callbacks older than 8 days"),
                    Err(e) => warn!(error = %e, "cannot prune old callbacks"),
                }
            }
            let query = self.queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            match self.meta.due_callbacks(SystemTime::now(), 64).await {
                Ok(due) => {
                    {
                        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
                        finished.retain(|_, at| *at >= query);
                    }
                    for entry in due {
                        let stale = self.finished.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&entry.id);
                        if !stale {
                            self.dispatch(entry, &tracker);
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot read the outbox"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => return,
            }
            // Wake-ups come in bursts (a segment stored on every channel, attempts finishing): one outbox
            // query per burst, not one per wake-up, keeps a backlog from costing CPU per event.
            tokio::time::sleep(COALESCE).await;
        }
    }

    fn destination(&self, url: &str) -> Arc<Semaphore> {
        let host = reqwest::Url::parse(url)
            .ok()
            .map(|u| format!("{}:{}", u.host_str().unwrap_or(""), u.port_or_known_default().unwrap_or(0)))
            .unwrap_or_default();
        let mut map = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(host).or_insert_with(|| Arc::new(Semaphore::new(self.config.concurrency_per_destination))))
    }

    fn dispatch(self: &Arc<Self>, entry: OutboxEntry, tracker: &TaskTracker) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !in_flight.insert(entry.id) {
                return;
            }
        }
        let Ok(permit) = self.destination(&entry.url).try_acquire_owned() else {
            // The destination is busy: this row stays due and is picked up on the next round.
            self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&entry.id);
            return;
        };
        let this = Arc::clone(self);
        tracker.spawn(async move {
            let _permit = permit;
            let id = entry.id;
            this.attempt(entry).await;
            let query = this.queries.load(std::sync::atomic::Ordering::SeqCst);
            this.finished.lock().unwrap_or_else(|p| p.into_inner()).insert(id, query);
            this.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            this.wake.notify_one();
        });
    }

    async fn attempt(&self, entry: OutboxEntry) {
        let now = SystemTime::now();
        let started = Instant::now();
        let mut attempt = Attempt {
            time: now,
            url: entry.url.clone(),
            request_headers: String::new(),
            request_body: String::new(),
            status: None,
            response_body: String::new(),
            success: false,
            error: String::new(),
            cost_ms: 0,
        };
        match render(&entry, now) {
            Err(e) => attempt.error = e,
            Ok(req) => {
                attempt.request_headers =
                    serde_json::to_string(&req.headers.iter().cloned().collect::<HashMap<_, _>>()).unwrap_or_default();
                attempt.request_body = req.body.clone();
                let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
                attempt.url = req.url.clone();
                let mut builder = self.client.request(method, &req.url).body(req.body);
                for (k, v) in &req.headers {
                    builder = builder.header(k, v);
                }
                match builder.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        attempt.status = Some(status.as_u16());
                        attempt.success = status.is_success();
                        match resp.bytes().await {
                            Ok(b) => {
                                attempt.response_body =
                                    String::from_utf8_lossy(&b[..b.len().min(MAX_RESPONSE_RECORDED)]).into_owned()
                            }
                            Err(e) => attempt.error = format!("reading the response: {e}"),
                        }
                        if !attempt.success && attempt.error.is_empty() {
                            attempt.error = format!("HTTP {status}");
                        }
                    }
                    Err(e) => attempt.error = error_chain(&e),
                }
            }
        }
        attempt.cost_ms = started.elapsed().as_millis() as u64;
        let attempts = entry.attempts + 1;
        let retry_at = (!attempt.success && attempts < self.config.max_attempts)
            .then(|| SystemTime::now() + backoff(&self.config, attempts, entry.id));
        if attempt.success {
            debug!(id = entry.id, url = %entry.url, attempts, cost_ms = attempt.cost_ms, "callback delivered");
        } else if retry_at.is_some() {
            info!(id = entry.id, url = %entry.url, attempts, error = %attempt.error, "callback failed; will retry");
        } else {
            warn!(id = entry.id, url = %entry.url, attempts, error = %attempt.error, "callback failed for good after the last attempt");
        }
        if let Err(e) = self.meta.record_attempt(entry.id, &attempt, retry_at).await {
            // The row stays pending and due: it is sent again (at least once), never lost.
            warn!(id = entry.id, error = %e, "cannot record a callback attempt");
        }
    }
}

/// `retry_base × 2^(attempts-1)`, capped at `retry_max`, then scaled by a jitter in [0.5, 1.0) so that
/// callbacks that failed together do not all come back at the same instant.
pub fn backoff(config: &NotifyConfig, attempts: u32, salt: i64) -> Duration {
    let exp = config.retry_base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(config.retry_max);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mix = (u64::from(nanos) ^ (salt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 1000;
    capped.mul_f64(0.5 + mix as f64 / 2000.0)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let c = NotifyConfig {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ..Default::default()
        };
        let b1 = backoff(&c, 1, 1);
        assert!(b1 >= Duration::from_millis(500) && b1 < Duration::from_secs(1), "{b1:?}");
        let b3 = backoff(&c, 3, 1);
        assert!(b3 >= Duration::from_secs(2) && b3 < Duration::from_secs(4), "{b3:?}");
        let b30 = backoff(&c, 30, 1);
        assert!(b30 >= Duration::from_secs(30) && b30 < Duration::from_secs(60), "{b30:?}");
    }
}
