//! Segmenter invariants: cut rules, forced cuts, durations, chunking.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::media::{AacConfig, AvcConfig, Frame, Timestamp90k, Track};
use crate::ts::inspect::{annexb_nal_types, inspect};

fn avc() -> AvcConfig {
    AvcConfig {
        profile: 66,
        level: 30,
        nal_length_size: 4,
        sps: vec![Bytes::from_static(&[0x67, 0x42, 0, 0x1e])],
        pps: vec![Bytes::from_static(&[0x68, 0xce])],
        width: None,
        height: None,
    }
}

fn aac() -> AacConfig {
    AacConfig { object_type: 2, sample_rate_index: 3, sample_rate: 48000, channel_config: 2 }
}

fn video(dts_ms: i64, keyframe: bool) -> Frame {
    let nal_type = if keyframe { 5 } else { 1 };
    let mut p = 300u32.to_be_bytes().to_vec();
    p.push(nal_type);
    p.resize(304, 0xab);
    let t = Timestamp90k::from_millis(dts_ms);
    Frame { track: Track::Video, dts: t, pts: t, keyframe, payload: Bytes::from(p) }
}

fn audio(dts_ticks: i64) -> Frame {
    let t = Timestamp90k(dts_ticks);
    Frame { track: Track::Audio, dts: t, pts: t, keyframe: true, payload: Bytes::from_static(&[0x21; 100]) }
}

const T0: SystemTime = SystemTime::UNIX_EPOCH;

struct Run {
    outputs: Vec<Output>,
    skipped: usize,
}

impl Run {
    fn segments(&self) -> Vec<Segment> {
        self.outputs.iter().filter_map(|o| if let Output::Closed(s) = o { Some(s.clone()) } else { None }).collect()
    }

    fn bytes_of(&self, index: u64) -> Vec<u8> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Chunk { index: i, data } if *i == index => Some(&data[..]),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }
}

fn run(config: SegmenterConfig, frames: &[Frame], with_audio: bool, with_video: bool) -> Run {
    let mut s = Segmenter::new(config);
    if with_video {
        s.set_video_config(avc());
    }
    if with_audio {
        s.set_audio_config(aac());
    }
    let mut outputs = Vec::new();
    let mut skipped = 0;
    for f in frames {
        if s.push(f, T0 + Duration::from_millis((f.dts.ticks() / 90) as u64), &mut outputs).unwrap().is_some() {
            skipped += 1;
        }
    }
    s.close(&mut outputs);
    Run { outputs, skipped }
}

/// 25 fps video with a keyframe every `gop` frames, plus 48 kHz AAC interleaved in DTS order.
fn av_stream(seconds: i64, gop: i64, with_audio: bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut audio_t = 0i64;
    for i in 0..seconds * 25 {
        let t = i * 40;
        frames.push(video(t, i % gop == 0));
        while with_audio && audio_t < Timestamp90k::from_millis(t + 40).ticks() {
            frames.push(audio(audio_t));
            audio_t += 1920;
        }
    }
    frames
}

fn secs(t: Timestamp90k) -> f64 {
    t.as_secs_f64()
}

#[test]
fn segments_are_cut_at_the_first_keyframe_after_frag_duration() {
    // GOP of 2 s, FragDuration 5 s: keyframes at 0, 2, 4, 6 ... so cuts land at 6, 12, 18 ...
    let r = run(SegmenterConfig::new(5), &av_stream(20, 50, true), true, true);
    let durations: Vec<f64> = r.segments().iter().map(|s| secs(s.duration)).collect();
    assert_eq!(&durations[..3], &[6.0, 6.0, 6.0]);
    assert!(r.segments().iter().all(|s| s.starts_with_keyframe && !s.forced));
}

