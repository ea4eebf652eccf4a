//! The storage writer of one publish: reads `hls::Output`s from the bounded queue, asks the sans-I/O
//! recorder (`hls::live`) what they mean, and carries out its effects in order: segment writes (into a
//! file on the local folder's writer threads, `live_files`; elsewhere one PUT below the store's part size,
//! multipart above it, through object_store's `BufWriter`), index rows and
//! callback events handed to the journal (never awaited), playlist puts.
//!
//! A new playlist is served from memory at once (`playlists`); its stored copy is written once the journal
//! has committed the index rows of the segments it lists, so a node killed at any moment never leaves a
//! stored playlist naming a segment the index does not know. Waiting for that is a `select` beside the
//! queue, never a wait that holds up the segments behind it; a newer playlist replaces one still waiting.
//!
//! All bookkeeping (sequence numbers, gaps, discontinuities, the window) is the recorder's; this only does
//! I/O and reports each upload's outcome back to it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Store;
use super::live_files::LiveFile;
use super::playlists::Owner;
use crate::budget::Holding;
use crate::channels::{Fence, Health};
use crate::hls::live::{Effect, RecordEvent, Recorder};
use crate::hls::{Output, Segment, segment_file_name};
use crate::journal::{Journal, Progress};
use crate::meta::SegmentRecord;
use crate::metrics::{SegmentOutcome, StorageOp, metrics};
use crate::names::ChannelKey;
use crate::notify::{CallbackEvent, PublishEvent, RecordFailure, StoredFile};

/// One stored segment, as reported to observers (tests, tools).
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub segment: Segment,
}

pub struct Sink {
    pub store: Store,
    pub key: ChannelKey,
    /// Told about every stored segment (after its playlist was written); used by tests and tools.
    pub on_stored: Option<mpsc::UnboundedSender<Stored>>,
    /// Where index rows and recording callbacks go; None in tools that only write media.
    pub journal: Option<Journal>,
    /// The publish the recording callbacks are about.
    pub event: PublishEvent,
    /// `http://host:port` of our HTTP listener, for download URLs.
    pub base_url: String,
    /// Whether this node still holds the channel: once it does not, nothing more is written (another
    /// node may be writing the same playlist).
    pub fence: Fence,
    /// The publish's segment counts (Stat, the end-of-publish line, ending a publish whose storage fails).
    pub health: Option<Arc<Health>>,
    /// Keeps the publish's reserved sequence numbers ahead of its segments; None in tools.
    pub seqs: Option<SeqReservation>,
    /// The publish's bytes in the node's media budget: the publish charges what it queues, the writer
    /// releases it once the upload holding it is done. None in tools.
    pub budget: Option<Arc<Holding>>,
}

/// A segment upload in progress, and the bytes handed to it.
struct Upload {
    seq: u64,
    writer: SegmentWriter,
    bytes: usize,
}

/// Where a segment's bytes go: a file of the local folder (written as they come), or an object_store
/// upload (one PUT below the part size, multipart above it).
enum SegmentWriter {
    File(LiveFile),
    Upload(BufWriter),
}

impl Upload {
    /// Bytes of this segment still in memory: queued for the file, or all of them for an upload (its
    /// parts are only known to be written when it completes).
    fn held(&self) -> usize {
        match &self.writer {
            SegmentWriter::File(file) => file.queued(),
            SegmentWriter::Upload(_) => self.bytes,
        }
    }
}

impl SegmentWriter {
    async fn put(&mut self, data: bytes::Bytes) -> Result<(), String> {
        match self {
            SegmentWriter::File(file) => file.write(data).await,
            SegmentWriter::Upload(writer) => writer.put(data).await.map_err(|e| e.to_string()),
        }
    }

    async fn complete(self) -> Result<(), String> {
        match self {
            SegmentWriter::File(file) => file.finish().await.map(drop),
            SegmentWriter::Upload(mut writer) => writer.shutdown().await.map_err(|e| e.to_string()),
        }
    }

    async fn abort(self) -> Result<(), String> {
        match self {
            // Dropped unfinished, the staged file is removed.
            SegmentWriter::File(file) => {
                drop(file);
                Ok(())
            }
            SegmentWriter::Upload(mut writer) => writer.abort().await.map_err(|e| e.to_string()),
        }
    }
}

/// Extends a publish's block of reserved sequence numbers (`meta::reserve_seqs`) in the background when
/// half of it is used, so the media path never waits on the database: a block lasts minutes, and a
/// database away for longer than a lease ends the publish anyway.
pub struct SeqReservation {
    meta: crate::meta::Meta,
    block: u64,
    /// The reservation's end as the last extension left it.
    extended: Arc<AtomicU64>,
    /// An extension is under way (or the reservation was lost: no more tries).
    asking: Arc<AtomicBool>,
}

