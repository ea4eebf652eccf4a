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
/// Keyframes one decoder run takes at most (when they share a picture size).
const MAX_BATCH: usize = 8;
/// And at most this many pixels in all: eight 720p pictures, three 1080p ones, no 4K one with another.
const BATCH_PIXELS: u64 = 8 * 1280 * 720;
/// The decoders' nice value: the lowest priority there is.
const DECODER_NICE: i32 = 19;
/// Index writes are retried this often before the snapshot is given up (its objects stay, unindexed).
const INDEX_ATTEMPTS: u32 = 3;

/// What the pool did, for the tests (`Server::snapshot_counters`); `/metrics` counts the same.
#[derive(Debug, Default)]
pub struct Counters {
    pub taken: AtomicU64,
    /// Keyframes due for a snapshot that found the queue full.
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
}

impl Counters {
    /// Counts one result here and in `/metrics`; returns this pool's count of that result so far.
    fn count(&self, result: SnapshotResult) -> u64 {
        crate::metrics::metrics().snapshot(result);
        let counter = match result {
            SnapshotResult::Taken => &self.taken,
            SnapshotResult::Skipped => &self.skipped,
            SnapshotResult::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
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
    config: Arc<AvcConfig>,
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
            config: None,
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
    /// The stream's configuration as the jobs share it: copied only when the stream sends a new one.
    config: Option<Arc<AvcConfig>>,
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
        let shared_config = match &self.config {
            Some(c) if **c == *config => Arc::clone(c),
            _ => Arc::clone(self.config.insert(Arc::new(config.clone()))),
        };
        let job = Job {
            feed: Arc::clone(&self.shared),
            config: shared_config,
            access_unit: access_unit.clone(),
            media_ms: pts.ticks() / 90,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let skipped = self.counters.count(SnapshotResult::Skipped);
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
        // What else waits goes with it: keyframes of one picture size share one decoder run.
        let mut jobs = vec![job];
        while jobs.len() < MAX_BATCH
            && let Ok(job) = rx.try_recv()
        {
            jobs.push(job);
        }
        let shared = Arc::clone(&shared);
        tracker.spawn(async move {
            run(&shared, jobs).await;
            drop(permit);
        });
    }
}

async fn run(shared: &Shared, jobs: Vec<Job>) {
    let at = SystemTime::now();
    let started = std::time::Instant::now();
    let pictures = decode_all(&shared.settings, &jobs).await;
    let decoded = started.elapsed() / u32::try_from(jobs.len()).unwrap_or(1).max(1);
    for (job, picture) in jobs.iter().zip(pictures) {
        let result = match picture {
            Ok(ppm) => take(shared, job, ppm, decoded, at).await,
            Err(e) => Err(e),
        };
        report(shared, job, result, at).await;
    }
}

/// Counts and tells what became of one keyframe.
async fn report(shared: &Shared, job: &Job, result: Result<(), JobError>, at: SystemTime) {
    match result {
        Ok(()) => {
            shared.counters.count(SnapshotResult::Taken);
        }
        Err(e) => {
            shared.counters.count(SnapshotResult::Failed);
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

/// The rest of one snapshot once its picture is decoded: the JPEG, the objects, the index row and message.
async fn take(shared: &Shared, job: &Job, ppm: Bytes, decoded: Duration, at: SystemTime) -> Result<(), JobError> {
    let (width, height) = super::picture_size(&job.config)?;
    let started = std::time::Instant::now();
    let quality = shared.settings.jpeg_quality;
    let (jpeg, (w, h)) = tokio::task::spawn_blocking(move || {
        let picture = super::parse_ppm(&ppm)?;
        Ok::<_, SnapshotError>((super::encode_jpeg(&picture, quality)?, (picture.width, picture.height)))
    })
    .await
    .map_err(|e| JobError::Io(std::io::Error::other(e)))??;
    crate::metrics::metrics().snapshot_seconds.observe((decoded + started.elapsed()).as_secs_f64());
    if (w, h) != (width, height) {
        debug!(channel = %job.feed.key, sps = ?(width, height), decoded = ?(w, h), "decoded size differs from the SPS");
    }
    let feed = &job.feed;
    let (own, _) = super::object_keys(feed.key.channel(), at);
    let size = jpeg.len() as u64;
    let jpeg = Bytes::from(jpeg);
    let path = |file: &str| feed.dest.object(file).map_err(|e| JobError::Store(e.to_string()));
    let (own_path, latest_path) = (path(&super::file_name(at))?, path(super::LATEST)?);
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
    let message = new_callback(feed, String::new(), body, "snapshot");
    loop {
        attempt += 1;
        // On the metadata thread (`Meta::off_media`): a transaction awaited from the media runtime holds
        // SQLite's one writer across its wake-ups, which overload makes slow.
        let (record, message) = (record.clone(), message.clone());
        let added = shared.meta.off_media("add_snapshot", move |meta| async move {
            let announce = |id: i64| Some(NewCallback { idempotency_key: format!("snapshot-{id}"), ..message });
            meta.add_snapshot(&record, announce).await
        });
        match added.await {
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

/// One PPM per job, in job order (pictures of one run are slices of its output, not copies). Keyframes that [`super::batchable`] allows and that share a picture size
/// are decoded in one run (starting ffmpeg is most of a decode's cost); a run is trusted only when it
/// gives exactly one picture of the right size per keyframe, and otherwise its keyframes are decoded one
/// by one, as every other keyframe is.
async fn decode_all(settings: &SnapshotSettings, jobs: &[Job]) -> Vec<Result<Bytes, JobError>> {
    let mut pictures: Vec<Option<Result<Bytes, JobError>>> = jobs.iter().map(|_| None).collect();
    let mut groups: std::collections::BTreeMap<(u32, u32), Vec<usize>> = Default::default();
    for (i, job) in jobs.iter().enumerate() {
        if let Ok(size) = super::picture_size(&job.config)
            && super::batchable(&job.config, &job.access_unit)
        {
            groups.entry(size).or_default().push(i);
        }
    }
    for ((width, height), members) in groups {
        let fit =
            usize::try_from(BATCH_PIXELS / (u64::from(width) * u64::from(height))).unwrap_or(1).clamp(1, MAX_BATCH);
        for run in members.chunks(fit).filter(|run| run.len() > 1) {
            match decode_batch(settings, jobs, run, (width, height)).await {
                Ok(decoded) => {
                    for (&i, ppm) in run.iter().zip(decoded) {
                        pictures[i] = Some(Ok(ppm));
                    }
                }
                Err(why) => {
                    debug!(keyframes = run.len(), why, "a shared decoder run is not trusted; decoding one by one")
                }
            }
        }
    }
    let mut out = Vec::with_capacity(jobs.len());
    for (job, picture) in jobs.iter().zip(pictures) {
        out.push(match picture {
            Some(done) => done,
            None => decode_one(settings, job).await,
        });
    }
    out
}

/// The keyframes `run` names (indexes into `jobs`), all `size`, in one decoder run: one PPM each.
async fn decode_batch(
    settings: &SnapshotSettings,
    jobs: &[Job],
    run: &[usize],
    size: (u32, u32),
) -> Result<Vec<Bytes>, String> {
    let mut stream = Vec::new();
    for &i in run {
        stream.extend(super::annex_b(&jobs[i].config, &jobs[i].access_unit).map_err(|e| e.to_string())?);
    }
    let output = decode(settings, stream, run.len()).await.map_err(|e| e.to_string())?;
    let mut at = 0;
    let mut pictures = Vec::with_capacity(run.len());
    while at < output.len() {
        let (picture, used) = super::parse_ppm_prefix(&output[at..]).map_err(|e| e.to_string())?;
        if (picture.width, picture.height) != size {
            return Err(format!("a {}x{} picture in a run of {size:?}", picture.width, picture.height));
        }
        pictures.push(output.slice(at..at + used));
        at += used;
    }
    if pictures.len() != run.len() {
        return Err(format!("{} pictures for {} keyframes", pictures.len(), run.len()));
    }
    Ok(pictures)
}

async fn decode_one(settings: &SnapshotSettings, job: &Job) -> Result<Bytes, JobError> {
    super::picture_size(&job.config)?;
    let stream = super::annex_b(&job.config, &job.access_unit)?;
    decode(settings, stream, 1).await
}

/// Runs the decoder: the stream in on stdin, `frames` PPM pictures out, one after the other.
async fn decode(settings: &SnapshotSettings, stream: Vec<u8>, frames: usize) -> Result<Bytes, JobError> {
    let max_output = MAX_PICTURE_BYTES * frames;
    let mut child = tokio::process::Command::new(&settings.ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-threads", "1", "-f", "h264", "-i", "pipe:0"])
        .args(["-frames:v", &frames.to_string(), "-fps_mode", "passthrough"])
        .args(["-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"])
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
        let mut stdout = stdout.take(max_output as u64 + 1);
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
    if picture.len() > max_output {
        return Err(SnapshotError::BadPicture("the decoder's picture is larger than allowed").into());
    }
    Ok(Bytes::from(picture))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{VideoTag, file};

    /// The keyframes of a fixture, as the pool receives them.
    fn keyframes(fixture: &str, channel: &str) -> Vec<Job> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/media").join(fixture);
        let tags = file::parse(std::fs::read(path).unwrap().into()).unwrap();
        let feed = Arc::new(FeedShared {
            key: ChannelKey::new("live", channel).unwrap(),
            dest: ChannelKey::new("snaps", channel).unwrap(),
            topic: NotifyTopic { name: "t".into(), url: "http://127.0.0.1:9/".into(), sign_key: None },
            session: "p1".into(),
            failure_reported: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        });
        let mut config = None;
        let mut jobs = Vec::new();
        for tag in tags.iter().filter(|t| t.kind == file::TagKind::Video) {
            match crate::flv::parse_video(&tag.body).unwrap() {
                VideoTag::Config(c) => config = Some(c),
                VideoTag::Frame { keyframe: true, nalus, .. } => jobs.push(Job {
                    feed: Arc::clone(&feed),
                    config: Arc::new(config.clone().unwrap()),
                    access_unit: nalus,
                    media_ms: i64::from(tag.timestamp_ms),
                }),
                _ => {}
            }
        }
        jobs
    }

    /// An ffmpeg that notes each run in `log`, so a test can tell how many runs a batch took.
    fn counting_ffmpeg(dir: &std::path::Path) -> (SnapshotSettings, std::path::PathBuf) {
        let log = dir.join("runs");
        let script = dir.join("ffmpeg");
        std::fs::write(&script, format!("#!/bin/sh\necho run >> {}\nexec ffmpeg \"$@\"\n", log.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        (SnapshotSettings { ffmpeg: script, ..SnapshotSettings::default() }, log)
    }

    fn runs(log: &std::path::Path) -> usize {
        std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
    }

    #[tokio::test]
    #[ignore = "needs ffmpeg"]
    async fn keyframes_of_two_streams_share_decoder_runs_and_each_gets_its_own_picture() {
        // Two encodings of one size (320x180), with different SPS/PPS, B-frames and not, interleaved as
        // two channels' keyframes would be.
        let (a, b) = (keyframes("av_bframes.flv", "a"), keyframes("av_no_bframes.flv", "b"));
        assert!(a.len() >= 5 && b.len() >= 9);
        let mut jobs = Vec::new();
        let (mut a, mut b) = (a.into_iter(), b.into_iter());
        loop {
            match (a.next(), b.next()) {
                (None, None) => break,
                (x, y) => jobs.extend(x.into_iter().chain(y)),
            }
        }
        assert!(jobs.iter().all(|j| crate::snapshot::batchable(&j.config, &j.access_unit)), "x264 keyframes");
        let dir = tempfile::tempdir().unwrap();
        let (settings, log) = counting_ffmpeg(dir.path());
        let batched = decode_all(&settings, &jobs).await;
        assert_eq!(runs(&log), jobs.len().div_ceil(MAX_BATCH), "{} keyframes in runs of {MAX_BATCH}", jobs.len());
        let plain = SnapshotSettings::default();
        for (i, (job, picture)) in jobs.iter().zip(&batched).enumerate() {
            let alone = decode_one(&plain, job).await.unwrap();
            let picture = picture.as_ref().unwrap();
            assert!(picture == &alone, "keyframe {i} ({}) got another picture in the shared run", job.feed.key);
        }
    }

    #[tokio::test]
    #[ignore = "needs ffmpeg"]
    async fn a_run_that_does_not_give_one_picture_per_keyframe_is_decoded_one_by_one() {
        let mut jobs = keyframes("av_bframes.flv", "a");
        // A keyframe that claims one IDR picture and carries garbage: the run loses or conceals it.
        let mut bad = vec![0u8, 0, 0, 40, 0x65, 0x88];
        bad.extend((0..38u8).map(|i| i.wrapping_mul(37)));
        jobs[2].access_unit = Bytes::from(bad);
        let dir = tempfile::tempdir().unwrap();
        let (settings, log) = counting_ffmpeg(dir.path());
        let pictures = decode_all(&settings, &jobs).await;
        let plain = SnapshotSettings::default();
        for (i, (job, picture)) in jobs.iter().zip(&pictures).enumerate() {
            if i == 2 {
                continue;
            }
            assert!(picture.as_ref().unwrap() == &decode_one(&plain, job).await.unwrap(), "keyframe {i}");
        }
        // Either the run was trusted (each keyframe one picture, in order) or every one was redone alone.
        assert!(runs(&log) == 1 || runs(&log) == 1 + jobs.len(), "{} runs", runs(&log));
    }
}
