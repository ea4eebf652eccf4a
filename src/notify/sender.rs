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
use futures::future::BoxFuture;

use crate::egress::Destinations;
use crate::meta::notify::{Attempt, OutboxEntry};
use crate::meta::{Meta, MetaError};

/// Largest response body kept in the delivery record.
const MAX_RESPONSE_RECORDED: usize = 16 * 1024;
/// How often the outbox is looked at even without a wake-up (rows due later, or written by another process).
const POLL: Duration = Duration::from_secs(1);
/// Finished callbacks are kept this long (the record queries reach back 7 days), then pruned.
const KEEP_FINISHED: Duration = Duration::from_secs(8 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const COALESCE: Duration = Duration::from_millis(50);

/// What came back from a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
    /// The status arrived but the body could not be read.
    pub body_error: Option<String>,
}

/// How a rendered callback goes out: HTTP in production, a fake in the retry tests (which run on paused
/// tokio time, where real sockets and timeouts do not mix).
pub trait Transport: Send + Sync + 'static {
    /// `Err` is a failure without an HTTP answer (refused, timed out, reset), with its cause chain.
    fn send(&self, req: super::Rendered) -> BoxFuture<'_, Result<Answer, String>>;
}

/// The production transport: reqwest with a per-attempt timeout, no redirects, only allowed destinations
/// (checked on the addresses DNS returns, at every connect), and a bounded response body.
pub struct Http {
    client: reqwest::Client,
    destinations: Destinations,
}

/// Receivers answer with a status and a short body; the rest of a longer one is not read.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

impl Http {
    pub fn new(config: &NotifyConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // Callbacks go where they are configured to go; a redirect is the receiver's problem to fix.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(crate::egress::Resolver(config.destinations.clone())))
            // An outgoing proxy would connect on our behalf to wherever it resolves the name.
            .no_proxy()
            .build()?;
        Ok(Http { client, destinations: config.destinations.clone() })
    }
}

impl Transport for Http {
    fn send(&self, req: super::Rendered) -> BoxFuture<'_, Result<Answer, String>> {
        Box::pin(async move {
            // A URL naming an address is not resolved, so the resolver never sees it: checked here.
            if let Some(ip) = reqwest::Url::parse(&req.url)
                .ok()
                .and_then(|u| u.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok()))
                && !self.destinations.ip_allowed(ip)
            {
                return Err(format!(
                    "{} reaches an internal address ({ip}); list it in [notify] allowed_destinations to allow it",
                    req.url
                ));
            }
            let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
            let mut builder = self.client.request(method, &req.url).body(req.body);
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            let mut resp = builder.send().await.map_err(|e| error_chain(&e))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = MAX_RESPONSE_BODY - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        if body.len() == MAX_RESPONSE_BODY {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Ok(Answer { status, body: body.into(), body_error: Some(error_chain(&e)) });
                    }
                }
            }
            Ok(Answer { status, body: body.into(), body_error: None })
        })
    }
}

/// Where the sender reads due callbacks and records attempts: the metadata database in production, an
/// in-memory fake in the paused-time tests (a database on worker threads lets paused time race ahead).
pub trait Outbox: Send + Sync + 'static {
    /// Due pending entries, only the oldest pending one per (destination, channel), at most `limit`.
    fn due(&self, now: SystemTime, limit: u32) -> BoxFuture<'_, Result<Vec<OutboxEntry>, MetaError>>;
    /// Records an attempt: delivered, retried at `retry_at`, or failed for good.
    fn record<'a>(
        &'a self,
        id: i64,
        attempt: &'a Attempt,
        retry_at: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<(), MetaError>>;
    /// Forgets finished entries older than `before`.
    fn prune(&self, before: SystemTime) -> BoxFuture<'_, Result<u64, MetaError>>;
    /// Gives back a claimed entry this node will not send now (its destination is busy), so that it
    /// goes out as soon as a slot frees, here or on another node.
    fn release(&self, _id: i64) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The outbox of the metadata database, as one node of the cluster sees it: the rows it takes are
/// claimed for it, so other nodes leave them alone until the claim lapses.
pub struct NodeOutbox {
    pub meta: Meta,
    pub node: String,
    /// Longer than one attempt can take (the per-attempt timeout), so a live node never loses a row
    /// to another node mid-attempt.
    pub claim: Duration,
}

