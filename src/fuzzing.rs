//! Fuzz harnesses, one per surface that reads outside bytes. The `fuzz/` crate's cargo-fuzz targets call
//! them, and `cargo test` runs them over the committed corpus (`fuzz/corpus/<target>/`), so every input the
//! fuzzer ever kept stays a regression test. Each harness checks invariants of what it produced, not only
//! that nothing panicked. Not part of the server's flow: nothing else uses this module.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

use crate::config::{AccessKey, Acl, Bucket, ChannelSettings};
use crate::hls::{Output, Playlist, Segment, SegmenterConfig};
use crate::ingest::Ingest;
use crate::media::{Frame, Timestamp90k, Track};
use crate::rtmp::guard::{Guard, Limits, Media, Piece};

/// The session's results and the media that went around it, in the order they came.
enum Either {
    Session(rml_rtmp::sessions::ServerSessionResult),
    Media(Media),
}

/// A fixed "now" for the verifiers: the captured SDK requests were signed around then.
const NOW_SECS: u64 = 1_736_150_400;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// What a publish produced, checked: every segment's bytes are whole TS packets with continuous
/// continuity counters, segments close in order, and only the last one may be longer than the force-cut.
#[derive(Default)]
struct Produced {
    open: Option<(u64, Vec<u8>)>,
    closed: Vec<Segment>,
}

impl Produced {
    fn take(&mut self, outputs: &mut Vec<Output>, forced_cut: Timestamp90k) {
        for output in outputs.drain(..) {
            match output {
                Output::Chunk { index, data } => match &mut self.open {
                    Some((open, bytes)) if *open == index => bytes.extend_from_slice(&data),
                    Some((open, _)) => panic!("chunk of segment {index} while {open} is open"),
                    None => self.open = Some((index, data.to_vec())),
                },
                Output::Closed(segment) => {
                    let bytes = match self.open.take() {
                        Some((open, bytes)) if open == segment.index => bytes,
                        Some((open, _)) => panic!("segment {} closed while {open} is open", segment.index),
                        None => Vec::new(),
                    };
                    check_segment(&segment, &bytes, forced_cut);
                    if let Some(last) = self.closed.last() {
                        assert!(segment.index > last.index, "segments close in order");
                    }
                    self.closed.push(segment);
                }
            }
        }
    }
}

fn check_segment(segment: &Segment, bytes: &[u8], forced_cut: Timestamp90k) {
    assert_eq!(bytes.len() as u64, segment.bytes, "segment {} byte count", segment.index);
    assert_eq!(bytes.len() % 188, 0, "segment {} is whole TS packets", segment.index);
    assert!(segment.duration.ticks() >= 0, "segment {} has a negative duration", segment.index);
    assert!(
        segment.duration <= forced_cut,
        "segment {} lasts {} s, past the force-cut of {} s",
        segment.index,
        segment.duration.as_secs_f64(),
        forced_cut.as_secs_f64()
    );
    if !bytes.is_empty() {
        let report = crate::ts::inspect::inspect(bytes).expect("our TS parses");
        assert_eq!(report.continuity_errors, 0, "segment {} continuity", segment.index);
        assert_eq!(report.packets * 188, bytes.len());
    }
}

/// The RTMP server side after the handshake: the guard, rml_rtmp's session, connect and publish
/// handling (publish policy included) and ingest, as `rtmp::Connection` wires them, minus sockets.
/// The first byte picks how the rest is split into reads: small ones for the first 2 KiB, so that
/// `connect`, `createStream` and `publish` arrive one after another as a client sends them (each waits
/// for the answer to the one before), larger ones for the media after them.
pub fn rtmp_session(data: &[u8]) {
    run_rtmp_session(data);
}

