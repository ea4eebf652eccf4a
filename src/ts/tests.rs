//! The TS muxer round-tripped through the independent mpeg2ts reader, and its property tests.

use bytes::Bytes;
use proptest::prelude::*;

use super::inspect::{annexb_nal_types, inspect};
use super::*;

fn avc_config() -> AvcConfig {
    AvcConfig {
        profile: 100,
        level: 31,
        nal_length_size: 4,
        sps: vec![Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f])],
        pps: vec![Bytes::from_static(&[0x68, 0xeb])],
        width: None,
        height: None,
    }
}

fn aac_config() -> AacConfig {
    AacConfig { object_type: 2, sample_rate_index: 4, sample_rate: 44100, channel_config: 2 }
}

/// AVCC access unit: one NAL of the given type and size.
fn avcc(nal_type: u8, size: usize) -> Vec<u8> {
    let mut v = (size as u32).to_be_bytes().to_vec();
    v.push(nal_type);
    v.extend((1..size).map(|i| (i % 251) as u8));
    v
}

fn with_tables(tracks: Tracks) -> (Muxer, Vec<u8>) {
    let mut mux = Muxer::new(tracks);
    let mut out = Vec::new();
    mux.write_tables(&mut out).unwrap();
    (mux, out)
}

const BOTH: Tracks = Tracks { video: true, audio: true };

#[test]
fn a_segment_starts_with_pat_then_pmt_announcing_both_streams() {
    let mut mux = Muxer::new(BOTH);
    let mut out = Vec::new();
    mux.write_tables(&mut out).unwrap();
    let r = inspect(&out).unwrap();
    assert_eq!(r.first_pids, vec![0, PMT_PID]);
    assert_eq!(r.pmt_streams, vec![(VIDEO_PID, 0x1b), (AUDIO_PID, 0x0f)]);
    assert_eq!(r.pcr_pid, Some(VIDEO_PID));
}

#[test]
fn a_keyframe_gets_aud_then_sps_pps_then_its_nal_units_in_annex_b() {
    let (mut mux, mut out) = with_tables(BOTH);
    let t = Timestamp90k(0);
    mux.write_video(t, t, true, &avcc(5, 1000), &avc_config(), &mut out).unwrap();
    mux.write_video(Timestamp90k(3600), Timestamp90k(3600), false, &avcc(1, 300), &avc_config(), &mut out).unwrap();
    let r = inspect(&out).unwrap();
    let video: Vec<_> = r.video().collect();
    assert_eq!(annexb_nal_types(&video[0].payload), vec![9, 7, 8, 5]);
    assert!(video[0].random_access);
    assert_eq!(annexb_nal_types(&video[1].payload), vec![9, 1]);
    assert!(!video[1].random_access);
    assert_eq!(video[0].payload.len(), 6 + 8 + 6 + 4 + 1000);
}

#[test]
fn a_keyframe_that_carries_its_own_sps_is_not_given_a_second_copy() {
    let (mut mux, mut out) = with_tables(BOTH);
    let mut au = avcc(7, 4);
    au.extend(avcc(8, 2));
    au.extend(avcc(5, 50));
    mux.write_video(Timestamp90k(0), Timestamp90k(0), true, &au, &avc_config(), &mut out).unwrap();
    let r = inspect(&out).unwrap();
    assert_eq!(annexb_nal_types(&r.pes[0].payload), vec![9, 7, 8, 5]);
}

