//! The snapshot shell: a bounded queue of keyframes and at most `[snapshots] workers` decodes at once,
//! each an `ffmpeg` child process (H.264 Annex B in on stdin, one PPM picture out on stdout, killed at
//! the timeout), then the JPEG encode on the blocking pool, the two objects in DestBucket, and the index
//! row with its NotifyTopic message in one `meta` transaction.
//!
//! The media path only calls [`Feed::offer`], which never waits: when the queue is full the keyframe is
//! skipped and counted. A keyframe that cannot be decoded is logged and counted, and the first failure of
//! a publish sends one failure message to the topic; the publish goes on either way.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::{Schedule, SnapshotError, Taken};
use crate::config::{Config, NotifyTopic, SnapshotSettings};
use crate::media::{AvcConfig, Timestamp90k};
use crate::meta::notify::{NewCallback, Payload};
use crate::meta::snapshots::SnapshotRecord;
use crate::meta::{Meta, Snapshot};
use crate::metrics::SnapshotResult;
use crate::names::ChannelKey;
use crate::notify::Notifier;
use crate::storage::Store;

/// The decoder's picture is read up to this: a 4096 x 2304 PPM and its header.
const MAX_PICTURE_BYTES: usize = super::MAX_PIXELS as usize * 3 + 64;
/// What is kept of the decoder's complaints for the log and the failure message.
const MAX_STDERR: usize = 2048;
/// The decoders' nice value: the lowest priority there is.
const DECODER_NICE: i32 = 19;
/// Index writes are retried this often before the snapshot is given up (its objects stay, unindexed).
const INDEX_ATTEMPTS: u32 = 3;

/// What the pool did, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub taken: AtomicU64,
    /// Keyframes due for a snapshot that found the queue full.
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot run the decoder {ffmpeg}: {source} (install ffmpeg, or set [snapshots] ffmpeg)")]
    Spawn { ffmpeg: String, source: std::io::Error },
    #[error("the decoder failed ({status}): {stderr}")]
    Decoder { status: String, stderr: String },
    #[error("the decoder took longer than {0:?}")]
    Timeout(Duration),
    #[error("decoder I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storing the snapshot failed: {0}")]
    Store(String),
    #[error("indexing the snapshot failed: {0}")]
    Index(String),
}

impl JobError {
    /// Failures of the stream (or the decoder), which the topic hears of; storage and database failures
    /// are the server's and only logged.
    fn is_decode(&self) -> bool {
        !matches!(self, JobError::Store(_) | JobError::Index(_))
    }
}

struct Job {
    feed: Arc<FeedShared>,
    config: AvcConfig,
    access_unit: Bytes,
    media_ms: i64,
}

/// The node's snapshot pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Snapshots {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("channel", &self.feed.key.to_string()).field("media_ms", &self.media_ms).finish()
    }
}

/// What the workers share.
struct Shared {
    settings: SnapshotSettings,
    store: Store,
    meta: Meta,
    notifier: Notifier,
    counters: Arc<Counters>,
}