fn run_rtmp_session(data: &[u8]) -> Vec<Segment> {
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
    let Some((&split, input)) = data.split_first() else { return Vec::new() };
    let (first_reads, later_reads) = (1 + usize::from(split % 16), 64 * usize::from(split).max(1));
    let (commands, media) = input.split_at(input.len().min(2048));
    let reads = commands.chunks(first_reads).chain(media.chunks(later_reads));
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else { return Vec::new() };
    let mut guard = Guard::new(Limits { max_message_bytes: 4 << 20 });
    let bucket = Bucket { name: "live".into(), acl: Acl::PublicReadWrite, ..Bucket::default() };
    let keys = crate::auth::Keys::new(Vec::new());
    let policy = crate::publish::Policy { keys: &keys };
    let config = SegmenterConfig::new(2);
    let forced = config.forced_cut();
    let mut ingest: Option<Ingest> = None;
    let (mut outputs, mut produced) = (Vec::new(), Produced::default());
    let mut connected = false;
    let mut publish_stream = None;
    for read in reads {
        // The guard's media goes around rml_rtmp, as in `rtmp::feed_session`; the rest goes through it
        // unguarded by `catch_unwind`, so that a panic in it is a find.
        let (mut pending, mut media, mut failed) = (Vec::<ServerSessionResult>::new(), Vec::new(), false);
        let refused = guard
            .inspect(read, &mut |piece| match piece {
                Piece::Media(m) => media.push((pending.len(), m)),
                Piece::Session(bytes) if !failed => match session.handle_input(&bytes) {
                    Ok(results) => pending.extend(results),
                    Err(_) => failed = true,
                },
                Piece::Session(_) => {}
            })
            .is_err();
        if failed {
            break;
        }
        // Media in the order it came between the session's results.
        let mut queue: std::collections::VecDeque<Either> = std::collections::VecDeque::new();
        let mut media = media.into_iter().peekable();
        for (i, result) in pending.into_iter().enumerate() {
            while let Some((_, m)) = media.next_if(|(at, _)| *at <= i) {
                queue.push_back(Either::Media(m));
            }
            queue.push_back(Either::Session(result));
        }
        queue.extend(media.map(|(_, m)| Either::Media(m)));
        while let Some(item) = queue.pop_front() {
            let event = match item {
                Either::Media(m) => {
                    if let Some(ingest) = &mut ingest
                        && Some(m.stream_id) == publish_stream
                    {
                        let _ = if m.video {
                            ingest.video(&m.data, m.timestamp, now(), &mut outputs)
                        } else {
                            ingest.audio(&m.data, m.timestamp, now(), &mut outputs)
                        };
                    }
                    produced.take(&mut outputs, forced);
                    continue;
                }
                Either::Session(ServerSessionResult::RaisedEvent(event)) => event,
                Either::Session(_) => continue,
            };
            let more = match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. } if !connected => {
                    connected = true;
                    guard.connected();
                    session.accept_request(request_id)
                }
                ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. }
                    if connected && ingest.is_none() =>
                {
                    match policy.authorize(&bucket, &stream_key, now()) {
                        Ok(_) => {
                            ingest = Some(Ingest::new(config.clone()));
                            publish_stream = guard.publish_stream();
                            session.accept_request(request_id)
                        }
                        Err(_) => break,
                    }
                }
                _ => Ok(Vec::new()),
            };
            if let Ok(more) = more {
                queue.extend(more.into_iter().map(Either::Session));
            }
        }
        if refused {
            break;
        }
    }
    if let Some(ingest) = &mut ingest {
        ingest.finish(&mut outputs);
        produced.take(&mut outputs, forced);
    }
    produced.closed
}

/// FLV tag bodies, as RTMP audio and video messages carry them, into ingest: records of a kind byte
/// (even: video), a 32-bit timestamp, a 16-bit length and the body.
pub fn flv_tags(data: &[u8]) {
    run_flv_tags(data);
}

fn run_flv_tags(data: &[u8]) -> Vec<Segment> {
    let config = SegmenterConfig::new(1);
    let forced = config.forced_cut();
    let mut ingest = Ingest::new(config);
    let (mut outputs, mut produced) = (Vec::new(), Produced::default());
    let mut rest = data;
    while let [kind, t0, t1, t2, t3, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let body = Bytes::copy_from_slice(&tail[..len]);
        rest = &tail[len..];
        let timestamp = u32::from_be_bytes([*t0, *t1, *t2, *t3]);
        let _ = if kind % 2 == 0 {
            ingest.video(&body, timestamp, now(), &mut outputs)
        } else {
            ingest.audio(&body, timestamp, now(), &mut outputs)
        };
        produced.take(&mut outputs, forced);
    }
    ingest.finish(&mut outputs);
    produced.take(&mut outputs, forced);
    let stats = ingest.stats();
    assert!(stats.segments as usize == produced.closed.len(), "every closed segment is counted");
    produced.closed
}

