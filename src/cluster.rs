//! The cluster shell: this node's live leases in the shared database (`meta::lease`). One publisher per
//! channel on every node together, kicks from any node, live stats any node can read, and the stop
//! callbacks of publishes whose node died.
//!
//! ```text
//! publish::Session::start -> Cluster::claim (lease row + push record, one transaction; waits while
//!     another node's writer flushes) -> Fence for the storage writer
//! Cluster::run, every renew_ms: renew all of this node's leases in one statement
//!     -> a lease gone or taken: fence it and kick its publisher; kicked flag: kick; renewal failing
//!        until the node deadline: every fence of the node stops writing
//!     -> every 3rd tick: live stats into the lease rows
//!     -> sweep lapsed leases of any node: close their pushes, send their PUBLISH_DONE (journal)
//! Session::finish -> Cluster::flushing; the storage writer's end -> Cluster::release
//! ```
//!
//! A single node on SQLite runs the same code: the lease is one row it renews, and a restart deletes
//! the leases it held before.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::channels::{
    AudioStats, Channels, EndReason, Fence, Health, Kick, LiveGuard, LiveStats, NodeFence, SegmentCounts, VideoStats,
};
use crate::config::NodeConfig;
use crate::config::{Takeover, TakeoverPolicy};
use crate::journal::{Journal, WeakJournal};
use crate::meta::lease::{Claim, Lease, LeaseRequest, LeaseState};
use crate::meta::{Meta, MetaError};
use crate::metrics::{DatabaseOp, metrics};
use crate::names::ChannelKey;
use crate::notify::{CallbackEvent, PublishEvent};

/// How long a publish waits for another node's writer to finish storing the channel's last segments.
const FLUSH_WAIT: Duration = Duration::from_secs(30);
const FLUSH_POLL: Duration = Duration::from_millis(200);
/// Stats go into the lease rows every this many renewals.
const STATS_EVERY: u64 = 3;

/// A claim that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("channel {key} is live on node {node}")]
    Held { key: ChannelKey, node: String },
    #[error("cannot claim channel {key} in the metadata database: {source}")]
    Meta { key: ChannelKey, source: MetaError },
}

/// This publish holds the channel cluster-wide.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub holder: String,
    pub push_id: i64,
    /// A dead node's lapsed lease was taken over: its last upload may still land, so the recording
    /// continues after any segment it may have written.
    pub took_over: bool,
    pub fence: Fence,
}

/// A live publish, on this node or another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    pub node_id: String,
    pub remote: String,
    pub since: SystemTime,
    pub stats: LiveStats,
}

struct Held {
    key: ChannelKey,
    kick: Kick,
    health: Arc<Health>,
    /// The bucket's rule, applied when another node's publish asks for the channel.
    takeover: Takeover,
    fence: Fence,
    /// When the lease row was seen committed: a renewal sent before that cannot have found it.
    confirmed: Option<Instant>,
    stats: Option<crate::channels::SharedStats>,
}

/// A claim's request, owned, so that it can be sent from the metadata thread.
#[derive(Clone)]
struct ClaimArgs {
    key: ChannelKey,
    node_id: String,
    holder: String,
    remote_addr: String,
    user_args: String,
    since: SystemTime,
    lease: Duration,
}

impl ClaimArgs {
    fn request(&self) -> LeaseRequest<'_> {
        LeaseRequest {
            bucket: self.key.bucket(),
            channel: self.key.channel(),
            node_id: &self.node_id,
            holder: &self.holder,
            remote_addr: &self.remote_addr,
            user_args: &self.user_args,
            since: self.since,
            lease: self.lease,
        }
    }
}

pub struct Cluster {
    node: NodeConfig,
    meta: Meta,
    channels: Arc<Channels>,
    /// Weak: the journal ends once the last publish lets go of it, and this lives as long as the server.
    journal: WeakJournal,
    /// Lease holder id -> what this node holds.
    held: Mutex<HashMap<String, Held>>,
    fence: Arc<NodeFence>,
    /// Distinguishes this process from earlier ones with the same node id in holder ids.
    incarnation: u64,
    /// Set once: no new publish is taken, and `/readyz` says so.
    draining: std::sync::atomic::AtomicBool,
    /// A kick for this node was announced: renew (and so act on it) now rather than at the next tick.
    wake: tokio::sync::Notify,
}

