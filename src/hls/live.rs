//! The live recorder: what one publish's segments become once they leave the segmenter. Sans-I/O: it
//! takes the segmenter's [`Output`]s (and what the writer reports back about uploads) and returns
//! [`Effect`]s for the storage writer to carry out **in order**.
//!
//! It owns the bookkeeping that must be right for players and for VOD:
//! - sequence numbers: a segment's `<seq>.ts` name, continuing across re-publishes and restarts (the
//!   highest seq in the segment index or in the stored playlist, plus one);
//! - the playlist window (FragCount), EXT-X-DISCONTINUITY and EXT-X-DISCONTINUITY-SEQUENCE;
//! - gaps: a segment dropped before storage (queue full) or failed in storage is left out whole, and the
//!   next listed segment is marked discontinuous, since players must not treat the gap as continuous;
//! - the order of side effects for one segment: object complete, then its index row, then the playlist
//!   that names it, then its recording event.

use std::collections::VecDeque;
use std::time::SystemTime;

use bytes::Bytes;

use super::{Output, Playlist, PlaylistSegment, Segment};

/// Where a channel's live recording continues from.
#[derive(Debug, Clone)]
pub struct ChannelState {
    pub playlist: Playlist,
    pub next_seq: u64,
    /// The first sequence number this publish has not reserved (`meta::reserve_seqs`): a segment that
    /// would need it is not stored until the reservation is extended. `u64::MAX` for tools that write
    /// one channel alone.
    pub seq_limit: u64,
    /// The playlist object this publish writes (a publish may name another with playlistName).
    pub playlist_name: String,
}

impl ChannelState {
    /// Continues after the highest sequence number anything knows of: the segment index (the source of
    /// truth) or the stored playlist (which may name a segment whose index row a crash lost).
    pub fn resume(playlist: Playlist, index_max_seq: Option<u64>, playlist_name: String) -> Self {
        let next_seq = index_max_seq.max(playlist.last_seq()).map_or(0, |s| s + 1);
        ChannelState { playlist, next_seq, seq_limit: u64::MAX, playlist_name }
    }
}

/// One segment-index row, as the recorder knows it (the writer adds the object key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub seq: u64,
    pub start: SystemTime,
    pub duration_ms: u64,
    pub discontinuity: bool,
}

/// What happened to the recording, for callbacks and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordEvent {
    /// Segment `seq` is stored, indexed and listed.
    Stored { seq: u64, segment: Segment },
    /// Storage failed: an upload could not be started, written or completed.
    Failed { seq: u64, message: String },
    /// Segments of this publish that never reached storage (dropped before the queue, or cut short).
    Lost { count: u64, why: LossReason },
    /// The publish ended and every segment of it has been dealt with.
    Over,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The storage queue was full, so ingest dropped the segment being produced.
    QueueFull,
    /// A later segment started, or the publish ended, before the segment was closed.
    Unfinished,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start the upload of `<seq>.ts`. On failure, tell [`Recorder::upload_failed`].
    Begin {
        seq: u64,
    },
    /// Append bytes to the upload of `seq`. On failure, tell [`Recorder::upload_failed`].
    Append {
        seq: u64,
        data: Bytes,
    },
    /// Complete the upload of `seq`, then tell [`Recorder::completed`] how it went.
    Complete {
        seq: u64,
    },
    /// Abandon the upload of `seq` (it is never listed).
    Abort {
        seq: u64,
    },
    /// Record a complete segment in the segment index, before any playlist names it.
    Index(IndexRow),
    /// Replace the live playlist object with this text.
    Playlist(Bytes),
    Event(RecordEvent),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecorderCounters {
    pub stored: u64,
    pub lost: u64,
    pub store_errors: u64,
}

#[derive(Debug)]
struct Open {
    index: u64,
    seq: u64,
    /// Its upload failed: its remaining bytes are dropped, and it is aborted instead of completed.
    failed: bool,
}

/// The recorder of one publish. Feed it every output of the storage queue in order.
#[derive(Debug)]
pub struct Recorder {
    state: ChannelState,
    gap: bool,
    open: Option<Open>,
    /// Segment indices count from 0 in every publish; a jump means segments were dropped before the queue.
    next_index: u64,
    /// Closed segments waiting for [`Recorder::completed`], oldest first.
    completing: VecDeque<(u64, Segment)>,
    counters: RecorderCounters,
}

impl Recorder {
    pub fn new(state: ChannelState) -> Self {
        // A publish that follows earlier segments starts with a discontinuity (new encoder timeline).
        let gap = !state.playlist.is_empty();
        Recorder {
            state,
            gap,
            open: None,
            next_index: 0,
            completing: VecDeque::new(),
            counters: RecorderCounters::default(),
        }
    }

    pub fn state(&self) -> &ChannelState {
        &self.state
    }

    pub fn into_state(self) -> ChannelState {
        self.state
    }

    pub fn counters(&self) -> RecorderCounters {
        self.counters
    }

    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    pub fn seq_limit(&self) -> u64 {
        self.state.seq_limit
    }