/// Frame sequences straight into the segmenter and muxer (valid configurations, arbitrary timing, key
/// flags and payloads): 5 bytes a frame.
pub fn segmenter(data: &[u8]) {
    let config = SegmenterConfig::new(1);
    let forced = config.forced_cut();
    let mut segmenter = crate::hls::Segmenter::new(config);
    let sps = Bytes::from_static(&[0x67, 0x42, 0x00, 0x1e, 0xab]);
    segmenter.set_video_config(crate::media::AvcConfig {
        profile: 0x42,
        level: 0x1e,
        nal_length_size: 4,
        sps: vec![sps],
        pps: vec![Bytes::from_static(&[0x68, 0xce])],
        width: Some(320),
        height: Some(240),
    });
    segmenter.set_audio_config(crate::media::AacConfig {
        object_type: 2,
        sample_rate_index: 4,
        sample_rate: 44_100,
        channel_config: 2,
    });
    let (mut outputs, mut produced) = (Vec::new(), Produced::default());
    let mut dts = 0i64;
    for frame in data.chunks_exact(5) {
        let [flags, d0, d1, cts, size] = [frame[0], frame[1], frame[2], frame[3], frame[4]];
        let track = if flags & 1 == 0 { Track::Video } else { Track::Audio };
        dts += i64::from(i16::from_be_bytes([d0, d1])) * 90;
        let payload = match track {
            Track::Video => {
                let mut p = vec![0, 0, 0, size.max(1), if flags & 2 != 0 { 0x65 } else { 0x41 }];
                p.resize(4 + usize::from(size.max(1)), 0x5a);
                Bytes::from(p)
            }
            Track::Audio => Bytes::from(vec![0x21; usize::from(size)]),
        };
        let frame = Frame {
            track,
            dts: Timestamp90k(dts),
            pts: Timestamp90k(dts + i64::from(cts) * 90),
            keyframe: flags & 2 != 0,
            payload,
        };
        let _ = segmenter.push(&frame, now(), &mut outputs);
        produced.take(&mut outputs, forced);
    }
    segmenter.close(&mut outputs);
    produced.take(&mut outputs, forced);
}

/// A LiveChannelConfiguration body (PutLiveChannel): parsed and validated, never panicking, and a
/// record it accepts has settings within the spec's bounds.
pub fn oss_xml(data: &[u8]) {
    let defaults = ChannelSettings::default();
    if let Ok(record) = crate::api::oss::parse_configuration(data, "fuzz", &defaults, now()) {
        let s = &record.settings;
        assert!((1..=100).contains(&s.frag_duration) && (1..=100).contains(&s.frag_count), "{s:?}");
        assert!(s.playlist_name.ends_with(".m3u8"), "{s:?}");
    }
}

/// The Aliyun RPC parameters (query and form decoding, lists, booleans, times) and the Huawei JSON
/// bodies.
pub fn dialect_params(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::api::aliyun::fuzz_params(text);
    }
    crate::api::huawei::fuzz_bodies(data);
}

/// The three request verifiers on a request in the capture format (request line, headers, blank line,
/// body), with one known key: none may panic, and a forged request passes none.
pub fn signatures(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let Some(request_line) = lines.next() else { return };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.trim())) {
            headers.append(name, value);
        }
    }
    let keys = crate::auth::Keys::new(vec![AccessKey { id: "fuzz-key".into(), secret: "fuzz-secret".into() }]);
    let params = crate::auth::parse_query(query).unwrap_or_default();
    let (bucket, key) = path.trim_start_matches('/').split_once('/').unwrap_or((path.trim_start_matches('/'), ""));
    let oss = crate::auth::oss::Request { method, bucket: Some(bucket), key, query: &params, headers: &headers };
    let _ = crate::auth::oss::verify(&oss, &keys, now());
    let form = crate::auth::aliyun::parse_form(query).unwrap_or_default();
    let aliyun = crate::auth::aliyun::Request { method, params: &form, headers: &headers, body: body.as_bytes() };
    let _ = crate::auth::aliyun::verify(&aliyun, &keys, &crate::auth::aliyun::Nonces::default(), now());
    let huawei =
        crate::auth::huawei::Request { method, path, query: &params, headers: &headers, body: body.as_bytes() };
    let _ = crate::auth::huawei::verify(&huawei, &keys, now());
    let _ = crate::auth::oss::verify_rtmp(bucket, key, &params, &keys, now());
}

/// A stored live playlist read back at start: whatever it holds, what we restore renders a playlist
/// that restores to the same window.
pub fn playlist_restore(data: &[u8]) {
    let Ok(restored) = Playlist::restore(3, 2, data) else { return };
    let rendered = restored.render();
    let again = Playlist::restore(3, 2, &rendered).expect("a playlist we render parses");
    assert_eq!(again.media_sequence(), restored.media_sequence());
    assert_eq!(again.discontinuity_sequence(), restored.discontinuity_sequence());
    let seqs = |p: &Playlist| p.segments().map(|s| (s.seq, s.discontinuity)).collect::<Vec<_>>();
    assert_eq!(seqs(&again), seqs(&restored));
}