// Each call runs on the metadata thread (`Meta::off_media`): the sender polls every second with a
// write transaction, and awaited from a loaded media runtime that held SQLite's one writer across
// seconds of wake-ups, long enough for the lease renewal behind it to lose the node's leases.
impl Outbox for NodeOutbox {
    fn due(&self, now: SystemTime, limit: u32) -> BoxFuture<'_, Result<Vec<OutboxEntry>, MetaError>> {
        let (node, claim) = (self.node.clone(), self.claim);
        Box::pin(
            self.meta.off_media("due_callbacks", move |meta| async move {
                meta.due_callbacks(&node, claim, now, limit).await
            }),
        )
    }

    fn record<'a>(
        &'a self,
        id: i64,
        attempt: &'a Attempt,
        retry_at: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<(), MetaError>> {
        let attempt = attempt.clone();
        Box::pin(
            self.meta.off_media("record_attempt", move |meta| async move {
                meta.record_attempt(id, &attempt, retry_at).await
            }),
        )
    }

    fn prune(&self, before: SystemTime) -> BoxFuture<'_, Result<u64, MetaError>> {
        Box::pin(self.meta.off_media("prune_callbacks", move |meta| async move { meta.prune_callbacks(before).await }))
    }

    fn release(&self, id: i64) -> BoxFuture<'_, ()> {
        let node = self.node.clone();
        Box::pin(async move {
            let released =
                self.meta
                    .off_media("release_callback_claim", move |meta| async move {
                        meta.release_callback_claim(id, &node).await
                    })
                    .await;
            if let Err(e) = released {
                debug!(id, error = %e, "cannot give back a callback claim (it lapses by itself)");
            }
        })
    }
}

