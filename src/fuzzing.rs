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
use crate::rtmp::Input;
use crate::rtmp::guard::{Guard, Limits, Piece};

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
        let mut queue = std::collections::VecDeque::<Input>::new();
        let mut failed = false;
        let refused = guard
            .inspect(read, &mut |piece| match piece {
                Piece::Media(m) => queue.push_back(Input::Media(m)),
                Piece::Session(bytes) if !failed => match session.handle_input(&bytes) {
                    Ok(results) => queue.extend(results.into_iter().map(Input::Session)),
                    Err(_) => failed = true,
                },
                Piece::Session(_) => {}
            })
            .is_err();
        if failed {
            break;
        }
        while let Some(item) = queue.pop_front() {
            let event = match item {
                Input::Media(m) => {
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
                Input::Session(ServerSessionResult::RaisedEvent(event)) => event,
                Input::Session(_) => continue,
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
                queue.extend(more.into_iter().map(Input::Session));
            }
        }
        // As a connection does once it has handled a read (the blocks its messages were cut from).
        guard.release_buffers();
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

/// A request in the capture format the SDK requests were recorded in: request line, headers, a blank
/// line, the body.
struct Capture<'a> {
    method: &'a str,
    target: &'a str,
    /// Names and values, trimmed, as they came.
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

fn capture(text: &str) -> Option<Capture<'_>> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let mut parts = lines.next()?.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim())).collect();
    Some(Capture { method, target, headers, body })
}

/// The three request verifiers on a request in the capture format (request line, headers, blank line,
/// body), with one known key: none may panic, and a forged request passes none.
pub fn signatures(data: &[u8]) {
    let Some(Capture { method, target, headers: lines, body }) = std::str::from_utf8(data).ok().and_then(capture)
    else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
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

/// The HTTP API whole, handlers included: a request in the capture format (request line, headers, blank
/// line, body) sent over loopback to a running server (one per process, started on first use) with the
/// open buckets the captured SDK requests name (`examplebucket`, `app1`), a Huawei token for project
/// 0123456789abcdef0123456789abcdef and the domain `push.example.com`. Callbacks may be configured to
/// loopback (the captures name receivers there); nothing publishes, so none is sent. So that fuzzed requests get past authentication to the
/// handlers' own validation, the harness authenticates each one as its dialect allows: Huawei requests
/// carry the token instead of their signature, and Aliyun RPC requests are signed again (V1, over all
/// their parameters, with a fresh nonce). Checks: an answer comes within 10 s, it is HTTP, and it is
/// never a 500 (outside input must get a 4xx, whatever it holds).
pub fn api_requests(data: &[u8]) {
    run_api_request(data);
}

/// The status the server answered, if it answered.
fn run_api_request(data: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let text = std::str::from_utf8(data).ok()?;
    let request = api_request(text)?;
    let addr = api_server();
    let mut stream = std::net::TcpStream::connect(addr).expect("the harness's server accepts");
    let limit = Duration::from_secs(10);
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    if stream.write_all(&request).is_err() {
        return None; // the server closed early (a refused header): nothing to check
    }
    let mut answer = Vec::new();
    let read = stream.take(1 << 22).read_to_end(&mut answer);
    if let Err(e) = &read {
        assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "no answer within {limit:?} to {:?}",
            String::from_utf8_lossy(&request[..request.len().min(300)])
        );
    }
    if answer.is_empty() {
        return None; // closed without an answer: hyper refusing a malformed request line
    }
    let status = answer.strip_prefix(b"HTTP/1.1 ").and_then(|rest| std::str::from_utf8(rest.get(..3)?).ok());
    let status: u16 = status.and_then(|s| s.parse().ok()).expect("an HTTP/1.1 status line");
    assert!(
        status != 500,
        "500 for {:?}: {:?}",
        String::from_utf8_lossy(&request[..request.len().min(400)]),
        String::from_utf8_lossy(&answer[..answer.len().min(400)])
    );
    Some(status)
}

const API_PROJECT: &str = "0123456789abcdef0123456789abcdef";
const API_TOKEN: &str = "fuzz-token-0123456789";

/// The server the API harness talks to, started once per process on a thread of its own.
fn api_server() -> std::net::SocketAddr {
    static SERVER: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("livechannel-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let toml = format!(
            r#"
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
[[access_keys]]
id = "fuzz-key"
secret = "fuzz-secret"
[[buckets]]
name = "examplebucket"
acl = "public-read-write"
domains = ["push.example.com", "play.example.com"]
[[buckets]]
name = "app1"
acl = "public-read-write"
[notify]
allowed_destinations = ["127.0.0.0/8"]
[[auth_tokens]]
token = "{API_TOKEN}"
project_id = "{API_PROJECT}"
"#,
            dir.display()
        );
        let file: crate::config::ConfigFile = toml::from_str(&toml).expect("the harness's config parses");
        let config = crate::config::Config::from_file(file).expect("the harness's config is valid");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the harness's server");
            runtime.block_on(async move {
                let server = crate::server::Server::start(config).await.expect("the harness's server starts");
                let _ = tx.send(server.http_addr);
                std::future::pending::<()>().await
            })
        });
        rx.recv().expect("the harness's server started")
    })
}