/// HTTP `Range` headers and query strings: a range we serve lies inside the object; percent-encoding
/// what we decode decodes back to it.
pub fn http_parsing(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let size = u64::from(size) * 1000;
    if let Some(spec) = crate::api::range::parse(text)
        && let Some(range) = spec.resolve(size)
    {
        assert!(range.start < range.end && range.end <= size, "{text:?} over {size} bytes gave {range:?}");
    }
    if let Some(params) = crate::auth::parse_query(text) {
        for (k, v) in params {
            for s in [k, v] {
                let encoded = crate::auth::uri_encode(&s, false);
                assert_eq!(crate::auth::percent_decode(&encoded).as_deref(), Some(s.as_str()));
            }
        }
    }
}

/// What the snapshot pool reads: a keyframe's NAL units from the publisher (first byte even), or a
/// picture from the decoder (odd). A keyframe that is accepted becomes start-code-framed parameter sets
/// then NAL units; a picture that is accepted has exactly its samples, and a small one encodes to a JPEG.
pub fn snapshot(data: &[u8]) {
    use crate::snapshot::{annex_b, encode_jpeg, parse_ppm};
    let Some((selector, rest)) = data.split_first() else { return };
    if selector % 2 == 0 {
        let config = crate::media::AvcConfig {
            profile: 100,
            level: 31,
            nal_length_size: [1, 2, 4][usize::from(selector / 2 % 3)],
            sps: vec![Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f])],
            pps: vec![Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])],
            width: Some(1280),
            height: Some(720),
        };
        if let Ok(stream) = annex_b(&config, rest) {
            assert!(
                stream.starts_with(&[0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0, 0, 0, 1, 0x68]),
                "parameter sets first"
            );
            assert!(stream.len() <= 16 + rest.len() * 4 + 4, "no more than a start code per NAL unit");
        }
    } else if let Ok(picture) = parse_ppm(rest) {
        assert_eq!(picture.rgb.len(), picture.width as usize * picture.height as usize * 3);
        if u64::from(picture.width) * u64::from(picture.height) <= 64 * 64 {
            let jpeg = encode_jpeg(&picture, 80).expect("a valid small picture encodes");
            assert!(jpeg.starts_with(&[0xff, 0xd8]) && jpeg.ends_with(&[0xff, 0xd9]));
        }
    }
}

/// One harness: bytes in, a panic on a broken invariant.
pub type Harness = fn(&[u8]);

/// The harnesses by target name, for the corpus replay test.
pub const TARGETS: [(&str, Harness); 9] = [
    ("rtmp_session", rtmp_session),
    ("flv_tags", flv_tags),
    ("segmenter", segmenter),
    ("oss_xml", oss_xml),
    ("dialect_params", dialect_params),
    ("signatures", signatures),
    ("playlist_restore", playlist_restore),
    ("http_parsing", http_parsing),
    ("snapshot", snapshot),
];

#[cfg(test)]
mod tests {
    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target).join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The harnesses do reach the segmenter: a real encoder's bytes make segments.
    #[test]
    fn the_media_seeds_go_all_the_way_to_segments() {
        for name in ["av_no_bframes", "av_bframes", "audio_only", "video_only"] {
            let segments = super::run_rtmp_session(&seed("rtmp_session", &format!("seed-{name}")));
            assert!(!segments.is_empty() && segments.iter().all(|s| s.bytes > 0), "rtmp_session {name}");
            assert!(!super::run_flv_tags(&seed("flv_tags", &format!("seed-{name}"))).is_empty(), "flv_tags {name}");
        }
    }

    /// The same media from an encoder that interleaves chunk streams and from one that does not.
    #[test]
    fn interleaved_chunk_streams_make_the_same_segments() {
        let plain = super::run_rtmp_session(&seed("rtmp_session", "seed-plain-128"));
        let woven = seed("rtmp_session", "seed-interleaved-128");
        assert_ne!(woven, seed("rtmp_session", "seed-plain-128"));
        assert!(!plain.is_empty());
        // Audio and video reach the muxer in another order (each message when it is complete), so the
        // TS bytes may differ; the segments must not.
        let without_size = |segments: Vec<super::Segment>| -> Vec<_> {
            segments.into_iter().map(|s| super::Segment { bytes: 0, ..s }).collect()
        };
        assert_eq!(without_size(super::run_rtmp_session(&woven)), without_size(plain));
    }

    /// Every committed corpus input, through its harness: the fuzzer's finds stay fixed.
    #[test]
    fn the_committed_fuzz_corpus_replays_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut ran = 0;
        for (name, harness) in super::TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| harness(&input));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                ran += 1;
            }
        }
        assert!(ran >= super::TARGETS.len(), "the corpus is committed ({ran} inputs)");
    }
}
