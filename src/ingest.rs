//! Per-channel glue, synchronous: FLV tag bodies from RTMP -> `media::Frame`s -> `hls::Segmenter` ->
//! storage outputs. Keeps the codec configuration and the numbers `GetLiveChannelStat` and logs need.
//!
//! Not here: sockets, sessions, storage (the `rtmp` shell feeds us and forwards what we return).

mod retime;

use std::time::SystemTime;

use bytes::Bytes;

use retime::{DEFAULT_AUDIO_STEP, DEFAULT_VIDEO_STEP, Retimer};

use crate::flv::{self, AudioTag, FlvError, VideoTag};
use crate::hls::segmenter::{JUMP_FORWARD, Skip};
use crate::hls::{Output, Segmenter, SegmenterConfig};
use crate::media::{AacConfig, AvcConfig, Frame, RtmpClock, Timestamp90k, Track};
use crate::ts::MuxError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The stream carries something we cannot remux: the publish must end.
    #[error("unsupported stream: {0}")]
    Unsupported(FlvError),
    /// One tag was malformed: it is dropped, the stream goes on.
    #[error("malformed {track:?} tag dropped: {source}")]
    Malformed { track: Track, source: MuxError },
}

/// What has been seen on this publish, for stats and logs.
#[derive(Debug, Default, Clone)]
pub struct IngestStats {
    pub video: Option<AvcConfig>,
    pub audio: Option<AacConfig>,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub video_bytes: u64,
    pub audio_bytes: u64,
    pub malformed: u64,
    /// Frames left out: before the first keyframe, or of a track not yet in the segment's PMT.
    pub skipped: u64,
    pub segments: u64,
    pub forced_cuts: u64,
    /// Frames whose timestamp was repaired because the encoder's clock jumped about or stood still.
    pub retimed: u64,
    /// First and last DTS seen, for bitrates and frame rate.
    pub first_dts: Option<Timestamp90k>,
    pub last_dts: Option<Timestamp90k>,
    /// First and last video DTS: the frame rate must not count time when only audio flowed.
    pub video_dts: Option<(Timestamp90k, Timestamp90k)>,
}

impl IngestStats {
    pub fn media_seconds(&self) -> f64 {
        match (self.first_dts, self.last_dts) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub fn frame_rate(&self) -> Option<f64> {
        let secs = self.video_dts.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        (secs > 0.5 && self.video_frames > 1).then(|| (self.video_frames - 1) as f64 / secs)
    }
}

pub struct Ingest {
    segmenter: Segmenter,
    clock: RtmpClock,
    /// Video, audio.
    retimers: [Retimer; 2],
    /// Tracks whose retiming was reported to the shell (once per publish).
    retiming_reported: [bool; 2],
    /// While video is retimed: audio ticks and video frames since then. Audio frames have a known length,
    /// so they pace video whose own clock cannot be trusted.
    video_pace: Option<(i64, i64)>,
    stats: IngestStats,
    frag_duration: Timestamp90k,
    /// The DTS of the last keyframe, to measure the encoder's keyframe interval.
    last_keyframe: Option<Timestamp90k>,
    /// A keyframe interval longer than FragDuration, once per publish: `take_long_gop` hands it out.
    long_gop: Option<LongGop>,
    /// Keep the last keyframe for `take_keyframe` (the channel takes snapshots).
    tap_keyframes: bool,
    keyframe: Option<(Bytes, Timestamp90k)>,
}

/// The encoder's keyframe interval is longer than FragDuration: every segment is as long as the
/// interval, and the playlist lags by about three of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LongGop {
    Seen { gop_seconds: f64 },
    Reported,
}

impl Ingest {
    pub fn new(config: SegmenterConfig) -> Self {
        Ingest {
            frag_duration: config.frag_duration,
            segmenter: Segmenter::new(config),
            clock: RtmpClock::default(),
            retimers: [Retimer::learning(DEFAULT_VIDEO_STEP), Retimer::fixed(DEFAULT_AUDIO_STEP)],
            retiming_reported: [false; 2],
            video_pace: None,
            stats: IngestStats::default(),
            last_keyframe: None,
            long_gop: None,
            tap_keyframes: false,
            keyframe: None,
        }
    }