impl SeqReservation {
    pub fn new(meta: crate::meta::Meta, block: u64) -> Self {
        SeqReservation { meta, block, extended: Arc::default(), asking: Arc::default() }
    }

    fn top_up(&self, key: &ChannelKey, recorder: &mut Recorder) {
        recorder.extend_seq_limit(self.extended.load(Ordering::Acquire));
        let end = recorder.seq_limit();
        if recorder.next_seq().saturating_add(self.block / 2) < end || self.asking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (meta, key, block) = (self.meta.clone(), key.clone(), self.block);
        let (extended, asking) = (Arc::clone(&self.extended), Arc::clone(&self.asking));
        meta.clone().spawn_off_media(async move {
            match meta.extend_seqs(key.bucket(), key.channel(), end, block).await {
                Ok(Some(new_end)) => {
                    extended.fetch_max(new_end, Ordering::AcqRel);
                    asking.store(false, Ordering::Release);
                }
                // Another node reserved after us: it holds the channel now. No more numbers here.
                Ok(None) => {
                    warn!(channel = %key, end, "the channel's sequence numbers moved on elsewhere; this publish stores no segment past {end}")
                }
                Err(e) => {
                    warn!(channel = %key, error = %e, "cannot extend the reserved sequence numbers; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    asking.store(false, Ordering::Release);
                }
            }
        });
    }
}

/// How long a publish's end waits for the index rows its last stored playlist lists before writing it
/// anyway: the database is down, and the rows wait in the journal's queue.
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The stored copy of the playlist, which waits for the index rows of the segments it lists.
struct StoredCopy {
    /// The journal's account of this publish's index rows; None without a journal (tools): no wait.
    progress: Option<Arc<Progress>>,
    /// Index rows handed to the journal so far.
    submitted: u64,
    /// The newest playlist not stored yet.
    pending: Option<Pending>,
}

struct Pending {
    text: bytes::Bytes,
    /// Index rows that must be settled first.
    rows: u64,
    /// Segments it lists that observers hear about once it is stored.
    stored: Vec<Stored>,
}

impl StoredCopy {
    /// What the pending playlist waits for: the journal's progress, and the rows to be settled.
    fn waiting(&self) -> Option<(&Progress, u64)> {
        Some((self.progress.as_deref()?, self.pending.as_ref()?.rows))
    }

    /// The pending playlist, once every index row it lists is settled.
    fn take_indexed(&mut self) -> Option<Pending> {
        match self.waiting() {
            Some((progress, rows)) if progress.settled() < rows => None,
            _ => self.pending.take(),
        }
    }
}

/// Why a write was not made.
const FENCED: &str = "this node no longer holds the channel's lease; another node may be recording it";

impl Sink {
    /// Runs until the queue closes (the publish ended and its last output was taken); returns the
    /// recorder, whose state the channel's next publish continues from.
    pub async fn run(self, mut recorder: Recorder, mut rx: mpsc::Receiver<Output>) -> Recorder {
        let owner = self.store.playlists().owner();
        let mut uploads: VecDeque<Upload> = VecDeque::new();
        let mut effects = Vec::with_capacity(8);
        let mut work = VecDeque::with_capacity(8);
        let progress = self.journal.as_ref().map(|_| Arc::new(Progress::default()));
        let mut copy = StoredCopy { progress, submitted: 0, pending: None };
        // Bytes taken from the queue and not yet given back to the budget.
        let mut owned = 0usize;
        loop {
            let next = match copy.waiting() {
                Some((progress, rows)) => tokio::select! {
                    output = rx.recv() => Some(output),
                    () = progress.until(rows) => None,
                },
                None => Some(rx.recv().await),
            };
            let Some(next) = next else {
                self.store_indexed_playlist(owner, &recorder, &mut copy).await;
                continue;
            };
            let ended = match next {
                Some(output) => {
                    if let Output::Chunk { data, .. } = &output {
                        owned += data.len();
                    }
                    if let Some(seqs) = &self.seqs {
                        seqs.top_up(&self.key, &mut recorder);
                    }
                    recorder.on_output(output, &mut effects);
                    false
                }
                None => {
                    recorder.end(&mut effects);
                    true
                }
            };
            work.extend(effects.drain(..));
            while let Some(effect) = work.pop_front() {
                self.apply(effect, owner, &mut recorder, &mut uploads, &mut copy, &mut effects).await;
                // What an effect's outcome causes happens before anything queued after that effect.
                for e in effects.drain(..).rev() {
                    work.push_front(e);
                }
            }
            // What no upload holds any more (completed, abandoned, or never appended) goes back.
            let held: usize = uploads.iter().map(Upload::held).sum();
            if let Some(budget) = &self.budget {
                budget.release(owned.saturating_sub(held));
            }
            owned = held;
            if ended {
                break;
            }
        }
        if let Some((progress, rows)) = copy.waiting()
            && tokio::time::timeout(END_WAIT, progress.until(rows)).await.is_err()
        {
            warn!(channel = %self.key, "the index rows of the last segments are not committed yet (database down?); storing the final playlist anyway");
        }
        if let Some(pending) = copy.pending.take() {
            self.store_playlist(owner, &recorder, pending).await;
        }
        // The stored playlist is the last one written: reads go to it from now on.
        if let Ok(path) = self.key.object(recorder.playlist_name()) {
            self.store.playlists().release(owner, &path);
        }
        let c = recorder.counters();
        debug!(channel = %self.key, stored = c.stored, lost = c.lost, store_errors = c.store_errors, "recording finished");
        recorder
    }