/// The request as it goes on the wire: its own request line and headers, with the body's length, the
/// connection closed after it, and the dialect's authentication (see `api_requests`).
fn api_request(text: &str) -> Option<Vec<u8>> {
    let Capture { method, target, headers, body } = capture(text)?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return None;
    }
    // The harness frames the request itself.
    let framing = ["content-length", "transfer-encoding", "connection", "host", "expect"];
    let mut headers: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| !framing.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (target, body) = if path.starts_with("/v1/") {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization") && !k.eq_ignore_ascii_case("x-auth-token"));
        headers.push(("X-Auth-Token".into(), API_TOKEN.into()));
        (target.to_owned(), body.as_bytes().to_vec())
    } else if path == "/" && (query.contains("Action=") || header(&headers, "x-acs-action").is_some()) {
        (aliyun_signed(method, query, &mut headers, body)?, Vec::new())
    } else {
        // OSS: anonymous on the open bucket (a signature from another key is refused, as on OSS).
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        let signing = |key: &str| {
            ["OSSAccessKeyId", "Signature", "Expires", "x-oss-credential", "x-oss-date", "x-oss-expires"].contains(&key)
                || key.starts_with("x-oss-signature")
                || key.starts_with("x-oss-additional-headers")
        };
        let kept: Vec<&str> =
            query.split('&').filter(|p| !p.is_empty() && !signing(p.split('=').next().unwrap_or(p))).collect();
        let target = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
        (target, body.as_bytes().to_vec())
    };
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (k, v) in &headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

/// An Aliyun RPC request signed again with the harness's key: every parameter (query, form body,
/// the ACS3 action and version headers) moves into a V1-signed query with a fresh nonce; the ACS3
/// headers and the form body go. Returns the new target.
fn aliyun_signed(method: &str, query: &str, headers: &mut Vec<(String, String)>, body: &str) -> Option<String> {
    use crate::auth::aliyun::{parse_form, rpc_sign, rpc_string_to_sign};
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut params = parse_form(query)?;
    let form = header(headers, "content-type").is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(parse_form(body)?);
    }
    for (name, param) in [("x-acs-action", "Action"), ("x-acs-version", "Version")] {
        if let Some(v) = header(headers, name) {
            params.push((param.into(), v));
        }
    }
    let ours = ["Signature", "AccessKeyId", "SignatureMethod", "SignatureVersion", "Timestamp", "SignatureNonce"];
    params.retain(|(k, _)| !ours.contains(&k.as_str()));
    let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    params.extend([
        ("AccessKeyId".into(), "fuzz-key".into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("Timestamp".into(), chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        ("SignatureNonce".into(), format!("fuzz-{}-{nonce}", std::process::id())),
    ]);
    let signature = rpc_sign("fuzz-secret", &rpc_string_to_sign(method, &params));
    params.push(("Signature".into(), signature));
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", crate::auth::uri_encode(k, false), crate::auth::uri_encode(v, false)))
        .collect();
    headers.retain(|(k, _)| {
        let k = k.to_ascii_lowercase();
        k != "authorization" && !k.starts_with("x-acs-") && (!form || k != "content-type")
    });
    Some(format!("/?{}", query.join("&")))
}

/// The harnesses by target name, for the corpus replay test.
pub const TARGETS: [(&str, Harness); 10] = [
    ("rtmp_session", rtmp_session),
    ("flv_tags", flv_tags),
    ("segmenter", segmenter),
    ("oss_xml", oss_xml),
    ("dialect_params", dialect_params),
    ("signatures", signatures),
    ("playlist_restore", playlist_restore),
    ("http_parsing", http_parsing),
    ("snapshot", snapshot),
    ("api_requests", api_requests),
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
        // The chunk reader hands messages over in the order they started, so even the TS bytes (their
        // count here) are the same.
        assert_eq!(super::run_rtmp_session(&woven), plain);
    }

    /// The API harness gets real SDK requests of all three dialects past authentication to the handlers:
    /// none is refused as unauthenticated, and some of each dialect succeed.
    #[test]
    fn the_api_harness_gets_sdk_requests_past_authentication() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/api_requests");
        let mut ok = std::collections::BTreeMap::<&str, (usize, usize)>::new();
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for path in names {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("seed-") else { continue };
            let dialect = match rest.split('-').next().unwrap() {
                "huawei" => "huawei",
                d if d.starts_with("live") => "aliyun",
                _ => "oss",
            };
            let status = super::run_api_request(&std::fs::read(&path).unwrap());
            let status = status.unwrap_or_else(|| panic!("{name}: no answer"));
            assert!(![401, 403].contains(&status), "{name}: {status}, not authenticated");
            let entry = ok.entry(dialect).or_default();
            entry.1 += 1;
            if (200..300).contains(&status) {
                entry.0 += 1;
            }
        }
        for dialect in ["huawei", "aliyun", "oss"] {
            let (good, all) = ok.get(dialect).copied().unwrap_or_default();
            assert!(all > 0 && good > 0, "{dialect}: {good} of {all} seeds succeeded");
        }
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