    /// From now on, [`Ingest::take_keyframe`] hands out each keyframe (snapshots).
    pub fn tap_keyframes(&mut self) {
        self.tap_keyframes = true;
    }

    /// The keyframe the last `video` call carried (its AVCC NAL units, a slice of the message) and its
    /// presentation time, once.
    pub fn take_keyframe(&mut self) -> Option<(Bytes, Timestamp90k)> {
        self.keyframe.take()
    }

    /// The stream's H.264 configuration, once its sequence header arrived.
    pub fn video_config(&self) -> Option<&AvcConfig> {
        self.stats.video.as_ref()
    }

    /// The keyframe interval (seconds) the first time it exceeded FragDuration; then None for the rest
    /// of the publish (the shell logs it once).
    pub fn take_long_gop(&mut self) -> Option<f64> {
        match self.long_gop {
            Some(LongGop::Seen { gop_seconds }) => {
                self.long_gop = Some(LongGop::Reported);
                Some(gop_seconds)
            }
            _ => None,
        }
    }

    /// A track whose timestamps started being repaired, once per track and publish (the shell logs it).
    pub fn take_retiming(&mut self) -> Option<Track> {
        let slot = (0..2).find(|&i| self.retimers[i].is_retiming() && !self.retiming_reported[i])?;
        self.retiming_reported[slot] = true;
        Some(if slot == 0 { Track::Video } else { Track::Audio })
    }