    /// The reservation now ends at `end` (never moves back).
    pub fn extend_seq_limit(&mut self, end: u64) {
        self.state.seq_limit = self.state.seq_limit.max(end);
    }

    pub fn playlist_name(&self) -> &str {
        &self.state.playlist_name
    }

    /// The next output of the storage queue.
    pub fn on_output(&mut self, output: Output, out: &mut Vec<Effect>) {
        match output {
            Output::Chunk { index, data } => {
                if self.open.as_ref().is_some_and(|o| o.index != index) {
                    self.abandon(LossReason::Unfinished, out);
                }
                if self.open.is_none() {
                    self.note_skipped(index, out);
                    let seq = self.state.next_seq;
                    if seq >= self.state.seq_limit {
                        // No number is ours to give it (the reservation could not be extended): the
                        // segment is dropped whole rather than risk a name another node may use.
                        self.open = Some(Open { index, seq, failed: true });
                        self.counters.store_errors += 1;
                        self.counters.lost += 1;
                        let message = format!("no sequence number reserved for this segment (limit {seq})");
                        out.push(Effect::Event(RecordEvent::Failed { seq, message }));
                        return;
                    }
                    self.state.next_seq += 1;
                    self.open = Some(Open { index, seq, failed: false });
                    out.push(Effect::Begin { seq });
                }
                if let Some(open) = self.open.as_ref().filter(|o| !o.failed) {
                    out.push(Effect::Append { seq: open.seq, data });
                }
            }
            Output::Closed(segment) => {
                if self.open.as_ref().is_some_and(|o| o.index != segment.index) {
                    self.abandon(LossReason::Unfinished, out);
                }
                match self.open.take() {
                    None => {
                        // Not one byte of it was queued.
                        self.note_skipped(segment.index, out);
                        self.next_index = segment.index + 1;
                        self.lose(1, LossReason::QueueFull, out);
                    }
                    Some(open) if open.failed => self.gap = true,
                    Some(open) => {
                        self.completing.push_back((open.seq, segment));
                        out.push(Effect::Complete { seq: open.seq });
                    }
                }
            }
        }
    }

    /// An upload effect (`Begin`, `Append`) for `seq` failed: the rest of that segment is dropped.
    pub fn upload_failed(&mut self, seq: u64, message: String, out: &mut Vec<Effect>) {
        self.counters.store_errors += 1;
        if let Some(open) = self.open.as_mut().filter(|o| o.seq == seq && !o.failed) {
            open.failed = true;
            self.counters.lost += 1;
            out.push(Effect::Abort { seq });
            out.push(Effect::Event(RecordEvent::Failed { seq, message }));
        }
    }

    /// The outcome of a `Complete { seq }`.
    pub fn completed(&mut self, seq: u64, result: Result<(), String>, out: &mut Vec<Effect>) {
        let Some(at) = self.completing.iter().position(|(s, _)| *s == seq) else { return };
        let Some((seq, segment)) = self.completing.remove(at) else { return };
        if let Err(message) = result {
            self.counters.store_errors += 1;
            self.counters.lost += 1;
            self.gap = true;
            out.push(Effect::Event(RecordEvent::Failed { seq, message }));
            return;
        }
        self.counters.stored += 1;
        let discontinuity = segment.discontinuity || std::mem::take(&mut self.gap);
        let duration_90k = segment.duration.ticks();
        out.push(Effect::Index(IndexRow {
            seq,
            start: segment.started_at,
            duration_ms: (duration_90k.max(0) as u64).div_ceil(90),
            discontinuity,
        }));
        self.state.playlist.push(PlaylistSegment { seq, duration_90k, discontinuity, started_at: segment.started_at });
        out.push(Effect::Playlist(Bytes::from(self.state.playlist.render())));
        out.push(Effect::Event(RecordEvent::Stored { seq, segment }));
    }

    /// The queue closed: the publish is over. A segment still open is abandoned.
    pub fn end(&mut self, out: &mut Vec<Effect>) {
        if self.open.is_some() {
            self.abandon(LossReason::Unfinished, out);
        }
        out.push(Effect::Event(RecordEvent::Over));
    }

    fn note_skipped(&mut self, index: u64, out: &mut Vec<Effect>) {
        if index > self.next_index {
            self.lose(index - self.next_index, LossReason::QueueFull, out);
        }
        self.next_index = self.next_index.max(index + 1);
    }

    fn abandon(&mut self, why: LossReason, out: &mut Vec<Effect>) {
        if let Some(open) = self.open.take() {
            if open.failed {
                self.gap = true;
            } else {
                out.push(Effect::Abort { seq: open.seq });
                self.lose(1, why, out);
            }
        }
    }

    fn lose(&mut self, count: u64, why: LossReason, out: &mut Vec<Effect>) {
        self.counters.lost += count;
        self.gap = true;
        out.push(Effect::Event(RecordEvent::Lost { count, why }));
    }
}

#[cfg(test)]
mod tests;
