//! The storage side of one publish: receives `hls::Output`s from the bounded queue, streams each segment
//! into a multipart upload, and only after the segment is complete puts the playlist that names it.
//!
//! The playlist lives here, not in the segmenter, so it can only ever list segments that were stored.
//! A segment whose bytes were dropped (queue full) or failed to store is aborted and left out; the next
//! listed segment carries EXT-X-DISCONTINUITY, since players must not treat the gap as continuous.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::sync::{OwnedMutexGuard, mpsc};
use tracing::{debug, info, warn};

use super::{ChannelKey, Store};
use crate::hls::{Output, Playlist, PlaylistSegment, Segment, segment_file_name};
use crate::meta::{Meta, SegmentRecord};

/// A channel's persistent state in this process. It is owned by one sink at a time (through a tokio
/// mutex held for the sink's life), so a re-publish waits for the previous publish to finish flushing.
#[derive(Debug)]
pub struct ChannelState {
    pub playlist: Playlist,
    pub next_seq: u64,
    /// The playlist object this state was loaded from (a publish may name another with playlistName).
    pub playlist_name: String,
}

/// Counters shared with whoever wants to report on the sink (logs, stats, tests).
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub segments_stored: AtomicU64,
    pub segments_lost: AtomicU64,
    pub playlist_writes: AtomicU64,
    pub store_errors: AtomicU64,
}

/// One stored segment, as reported to the caller.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub segment: Segment,
}

struct OpenUpload {
    index: u64,
    seq: u64,
    writer: Option<WriteMultipart>,
}

pub struct Sink {
    pub store: Store,
    pub key: ChannelKey,
    pub playlist_name: String,
    pub counters: Arc<SinkCounters>,
    /// Told about every stored segment (after its playlist was written); used by stats and tests.
    pub on_stored: Option<mpsc::UnboundedSender<Stored>>,
    /// The segment index (PostVodPlaylist reads it); None in tools that only write media.
    pub meta: Option<Meta>,
    /// Recording callbacks for this publish (file created, recording failed); None when not wanted.
    pub callbacks: Option<SinkCallbacks>,
}

/// What the sink needs to send recording callbacks.
pub struct SinkCallbacks {
    pub notifier: crate::notify::Notifier,
    pub event: crate::notify::PublishEvent,
    pub stats: crate::channels::SharedStats,
    /// `http://host:port` of our HTTP listener, for download URLs.
    pub base_url: String,
}

impl Sink {
    pub async fn run(self, mut state: OwnedMutexGuard<Option<ChannelState>>, mut rx: mpsc::Receiver<Output>) {
        let Some(state) = state.as_mut() else {
            warn!(channel = %self.key, "no channel state; nothing will be stored");
            while rx.recv().await.is_some() {}
            return;
        };
        // A publish that follows earlier segments starts with a discontinuity (new encoder timeline).
        let mut gap = !state.playlist.is_empty();
        let mut open: Option<OpenUpload> = None;
        // Segments dropped whole before the queue never reach us: a jump in indices is how we see them.
        let mut next_index = 0u64;
        while let Some(output) = rx.recv().await {
            match output {
                Output::Chunk { index, data } => {
                    if open.as_ref().is_some_and(|o| o.index != index) {
                        self.abandon(open.take(), "a later segment started before it was closed").await;
                        gap = true;
                    }
                    let upload = match &mut open {
                        Some(upload) => upload,
                        None => {
                            if index != next_index {
                                let skipped = index.saturating_sub(next_index);
                                self.counters.segments_lost.fetch_add(skipped, Ordering::Relaxed);
                                warn!(channel = %self.key, skipped, "segments lost before storage (queue full); left out of the playlist");
                                gap = true;
                            }
                            next_index = index + 1;
                            let seq = state.next_seq;
                            state.next_seq += 1;
                            open.insert(OpenUpload { index, seq, writer: self.begin(seq).await })
                        }
                    };
                    if let Some(writer) = &mut upload.writer {
                        writer.put(data);
                        if let Err(e) = writer.wait_for_capacity(4).await {
                            self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                            warn!(channel = %self.key, seq = upload.seq, error = %e, "segment upload failed");
                            self.record_error(&e.to_string()).await;
                            let failed = upload.writer.take();
                            self.abort(failed).await;
                        }
                    }
                }
                Output::Closed(segment) => {
                    if open.as_ref().is_some_and(|o| o.index != segment.index) {
                        self.abandon(open.take(), "its end never arrived").await;
                        gap = true;
                    }
                    let Some(upload) = open.take() else {
                        self.counters.segments_lost.fetch_add(1, Ordering::Relaxed);
                        warn!(channel = %self.key, index = segment.index, "segment lost before storage (queue full); left out of the playlist");
                        gap = true;
                        continue;
                    };
                    let seq = upload.seq;
                    let Some(writer) = upload.writer else {
                        self.counters.segments_lost.fetch_add(1, Ordering::Relaxed);
                        gap = true;
                        continue;
                    };
                    if let Err(e) = writer.finish().await {
                        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                        self.counters.segments_lost.fetch_add(1, Ordering::Relaxed);
                        warn!(channel = %self.key, seq, error = %e, "segment could not be completed; left out of the playlist");
                        self.record_error(&e.to_string()).await;
                        gap = true;
                        continue;
                    }
                    self.counters.segments_stored.fetch_add(1, Ordering::Relaxed);
                    let discontinuity = segment.discontinuity || std::mem::take(&mut gap);
                    self.index(seq, &segment, discontinuity).await;
                    state.playlist.push(PlaylistSegment {
                        seq,
                        duration_90k: segment.duration.ticks(),
                        discontinuity,
                        started_at: segment.started_at,
                    });
                    self.write_playlist(&state.playlist).await;
                    self.file_created(seq, &segment).await;
                    if segment.forced {
                        info!(channel = %self.key, seq, duration_s = segment.duration.as_secs_f64(), "segment force-cut: no keyframe within the limit");
                    } else {
                        debug!(channel = %self.key, seq, duration_s = segment.duration.as_secs_f64(), bytes = segment.bytes, "segment stored");
                    }
                    if let Some(tx) = &self.on_stored {
                        let _ = tx.send(Stored { seq, segment });
                    }
                }
            }
        }
        if open.is_some() {
            self.abandon(open, "the publish ended before the segment was closed").await;
        }
        if let Some(cb) = &self.callbacks {
            cb.notifier.record_over(&cb.event).await;
        }
    }