    async fn apply(
        &self,
        effect: Effect,
        owner: Owner,
        recorder: &mut Recorder,
        uploads: &mut VecDeque<Upload>,
        copy: &mut StoredCopy,
        out: &mut Vec<Effect>,
    ) {
        match effect {
            Effect::Begin { seq } if !self.fence.holds() => recorder.upload_failed(seq, FENCED.to_owned(), out),
            Effect::Begin { seq } => match self.begin(seq).await {
                Ok(writer) => uploads.push_back(Upload { seq, writer, bytes: 0 }),
                Err(e) => {
                    warn!(channel = %self.key, seq, error = %e, "cannot start segment upload");
                    recorder.upload_failed(seq, e, out);
                }
            },
            Effect::Append { seq, data } => {
                let Some(upload) = uploads.iter_mut().find(|u| u.seq == seq) else { return };
                upload.bytes += data.len();
                if let Err(e) = upload.writer.put(data).await {
                    warn!(channel = %self.key, seq, error = %e, "segment upload failed");
                    recorder.upload_failed(seq, e, out);
                }
            }
            Effect::Complete { seq } => {
                let result = match take(uploads, seq) {
                    Some(writer) if !self.fence.holds() => {
                        let _ = writer.abort().await;
                        Err(FENCED.to_owned())
                    }
                    Some(writer) => {
                        let started = std::time::Instant::now();
                        let done = writer.complete().await;
                        metrics().storage(StorageOp::Segment, started.elapsed());
                        done
                    }
                    None => Err("no upload in progress".to_owned()),
                };
                if let Err(e) = &result {
                    warn!(channel = %self.key, seq, error = %e, "segment could not be completed; left out of the playlist");
                }
                recorder.completed(seq, result, out);
            }
            Effect::Abort { seq } => {
                if let Some(writer) = take(uploads, seq)
                    && let Err(e) = writer.abort().await
                {
                    debug!(channel = %self.key, error = %e, "aborting an upload failed");
                }
            }
            Effect::Index(row) => {
                let (Some(journal), Ok(path)) = (&self.journal, self.key.object(&segment_file_name(row.seq))) else {
                    return;
                };
                let record = SegmentRecord {
                    seq: row.seq,
                    start: row.start,
                    duration_ms: row.duration_ms,
                    object_key: path.to_string(),
                    discontinuity: row.discontinuity,
                };
                journal.segment(self.key.bucket(), self.key.channel(), record, copy.progress.as_ref());
                copy.submitted += 1;
            }
            Effect::Playlist(_) if !self.fence.holds() => self.fenced_playlist(owner, recorder),
            Effect::Playlist(text) => {
                let Ok(path) = self.key.object(recorder.playlist_name()) else { return };
                // Players see it now; the stored copy follows once the rows it lists are indexed.
                self.store.playlists().hold(owner, &path, text.clone());
                let stored = copy.pending.take().map_or_else(Vec::new, |p| p.stored);
                copy.pending = Some(Pending { text, rows: copy.submitted, stored });
                self.store_indexed_playlist(owner, recorder, copy).await;
            }
            Effect::Event(event) => self.on_event(event, copy),
        }
    }

    /// A playlist this node may no longer write: not stored, and no longer served from memory.
    fn fenced_playlist(&self, owner: Owner, recorder: &Recorder) {
        warn!(channel = %self.key, "playlist not written: {FENCED}");
        if let Ok(path) = self.key.object(recorder.playlist_name()) {
            self.store.playlists().release(owner, &path);
        }
    }

    /// Writes the pending stored playlist if every index row it lists is settled.
    async fn store_indexed_playlist(&self, owner: Owner, recorder: &Recorder, copy: &mut StoredCopy) {
        if let Some(pending) = copy.take_indexed() {
            self.store_playlist(owner, recorder, pending).await;
        }
    }

