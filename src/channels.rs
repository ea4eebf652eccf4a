//! The live registry: which channels publish in this process, their live stats, and the flush lock that
//! makes a re-publish wait until the previous publish of the channel is fully stored.
//!
//! Claiming a channel returns a [`LiveGuard`] that releases the claim on drop, so a publisher task that
//! ends in any way (EOF, error, panic, kick) never leaves a channel stuck "live". An entry lives only while
//! a publish or its storage writer holds it: a channel that published once costs nothing afterwards. The
//! registry lock is a `std::sync::Mutex` held only for map lookups, never across an `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::names::ChannelKey;

/// Held by a publish's storage writer for its whole life: the next publish of the channel waits for it.
pub type FlushLock = Arc<tokio::sync::Mutex<()>>;

/// What GetLiveChannelStat reports about a live publish; the publisher refreshes it about once a second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveStats {
    pub video: Option<VideoStats>,
    pub audio: Option<AudioStats>,
    /// Segments stored, failed and dropped so far in this publish.
    pub segments: SegmentCounts,
    /// The last storage error, while segments fail.
    pub store_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoStats {
    pub width: u32,
    pub height: u32,
    /// Rounded: oss2 calls int() on it.
    pub frame_rate: u32,
    /// Recent average, bytes per second.
    pub bandwidth: u64,
    pub codec: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStats {
    pub sample_rate: u32,
    pub bandwidth: u64,
    pub codec: &'static str,
}

pub type SharedStats = Arc<Mutex<LiveStats>>;

/// Why the server ended a publish (rather than its publisher). The publisher is told in an `onStatus`
/// error, so the encoder's operator sees it, and the access log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// PutLiveChannelStatus disabled or DeleteLiveChannel, on any node.
    Api,
    /// The node drains or stops.
    Draining,
    /// A new publish of the channel took over (the bucket's `publisher_takeover`).
    TakenOver,
    /// No segment of this publish could be stored for `storage_failure_timeout_ms`.
    StorageFailing,
    /// This node lost the channel's lease (another node has it, or the database was away a lease period).
    LeaseLost,
}

impl EndReason {
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Api => "publish ended by the server (channel disabled or deleted)",
            EndReason::Draining => "the server is stopping; reconnect to publish on another node",
            EndReason::TakenOver => "a new publish of this channel took over",
            EndReason::StorageFailing => "no segment could be stored; the recording is failing",
            EndReason::LeaseLost => "this node lost the channel's lease",
        }
    }

    /// The `onStatus` code the publisher gets.
    pub fn rtmp_status(self) -> &'static str {
        match self {
            EndReason::Api | EndReason::TakenOver => "NetStream.Publish.Rejected",
            EndReason::Draining | EndReason::StorageFailing | EndReason::LeaseLost => "NetStream.Publish.Failed",
        }
    }
}

/// Asks a live publish to end, saying why; the first reason given wins.
#[derive(Debug, Clone, Default)]
pub struct Kick {
    token: CancellationToken,
    reason: Arc<std::sync::OnceLock<EndReason>>,
}

impl Kick {
    pub fn kick(&self, reason: EndReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub fn is_kicked(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once kicked, with the reason. Owns its handle, so that one wait can be kept across many
    /// reads of a connection.
    pub async fn kicked(self) -> EndReason {
        self.token.cancelled().await;
        self.reason()
    }

    /// The same kick (a clone of it), not merely one that is equal.
    pub fn same(&self, other: &Kick) -> bool {
        Arc::ptr_eq(&self.reason, &other.reason)
    }

    pub fn reason(&self) -> EndReason {
        self.reason.get().copied().unwrap_or(EndReason::Api)
    }
}

/// How a live publish is doing, beyond its media stats: when media last arrived (publisher takeover), and
/// what its storage writer managed to store (Stat, the end-of-publish line, ending a failing publish).
/// Atomics: the media path writes, others read, nobody waits.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix milliseconds of the last audio or video message.
    last_media_ms: AtomicU64,
    stored: AtomicU64,
    /// Stored segments cut without a keyframe (the encoder's keyframe interval is too long).
    forced: AtomicU64,
    /// The length of the last stored segment, milliseconds.
    last_ms: AtomicU64,
    /// Segments whose upload failed.
    failed: AtomicU64,
    /// Segments dropped before storage (the queue was full).
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A publish's counts of segments, as its health reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounts {
    pub stored: u64,
    pub failed: u64,
    pub dropped: u64,
    pub forced: u64,
    /// The length of the last stored segment, milliseconds (0 before the first).
    pub last_ms: u64,
}

impl Health {
    pub fn media_at(&self, at: SystemTime) {
        let ms = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_media_ms.store(ms, Ordering::Relaxed);
    }

