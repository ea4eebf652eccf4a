//! Frames in, TS bytes and segment boundaries out.
//!
//! The segmenter owns the `ts::Muxer` and the bytes of the open segment. It hands bytes out in chunks of
//! about `chunk_size` as they are produced (so a segment streams to storage instead of sitting in memory)
//! and reports each closed segment with its exact duration in 90 kHz ticks.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::media::{AacConfig, AvcConfig, Frame, Timestamp90k, Track};
use crate::ts::{MuxError, Muxer, PACKET_SIZE, Tracks};

/// Within one track, a DTS step backwards by more than this, or forwards by more than [`JUMP_FORWARD`],
/// is a timestamp jump (encoder restart, splice): the segment is closed and the next one is marked
/// discontinuous.
pub const JUMP_BACKWARD: Timestamp90k = Timestamp90k::from_secs(1);
pub const JUMP_FORWARD: Timestamp90k = Timestamp90k::from_secs(10);
const MIN_FORCED_CUT: Timestamp90k = Timestamp90k::from_secs(60);

/// A chunk's buffer: its size and an eighth more, so that the frame that crosses the size usually fits
/// (the muxer reserves room for a bigger one).
fn chunk_capacity(chunk_size: usize) -> usize {
    chunk_size + chunk_size / 8
}

/// Gives `buf` room for the TS of `frame` before the muxer writes it. Growing a buffer that is too small
/// was a `realloc` per video frame (a 720p P-frame at 2.7 Mbit/s is bigger than a live chunk), and glibc's
/// `realloc` copies the whole old block, not just the bytes in use: 5.6 % of the media workers' samples at
/// 200 streams. Here only the bytes in use (usually an audio frame or two) move. The estimate need not be
/// exact: when it is short, the muxer still grows the buffer itself.
fn make_room(buf: &mut Vec<u8>, capacity: usize, video: Option<&AvcConfig>, frame: &Frame) {
    // TS adds 4 bytes per 184 (2.2 %), the PES header and a short last packet.
    let mut need = frame.payload.len() + frame.payload.len() / 32 + 2 * PACKET_SIZE;
    if frame.keyframe
        && let Some(v) = video
    {
        need += v.sps.iter().chain(&v.pps).map(|s| s.len() + 4).sum::<usize>();
    }
    if buf.capacity() - buf.len() >= need {
        return;
    }
    let mut bigger = Vec::with_capacity(capacity.max(buf.len() + need));
    bigger.extend_from_slice(buf);
    *buf = bigger;
}

#[derive(Clone, Debug)]
pub struct SegmenterConfig {
    pub frag_duration: Timestamp90k,
    /// Bytes of TS buffered before they are handed out as a chunk.
    pub chunk_size: usize,
}

impl SegmenterConfig {
    pub fn new(frag_duration_secs: u32) -> Self {
        SegmenterConfig { frag_duration: Timestamp90k::from_secs(i64::from(frag_duration_secs)), chunk_size: 64 * 1024 }
    }

    /// `max(2 × FragDuration, 60 s)`: the longest a segment may grow while waiting for a keyframe.
    pub fn forced_cut(&self) -> Timestamp90k {
        Timestamp90k(self.frag_duration.ticks() * 2).max(MIN_FORCED_CUT)
    }
}

/// A closed segment. `index` counts segments of this publish from 0; storage maps it to a sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub index: u64,
    pub start: Timestamp90k,
    pub duration: Timestamp90k,
    pub started_at: SystemTime,
    /// First frame was a keyframe (or the stream is audio-only). False only after a forced cut.
    pub starts_with_keyframe: bool,
    /// This segment was closed by the forced-cut rule, not at a keyframe.
    pub forced: bool,
    /// Timestamps jumped between the previous segment and this one.
    pub discontinuity: bool,
    pub bytes: u64,
    /// Picture width and height from the stream's codec configuration (recording callbacks report it).
    pub picture: Option<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The next bytes of segment `index`, in order.
    Chunk { index: u64, data: Bytes },
    /// Segment `index` is complete: every chunk of it came before this.
    Closed(Segment),
}

/// Why a frame did not go into any segment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Video is present and no keyframe has opened a segment yet.
    WaitingForKeyframe,
    /// The track's configuration (SPS/PPS, AudioSpecificConfig) has not arrived, or arrived after the open
    /// segment's PMT was written.
    TrackNotInSegment,
}