#[test]
fn pts_and_dts_are_offset_and_dts_is_omitted_when_equal() {
    let (mut mux, mut out) = with_tables(BOTH);
    mux.write_video(Timestamp90k(900), Timestamp90k(4500), true, &avcc(5, 10), &avc_config(), &mut out).unwrap();
    mux.write_video(Timestamp90k(4500), Timestamp90k(4500), false, &avcc(1, 10), &avc_config(), &mut out).unwrap();
    mux.write_audio(Timestamp90k(1000), &[1, 2, 3], &aac_config(), &mut out).unwrap();
    let r = inspect(&out).unwrap();
    let off = TIMESTAMP_OFFSET.ticks() as u64;
    assert_eq!((r.pes[0].pts, r.pes[0].dts), (Some(4500 + off), Some(900 + off)));
    assert_eq!((r.pes[1].pts, r.pes[1].dts), (Some(4500 + off), None));
    assert_eq!((r.pes[2].pts, r.pes[2].dts), (Some(1000 + off), None));
}

#[test]
fn each_aac_frame_is_one_pes_with_one_adts_header_of_the_right_length() {
    let (mut mux, mut out) = with_tables(BOTH);
    let raw = vec![0x21u8; 400];
    mux.write_audio(Timestamp90k(0), &raw, &aac_config(), &mut out).unwrap();
    let r = inspect(&out).unwrap();
    let pes = &r.pes[0];
    assert_eq!(pes.pid, AUDIO_PID);
    assert_eq!(&pes.payload[..2], &[0xff, 0xf1]);
    assert_eq!(&pes.payload[7..], &raw[..]);
    let frame_len = ((usize::from(pes.payload[3]) & 3) << 11)
        | (usize::from(pes.payload[4]) << 3)
        | (usize::from(pes.payload[5]) >> 5);
    assert_eq!(frame_len, 407);
}

#[test]
fn timestamps_wrap_at_33_bits_instead_of_failing() {
    let (mut mux, mut out) = with_tables(BOTH);
    let near_wrap = Timestamp90k((1 << 33) - TIMESTAMP_OFFSET.ticks() - 10);
    let after = near_wrap + Timestamp90k(3600);
    mux.write_video(near_wrap, near_wrap, true, &avcc(5, 10), &avc_config(), &mut out).unwrap();
    mux.write_video(after, after, false, &avcc(1, 10), &avc_config(), &mut out).unwrap();
    let r = inspect(&out).unwrap();
    assert_eq!(r.pes[0].pts, Some((1 << 33) - 10));
    assert_eq!(r.pes[1].pts, Some(3590));
}

#[test]
fn pcr_never_goes_more_than_100ms_without_an_update_even_when_video_stalls() {
    let mut mux = Muxer::new(BOTH);
    let mut out = Vec::new();
    mux.write_tables(&mut out).unwrap();
    // 2 s of 25 fps video with audio, then 2 s of audio only (video stalled), then video again.
    let mut audio_t = 0;
    for f in 0..50 {
        let t = Timestamp90k(f * 3600);
        mux.write_video(t, t, f == 0, &avcc(if f == 0 { 5 } else { 1 }, 2000), &avc_config(), &mut out).unwrap();
        while audio_t < t.ticks() + 3600 {
            mux.write_audio(Timestamp90k(audio_t), &[0; 200], &aac_config(), &mut out).unwrap();
            audio_t += 2089;
        }
    }
    while audio_t < 4 * 90_000 {
        mux.write_audio(Timestamp90k(audio_t), &[0; 200], &aac_config(), &mut out).unwrap();
        audio_t += 2089;
    }
    let t = Timestamp90k(4 * 90_000);
    mux.write_video(t, t, true, &avcc(5, 2000), &avc_config(), &mut out).unwrap();
    let r = inspect(&out).unwrap();
    assert_eq!(r.continuity_errors, 0);
    assert!(r.pcrs.len() > 60);
    assert!(r.max_pcr_gap_90k() <= 9000, "max PCR gap {} ticks", r.max_pcr_gap_90k());
    assert!(r.pcrs.windows(2).all(|w| w[0] <= w[1]), "PCR went backwards");
}

