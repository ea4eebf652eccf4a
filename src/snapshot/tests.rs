use super::*;
use bytes::Bytes;

fn captured(gop_ms: i64, jitter_ms: &[i64], seconds: i64, interval: u32) -> Vec<i64> {
    let mut s = Schedule::new(interval);
    let mut taken = Vec::new();
    let mut t = 0;
    let mut i = 0;
    while t <= seconds * 1000 {
        let at = t + jitter_ms.get(i % jitter_ms.len().max(1)).copied().unwrap_or(0);
        if s.due(Timestamp90k::from_millis(at)) {
            taken.push(at);
        }
        t += gop_ms;
        i += 1;
    }
    taken
}

#[test]
fn a_one_second_gop_at_interval_one_gives_one_per_keyframe_even_with_jitter() {
    assert_eq!(captured(1000, &[0], 11, 1).len(), 12);
    // Keyframes 40 ms early or late (a 25 fps encoder rounding its GOP) are still each taken.
    assert_eq!(captured(1000, &[0, -40, 40, -40], 11, 1).len(), 12);
}

#[test]
fn a_four_second_gop_at_interval_one_gives_one_per_keyframe_not_four() {
    assert_eq!(captured(4000, &[0], 12, 1), vec![0, 4000, 8000, 12000]);
}

#[test]
fn a_short_gop_at_a_long_interval_takes_one_keyframe_per_interval() {
    // 1 s GOP, Interval 5, 30 s: keyframes 0, 5, 10, ... 30.
    assert_eq!(captured(1000, &[0], 30, 5), vec![0, 5000, 10000, 15000, 20000, 25000, 30000]);
    // Half-second GOP, Interval 1.
    assert_eq!(captured(500, &[0], 4, 1), vec![0, 1000, 2000, 3000, 4000]);
}

#[test]
fn a_timeline_that_goes_back_starts_the_schedule_over() {
    let mut s = Schedule::new(10);
    assert!(s.due(Timestamp90k::from_secs(100)));
    assert!(!s.due(Timestamp90k::from_secs(105)));
    assert!(s.due(Timestamp90k::from_secs(3)), "encoder restarted at 3 s");
    assert!(!s.due(Timestamp90k::from_secs(8)));
    assert!(s.due(Timestamp90k::from_secs(13)));
}

fn config(length_size: u8) -> AvcConfig {
    AvcConfig {
        profile: 100,
        level: 31,
        nal_length_size: length_size,
        sps: vec![Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f])],
        pps: vec![Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])],
        width: Some(1280),
        height: Some(720),
    }
}

#[test]
fn the_keyframe_becomes_parameter_sets_then_its_nal_units_behind_start_codes() {
    // AVCC: an SEI (6) and an IDR slice (5), 4-byte lengths.
    let au = [0, 0, 0, 2, 0x06, 0x05, 0, 0, 0, 3, 0x65, 0x88, 0x84];
    let out = annex_b(&config(4), &au).unwrap();
    let want: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0, 0, 0, 1, 0x68, 0xee, 0x3c, 0x80, 0, 0, 0, 1, 0x06, 0x05, 0, 0, 0, 1,
        0x65, 0x88, 0x84,
    ];
    assert_eq!(out, want);
    // Two-byte lengths too.
    assert!(annex_b(&config(2), &[0, 3, 0x65, 0x88, 0x84]).unwrap().ends_with(&[0, 0, 0, 1, 0x65, 0x88, 0x84]));
}

#[test]
fn a_keyframe_that_lies_about_lengths_or_has_no_slice_is_refused() {
    assert!(matches!(annex_b(&config(4), &[0, 0, 0, 9, 0x65, 0x88]), Err(SnapshotError::BadKeyframe(_))));
    assert!(matches!(annex_b(&config(4), &[0, 0, 0, 2, 0x06, 0x05]), Err(SnapshotError::BadKeyframe(_))));
    assert!(matches!(annex_b(&config(4), &[]), Err(SnapshotError::BadKeyframe(_))));
}

#[test]
fn picture_size_comes_from_the_sps_and_is_bounded() {
    assert_eq!(picture_size(&config(4)), Ok((1280, 720)));
    let huge = AvcConfig { width: Some(8192), height: Some(4320), ..config(4) };
    assert_eq!(picture_size(&huge), Err(SnapshotError::TooLarge { width: 8192, height: 4320 }));
    let unknown = AvcConfig { width: None, ..config(4) };
    assert_eq!(picture_size(&unknown), Err(SnapshotError::NoPictureSize));
}

fn ppm(header: &str, samples: usize) -> Vec<u8> {
    let mut v = header.as_bytes().to_vec();
    v.extend((0..samples).map(|i| (i % 251) as u8));
    v
}

#[test]
fn a_binary_ppm_is_read_with_comments_and_exact_sample_counts() {
    let data = ppm("P6\n4 2\n255\n", 24);
    let p = parse_ppm(&data).unwrap();
    assert_eq!((p.width, p.height, p.rgb.len()), (4, 2, 24));
    assert_eq!(p.rgb[0..3], [0, 1, 2]);
    let data = ppm("P6 # made by hand\n4\t2 255 ", 30);
    assert_eq!(parse_ppm(&data).unwrap().rgb.len(), 24, "extra bytes after the picture are not part of it");
}