    fn timestamp(&mut self, track: Track, timestamp_ms: u32) -> Timestamp90k {
        let raw = self.clock.unwrap(timestamp_ms);
        let (mine, other) = match track {
            Track::Video => (0, 1),
            Track::Audio => (1, 0),
        };
        let before = (self.retimers[mine].last_out(), self.retimers[mine].repaired());
        let mut dts = self.retimers[mine].map(raw);
        // The two tracks stay on one timeline: a track that lands far from the other follows it, unless it
        // is the first of the two to jump (an encoder restart; the other follows it the same way).
        if let Some(theirs) = self.retimers[other].last_out() {
            let near = |a: Timestamp90k| (a - theirs).ticks().abs() <= JUMP_FORWARD.ticks();
            let first_to_jump = self.retimers[mine].passed_jump() && before.0.is_some_and(near);
            if !near(dts) && !first_to_jump {
                dts = self.retimers[mine].snap(raw, theirs);
            }
        }
        self.stats.retimed += self.retimers[mine].repaired() - before.1;
        match (track, &self.stats.audio) {
            (Track::Video, _) if self.retimers[0].is_retiming() => {
                let (audio_ticks, video_frames) = self.video_pace.get_or_insert((0, 0));
                *video_frames += 1;
                if *audio_ticks >= Timestamp90k::from_secs(1).ticks() {
                    self.retimers[0].set_step(retime::standard_step(*audio_ticks / *video_frames));
                }
            }
            (Track::Video, _) => self.video_pace = None,
            (Track::Audio, Some(aac)) => {
                if let Some((audio_ticks, _)) = &mut self.video_pace {
                    *audio_ticks += aac.frame_ticks();
                }
            }
            (Track::Audio, None) => {}
        }
        dts
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// One VIDEODATA message. `Err(Unsupported)` ends the publish; `Err(Malformed)` only drops the tag.
    pub fn video(
        &mut self,
        body: &Bytes,
        timestamp_ms: u32,
        now: SystemTime,
        out: &mut Vec<Output>,
    ) -> Result<(), IngestError> {
        let tag = match flv::parse_video(body) {
            Ok(tag) => tag,
            Err(e @ FlvError::UnsupportedVideoCodec(_)) => return Err(IngestError::Unsupported(e)),
            Err(e) => return Err(self.malformed(Track::Video, MuxError::Frame(e))),
        };
        match tag {
            VideoTag::Config(config) => {
                self.segmenter.set_video_config(config.clone());
                self.stats.video = Some(config);
                Ok(())
            }
            VideoTag::Frame { keyframe, composition_ms, nalus } => {
                let dts = self.timestamp(Track::Video, timestamp_ms);
                let pts = dts + Timestamp90k::from_millis(i64::from(composition_ms));
                self.stats.video_frames += 1;
                self.stats.video_bytes += body.len() as u64;
                let span = self.stats.video_dts.get_or_insert((dts, dts));
                span.1 = span.1.max(dts);
                if keyframe {
                    if let Some(last) = self.last_keyframe
                        && self.long_gop.is_none()
                        && dts - last > self.frag_duration
                    {
                        self.long_gop = Some(LongGop::Seen { gop_seconds: (dts - last).as_secs_f64() });
                    }
                    self.last_keyframe = Some(dts);
                }
                if keyframe && self.tap_keyframes {
                    self.keyframe = Some((nalus.clone(), pts));
                }
                let frame = Frame { track: Track::Video, dts, pts, keyframe, payload: nalus };
                self.push(frame, now, out)
            }
            VideoTag::EndOfSequence | VideoTag::Command => Ok(()),
        }
    }

    /// One AUDIODATA message.
    pub fn audio(
        &mut self,
        body: &Bytes,
        timestamp_ms: u32,
        now: SystemTime,
        out: &mut Vec<Output>,
    ) -> Result<(), IngestError> {
        let tag = match flv::parse_audio(body) {
            Ok(tag) => tag,
            Err(e @ FlvError::UnsupportedAudioCodec(_)) => return Err(IngestError::Unsupported(e)),
            Err(e @ FlvError::BadAacConfig(_)) if self.stats.audio.is_none() => {
                return Err(IngestError::Unsupported(e));
            }
            Err(e) => return Err(self.malformed(Track::Audio, MuxError::Frame(e))),
        };
        match tag {
            AudioTag::Config(config) => {
                self.retimers[slot(Track::Audio)].set_step(config.frame_ticks());
                self.segmenter.set_audio_config(config.clone());
                self.stats.audio = Some(config);
                Ok(())
            }
            AudioTag::Frame(raw) => {
                let dts = self.timestamp(Track::Audio, timestamp_ms);
                self.stats.audio_frames += 1;
                self.stats.audio_bytes += body.len() as u64;
                let frame = Frame { track: Track::Audio, dts, pts: dts, keyframe: true, payload: raw };
                self.push(frame, now, out)
            }
        }
    }

    fn push(&mut self, frame: Frame, now: SystemTime, out: &mut Vec<Output>) -> Result<(), IngestError> {
        self.stats.first_dts.get_or_insert(frame.dts);
        self.stats.last_dts = Some(self.stats.last_dts.map_or(frame.dts, |d| d.max(frame.dts)));
        let before = out.len();
        let result = self.segmenter.push(&frame, now, out);
        self.count_closed(&out[before..]);
        match result {
            Ok(None) => Ok(()),
            Ok(Some(Skip::WaitingForKeyframe | Skip::TrackNotInSegment)) => {
                self.stats.skipped += 1;
                Ok(())
            }
            Err(e) => Err(self.malformed(frame.track, e)),
        }
    }

    fn count_closed(&mut self, outputs: &[Output]) {
        for o in outputs {
            if let Output::Closed(s) = o {
                self.stats.segments += 1;
                self.stats.forced_cuts += u64::from(s.forced);
            }
        }
    }

    fn malformed(&mut self, track: Track, source: MuxError) -> IngestError {
        self.stats.malformed += 1;
        IngestError::Malformed { track, source }
    }

    /// End of publish: flushes the open segment.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        let before = out.len();
        self.segmenter.close(out);
        self.count_closed(&out[before..]);
    }
}