    /// How long no media arrived, as of `now` (since the claim if none ever did).
    pub fn silent_for(&self, now: SystemTime) -> std::time::Duration {
        let last =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(self.last_media_ms.load(Ordering::Relaxed));
        now.duration_since(last).unwrap_or_default()
    }

    pub fn stored(&self, duration: std::time::Duration, forced: bool) {
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.forced.fetch_add(u64::from(forced), Ordering::Relaxed);
        self.last_ms.store(duration.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn failed(&self, error: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.chars().take(300).collect());
    }

    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> SegmentCounts {
        SegmentCounts {
            stored: self.stored.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            forced: self.forced.load(Ordering::Relaxed),
            last_ms: self.last_ms.load(Ordering::Relaxed),
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Whether this node may still write a channel's objects. A node that cannot renew its leases for about
/// a lease period, or learns that another node took the channel, stops writing at once: the other node
/// may already be writing the same playlist. Checked by the storage writer before each segment and
/// playlist write; no lock, no await.
#[derive(Debug, Clone)]
pub struct Fence(Arc<FenceState>);

#[derive(Debug)]
struct FenceState {
    lost: std::sync::atomic::AtomicBool,
    node: Arc<NodeFence>,
}

/// The deadline every lease of this node shares: the last successful renewal plus the lease, less a
/// safety margin (milliseconds since `base`).
#[derive(Debug)]
pub struct NodeFence {
    base: std::time::Instant,
    deadline_ms: std::sync::atomic::AtomicU64,
}

impl NodeFence {
    /// A node whose leases hold until `valid_for` from now.
    pub fn new(valid_for: std::time::Duration) -> Arc<Self> {
        let fence = Arc::new(NodeFence { base: std::time::Instant::now(), deadline_ms: Default::default() });
        fence.extend_to(std::time::Instant::now() + valid_for);
        fence
    }

    /// A renewal succeeded: the leases hold until `until`.
    pub fn extend_to(&self, until: std::time::Instant) {
        let ms = until.saturating_duration_since(self.base).as_millis().min(u64::MAX as u128) as u64;
        self.deadline_ms.fetch_max(ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn holds(&self) -> bool {
        (self.base.elapsed().as_millis() as u64) < self.deadline_ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A fence for one lease of this node.
    pub fn lease(self: &Arc<Self>) -> Fence {
        Fence(Arc::new(FenceState { lost: Default::default(), node: Arc::clone(self) }))
    }
}

impl Fence {
    /// A fence that always holds (tools that write one channel alone).
    pub fn unfenced() -> Fence {
        let node =
            NodeFence { base: std::time::Instant::now(), deadline_ms: std::sync::atomic::AtomicU64::new(u64::MAX) };
        Arc::new(node).lease()
    }

    pub fn holds(&self) -> bool {
        !self.0.lost.load(std::sync::atomic::Ordering::SeqCst) && self.0.node.holds()
    }

    /// Another node holds the channel now.
    pub fn lose(&self) {
        self.0.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
pub struct LiveInfo {
    pub publish_id: u64,
    pub remote: SocketAddr,
    pub since: SystemTime,
    pub stats: SharedStats,
    pub health: Arc<Health>,
    pub kick: Kick,
}

impl LiveInfo {
    pub fn stats(&self) -> LiveStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Default)]
struct Entry {
    live: Option<LiveInfo>,
    flush: FlushLock,
}

impl Entry {
    /// Nobody publishes and no writer holds the flush lock: the entry can go.
    fn idle(&self) -> bool {
        self.live.is_none() && Arc::strong_count(&self.flush) == 1
    }
}

#[derive(Default)]
pub struct Channels {
    entries: Mutex<HashMap<ChannelKey, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("channel {0} is already live")]
pub struct AlreadyLive(pub ChannelKey);

/// Proof that this publish owns the channel; dropping it makes the channel idle again.
pub struct LiveGuard {
    channels: Arc<Channels>,
    key: ChannelKey,
    publish_id: u64,
    /// Kicked when someone (API, shutdown, a takeover, the lease) wants this publish to end.
    pub kick: Kick,
    pub health: Arc<Health>,
    /// The flush lock, until the publish hands it to its storage writer.
    flush: Option<FlushLock>,
    pub stats: SharedStats,
}

impl LiveGuard {
    pub fn key(&self) -> &ChannelKey {
        &self.key
    }

    pub fn publish_id(&self) -> u64 {
        self.publish_id
    }

    /// The channel's flush lock, for the storage writer of this publish (once).
    pub fn take_flush(&mut self) -> Option<FlushLock> {
        self.flush.take()
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut entries = self.channels.lock();
        if let Some(entry) = entries.get_mut(&self.key)
            && entry.live.as_ref().is_some_and(|l| l.publish_id == self.publish_id)
        {
            entry.live = None;
        }
        self.flush = None;
        if entries.get(&self.key).is_some_and(Entry::idle) {
            entries.remove(&self.key);
        }
    }
}

/// See [`Channels::hold_idle`].
pub struct IdleHold {
    channels: Arc<Channels>,
    key: ChannelKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for IdleHold {
    fn drop(&mut self) {
        self.guard = None;
        self.channels.release(&self.key);
    }
}

impl Channels {
    fn lock(&self) -> MutexGuard<'_, HashMap<ChannelKey, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts/removes).
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn claim(self: &Arc<Self>, key: &ChannelKey, remote: SocketAddr) -> Result<LiveGuard, AlreadyLive> {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        if entry.live.is_some() {
            return Err(AlreadyLive(key.clone()));
        }
        let publish_id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let kick = Kick::default();
        let stats = SharedStats::default();
        let health = Arc::new(Health::default());
        let since = SystemTime::now();
        health.media_at(since);
        entry.live = Some(LiveInfo {
            publish_id,
            remote,
            since,
            stats: Arc::clone(&stats),
            health: Arc::clone(&health),
            kick: kick.clone(),
        });
        Ok(LiveGuard {
            channels: Arc::clone(self),
            key: key.clone(),
            publish_id,
            kick,
            health,
            flush: Some(Arc::clone(&entry.flush)),
            stats,
        })
    }

    /// Holds the channel's flush lock while nothing publishes or stores it on this node, so a publish
    /// that starts meanwhile waits, as it waits for a previous publish's writer. None if a publish is
    /// live or still storing.
    pub fn hold_idle(self: &Arc<Self>, key: &ChannelKey) -> Option<IdleHold> {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        if entry.live.is_some() {
            return None;
        }
        let Ok(guard) = Arc::clone(&entry.flush).try_lock_owned() else { return None };
        Some(IdleHold { channels: Arc::clone(self), key: key.clone(), guard: Some(guard) })
    }

    /// A storage writer let go of the flush lock: forget the channel if nothing else holds it.
    pub fn release(&self, key: &ChannelKey) {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(Entry::idle) {
            entries.remove(key);
        }
    }

    /// How many channels the registry holds (live, or still flushing).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn live(&self, key: &ChannelKey) -> Option<LiveInfo> {
        self.lock().get(key).and_then(|e| e.live.clone())
    }

    pub fn live_count(&self) -> usize {
        self.lock().values().filter(|e| e.live.is_some()).count()
    }

    /// Waits until the channel is not live and its last publish has been fully stored (the sink let go of
    /// the channel state). Returns false on timeout.
    pub async fn wait_flushed(&self, key: &ChannelKey, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let slot = {
                let entries = self.lock();
                match entries.get(key) {
                    None => return true,
                    Some(e) if e.live.is_none() => Some(Arc::clone(&e.flush)),
                    Some(_) => None,
                }
            };
            if let Some(slot) = slot {
                return tokio::time::timeout_at(deadline, slot.lock()).await.is_ok();
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Ends every live publish of this process (draining). Returns how many.
    pub fn kick_all(&self) -> usize {
        let entries = self.lock();
        let live: Vec<&LiveInfo> = entries.values().filter_map(|e| e.live.as_ref()).collect();
        for l in &live {
            l.kick.kick(EndReason::Draining);
        }
        live.len()
    }

    /// Ends the live publish on a channel, if any (channel disabled or deleted). Returns whether one was live.
    pub fn kick(&self, key: &ChannelKey) -> bool {
        match self.lock().get(key).and_then(|e| e.live.as_ref()) {
            Some(live) => {
                live.kick.kick(EndReason::Api);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_its_node_deadline_or_until_lost() {
        let node = NodeFence::new(std::time::Duration::from_secs(60));
        let (a, b) = (node.lease(), node.lease());
        assert!(a.holds() && b.holds());
        a.lose();
        assert!(!a.holds() && b.holds(), "losing one lease fences only its channel");
        let expired = NodeFence::new(std::time::Duration::ZERO);
        assert!(!expired.lease().holds(), "a node past its deadline writes nothing");
        expired.extend_to(std::time::Instant::now() + std::time::Duration::from_secs(60));
        assert!(expired.lease().holds(), "a renewal extends it");
        assert!(Fence::unfenced().holds());
    }

    #[test]
    fn a_channel_can_be_claimed_once_and_again_after_the_guard_drops() {
        let channels = Arc::new(Channels::default());
        let key = ChannelKey::new("live", "demo").unwrap();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let guard = channels.claim(&key, addr).unwrap();
        assert!(channels.claim(&key, addr).is_err());
        assert_eq!(channels.live(&key).unwrap().remote, addr);
        assert!(channels.kick(&key));
        assert!(guard.kick.is_kicked());
        assert_eq!(guard.kick.reason(), EndReason::Api);
        guard.kick.kick(EndReason::TakenOver);
        assert_eq!(guard.kick.reason(), EndReason::Api, "the first reason stays");
        drop(guard);
        assert!(channels.live(&key).is_none());
        let again = channels.claim(&key, addr).unwrap();
        assert!(!again.kick.is_kicked());
        assert_eq!(channels.live_count(), 1);
    }

    #[test]
    fn an_entry_is_forgotten_once_neither_the_publish_nor_its_writer_holds_it() {
        let channels = Arc::new(Channels::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for i in 0..100 {
            let key = ChannelKey::new("live", &format!("c{i}")).unwrap();
            drop(channels.claim(&key, addr).unwrap());
        }
        assert!(channels.is_empty(), "every channel name ever published stayed in memory");
        let key = ChannelKey::new("live", "demo").unwrap();
        let mut guard = channels.claim(&key, addr).unwrap();
        let flush = guard.take_flush().unwrap();
        drop(guard);
        assert_eq!((channels.len(), channels.live_count()), (1, 0), "the writer still flushes");
        // A re-publish while the writer flushes shares the entry and its lock.
        let mut next = channels.claim(&key, addr).unwrap();
        let next_flush = next.take_flush().unwrap();
        assert!(Arc::ptr_eq(&flush, &next_flush));
        drop(flush);
        channels.release(&key);
        assert_eq!(channels.len(), 1, "the new publish holds it");
        drop((next, next_flush));
        channels.release(&key);
        assert!(channels.is_empty());
    }

    #[tokio::test]
    async fn an_idle_hold_makes_a_new_publish_wait_and_is_refused_while_one_is_live() {
        let channels = Arc::new(Channels::default());
        let key = ChannelKey::new("live", "demo").unwrap();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let hold = channels.hold_idle(&key).expect("nothing publishes");
        let mut publish = channels.claim(&key, addr).unwrap();
        assert!(channels.hold_idle(&key).is_none(), "a publish is live");
        let flush = publish.take_flush().unwrap();
        assert!(flush.try_lock().is_err(), "the publish waits for the hold");
        drop(hold);
        assert!(flush.try_lock().is_ok());
        drop((publish, flush));
        channels.release(&key);
        assert!(channels.is_empty());
        drop(channels.hold_idle(&key));
        assert!(channels.is_empty(), "a hold leaves nothing behind");
    }

    #[test]
    fn health_tells_silence_and_segment_counts() {
        let h = Health::default();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        h.media_at(t);
        assert_eq!(h.silent_for(t + std::time::Duration::from_millis(3500)), std::time::Duration::from_millis(3500));
        assert_eq!(h.silent_for(t - std::time::Duration::from_secs(1)), std::time::Duration::ZERO, "a clock step back");
        h.stored(std::time::Duration::from_millis(8320), true);
        h.failed("disk full");
        h.dropped();
        assert_eq!(h.counts(), SegmentCounts { stored: 1, failed: 1, dropped: 1, forced: 1, last_ms: 8320 });
        assert_eq!(h.last_error().as_deref(), Some("disk full"));
    }
}