#[test]
fn audio_only_streams_carry_pcr_on_the_audio_pid() {
    let mut mux = Muxer::new(Tracks { video: false, audio: true });
    let mut out = Vec::new();
    mux.write_tables(&mut out).unwrap();
    for i in 0..20 {
        mux.write_audio(Timestamp90k(i * 2089), &[0; 300], &aac_config(), &mut out).unwrap();
    }
    let r = inspect(&out).unwrap();
    assert_eq!(r.pcr_pid, Some(AUDIO_PID));
    assert_eq!(r.pmt_streams, vec![(AUDIO_PID, 0x0f)]);
    assert_eq!(r.pcrs.len(), 20);
}

#[test]
fn a_malformed_nal_length_is_an_error_and_writes_nothing() {
    let (mut mux, mut out) = with_tables(BOTH);
    let err = mux.write_video(Timestamp90k(0), Timestamp90k(0), true, &[0, 0, 1, 0, 0x65], &avc_config(), &mut out);
    assert!(matches!(err, Err(MuxError::Frame(FlvError::BadNalLength { .. }))));
    assert_eq!(out.len(), 2 * PACKET_SIZE, "only the tables were written");
}

proptest! {
    #[test]
    fn any_sequence_of_frames_splits_into_whole_packets_and_reassembles_exactly(
        sizes in proptest::collection::vec((1usize..6000, any::<bool>()), 1..40)
    ) {
        let mut mux = Muxer::new(BOTH);
        let mut out = Vec::new();
        mux.write_tables(&mut out).unwrap();
        let mut expected = Vec::new();
        for (i, (size, is_audio)) in sizes.iter().enumerate() {
            let t = Timestamp90k(i as i64 * 1800);
            if *is_audio {
                let raw: Vec<u8> = (0..(*size).min(4000)).map(|b| b as u8).collect();
                mux.write_audio(t, &raw, &aac_config(), &mut out).unwrap();
                expected.push((AUDIO_PID, raw.len() + 7));
            } else {
                mux.write_video(t, t, false, &avcc(1, *size), &avc_config(), &mut out).unwrap();
                expected.push((VIDEO_PID, 6 + 4 + size));
            }
        }
        prop_assert_eq!(out.len() % PACKET_SIZE, 0);
        let r = inspect(&out).unwrap();
        prop_assert_eq!(r.continuity_errors, 0);
        let got: Vec<_> = r.pes.iter().map(|p| (p.pid, p.payload.len())).collect();
        prop_assert_eq!(got, expected);
    }
}

/// The packets of `pid` in `ts`, and whether each says discontinuity_indicator (raw bytes, so the check
/// does not depend on our own writer's reading of the field).
fn discontinuity_flags(ts: &[u8], pid: u16) -> Vec<bool> {
    ts.chunks(PACKET_SIZE)
        .filter(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == pid)
        .map(|p| p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x80 != 0)
        .collect()
}

#[test]
fn the_first_packet_of_every_pid_of_a_new_muxer_says_discontinuity_and_no_later_one_does() {
    let (mut mux, mut out) = with_tables(BOTH);
    let t = Timestamp90k(0);
    mux.write_video(t, t, true, &avcc(5, 1000), &avc_config(), &mut out).unwrap();
    mux.write_audio(t, &[0x21; 300], &aac_config(), &mut out).unwrap();
    mux.write_tables(&mut out).unwrap(); // the next segment of the same publish
    mux.write_video(Timestamp90k(3600), Timestamp90k(3600), true, &avcc(5, 500), &avc_config(), &mut out).unwrap();
    mux.write_audio(Timestamp90k(3600), &[0x21; 300], &aac_config(), &mut out).unwrap();
    for pid in [0, PMT_PID, VIDEO_PID, AUDIO_PID] {
        let flags = discontinuity_flags(&out, pid);
        assert!(flags.len() >= 2, "pid {pid}: {flags:?}");
        assert!(flags[0] && !flags[1..].contains(&true), "pid {pid}: {flags:?}");
    }
    // Still a stream the independent reader takes whole.
    let r = inspect(&out).unwrap();
    assert_eq!(r.video().count(), 2);
}