fn slot(track: Track) -> usize {
    match track {
        Track::Video => 0,
        Track::Audio => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::Segment;

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    fn avc_config_tag() -> Bytes {
        let sps = [0x67, 0x42, 0x00, 0x1e, 0xab];
        let mut b = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        b.extend_from_slice(&sps);
        b.extend_from_slice(&[1, 0, 2, 0x68, 0xce]);
        Bytes::from(b)
    }

    fn video_tag(key: bool, cts: i32) -> Bytes {
        let c = cts.to_be_bytes();
        let mut b =
            vec![if key { 0x17 } else { 0x27 }, 1, c[1], c[2], c[3], 0, 0, 0, 2, if key { 0x65 } else { 0x41 }, 0];
        b.truncate(11);
        Bytes::from(b)
    }

    #[test]
    fn a_tapped_ingest_hands_out_each_keyframe_once_as_a_slice_of_the_message() {
        let mut out = Vec::new();
        let mut plain = Ingest::new(SegmenterConfig::new(1));
        plain.video(&avc_config_tag(), 0, NOW, &mut out).unwrap();
        plain.video(&video_tag(true, 0), 0, NOW, &mut out).unwrap();
        assert!(plain.take_keyframe().is_none(), "untapped: nothing is kept");

        let mut ingest = Ingest::new(SegmenterConfig::new(1));
        ingest.tap_keyframes();
        ingest.video(&avc_config_tag(), 0, NOW, &mut out).unwrap();
        assert!(ingest.video_config().is_some_and(|c| c.nal_length_size == 4));
        let key = video_tag(true, 80);
        ingest.video(&key, 1000, NOW, &mut out).unwrap();
        let (au, pts) = ingest.take_keyframe().expect("the keyframe");
        assert_eq!(pts, Timestamp90k::from_millis(1080), "presentation time: DTS + composition offset");
        assert_eq!(au[..], key[5..], "the NAL units, without the FLV video header");
        assert_eq!(au.as_ptr(), key[5..].as_ptr(), "a slice of the message, not a copy");
        assert!(ingest.take_keyframe().is_none(), "once");
        ingest.video(&video_tag(false, 0), 1040, NOW, &mut out).unwrap();
        assert!(ingest.take_keyframe().is_none(), "not for other frames");
    }

    #[test]
    fn composition_time_makes_pts_and_unwraps_rtmp_time_across_2_pow_32() {
        let mut ingest = Ingest::new(SegmenterConfig::new(1));
        let mut out = Vec::new();
        ingest.video(&avc_config_tag(), 0, NOW, &mut out).unwrap();
        let start = u32::MAX - 1000;
        for i in 0..60u32 {
            ingest.video(&video_tag(i % 25 == 0, 80), start.wrapping_add(i * 40), NOW, &mut out).unwrap();
        }
        ingest.finish(&mut out);
        let stats = ingest.stats();
        assert_eq!(stats.video_frames, 60);
        assert!((stats.media_seconds() - 2.36).abs() < 1e-9, "{}", stats.media_seconds());
        let closed: Vec<_> =
            out.iter().filter_map(|o| if let Output::Closed(s) = o { Some(s) } else { None }).collect();
        assert_eq!(closed.len(), 3);
        assert!(closed.iter().all(|s| !s.discontinuity), "the 32-bit wrap is not a jump");
    }

    #[test]
    fn a_keyframe_interval_longer_than_frag_duration_is_reported_once() {
        let mut ingest = Ingest::new(SegmenterConfig::new(2));
        let mut out = Vec::new();
        ingest.video(&avc_config_tag(), 0, NOW, &mut out).unwrap();
        // Keyframes every 2 s (= FragDuration): nothing to say.
        for i in 0..150u32 {
            ingest.video(&video_tag(i % 50 == 0, 0), i * 40, NOW, &mut out).unwrap();
        }
        assert_eq!(ingest.take_long_gop(), None);
        // Then every 8.32 s (x264's default 250 frames at 30 fps is 8.3 s).
        for i in 150..600u32 {
            ingest.video(&video_tag((i - 150) % 208 == 0, 0), i * 40, NOW, &mut out).unwrap();
        }
        let gop = ingest.take_long_gop().expect("reported");
        assert!((gop - 8.32).abs() < 1e-9, "{gop}");
        assert_eq!(ingest.take_long_gop(), None, "once per publish");
    }

    /// 60 s of 25 fps video with a 1 s GOP and 44.1 kHz AAC, stamped by `stamp(track, media ms)`.
    fn broken_clock_run(mut stamp: impl FnMut(Track, u32) -> u32) -> (IngestStats, Vec<Segment>) {
        let mut ingest = Ingest::new(SegmenterConfig::new(2));
        let mut out = Vec::new();
        ingest.video(&avc_config_tag(), 0, NOW, &mut out).unwrap();
        ingest.audio(&Bytes::from_static(&[0xaf, 0, 0x12, 0x10]), 0, NOW, &mut out).unwrap();
        let aac = Bytes::from_static(&[0xaf, 1, 0x21, 0x10, 0x05]);
        let (mut audio_ms, mut reported) = (0.0f64, Vec::new());
        for i in 0..1500u32 {
            let t = stamp(Track::Video, i * 40);
            ingest.video(&video_tag(i % 25 == 0, 0), t, NOW, &mut out).unwrap();
            while audio_ms < f64::from(i * 40 + 40) {
                let t = stamp(Track::Audio, audio_ms as u32);
                ingest.audio(&aac, t, NOW, &mut out).unwrap();
                audio_ms += 1024.0 * 1000.0 / 44100.0;
            }
            reported.extend(ingest.take_retiming());
        }
        ingest.finish(&mut out);
        reported.sort_by_key(|t| *t == Track::Audio);
        assert_eq!(reported, [Track::Video, Track::Audio], "each track is reported once");
        let segments = out.into_iter().filter_map(|o| if let Output::Closed(s) = o { Some(s) } else { None });
        (ingest.stats().clone(), segments.collect())
    }

    /// Nearly every frame is kept, in 2 s segments but for `odd` of them (the first, cut by the first
    /// "jump"), and media time stays within a few seconds of real time.
    fn assert_kept_in_two_second_segments(stats: &IngestStats, segments: &[Segment], odd: usize) {
        let frames = stats.video_frames + stats.audio_frames;
        assert!(stats.skipped * 100 <= frames * 3, "{} of {frames} frames skipped", stats.skipped);
        assert!(stats.retimed * 2 > frames, "{} of {frames} frames retimed", stats.retimed);
        let off = segments[..segments.len() - 1]
            .iter()
            .filter(|s| !(1.9..=2.1).contains(&s.duration.as_secs_f64()) || s.forced)
            .count();
        assert!(off <= odd, "{off} segments are not 2 s long: {segments:?}");
        assert!(segments.iter().filter(|s| s.discontinuity).count() <= odd);
        let total: f64 = segments.iter().map(|s| s.duration.as_secs_f64()).sum();
        assert!((56.0..=61.0).contains(&total), "60 s of media became {total} s");
    }

    #[test]
    fn garbage_timestamps_are_repaired_instead_of_dropping_the_stream() {
        let mut x: u64 = 7;
        let (stats, segments) = broken_clock_run(|_, _| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 32) as u32
        });
        assert_kept_in_two_second_segments(&stats, &segments, 2);
    }

    #[test]
    fn constant_timestamps_are_cut_by_frame_time_instead_of_one_endless_segment() {
        let (stats, segments) = broken_clock_run(|_, _| 1234);
        assert_kept_in_two_second_segments(&stats, &segments, 1);
    }

    #[test]
    fn a_coarse_clock_keeps_real_time() {
        let (stats, segments) = broken_clock_run(|_, ms| ms / 1000 * 1000);
        let total: f64 = segments.iter().map(|s| s.duration.as_secs_f64()).sum();
        assert!((59.0..=61.0).contains(&total), "60 s of media became {total} s");
        assert_eq!(stats.skipped, 0);
        assert!(segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn an_unsupported_codec_is_fatal_and_a_malformed_tag_is_not() {
        let mut ingest = Ingest::new(SegmenterConfig::new(1));
        let mut out = Vec::new();
        let hevc_ish = Bytes::from_static(&[0x1c, 0, 0, 0, 0]);
        assert!(matches!(ingest.video(&hevc_ish, 0, NOW, &mut out), Err(IngestError::Unsupported(_))));
        let mp3 = Bytes::from_static(&[0x2f, 0xff]);
        assert!(matches!(ingest.audio(&mp3, 0, NOW, &mut out), Err(IngestError::Unsupported(_))));
        ingest.video(&avc_config_tag(), 0, NOW, &mut out).unwrap();
        let broken = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 99, 0x65]);
        assert!(matches!(ingest.video(&broken, 0, NOW, &mut out), Err(IngestError::Malformed { .. })));
        ingest.video(&video_tag(true, 0), 40, NOW, &mut out).unwrap();
        assert_eq!(ingest.stats().malformed, 1);
    }
}