#[test]
fn every_segment_begins_with_pat_pmt_and_an_idr_with_parameter_sets() {
    let r = run(SegmenterConfig::new(2), &av_stream(9, 25, true), true, true);
    for seg in r.segments() {
        let report = inspect(&r.bytes_of(seg.index)).unwrap();
        assert_eq!(report.first_pids, vec![0, crate::ts::PMT_PID], "segment {}", seg.index);
        assert_eq!(report.continuity_errors, 0);
        let first_video = report.video().next().unwrap();
        assert!(first_video.random_access);
        assert_eq!(annexb_nal_types(&first_video.payload), vec![9, 7, 8, 5]);
        assert_eq!(seg.bytes as usize, report.packets * 188);
    }
}

#[test]
fn a_keyframe_before_frag_duration_does_not_cut() {
    let r = run(SegmenterConfig::new(5), &av_stream(12, 10, false), false, true);
    let segs = r.segments();
    assert_eq!(secs(segs[0].duration), 5.2); // keyframes every 0.4 s; first at or past 5 s is 5.2
}

#[test]
fn without_keyframes_a_segment_is_force_cut_at_sixty_seconds_and_the_next_is_marked() {
    // Only the first frame is a keyframe; FragDuration 2 => forced bound max(4, 60) = 60 s.
    let r = run(SegmenterConfig::new(2), &av_stream(130, 100_000, true), true, true);
    let segs = r.segments();
    assert_eq!(segs.len(), 3);
    assert!(segs[0].forced && segs[1].forced && !segs[2].forced);
    assert!(segs.iter().all(|s| s.duration <= Timestamp90k::from_secs(60)));
    assert!(secs(segs[0].duration) > 59.9);
    assert!(segs[0].starts_with_keyframe);
    assert!(!segs[1].starts_with_keyframe);
}

/// Found by the segmenter fuzz target: a hole of a few seconds in the media (under the jump threshold)
/// just before the force-cut bound made a 62 s segment.
#[test]
fn a_hole_in_the_media_does_not_carry_a_segment_past_the_forced_bound() {
    let mut frames: Vec<Frame> = (0..1400).map(|i| video(i * 40, i == 0)).collect();
    frames.extend((0..100).map(|i| video(64_000 + i * 40, false)));
    let r = run(SegmenterConfig::new(2), &frames, false, true);
    let segs = r.segments();
    assert!(segs.len() >= 2);
    for s in &segs {
        assert!(s.duration <= Timestamp90k::from_secs(60), "segment {} lasts {} s", s.index, secs(s.duration));
    }
    assert!(secs(segs[0].duration) > 55.9, "it still ends with its last frame");
}

/// Found by the flv_tags fuzz target: audio opened a segment, then the video configuration came and a
/// keyframe stamped 46 ms before that segment's start cut it: a negative duration.
#[test]
fn a_cut_stamped_before_the_open_segment_started_leaves_no_negative_duration() {
    let mut s = Segmenter::new(SegmenterConfig::new(1));
    let mut out = Vec::new();
    s.set_audio_config(aac());
    for t in [46, 69] {
        s.push(&audio(Timestamp90k::from_millis(t).ticks()), SystemTime::UNIX_EPOCH, &mut out).unwrap();
    }
    s.set_video_config(avc());
    s.push(&video(0, true), SystemTime::UNIX_EPOCH, &mut out).unwrap();
    s.close(&mut out);
    let closed: Vec<_> = out.iter().filter_map(|o| if let Output::Closed(s) = o { Some(s) } else { None }).collect();
    assert_eq!(closed.len(), 2);
    assert!(closed.iter().all(|s| s.duration.ticks() >= 0), "{closed:?}");
    assert!(closed[0].duration.ticks() > 0, "the audio segment lasts as long as its frames");
}

#[test]
fn the_forced_bound_is_twice_frag_duration_when_that_is_longer() {
    assert_eq!(SegmenterConfig::new(40).forced_cut(), Timestamp90k::from_secs(80));
    assert_eq!(SegmenterConfig::new(5).forced_cut(), Timestamp90k::from_secs(60));
}