    /// Writes a stored playlist, then tells observers about the segments it added.
    async fn store_playlist(&self, owner: Owner, recorder: &Recorder, pending: Pending) {
        let Ok(path) = self.key.object(recorder.playlist_name()) else { return };
        if !self.fence.holds() {
            self.fenced_playlist(owner, recorder);
        } else {
            let started = std::time::Instant::now();
            let put = match self.store.live() {
                Some(files) => files.put(&path, pending.text).await,
                None => self.store.put(&path, pending.text).await.map_err(|e| e.to_string()),
            };
            metrics().storage(StorageOp::Playlist, started.elapsed());
            if let Err(e) = put {
                warn!(channel = %self.key, error = %e, "playlist write failed; the next segment retries it");
            }
        }
        if let Some(tx) = &self.on_stored {
            for stored in pending.stored {
                let _ = tx.send(stored);
            }
        }
    }

    fn on_event(&self, event: RecordEvent, copy: &mut StoredCopy) {
        match event {
            RecordEvent::Stored { seq, segment } => {
                metrics().segment(SegmentOutcome::Stored);
                if let Some(h) = &self.health {
                    h.stored(
                        std::time::Duration::from_secs_f64(segment.duration.as_secs_f64().max(0.0)),
                        segment.forced,
                    );
                }
                if segment.forced {
                    metrics().segment(SegmentOutcome::Forced);
                    info!(channel = %self.key, seq, duration_s = segment.duration.as_secs_f64(), "segment force-cut: no keyframe within the limit");
                } else {
                    debug!(channel = %self.key, seq, duration_s = segment.duration.as_secs_f64(), bytes = segment.bytes, "segment stored");
                }
                if let (Some(journal), Ok(path)) = (&self.journal, self.key.object(&segment_file_name(seq))) {
                    let (width, height) = segment.picture.unwrap_or((0, 0));
                    let file = StoredFile {
                        object_key: path.to_string(),
                        url: format!("{}/{}", self.base_url, path),
                        start: segment.started_at,
                        duration: std::time::Duration::from_micros(
                            (segment.duration.ticks().max(0) as u64).saturating_mul(100) / 9,
                        ),
                        bytes: segment.bytes,
                        width,
                        height,
                    };
                    journal.callback(CallbackEvent::FileCreated { event: self.event.clone(), file });
                }
                match (&mut copy.pending, &self.on_stored) {
                    (Some(pending), Some(_)) => pending.stored.push(Stored { seq, segment }),
                    (None, Some(tx)) => {
                        let _ = tx.send(Stored { seq, segment });
                    }
                    (_, None) => {}
                }
            }
            RecordEvent::Failed { seq, message } => {
                metrics().segment(SegmentOutcome::Failed);
                if let Some(h) = &self.health {
                    h.failed(&message);
                }
                warn!(channel = %self.key, seq, error = %message, "segment not stored; left out of the playlist");
                if let Some(journal) = &self.journal {
                    journal.callback(CallbackEvent::RecordFailed {
                        event: self.event.clone(),
                        failure: RecordFailure::RecordError,
                        code: "StorageWriteFailed",
                        message,
                    });
                }
            }
            RecordEvent::Lost { count, why } => {
                warn!(channel = %self.key, count, ?why, "segments lost before storage; left out of the playlist");
            }
            RecordEvent::Over => {
                if let Some(journal) = &self.journal {
                    journal.callback(CallbackEvent::RecordOver { event: self.event.clone() });
                }
            }
        }
    }

    /// A segment smaller than the part size is one PUT when it completes; a larger one becomes a multipart
    /// upload whose parts go out while the segment is produced (no request is made before that).
    /// On the local folder, the segment is a file written as its bytes come.
    async fn begin(&self, seq: u64) -> Result<SegmentWriter, String> {
        let path = self.key.object(&segment_file_name(seq)).map_err(|e| e.to_string())?;
        if let Some(files) = self.store.live() {
            return files.create(&path).map(SegmentWriter::File);
        }
        Ok(SegmentWriter::Upload(
            BufWriter::with_capacity(Arc::clone(self.store.objects()), path, self.store.part_size())
                .with_max_concurrency(PARTS_IN_FLIGHT),
        ))
    }
}

/// Parts of one segment uploading at once.
const PARTS_IN_FLIGHT: usize = 4;

fn take(uploads: &mut VecDeque<Upload>, seq: u64) -> Option<SegmentWriter> {
    let at = uploads.iter().position(|u| u.seq == seq)?;
    uploads.remove(at).map(|u| u.writer)
}