impl Cluster {
    pub fn new(node: NodeConfig, meta: Meta, channels: Arc<Channels>, journal: &Journal) -> Arc<Self> {
        let journal = journal.downgrade();
        let incarnation = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let fence = NodeFence::new(node.lease.saturating_sub(node.renew));
        Arc::new(Cluster {
            node,
            meta,
            channels,
            journal,
            held: Mutex::default(),
            fence,
            incarnation,
            draining: Default::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Takes the node out of service: new publishes are refused (the encoder retries through the
    /// balancer, which `/readyz` took this node out of), and every live publish here ends after
    /// storing its open segment, so its encoder reconnects to another node. Returns how many ended.
    pub fn drain(&self) -> usize {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        self.channels.kick_all()
    }

    /// Another node kicked a lease of `node` (from the database's notifications).
    pub fn on_kick(&self, node: &str) {
        if node == self.node.id {
            self.wake.notify_one();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        // Single inserts and removes: a panic while holding it leaves the map consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At start: the leases this node id held before (a crash or kill) are dead. Their pushes are closed
    /// and their stop callbacks sent.
    pub async fn recover(&self) -> Result<usize, MetaError> {
        let dead = self.meta.expire_leases(Some(&self.node.id)).await?;
        for lease in &dead {
            self.publish_done(lease, "this node restarted");
        }
        Ok(dead.len())
    }

    /// Claims `key` for the local publish `publish_id`, waiting up to [`FLUSH_WAIT`] while another
    /// node's writer still stores the channel's last segments. If another node's publish holds it and
    /// the bucket's `takeover` rule may let this one in, that node is asked, and decides by when its
    /// publisher last sent media.
    pub async fn claim(
        &self,
        local: &LiveGuard,
        remote: SocketAddr,
        user_args: &str,
        since: SystemTime,
        takeover: Takeover,
    ) -> Result<Claimed, ClaimError> {
        let key = local.key();
        let holder = format!("{}/{}/{}", self.node.id, self.incarnation, local.publish_id());
        let fence = self.fence.lease();
        self.held().insert(
            holder.clone(),
            Held {
                key: key.clone(),
                kick: local.kick.clone(),
                health: Arc::clone(&local.health),
                takeover,
                fence: fence.clone(),
                confirmed: None,
                stats: Some(Arc::clone(&local.stats)),
            },
        );
        let args = ClaimArgs {
            key: key.clone(),
            node_id: self.node.id.clone(),
            holder: holder.clone(),
            remote_addr: remote.to_string(),
            user_args: user_args.to_owned(),
            since,
            lease: self.node.lease,
        };
        let started = Instant::now();
        // The holder we asked to give way, and when: its node answers at its next renewal.
        let mut asked: Option<(String, Instant)> = None;
        let takeover_wait = self.node.renew * 2 + Duration::from_secs(1);
        let outcome = loop {
            let attempt = Instant::now();
            let args = args.clone();
            let claimed = self
                .meta
                .off_media("claim_lease", move |meta| async move { meta.claim_lease(&args.request()).await })
                .await;
            metrics().database(DatabaseOp::Claim, attempt.elapsed());
            match claimed {
                Ok(Claim::Held(lease)) if lease.state == LeaseState::Flushing && started.elapsed() < FLUSH_WAIT => {
                    tokio::time::sleep(FLUSH_POLL).await;
                }
                Ok(Claim::Held(lease))
                    if takeover.policy != TakeoverPolicy::Never && lease.node_id != self.node.id && asked.is_none() =>
                {
                    let (k, h) = (key.clone(), lease.holder.clone());
                    let asked_node = self
                        .meta
                        .off_media("request_takeover", move |meta| async move {
                            meta.request_takeover(k.bucket(), k.channel(), &h).await
                        })
                        .await;
                    match asked_node {
                        Ok(Some(node)) => {
                            info!(channel = %key, node, "the channel is live on another node: asking it to give way");
                            asked = Some((lease.holder, Instant::now()));
                        }
                        Ok(None) => asked = Some((lease.holder, Instant::now())),
                        Err(source) => break Err(ClaimError::Meta { key: key.clone(), source }),
                    }
                }
                Ok(Claim::Held(lease))
                    if asked.as_ref().is_some_and(|(h, at)| *h == lease.holder && at.elapsed() < takeover_wait) =>
                {
                    tokio::time::sleep(FLUSH_POLL).await;
                }
                Ok(Claim::Held(lease)) => break Err(ClaimError::Held { key: key.clone(), node: lease.node_id }),
                Ok(Claim::Claimed { push_id, expired }) => break Ok((push_id, expired)),
                Err(source) => break Err(ClaimError::Meta { key: key.clone(), source }),
            }
        };
        let (push_id, expired) = match outcome {
            Ok(claimed) => claimed,
            Err(e) => {
                self.held().remove(&holder);
                return Err(e);
            }
        };
        if let Some(held) = self.held().get_mut(&holder) {
            held.confirmed = Some(Instant::now());
        }
        if let Some(dead) = &expired {
            warn!(channel = %key, dead_node = %dead.node_id, "taking over a channel whose node stopped renewing its lease");
            self.publish_done(dead, "its node stopped renewing the lease");
        }
        Ok(Claimed { holder, push_id, took_over: expired.is_some(), fence })
    }

    /// The publisher of `holder` is gone; its writer still stores.
    pub async fn flushing(&self, key: &ChannelKey, holder: &str) {
        if let Some(held) = self.held().get_mut(holder) {
            held.stats = None;
        }
        let (k, h) = (key.clone(), holder.to_owned());
        let marked =
            self.meta
                .off_media("lease_flushing", move |meta| async move {
                    meta.lease_flushing(k.bucket(), k.channel(), &h).await
                })
                .await;
        if let Err(e) = marked {
            warn!(channel = %key, error = %e, "cannot mark the lease flushing (the next publish waits for the lease)");
        }
    }

    /// Everything of `holder`'s publish is stored: the channel is free on every node. A failed delete is
    /// retried by the renewal loop (it removes rows of this node that nothing holds).
    pub async fn release(&self, key: &ChannelKey, holder: &str) {
        self.held().remove(holder);
        let (k, h) = (key.clone(), holder.to_owned());
        let released = self
            .meta
            .off_media(
                "release_lease",
                move |meta| async move { meta.release_lease(k.bucket(), k.channel(), &h).await },
            )
            .await;
        if let Err(e) = released {
            warn!(channel = %key, error = %e, "cannot release the lease; the next renewal retries");
        }
    }

    /// Ends the live publish of `key`, on whichever node (the holder sees the flag within a renewal
    /// period). Returns whether one was live.
    pub async fn kick(&self, key: &ChannelKey) -> Result<bool, MetaError> {
        let here = self.channels.kick(key);
        let marked = self.meta.kick_lease(key.bucket(), key.channel()).await?;
        if let Some(node) = marked.as_deref().filter(|n| *n != self.node.id) {
            info!(channel = %key, node, "kick sent to the node that holds the channel");
        }
        Ok(here || marked.is_some())
    }

    /// The live publish of `key`: from this node's registry, else from the lease row its node renews.
    pub async fn live(&self, key: &ChannelKey) -> Result<Option<LiveView>, MetaError> {
        if let Some(live) = self.channels.live(key) {
            // Segment counts as of now, not as of the last once-a-second refresh.
            let mut stats = live.stats();
            stats.segments = live.health.counts();
            stats.store_error = live.health.last_error();
            return Ok(Some(LiveView {
                node_id: self.node.id.clone(),
                remote: live.remote.to_string(),
                since: live.since,
                stats,
            }));
        }
        let Some(lease) = self.meta.live_lease(key.bucket(), key.channel()).await? else { return Ok(None) };
        Ok(Some(LiveView {
            stats: stats_from_json(&lease.stats),
            node_id: lease.node_id,
            remote: lease.remote_addr,
            since: lease.since,
        }))
    }

    /// Renews, kicks, writes stats and sweeps until `shutdown`, then until this node holds nothing (its
    /// writers still store after the listeners stopped, and their leases must not lapse meanwhile).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.node.renew);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.wake.notified() => {}
            }
            if shutdown.is_cancelled() && self.held().is_empty() {
                break;
            }
            n += 1;
            self.renew().await;
            if n.is_multiple_of(STATS_EVERY) {
                self.write_stats().await;
            }
            // A stopping node leaves dead leases to the nodes that go on (its journal is closing).
            if !shutdown.is_cancelled() {
                self.sweep().await;
            }
        }
    }

    async fn renew(&self) {
        let sent = Instant::now();
        let renewed = self.meta.renew_leases(&self.node.id, self.node.lease).await;
        metrics().database(DatabaseOp::Renew, sent.elapsed());
        let renewed = match renewed {
            Ok(renewed) => renewed,
            Err(e) => {
                if !self.fence.holds() {
                    let mut kicked = 0;
                    for held in self.held().values().filter(|h| !h.kick.is_kicked()) {
                        held.kick.kick(EndReason::LeaseLost);
                        kicked += 1;
                    }
                    if kicked > 0 {
                        warn!(error = %e, publishes = kicked, "cannot renew leases for a lease period: this node stops its publishes");
                    }
                } else {
                    warn!(error = %e, "cannot renew leases; retrying");
                }
                return;
            }
        };
        let mut orphans = Vec::new();
        // A takeover request older than this was answered already, or its publish gave up waiting.
        let fresh = self.node.renew * 3 + Duration::from_secs(1);
        let now = SystemTime::now();
        {
            let held = self.held();
            for r in &renewed {
                match held.get(&r.holder) {
                    Some(h) if r.kicked && !h.kick.is_kicked() => {
                        info!(channel = %h.key, "kicked through the database: ending the publish");
                        h.kick.kick(EndReason::Api);
                    }
                    Some(h) if r.takeover_asked.is_some_and(|a| a < fresh) && !h.kick.is_kicked() => {
                        let silent = h.health.silent_for(now);
                        if h.takeover.allows(silent) {
                            info!(channel = %h.key, silent_ms = silent.as_millis() as u64, "a publish on another node takes the channel over: ending this one");
                            metrics().takeover();
                            h.kick.kick(EndReason::TakenOver);
                        } else {
                            debug!(channel = %h.key, silent_ms = silent.as_millis() as u64, "a takeover was asked for, but the publisher is sending media");
                        }
                    }
                    Some(_) => {}
                    None => orphans.push((r.bucket.clone(), r.channel.clone(), r.holder.clone())),
                }
            }
            // Lost leases are fenced before the node deadline moves on, so no writer sees them held.
            // A set, not a scan of `renewed` per lease: at 1000 leases that was a million comparisons
            // under the `held` lock, on a runtime worker.
            let renewed_holders: HashSet<&str> = renewed.iter().map(|r| r.holder.as_str()).collect();
            for (holder, h) in held.iter().filter(|(_, h)| h.confirmed.is_some_and(|t| t < sent)) {
                if !renewed_holders.contains(holder.as_str()) {
                    if h.fence.holds() {
                        warn!(channel = %h.key, "this node lost the channel's lease: it stops writing and ends the publish");
                    }
                    h.fence.lose();
                    h.kick.kick(EndReason::LeaseLost);
                }
            }
        }
        // The database set each expiry from a clock read after `sent`: stopping a renewal period
        // before `sent + lease` is safely before any other node may take over.
        self.fence.extend_to(sent + self.node.lease.saturating_sub(self.node.renew));
        for (bucket, channel, holder) in orphans {
            // A release that failed earlier, or a claim of a process that is gone.
            let _ = self.meta.release_lease(&bucket, &channel, &holder).await;
        }
    }

    async fn write_stats(&self) {
        let rows: Vec<(String, String, String, String)> = self
            .held()
            .iter()
            .filter(|(_, h)| h.confirmed.is_some())
            .filter_map(|(holder, h)| {
                let stats = h.stats.as_ref()?.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Some((h.key.bucket().to_owned(), h.key.channel().to_owned(), holder.clone(), stats_to_json(&stats)))
            })
            .collect();
        if let Err(e) = self.meta.write_lease_stats(&rows).await {
            warn!(error = %e, "cannot write live stats to the lease rows");
        }
    }

    async fn sweep(&self) {
        match self.meta.expire_leases(None).await {
            Ok(dead) => {
                for lease in &dead {
                    warn!(channel = %format!("{}/{}", lease.bucket, lease.channel), node = %lease.node_id,
                          "a lease lapsed (its node died or lost the database): closing its publish");
                    self.publish_done(lease, "its node stopped renewing the lease");
                }
            }
            Err(e) => warn!(error = %e, "cannot sweep lapsed leases"),
        }
    }

    /// The stop callbacks of a publish whose node cannot send them, with the idempotency keys its own
    /// node would have used (they derive from the push id).
    fn publish_done(&self, lease: &Lease, why: &str) {
        let Some(push_id) = lease.push_id else { return };
        info!(channel = %format!("{}/{}", lease.bucket, lease.channel), node = %lease.node_id, why, "sending the stop callbacks of a dead publish");
        let event = PublishEvent {
            bucket: lease.bucket.clone(),
            channel: lease.channel.clone(),
            remote: lease.remote_addr.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            user_args: lease.user_args.clone(),
            publish_started: lease.since,
            session_id: format!("p{push_id}"),
        };
        match self.journal.upgrade() {
            Some(journal) => journal.callback(CallbackEvent::Publish { event, start: false }),
            None => {
                warn!(channel = %format!("{}/{}", lease.bucket, lease.channel), "the journal has stopped: PUBLISH_DONE of a dead publish not queued")
            }
        }
    }
}

/// Lease rows carry stats as JSON: the codecs are the only ones the ingest accepts.
fn stats_to_json(s: &LiveStats) -> String {
    serde_json::json!({
        "video": s.video.as_ref().map(|v| serde_json::json!({
            "width": v.width, "height": v.height, "frame_rate": v.frame_rate, "bandwidth": v.bandwidth,
        })),
        "audio": s.audio.as_ref().map(|a| serde_json::json!({"sample_rate": a.sample_rate, "bandwidth": a.bandwidth})),
        "segments": {"stored": s.segments.stored, "failed": s.segments.failed, "dropped": s.segments.dropped,
                     "forced": s.segments.forced, "last_ms": s.segments.last_ms},
        "store_error": s.store_error,
    })
    .to_string()
}

fn stats_from_json(text: &str) -> LiveStats {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    LiveStats {
        video: v.get("video").filter(|v| v.is_object()).map(|v| VideoStats {
            width: n(v, "width") as u32,
            height: n(v, "height") as u32,
            frame_rate: n(v, "frame_rate") as u32,
            bandwidth: n(v, "bandwidth"),
            codec: "H264",
        }),
        audio: v.get("audio").filter(|a| a.is_object()).map(|a| AudioStats {
            sample_rate: n(a, "sample_rate") as u32,
            bandwidth: n(a, "bandwidth"),
            codec: "AAC",
        }),
        segments: v
            .get("segments")
            .map(|c| SegmentCounts {
                stored: n(c, "stored"),
                failed: n(c, "failed"),
                dropped: n(c, "dropped"),
                forced: n(c, "forced"),
                last_ms: n(c, "last_ms"),
            })
            .unwrap_or_default(),
        store_error: v.get("store_error").and_then(serde_json::Value::as_str).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_survive_the_lease_row() {
        let stats = LiveStats {
            video: Some(VideoStats { width: 1280, height: 720, frame_rate: 30, bandwidth: 250_000, codec: "H264" }),
            audio: Some(AudioStats { sample_rate: 44_100, bandwidth: 16_000, codec: "AAC" }),
            segments: SegmentCounts { stored: 7, failed: 2, dropped: 1, forced: 1, last_ms: 2002 },
            store_error: Some("disk full".into()),
        };
        assert_eq!(stats_from_json(&stats_to_json(&stats)), stats);
        let none = LiveStats::default();
        assert_eq!(stats_from_json(&stats_to_json(&none)), none);
        assert_eq!(stats_from_json(""), none, "a row whose node wrote no stats yet");
    }
}