/// The wall clock the sender schedules by (tests pass one that follows paused tokio time).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub struct Sender {
    outbox: Arc<dyn Outbox>,
    config: NotifyConfig,
    transport: Arc<dyn Transport>,
    clock: Clock,
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
    /// Fails when the HTTP client cannot be built (no TLS roots, ...): a start-up error, never a silent
    /// fallback to a client without timeouts or destination checks.
    pub fn new(meta: Meta, node: String, config: NotifyConfig, wake: Arc<Notify>) -> Result<Self, reqwest::Error> {
        let transport = Arc::new(Http::new(&config)?);
        let claim = config.timeout * 2 + Duration::from_secs(5);
        let outbox = Arc::new(NodeOutbox { meta, node, claim });
        Ok(Sender::with_parts(outbox, config, wake, transport, Arc::new(SystemTime::now)))
    }

    pub fn with_parts(
        outbox: Arc<dyn Outbox>,
        config: NotifyConfig,
        wake: Arc<Notify>,
        transport: Arc<dyn Transport>,
        clock: Clock,
    ) -> Self {
        Sender {
            outbox,
            config,
            transport,
            clock,
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
                match self.outbox.prune((self.clock)() - KEEP_FINISHED).await {
                    Ok(0) => {}
                    Ok(n) => info!(callbacks = n, "pruned delivered callbacks older than 8 days"),
                    Err(e) => warn!(error = %e, "cannot prune old callbacks"),
                }
            }
            let query = self.queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            match self.outbox.due((self.clock)(), 64).await {
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
            let this = Arc::clone(self);
            tracker.spawn(async move { this.outbox.release(entry.id).await });
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
        let now = (self.clock)();
        let started = tokio::time::Instant::now();
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
                attempt.url = req.url.clone();
                match self.transport.send(req).await {
                    Ok(answer) => {
                        attempt.status = Some(answer.status);
                        attempt.success = (200..300).contains(&answer.status);
                        let body = &answer.body[..answer.body.len().min(MAX_RESPONSE_RECORDED)];
                        attempt.response_body = String::from_utf8_lossy(body).into_owned();
                        if let Some(e) = answer.body_error {
                            attempt.error = format!("reading the response: {e}");
                        } else if !attempt.success {
                            attempt.error = format!("HTTP {}", answer.status);
                        }
                    }
                    Err(e) => attempt.error = e,
                }
            }
        }
        attempt.cost_ms = started.elapsed().as_millis() as u64;
        let attempts = entry.attempts + 1;
        let retry_at = (!attempt.success && attempts < self.config.max_attempts)
            .then(|| (self.clock)() + backoff(&self.config, attempts, entry.id));
        crate::metrics::metrics().attempt(match (attempt.success, retry_at.is_some()) {
            (true, _) => crate::metrics::AttemptResult::Delivered,
            (false, true) => crate::metrics::AttemptResult::Retry,
            (false, false) => crate::metrics::AttemptResult::Failed,
        });
        if attempt.success {
            debug!(id = entry.id, url = %entry.url, attempts, cost_ms = attempt.cost_ms, "callback delivered");
        } else if retry_at.is_some() {
            info!(id = entry.id, url = %entry.url, attempts, error = %attempt.error, "callback failed; will retry");
        } else {
            warn!(id = entry.id, url = %entry.url, attempts, error = %attempt.error, "callback failed for good after the last attempt");
        }
        if let Err(e) = self.outbox.record(entry.id, &attempt, retry_at).await {
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

    /// A receiver on loopback that answers every request with `body`; counts connections.
    async fn receiver(body: Vec<u8>) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        (addr, seen)
    }

    fn request(url: String) -> crate::notify::Rendered {
        crate::notify::Rendered { method: "POST", url, headers: Vec::new(), body: "{}".into() }
    }

    #[tokio::test]
    async fn internal_destinations_are_refused_at_connect_by_address_and_after_dns() {
        let (addr, seen) = receiver(b"ok".to_vec()).await;
        let http = Http::new(&NotifyConfig::default()).unwrap();
        for url in [format!("http://{addr}/hook"), format!("http://localhost:{}/hook", addr.port())] {
            let e = http.send(request(url.clone())).await.unwrap_err();
            assert!(e.contains("internal address"), "{url}: {e}");
        }
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the receiver");
        let allowed = NotifyConfig {
            destinations: Destinations::parse(&["127.0.0.0/8".into(), "::1".into()]).unwrap(),
            ..Default::default()
        };
        let http = Http::new(&allowed).unwrap();
        let answer = http.send(request(format!("http://localhost:{}/hook", addr.port()))).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
    }

    #[tokio::test]
    async fn a_receivers_answer_is_read_up_to_a_bound() {
        let (addr, _) = receiver(vec![b'x'; 1 << 20]).await;
        let config =
            NotifyConfig { destinations: Destinations::parse(&["127.0.0.0/8".into()]).unwrap(), ..Default::default() };
        let answer = Http::new(&config).unwrap().send(request(format!("http://{addr}/hook"))).await.unwrap();
        assert_eq!((answer.status, answer.body.len()), (200, MAX_RESPONSE_BODY));
    }

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

    use crate::meta::notify::{CallbackKind, OutboxState};

    /// A receiver that answers 500 to the first `fail_first` requests, then 200, and notes when (on
    /// the sender's clock) and what each request was.
    struct Fake {
        fail_first: Mutex<usize>,
        seen: Mutex<Vec<(SystemTime, String)>>,
        clock: Clock,
    }

    impl Transport for Fake {
        fn send(&self, req: crate::notify::Rendered) -> BoxFuture<'_, Result<Answer, String>> {
            Box::pin(async move {
                let key = req.headers.iter().find(|(k, _)| k == "Idempotency-Key").map(|(_, v)| v.clone());
                self.seen.lock().unwrap().push(((self.clock)(), key.unwrap_or_default()));
                let mut fail = self.fail_first.lock().unwrap();
                let status = if *fail > 0 { 500 } else { 200 };
                *fail = fail.saturating_sub(1);
                Ok(Answer { status, body: bytes::Bytes::from_static(b"ok"), body_error: None })
            })
        }
    }

    /// The outbox rules of `Meta::due_callbacks` and `record_attempt` over a Vec, so no real-time wait
    /// (a database on worker threads) lets paused time race ahead. The SQL itself is tested in `meta`.
    /// An entry, its state, when it is next due, and the HTTP status of each attempt.
    type Row = (OutboxEntry, OutboxState, SystemTime, Vec<Option<u16>>);

    #[derive(Default)]
    struct Rows(Mutex<Vec<Row>>);

    impl Outbox for Rows {
        fn due(&self, now: SystemTime, limit: u32) -> BoxFuture<'_, Result<Vec<OutboxEntry>, MetaError>> {
            let rows = self.0.lock().unwrap();
            let mut heads: Vec<OutboxEntry> = Vec::new();
            let mut seen = HashSet::new();
            for (entry, state, next, _) in rows.iter() {
                if *state != OutboxState::Pending || !seen.insert((entry.url.clone(), entry.channel.clone())) {
                    continue;
                }
                if *next <= now {
                    heads.push(entry.clone());
                }
            }
            heads.truncate(limit as usize);
            Box::pin(async move { Ok(heads) })
        }

        fn record<'a>(
            &'a self,
            id: i64,
            attempt: &'a Attempt,
            retry_at: Option<SystemTime>,
        ) -> BoxFuture<'a, Result<(), MetaError>> {
            let mut rows = self.0.lock().unwrap();
            if let Some((entry, state, next, statuses)) = rows.iter_mut().find(|(e, ..)| e.id == id) {
                entry.attempts += 1;
                statuses.push(attempt.status);
                (*state, *next) = match (attempt.success, retry_at) {
                    (true, _) => (OutboxState::Delivered, attempt.time),
                    (false, Some(at)) => (OutboxState::Pending, at),
                    (false, None) => (OutboxState::Failed, attempt.time),
                };
            }
            Box::pin(async { Ok(()) })
        }

        fn prune(&self, _: SystemTime) -> BoxFuture<'_, Result<u64, MetaError>> {
            Box::pin(async { Ok(0) })
        }
    }

    impl Rows {
        fn states(&self) -> Vec<OutboxState> {
            self.0.lock().unwrap().iter().map(|(_, s, ..)| *s).collect()
        }
    }

    /// A wall clock that follows tokio's (paused) clock from the real time the test started.
    fn paused_clock() -> Clock {
        let (base, start) = (SystemTime::now(), tokio::time::Instant::now());
        Arc::new(move || base + start.elapsed())
    }

    fn entry(id: i64, key: &str) -> OutboxEntry {
        OutboxEntry {
            id,
            kind: CallbackKind::HuaweiPublish,
            bucket: "live".into(),
            channel: "c".into(),
            url: "http://receiver.invalid/hw".into(),
            payload: "{}".into(),
            sign_key: String::new(),
            idempotency_key: key.into(),
            attempts: 0,
        }
    }

    fn start(fail_first: usize, max_attempts: u32) -> (Arc<Rows>, Arc<Fake>, CancellationToken) {
        let clock = paused_clock();
        let rows = Arc::new(Rows::default());
        for (id, key) in [(1, "first"), (2, "second")] {
            rows.0.lock().unwrap().push((entry(id, key), OutboxState::Pending, clock(), Vec::new()));
        }
        let fake = Arc::new(Fake { fail_first: Mutex::new(fail_first), seen: Mutex::default(), clock: clock.clone() });
        let config = NotifyConfig {
            max_attempts,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..NotifyConfig::default()
        };
        let wake = Arc::new(Notify::new());
        let sender = Arc::new(Sender::with_parts(rows.clone(), config, wake, fake.clone(), clock));
        let stop = CancellationToken::new();
        tokio::spawn(sender.run(stop.clone(), TaskTracker::new()));
        (rows, fake, stop)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_receiver_is_retried_with_growing_backoff_and_nothing_overtakes() {
        let (rows, fake, stop) = start(3, 12);
        // Minutes of retries pass in paused time.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while rows.states() != [OutboxState::Delivered, OutboxState::Delivered] {
            assert!(tokio::time::Instant::now() < deadline, "not delivered: {:?}", fake.seen.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        let seen = fake.seen.lock().unwrap().clone();
        let keys: Vec<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(keys, ["first", "first", "first", "first", "second"], "the second waits for the first");
        // Gaps: 10 s x 2^(n-1) scaled by a jitter in [0.5, 1), plus at most a poll interval and coalescing.
        for (n, pair) in seen[..4].windows(2).enumerate() {
            let gap = pair[1].0.duration_since(pair[0].0).unwrap();
            let full = Duration::from_secs(10 << n);
            assert!(gap >= full / 2 && gap <= full + POLL + COALESCE * 2, "retry {}: {gap:?} after {full:?}", n + 1);
        }
        let statuses = rows.0.lock().unwrap()[0].3.clone();
        assert_eq!(statuses, [Some(500), Some(500), Some(500), Some(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_last_attempt_a_callback_fails_for_good_and_the_next_one_goes() {
        let (rows, fake, stop) = start(usize::MAX, 3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while rows.states() != [OutboxState::Failed, OutboxState::Failed] {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", fake.seen.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // An hour later nothing more was sent.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        stop.cancel();
        let keys: Vec<String> = fake.seen.lock().unwrap().iter().map(|(_, k)| k.clone()).collect();
        assert_eq!(keys, ["first", "first", "first", "second", "second", "second"]);
    }
}