    /// Records a stored segment in the index before the playlist names it, so VOD never misses a segment
    /// a live viewer saw. A failure is logged: the segment is still stored and listed.
    async fn index(&self, seq: u64, segment: &Segment, discontinuity: bool) {
        let (Some(meta), Ok(path)) = (&self.meta, self.key.object(&segment_file_name(seq))) else {
            return;
        };
        let record = SegmentRecord {
            seq,
            start: segment.started_at,
            duration_ms: (segment.duration.ticks().max(0) as u64).div_ceil(90),
            object_key: path.to_string(),
            discontinuity,
        };
        if let Err(e) = meta.add_segment(self.key.bucket(), self.key.channel(), &record).await {
            warn!(channel = %self.key, seq, error = %e, "segment index write failed; VOD playlists will miss this segment");
        }
    }

    async fn file_created(&self, seq: u64, segment: &Segment) {
        let (Some(cb), Ok(path)) = (&self.callbacks, self.key.object(&segment_file_name(seq))) else {
            return;
        };
        let video = cb.stats.lock().unwrap_or_else(|p| p.into_inner()).video.clone();
        let file = crate::notify::StoredFile {
            object_key: path.to_string(),
            url: format!("{}/{}", cb.base_url, path),
            start: segment.started_at,
            duration: std::time::Duration::from_micros(
                (segment.duration.ticks().max(0) as u64).saturating_mul(100) / 9,
            ),
            bytes: segment.bytes,
            width: video.as_ref().map_or(0, |v| v.width),
            height: video.as_ref().map_or(0, |v| v.height),
        };
        cb.notifier.file_created(&cb.event, &file).await;
    }

    async fn record_error(&self, message: &str) {
        if let Some(cb) = &self.callbacks {
            cb.notifier.record_failed(&cb.event, "record_error", "StorageWriteFailed", message).await;
        }
    }

    async fn begin(&self, seq: u64) -> Option<WriteMultipart> {
        let path = match self.key.object(&segment_file_name(seq)) {
            Ok(p) => p,
            Err(e) => {
                warn!(channel = %self.key, error = %e, "bad segment key");
                return None;
            }
        };
        match self.store.objects().put_multipart(&path).await {
            Ok(upload) => Some(WriteMultipart::new_with_chunk_size(upload, self.store.part_size())),
            Err(e) => {
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                warn!(channel = %self.key, seq, error = %e, "cannot start segment upload");
                self.record_error(&e.to_string()).await;
                None
            }
        }
    }

    async fn abandon(&self, open: Option<OpenUpload>, why: &str) {
        if let Some(open) = open {
            self.counters.segments_lost.fetch_add(1, Ordering::Relaxed);
            warn!(channel = %self.key, seq = open.seq, "segment dropped: {why}");
            self.abort(open.writer).await;
        }
    }

    async fn abort(&self, writer: Option<WriteMultipart>) {
        if let Some(writer) = writer {
            if let Err(e) = writer.abort().await {
                debug!(channel = %self.key, error = %e, "aborting an upload failed");
            }
        }
    }

    async fn write_playlist(&self, playlist: &Playlist) {
        let Ok(path) = self.key.object(&self.playlist_name) else {
            return;
        };
        match self.store.put(&path, playlist.render().into()).await {
            Ok(()) => {
                self.counters.playlist_writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                warn!(channel = %self.key, error = %e, "playlist write failed; the next segment retries it");
            }
        }
    }
}