#[test]
fn frames_before_the_first_keyframe_are_skipped() {
    let mut frames = vec![video(0, false), audio(0), video(40, false)];
    frames.extend(av_stream(3, 25, false).into_iter().map(|mut f| {
        f.dts = f.dts + Timestamp90k::from_millis(80);
        f.pts = f.dts;
        f
    }));
    let r = run(SegmenterConfig::new(1), &frames, true, true);
    assert_eq!(r.skipped, 3);
    assert_eq!(r.segments()[0].start, Timestamp90k::from_millis(80));
}

#[test]
fn audio_only_streams_cut_on_any_frame_after_frag_duration() {
    let frames: Vec<Frame> = (0..(48000 * 10 / 1024)).map(|i| audio(i * 1920)).collect();
    let r = run(SegmenterConfig::new(2), &frames, true, false);
    let segs = r.segments();
    assert!(segs.len() >= 5);
    for s in &segs[..segs.len() - 1] {
        let d = secs(s.duration);
        assert!((2.0..2.03).contains(&d), "duration {d}");
    }
    let report = inspect(&r.bytes_of(0)).unwrap();
    assert_eq!(report.pcr_pid, Some(crate::ts::AUDIO_PID));
}

#[test]
fn a_timestamp_jump_closes_the_segment_and_marks_the_next_discontinuous() {
    let mut frames = av_stream(4, 25, false);
    frames.extend(av_stream(4, 25, false).into_iter().map(|mut f| {
        f.dts = f.dts + Timestamp90k::from_secs(3600);
        f.pts = f.dts;
        f
    }));
    let r = run(SegmenterConfig::new(10), &frames, false, true);
    let segs = r.segments();
    assert_eq!(segs.len(), 2);
    assert!(!segs[0].discontinuity);
    assert!(segs[1].discontinuity);
    assert_eq!(secs(segs[0].duration), 4.0);
    assert_eq!(segs[1].start, Timestamp90k::from_secs(3600));
    assert_eq!(segs[1].started_at, T0 + Duration::from_secs(3600));
}

#[test]
fn rtmp_wrap_in_the_input_is_not_a_jump() {
    // The ingest unwraps RTMP time; here the unwrapped timeline simply crosses 2^32 ms.
    let base = (1i64 << 32) - 2000;
    let frames: Vec<Frame> = (0..150).map(|i| video(base + i * 40, i % 25 == 0)).collect();
    let r = run(SegmenterConfig::new(2), &frames, false, true);
    assert!(r.segments().iter().all(|s| !s.discontinuity));
    assert_eq!(r.segments().len(), 3);
}

#[test]
fn chunks_are_handed_out_as_the_segment_grows() {
    let config = SegmenterConfig { chunk_size: 4096, ..SegmenterConfig::new(5) };
    let r = run(config, &av_stream(4, 50, true), true, true);
    let chunks = r.outputs.iter().filter(|o| matches!(o, Output::Chunk { index: 0, .. })).count();
    assert!(chunks > 10, "{chunks} chunks");
    // Closed always comes after the last chunk of its segment.
    let closed_at = r.outputs.iter().position(|o| matches!(o, Output::Closed(s) if s.index == 0)).unwrap();
    assert!(!r.outputs[closed_at..].iter().any(|o| matches!(o, Output::Chunk { index: 0, .. })));
}

