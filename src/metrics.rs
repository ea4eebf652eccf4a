//! Per-node counters and histograms for `GET /metrics` (OpenMetrics text, which Prometheus scrapes). A
//! leaf: the shells count into [`metrics()`] where things happen (the storage writer, the journal, the
//! lease loop, the callback sender, the RTMP listener), and `api` renders them with the gauges it reads
//! at scrape time (live publishes, outbox depth).
//!
//! One registry per process: a node is a process. Counting is an atomic add; no lock on the media path.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label values in snake_case, as Prometheus names go (the derive would write the variant names).
macro_rules! label_values {
    ($($ty:ident { $($variant:ident => $text:literal),* $(,)? })*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, match self { $($ty::$variant => $text),* })
            }
        }
    )*};
}

label_values! {
    SegmentOutcome { Stored => "stored", Forced => "forced", Dropped => "dropped", Failed => "failed" }
    AttemptResult { Delivered => "delivered", Retry => "retry", Failed => "failed" }
    StorageOp { Segment => "segment", Playlist => "playlist" }
    DatabaseOp { Commit => "commit", Renew => "renew", Claim => "claim" }
    SnapshotResult { Taken => "taken", Skipped => "skipped", Failed => "failed" }
    RefusedReason {
        ConnectionLimit => "connection_limit", PerAddressLimit => "per_address_limit", Protocol => "protocol",
        BadRequest => "bad_request", AccessDenied => "access_denied", NoSuchChannel => "no_such_channel",
        Disabled => "disabled", AlreadyLive => "already_live", Unavailable => "unavailable",
        Draining => "draining", Internal => "internal", Overloaded => "overloaded",
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SegmentOutcome {
    /// Stored, indexed and listed.
    Stored,
    /// Cut without a keyframe at the force-cut limit (also counted as stored).
    Forced,
    /// Dropped before storage: the storage queue was full.
    Dropped,
    /// Storage refused or failed the write (or this node lost the channel's lease).
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SegmentLabels {
    pub outcome: SegmentOutcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Failed; it will be retried.
    Retry,
    /// Failed at the last attempt.
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub result: AttemptResult,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum StorageOp {
    Segment,
    Playlist,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    pub op: StorageOp,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DatabaseOp {
    /// One journal transaction (index rows and callbacks).
    Commit,
    /// One renewal of this node's leases.
    Renew,
    /// Claiming a channel for a publish.
    Claim,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub op: DatabaseOp,
}

/// What became of a keyframe due for a snapshot.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SnapshotResult {
    /// Stored, indexed and announced.
    Taken,
    /// The decoders were behind: not attempted.
    Skipped,
    /// Decoding, storing or indexing failed.
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    pub result: SnapshotResult,
}

/// Why an RTMP connection or publish was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefusedReason {
    ConnectionLimit,
    PerAddressLimit,
    /// Bytes the protocol guard refused (malformed or oversized chunks, deep AMF).
    Protocol,
    BadRequest,
    AccessDenied,
    NoSuchChannel,
    Disabled,
    AlreadyLive,
    Unavailable,
    Draining,
    Internal,
    /// The node's media memory budget is too full to take another publish.
    Overloaded,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: RefusedReason,
}

pub struct Metrics {
    registry: Registry,
    pub segments: Family<SegmentLabels, Counter>,
    pub callback_attempts: Family<AttemptLabels, Counter>,
    pub storage_seconds: Family<StorageLabels, Histogram>,
    pub database_seconds: Family<DatabaseLabels, Histogram>,
    pub rtmp_refused: Family<RefusedLabels, Counter>,
    pub live_publishes: Gauge,
    pub outbox_pending: Gauge,
    pub takeovers: Counter,
    /// Media bytes queued for storage or held by uploads in progress (`budget`).
    pub media_bytes_waiting: Gauge,
    pub snapshots: Family<SnapshotLabels, Counter>,
    /// Decoding and encoding one snapshot (the ffmpeg child and the JPEG), without storing it.
    pub snapshot_seconds: Histogram,
}

fn latency() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("livechannel");
        let m = Metrics {
            segments: Family::default(),
            callback_attempts: Family::default(),
            storage_seconds: Family::new_with_constructor(latency),
            database_seconds: Family::new_with_constructor(latency),
            rtmp_refused: Family::default(),
            live_publishes: Gauge::default(),
            outbox_pending: Gauge::default(),
            takeovers: Counter::default(),
            media_bytes_waiting: Gauge::default(),
            snapshots: Family::default(),
            snapshot_seconds: latency(),
            registry: Registry::default(),
        };
        registry.register("segments", "Segments by outcome", m.segments.clone());
        registry.register("callback_attempts", "Callback delivery attempts by result", m.callback_attempts.clone());
        registry.register("storage_seconds", "Object store write latency", m.storage_seconds.clone());
        registry.register("database_seconds", "Metadata database latency", m.database_seconds.clone());
        registry.register("rtmp_refused", "RTMP connections and publishes refused, by reason", m.rtmp_refused.clone());
        registry.register("live_publishes", "Publishes live on this node", m.live_publishes.clone());
        registry.register("outbox_pending", "Callbacks waiting to be delivered (all nodes)", m.outbox_pending.clone());
        registry.register(
            "takeovers",
            "Live publishes ended on this node for a new publish (publisher_takeover)",
            m.takeovers.clone(),
        );
        registry.register(
            "media_bytes_waiting",
            "Media bytes queued for storage or in uploads not yet complete ([limits] media_memory_bytes)",
            m.media_bytes_waiting.clone(),
        );
        registry.register("snapshots", "Keyframes due for a snapshot, by result", m.snapshots.clone());
        registry.register(
            "snapshot_seconds",
            "Decoding one keyframe and encoding its JPEG ([snapshots] workers at a time)",
            m.snapshot_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn snapshot(&self, result: SnapshotResult) {
        self.snapshots.get_or_create(&SnapshotLabels { result }).inc();
    }

    pub fn segment(&self, outcome: SegmentOutcome) {
        self.segments.get_or_create(&SegmentLabels { outcome }).inc();
    }

    pub fn attempt(&self, result: AttemptResult) {
        self.callback_attempts.get_or_create(&AttemptLabels { result }).inc();
    }

    pub fn storage(&self, op: StorageOp, took: Duration) {
        self.storage_seconds.get_or_create(&StorageLabels { op }).observe(took.as_secs_f64());
    }

    pub fn database(&self, op: DatabaseOp, took: Duration) {
        self.database_seconds.get_or_create(&DatabaseLabels { op }).observe(took.as_secs_f64());
    }

    pub fn takeover(&self) {
        self.takeovers.inc();
    }

    pub fn refused(&self, reason: RefusedReason) {
        self.rtmp_refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The Content-Type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text_with_their_labels() {
        let m = Metrics::new();
        m.segment(SegmentOutcome::Stored);
        m.segment(SegmentOutcome::Stored);
        m.refused(RefusedReason::AlreadyLive);
        m.database(DatabaseOp::Renew, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("livechannel_segments_total{outcome=\"stored\"} 2"), "{text}");
        assert!(text.contains("livechannel_rtmp_refused_total{reason=\"already_live\"} 1"), "{text}");
        assert!(text.contains("livechannel_database_seconds_count{op=\"renew\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