#[test]
fn a_broken_ppm_is_an_error_not_a_panic() {
    for (data, why) in [
        (ppm("P5\n4 2\n255\n", 8), "no P6 magic"),
        (ppm("P6\n4 2\n255\n", 23), "fewer samples"),
        (ppm("P6\n4 2\n65535\n", 48), "maxval"),
        (ppm("P6\n0 2\n255\n", 0), "zero"),
        (ppm("P6\n99999 99999\n255\n", 10), "too large"),
        (ppm("P6\n4 x\n255\n", 24), "not a number"),
        (ppm("P6\n4 2", 0), "ends early"),
        (ppm("P6\n4 2\n255", 0), "whitespace"),
        (ppm("P6\n12345678901 2\n255\n", 0), "not a number"),
    ] {
        match parse_ppm(&data) {
            Err(SnapshotError::BadPicture(m)) => assert!(m.contains(why), "{why}: got {m}"),
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn the_jpeg_has_the_pictures_size_in_its_frame_header() {
    let data = ppm("P6\n64 48\n255\n", 64 * 48 * 3);
    let jpeg = encode_jpeg(&parse_ppm(&data).unwrap(), 85).unwrap();
    assert_eq!(jpeg[..2], [0xff, 0xd8], "SOI");
    assert_eq!(jpeg[jpeg.len() - 2..], [0xff, 0xd9], "EOI");
    // SOF0: FF C0, length, precision, height, width.
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline frame header");
    let (h, w) =
        (u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]), u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]));
    assert_eq!((w, h), (64, 48));
}

#[test]
fn object_names_and_messages_carry_what_users_look_up() {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_767_225_600_123);
    let (own, latest) = object_keys("cam1", at);
    assert_eq!((own.as_str(), latest.as_str()), ("cam1/1767225600123.jpg", "cam1/latest.jpg"));
    let m = message(&Taken {
        source_bucket: "live",
        dest_bucket: "snaps",
        channel: "cam1",
        object: &own,
        size: 5000,
        width: 1280,
        height: 720,
        media_ms: 4000,
        at,
    });
    assert_eq!(m["bucket"], "snaps");
    assert_eq!(m["object"], "cam1/1767225600123.jpg");
    assert_eq!(m["latest_object"], "cam1/latest.jpg");
    assert_eq!((m["width"].as_u64(), m["height"].as_u64(), m["size"].as_u64()), (Some(1280), Some(720), Some(5000)));
    assert_eq!(m["media_timestamp_ms"], 4000);
    assert_eq!(m["time"], "2026-01-01T00:00:00.123Z");
    let f = failure_message("live", "snaps", "cam1", "decoder said no", at);
    assert_eq!((f["status"].as_str(), f["message"].as_str()), (Some("failed"), Some("decoder said no")));
}

#[test]
fn only_an_idr_keyframe_with_exactly_one_picture_may_share_a_decoder_run() {
    let c = config(4);
    let au = |nals: &[&[u8]]| -> Vec<u8> {
        nals.iter().flat_map(|n| (n.len() as u32).to_be_bytes().into_iter().chain(n.iter().copied())).collect()
    };
    // SEI + one IDR slice starting at macroblock 0 (0x88: top bit set).
    assert!(batchable(&c, &au(&[&[0x06, 0x05], &[0x65, 0x88, 0x84]])));
    // Two slices of one picture: the second starts elsewhere (top bit clear).
    assert!(batchable(&c, &au(&[&[0x65, 0x88, 0x84], &[0x65, 0x1a, 0x84]])));
    for (what, nals) in [
        ("two pictures", au(&[&[0x65, 0x88, 0x84], &[0x65, 0xb8, 0x84]])),
        ("no picture start", au(&[&[0x65, 0x1a, 0x84]])),
        ("a non-IDR I slice", au(&[&[0x41, 0x88, 0x84]])),
        ("an IDR and another slice kind", au(&[&[0x65, 0x88, 0x84], &[0x41, 0x9a]])),
        ("a NAL header alone", au(&[&[0x65]])),
        ("a length past the end", vec![0, 0, 0, 9, 0x65, 0x88]),
    ] {
        assert!(!batchable(&c, &nals), "{what}");
    }
}

#[test]
fn pictures_written_one_after_another_are_read_one_by_one() {
    let mut data = ppm("P6\n2 1\n255\n", 6);
    data.extend(ppm("P6\n1 1\n255\n", 3));
    let (first, used) = parse_ppm_prefix(&data).unwrap();
    assert_eq!((first.width, first.height, used), (2, 1, 11 + 6));
    let (second, rest) = parse_ppm_prefix(&data[used..]).unwrap();
    assert_eq!((second.width, rest), (1, 11 + 3));
    assert_eq!(used + rest, data.len());
}