#[test]
fn an_audio_config_arriving_late_takes_effect_at_the_next_keyframe() {
    let mut s = Segmenter::new(SegmenterConfig::new(10));
    s.set_video_config(avc());
    let mut out = Vec::new();
    for f in av_stream(1, 10, false) {
        s.push(&f, T0, &mut out).unwrap();
    }
    s.set_audio_config(aac());
    assert_eq!(
        s.push(&audio(Timestamp90k::from_millis(1000).ticks()), T0, &mut out).unwrap(),
        Some(Skip::TrackNotInSegment)
    );
    s.push(&video(1000, true), T0, &mut out).unwrap();
    assert_eq!(s.push(&audio(Timestamp90k::from_millis(1010).ticks()), T0, &mut out).unwrap(), None);
    s.close(&mut out);
    let r = Run { outputs: out, skipped: 0 };
    assert_eq!(r.segments().len(), 2);
    assert_eq!(inspect(&r.bytes_of(1)).unwrap().pmt_streams.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn segmenter_invariants_hold_for_any_gop_pattern(
        frag in 1u32..8,
        keyframes in proptest::collection::vec(proptest::bool::weighted(0.03), 50..2500),
        with_audio in any::<bool>(),
    ) {
        let mut frames = Vec::new();
        let mut audio_t = 0;
        let mut first_key_seen = false;
        let mut written_end = 0i64;
        let mut first_start = None;
        for (i, k) in keyframes.iter().enumerate() {
            let key = *k || i == 0;
            let t = i as i64 * 40;
            frames.push(video(t, key));
            first_key_seen |= key;
            if first_key_seen {
                first_start.get_or_insert(t);
                written_end = written_end.max(Timestamp90k::from_millis(t + 40).ticks());
            }
            while with_audio && audio_t < Timestamp90k::from_millis(t + 40).ticks() {
                frames.push(audio(audio_t));
                written_end = written_end.max(audio_t + 1920);
                audio_t += 1920;
            }
        }
        let config = SegmenterConfig::new(frag);
        let forced = config.forced_cut();
        let r = run(config.clone(), &frames, with_audio, true);
        let segs = r.segments();
        prop_assert!(!segs.is_empty());
        for (i, seg) in segs.iter().enumerate() {
            prop_assert!(seg.duration <= forced, "segment {} is {:?}", i, seg.duration);
            let after_forced = i > 0 && segs[i - 1].forced;
            prop_assert_eq!(seg.starts_with_keyframe, !after_forced);
            let report = inspect(&r.bytes_of(seg.index)).unwrap();
            prop_assert_eq!(report.continuity_errors, 0);
            let first_video = report.video().next().unwrap();
            if !after_forced {
                prop_assert!(first_video.random_access, "segment {} does not start with a keyframe", i);
            }
            if i + 1 < segs.len() && !seg.forced {
                prop_assert!(seg.duration >= config.frag_duration);
            }
            if i + 1 < segs.len() {
                prop_assert_eq!(seg.start + seg.duration, segs[i + 1].start);
            }
        }
        let total: i64 = segs.iter().map(|s| s.duration.ticks()).sum();
        let first = Timestamp90k::from_millis(first_start.unwrap()).ticks();
        prop_assert_eq!(total, written_end - first);
    }
}

/// A frame bigger than the chunk buffer gets a buffer it fits in before it is muxed, with the bytes
/// already in use moved over, so the muxer never has to grow (realloc) the buffer itself.
#[test]
fn a_frame_bigger_than_the_chunk_buffer_is_muxed_without_growing_the_buffer() {
    let config = avc();
    for (keyframe, size) in [(false, 11_000), (true, 60_000), (false, 100)] {
        let mut p = (size as u32).to_be_bytes().to_vec();
        p.push(if keyframe { 0x65 } else { 0x41 });
        p.resize(4 + size, 0x5a);
        let frame = Frame {
            track: Track::Video,
            dts: Timestamp90k(0),
            pts: Timestamp90k(0),
            keyframe,
            payload: Bytes::from(p),
        };
        let mut buf = Vec::with_capacity(chunk_capacity(8192));
        buf.extend_from_slice(&[0x47; 376]);
        make_room(&mut buf, chunk_capacity(8192), Some(&config), &frame);
        assert_eq!(buf, [0x47; 376], "the bytes in use move with the buffer");
        let capacity = buf.capacity();
        let mut muxer = Muxer::new(Tracks { video: true, audio: false });
        muxer.write_video(frame.dts, frame.pts, keyframe, &frame.payload, &config, &mut buf).unwrap();
        assert!(buf.len() > 376 + size, "the frame was muxed");
        assert_eq!(buf.capacity(), capacity, "a {size}-byte frame made the muxer grow the buffer");
    }
}