struct Open {
    index: u64,
    start: Timestamp90k,
    started_at: SystemTime,
    starts_with_keyframe: bool,
    discontinuity: bool,
    tracks: Tracks,
    /// End of the last frame written, for the duration of the final segment.
    end: Timestamp90k,
    bytes: u64,
}

pub struct Segmenter {
    config: SegmenterConfig,
    muxer: Muxer,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    open: Option<Open>,
    next_index: u64,
    buf: Vec<u8>,
    last_dts: [Option<Timestamp90k>; 2],
    video_frame_ticks: i64,
    /// Wall-clock time of a media timestamp: the anchor is set by the first frame and after every jump.
    anchor: Option<(Timestamp90k, SystemTime)>,
    pending_discontinuity: bool,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        let buf = Vec::with_capacity(chunk_capacity(config.chunk_size));
        Segmenter {
            config,
            muxer: Muxer::new(Tracks::default()),
            video: None,
            audio: None,
            open: None,
            next_index: 0,
            buf,
            last_dts: [None, None],
            video_frame_ticks: 3000,
            anchor: None,
            pending_discontinuity: false,
        }
    }

    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    pub fn set_video_config(&mut self, config: AvcConfig) {
        self.video = Some(config);
    }

    pub fn set_audio_config(&mut self, config: AacConfig) {
        self.audio = Some(config);
    }

    fn frame_ticks(&self, track: Track) -> i64 {
        match (track, &self.audio) {
            (Track::Audio, Some(aac)) => aac.frame_ticks(),
            _ => self.video_frame_ticks,
        }
    }

    fn known_tracks(&self) -> Tracks {
        Tracks { video: self.video.is_some(), audio: self.audio.is_some() }
    }

    /// Feeds one frame. Output goes to `out`; `Ok(Some(skip))` says the frame was deliberately left out.
    pub fn push(&mut self, frame: &Frame, now: SystemTime, out: &mut Vec<Output>) -> Result<Option<Skip>, MuxError> {
        let slot = match frame.track {
            Track::Video => 0,
            Track::Audio => 1,
        };
        let known = self.known_tracks();
        let has_config = match frame.track {
            Track::Video => known.video,
            Track::Audio => known.audio,
        };
        if !has_config {
            return Ok(Some(Skip::TrackNotInSegment));
        }

        // Timestamp jump within this track: close what we have and start over on the new timeline.
        let mut dts = frame.dts;
        if let Some(last) = self.last_dts[slot] {
            let step = dts - last;
            if step.ticks() < -JUMP_BACKWARD.ticks() || step > JUMP_FORWARD {
                self.close(out);
                self.last_dts = [None, None];
                self.anchor = None;
                self.pending_discontinuity = true;
            } else if step.ticks() < 0 {
                // Small backwards steps (rounding, interleaving bugs) are clamped: DTS stays monotonic.
                dts = last;
            }
        }
        if frame.track == Track::Video
            && let Some(last) = self.last_dts[0]
        {
            let step = (dts - last).ticks();
            if step > 0 {
                self.video_frame_ticks = step;
            }
        }
        self.last_dts[slot] = Some(dts);
        let anchor = *self.anchor.get_or_insert((dts, now));

        // A cut point opens a new segment: keyframes when there is video, every frame when audio-only.
        let cut_point = frame.keyframe || (frame.track == Track::Audio && !known.video);
        let forced = self.config.forced_cut();
        let frag = self.config.frag_duration;
        match &self.open {
            None if cut_point && (frame.track == Track::Video || !known.video) => {
                self.start(dts, anchor, true, known)?
            }
            None => return Ok(Some(Skip::WaitingForKeyframe)),
            Some(open) => {
                let elapsed = dts - open.start;
                if cut_point
                    && (frame.track == Track::Video || !known.video)
                    && (elapsed >= frag || open.tracks != known)
                {
                    self.cut(dts, anchor, true, known, false, out)?;
                } else if elapsed + Timestamp90k(self.frame_ticks(frame.track)) > forced {
                    // Cut before the frame that would carry the segment past the bound, so no segment is
                    // longer than `forced_cut()`.
                    self.cut(dts, anchor, false, known, true, out)?;
                }
            }
        }

        let Some(open) = &mut self.open else {
            return Ok(Some(Skip::WaitingForKeyframe));
        };
        let in_segment = match frame.track {
            Track::Video => open.tracks.video,
            Track::Audio => open.tracks.audio,
        };
        if !in_segment {
            return Ok(Some(Skip::TrackNotInSegment));
        }
        make_room(&mut self.buf, chunk_capacity(self.config.chunk_size), self.video.as_ref(), frame);
        let pts = Timestamp90k(frame.pts.ticks().max(dts.ticks()));
        let before = self.buf.len();
        let (end, result) = match frame.track {
            Track::Video => {
                let config = self.video.as_ref().expect("checked above");
                let r = self.muxer.write_video(dts, pts, frame.keyframe, &frame.payload, config, &mut self.buf);
                (dts + Timestamp90k(self.video_frame_ticks), r)
            }
            Track::Audio => {
                let config = self.audio.as_ref().expect("checked above");
                let r = self.muxer.write_audio(dts, &frame.payload, config, &mut self.buf);
                (dts + Timestamp90k(config.frame_ticks()), r)
            }
        };
        if let Err(e) = result {
            // The muxer validates before writing a PES; drop anything partial so the segment stays whole.
            self.buf.truncate(before);
            return Err(e);
        }
        open.end = open.end.max(end);
        open.bytes += (self.buf.len() - before) as u64;
        if self.buf.len() >= self.config.chunk_size {
            let index = open.index;
            self.emit_chunk(index, out);
        }
        Ok(None)
    }

    fn emit_chunk(&mut self, index: u64, out: &mut Vec<Output>) {
        if self.buf.is_empty() {
            return;
        }
        // Made now, not lazily: a segment's tables are written into it before its first frame. A frame
        // that does not fit gets a bigger one (`make_room`).
        let next = Vec::with_capacity(chunk_capacity(self.config.chunk_size));
        let data = Bytes::from(std::mem::replace(&mut self.buf, next));
        out.push(Output::Chunk { index, data });
    }

    fn start(
        &mut self,
        start: Timestamp90k,
        anchor: (Timestamp90k, SystemTime),
        starts_with_keyframe: bool,
        tracks: Tracks,
    ) -> Result<(), MuxError> {
        let offset = (start - anchor.0).ticks().max(0) as u64;
        let started_at = anchor.1 + Duration::from_nanos(offset.saturating_mul(100_000) / 9);
        self.muxer.set_tracks(tracks);
        let before = self.buf.len();
        self.muxer.write_tables(&mut self.buf)?;
        self.open = Some(Open {
            index: self.next_index,
            start,
            started_at,
            starts_with_keyframe,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            tracks,
            end: start,
            bytes: (self.buf.len() - before) as u64,
        });
        self.next_index += 1;
        Ok(())
    }

    fn cut(
        &mut self,
        at: Timestamp90k,
        anchor: (Timestamp90k, SystemTime),
        starts_with_keyframe: bool,
        tracks: Tracks,
        forced: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), MuxError> {
        self.finish_open(Some(at), forced, out);
        self.start(at, anchor, starts_with_keyframe, tracks)
    }

    /// Closes the open segment at the end of its last frame (on unpublish, shutdown or a timestamp jump).
    pub fn close(&mut self, out: &mut Vec<Output>) {
        self.finish_open(None, false, out);
    }

    /// Hands out the open segment's last bytes and its `Closed`. It ends at `at` (the frame that starts the
    /// next segment) or, with no next segment, at the end of its own last frame.
    fn finish_open(&mut self, at: Option<Timestamp90k>, forced: bool, out: &mut Vec<Output>) {
        let Some(open) = self.open.take() else { return };
        self.emit_chunk(open.index, out);
        // Up to the next segment's start, unless a hole in the media (a step under the jump threshold)
        // would carry it past the force-cut bound, or the next one starts before this one did (a track
        // whose configuration came late, stamped a little behind the other): then it ends with its last
        // frame, which is within the bound and after its start.
        let duration = match at.map(|at| at - open.start) {
            Some(to_next) if to_next.ticks() >= 0 && to_next <= self.config.forced_cut() => to_next,
            _ => open.end - open.start,
        };
        out.push(Output::Closed(Segment {
            index: open.index,
            start: open.start,
            duration,
            started_at: open.started_at,
            starts_with_keyframe: open.starts_with_keyframe,
            forced,
            discontinuity: open.discontinuity,
            bytes: open.bytes,
            picture: self.video.as_ref().and_then(|v| Some((v.width?, v.height?))),
        }));
    }

    /// Bytes held for the open segment that have not been handed out yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests;