impl Snapshots {
    /// Starts the dispatcher; it stops at `shutdown`, after the decodes in flight.
    pub fn start(
        settings: SnapshotSettings,
        store: Store,
        meta: Meta,
        notifier: Notifier,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Snapshots {
        let (tx, rx) = mpsc::channel(settings.queue);
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared { settings, store, meta, notifier, counters: Arc::clone(&counters) });
        tracker.spawn(dispatch(shared, rx, tracker.clone(), shutdown));
        Snapshots { tx, counters }
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The feed of one publish of a channel with a Snapshot configuration, or None (logged) when the
    /// configuration names a bucket or topic this server no longer has (the config file changed since
    /// PutLiveChannel checked it).
    pub fn feed(&self, config: &Config, key: &ChannelKey, snapshot: &Snapshot, session: &str) -> Option<Feed> {
        let dest = snapshot.dest_bucket.as_deref().unwrap_or("");
        let topic = snapshot.notify_topic.as_deref().and_then(|t| config.notify_topic(t));
        let (Some(_), Some(topic), Ok(dest_key)) = (config.bucket(dest), topic, ChannelKey::new(dest, key.channel()))
        else {
            warn!(channel = %key, dest_bucket = dest, topic = ?snapshot.notify_topic,
                "snapshots are off for this publish: the Snapshot DestBucket or NotifyTopic is not configured any more");
            return None;
        };
        Some(Feed {
            schedule: Schedule::new(snapshot.interval),
            shared: Arc::new(FeedShared {
                key: key.clone(),
                dest: dest_key,
                topic: topic.clone(),
                session: session.to_owned(),
                failure_reported: AtomicBool::new(false),
                failures: AtomicU64::new(0),
            }),
            tx: self.tx.clone(),
            counters: Arc::clone(&self.counters),
        })
    }
}

/// One publish's side of the pool (held by its `publish::Session`).
pub struct Feed {
    schedule: Schedule,
    shared: Arc<FeedShared>,
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

/// What the jobs of one publish share.
struct FeedShared {
    key: ChannelKey,
    /// DestBucket and the channel: where the objects go.
    dest: ChannelKey,
    topic: NotifyTopic,
    /// The publish session (a database id), for the failure message's idempotency key.
    session: String,
    failure_reported: AtomicBool,
    failures: AtomicU64,
}

impl Feed {
    /// A keyframe of the publish. Never waits; a `Bytes` clone (a reference count) when it is taken.
    pub fn offer(&mut self, config: Option<&AvcConfig>, access_unit: &Bytes, pts: Timestamp90k) {
        if !self.schedule.due(pts) {
            return;
        }
        let Some(config) = config else { return };
        let job = Job {
            feed: Arc::clone(&self.shared),
            config: config.clone(),
            access_unit: access_unit.clone(),
            media_ms: pts.ticks() / 90,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let skipped = self.counters.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::metrics::metrics().snapshot(SnapshotResult::Skipped);
                // The first, then every 100th: the pool is behind, and every keyframe would say so.
                if skipped == 1 || skipped.is_multiple_of(100) {
                    warn!(channel = %job.feed.key, skipped, "snapshot skipped: the decoders are behind ([snapshots] workers)");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>, tracker: TaskTracker, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.settings.workers));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
        let job = tokio::select! {
            () = shutdown.cancelled() => return,
            job = rx.recv() => match job { Some(job) => job, None => return },
        };
        let shared = Arc::clone(&shared);
        tracker.spawn(async move {
            run(&shared, job).await;
            drop(permit);
        });
    }
}

async fn run(shared: &Shared, job: Job) {
    let at = SystemTime::now();
    match take(shared, &job, at).await {
        Ok(()) => {
            shared.counters.taken.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().snapshot(SnapshotResult::Taken);
        }
        Err(e) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().snapshot(SnapshotResult::Failed);
            let feed = &job.feed;
            let failures = feed.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures <= 3 || failures.is_multiple_of(100) {
                error!(channel = %feed.key, dest = %feed.dest, failures, error = %e, "snapshot failed; the publish goes on");
            }
            if e.is_decode() && !feed.failure_reported.swap(true, Ordering::Relaxed) {
                let body = super::failure_message(
                    feed.key.bucket(),
                    feed.dest.bucket(),
                    feed.key.channel(),
                    &e.to_string(),
                    at,
                );
                let callback = new_callback(feed, format!("snapshot-{}-failed", feed.session), body, "snapshot_failed");
                shared.notifier.enqueue(&[callback]).await;
            }
        }
    }
}

fn new_callback(feed: &FeedShared, idempotency_key: String, body: serde_json::Value, notify_type: &str) -> NewCallback {
    NewCallback {
        bucket: feed.key.bucket().to_owned(),
        channel: feed.key.channel().to_owned(),
        url: feed.topic.url.clone(),
        payload: Payload::Snapshot(body),
        sign_key: feed.topic.sign_key.clone().unwrap_or_default(),
        idempotency_key,
        source_ref: feed.topic.name.clone(),
        notify_type: notify_type.to_owned(),
        domain: feed.key.bucket().to_owned(),
    }
}

async fn take(shared: &Shared, job: &Job, at: SystemTime) -> Result<(), JobError> {
    let (width, height) = super::picture_size(&job.config)?;
    let stream = super::annex_b(&job.config, &job.access_unit)?;
    let started = std::time::Instant::now();
    let ppm = decode(&shared.settings, stream).await?;
    let quality = shared.settings.jpeg_quality;
    let decoded = started.elapsed();
    let (jpeg, (w, h)) = tokio::task::spawn_blocking(move || {
        let picture = super::parse_ppm(&ppm)?;
        Ok::<_, SnapshotError>((super::encode_jpeg(&picture, quality)?, (picture.width, picture.height)))
    })
    .await
    .map_err(|e| JobError::Io(std::io::Error::other(e)))??;
    crate::metrics::metrics().snapshot_seconds.observe(started.elapsed().as_secs_f64());
    if (w, h) != (width, height) {
        debug!(channel = %job.feed.key, sps = ?(width, height), decoded = ?(w, h), "decoded size differs from the SPS");
    }
    let feed = &job.feed;
    let (own, latest) = super::object_keys(feed.key.channel(), at);
    let size = jpeg.len() as u64;
    let jpeg = Bytes::from(jpeg);
    let path = |name: &str| feed.dest.object(name.rsplit('/').next().unwrap_or(name));
    let own_path = path(&own).map_err(|e| JobError::Store(e.to_string()))?;
    let latest_path = path(&latest).map_err(|e| JobError::Store(e.to_string()))?;
    shared.store.put(&own_path, jpeg.clone()).await.map_err(|e| JobError::Store(e.to_string()))?;
    shared.store.put(&latest_path, jpeg).await.map_err(|e| JobError::Store(e.to_string()))?;
    let record = SnapshotRecord {
        bucket: feed.key.bucket().to_owned(),
        channel: feed.key.channel().to_owned(),
        dest_bucket: feed.dest.bucket().to_owned(),
        object_key: own.clone(),
        created: at,
        media_ms: job.media_ms,
        width: w,
        height: h,
        size,
    };
    let body = super::message(&Taken {
        source_bucket: feed.key.bucket(),
        dest_bucket: feed.dest.bucket(),
        channel: feed.key.channel(),
        object: &own,
        size,
        width: w,
        height: h,
        media_ms: job.media_ms,
        at,
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        let announce = |id: i64| Some(new_callback(feed, format!("snapshot-{id}"), body.clone(), "snapshot"));
        match shared.meta.add_snapshot(&record, announce).await {
            Ok(_) => break,
            Err(e) if attempt < INDEX_ATTEMPTS => {
                warn!(channel = %feed.key, error = %e, attempt, "indexing a snapshot failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(JobError::Index(e.to_string())),
        }
    }
    shared.notifier.wake();
    info!(channel = %feed.key, object = %own_path, size, width = w, height = h, decode_ms = decoded.as_millis() as u64,
        "snapshot stored");
    Ok(())
}

/// Runs the decoder on one keyframe: the stream in on stdin, one PPM picture out.
async fn decode(settings: &SnapshotSettings, stream: Vec<u8>) -> Result<Vec<u8>, JobError> {
    let mut child = tokio::process::Command::new(&settings.ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-threads", "1", "-f", "h264", "-i", "pipe:0"])
        .args(["-frames:v", "1", "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| JobError::Spawn { ffmpeg: settings.ffmpeg.display().to_string(), source })?;
    // The lowest priority: a decoder takes only CPU the media path leaves idle. (The microseconds before
    // this call it runs at ours.)
    if let Some(pid) = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32))
        && let Err(e) = rustix::process::setpriority_process(Some(pid), DECODER_NICE)
    {
        debug!(error = %e, "cannot lower the decoder's priority");
    }
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(JobError::Io(std::io::Error::other("the decoder's pipes are missing")));
    };
    let work = async {
        let write = async move {
            // A decoder that quits early closes its stdin: not an error of ours, its exit status says why.
            let _ = stdin.write_all(&stream).await;
            drop(stdin);
        };
        let mut picture = Vec::new();
        let mut complaints = Vec::new();
        let mut stdout = stdout.take(MAX_PICTURE_BYTES as u64 + 1);
        let read = stdout.read_to_end(&mut picture);
        let errs = async {
            // Read to the end, keep the start: a decoder blocked on a full stderr pipe would never exit.
            let mut stderr = stderr;
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                let room = MAX_STDERR.saturating_sub(complaints.len());
                complaints.extend_from_slice(&buf[..n.min(room)]);
            }
        };
        let ((), read, ()) = tokio::join!(write, read, errs);
        read?;
        let status = child.wait().await?;
        Ok::<_, JobError>((status, picture, complaints))
    };
    let (status, picture, complaints) =
        tokio::time::timeout(settings.timeout, work).await.map_err(|_| JobError::Timeout(settings.timeout))??;
    if !status.success() || picture.is_empty() {
        let stderr = String::from_utf8_lossy(&complaints).trim().replace('\n', "; ");
        let stderr = if stderr.is_empty() { "no picture".to_owned() } else { stderr };
        return Err(JobError::Decoder { status: status.to_string(), stderr });
    }
    if picture.len() > MAX_PICTURE_BYTES {
        return Err(SnapshotError::BadPicture("the decoder's picture is larger than allowed").into());
    }
    Ok(picture)
}
