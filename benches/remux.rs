//! Remux throughput: FLV tag bodies in, TS segments out (ingest -> segmenter -> muxer), on one core, and
//! the same with the RTMP layer in front: the stream as RTMP chunks, read the way a connection reads it
//! (`rtmp::feed_session`: the guard's chunk reader, media around rml_rtmp, the rest through its
//! `ServerSession`), its media into ingest.
//!
//! Input: `fixtures/media/av_bframes.flv` looped 100 times with monotonic timestamps (~32 MB, ~1000 s of
//! 320x180 H.264 + AAC), or the FLV file `REMUX_FLV` names, looped to about as many bytes (compare.sh's
//! `target/input720.flv` has the frame sizes of a 2.7 Mbit/s 720p stream). The remux is measured at the
//! upload chunk size and at the local live path's (`LIVE_CHUNK`). The RTMP form is what rml_rtmp's
//! `ClientSession` sends for those tags after connect and publish (chunk size 4096), cut into 64 KiB
//! reads. Criterion reports both throughputs. After it, the same input is remuxed by `ffmpeg -c copy -f
//! mpegts` (when ffmpeg is installed) and by us, five times each, and the medians are printed side by side
//! with their ratio, together with heap allocations per frame (counted by a wrapping global allocator):
//! for the remux alone, for the RTMP layer alone, and for both together.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use livechannel::flv::file::{self, Tag, TagKind};
use livechannel::hls::{Output, SegmenterConfig};
use livechannel::ingest::Ingest;
use livechannel::rtmp::guard::{Guard, Limits};
use livechannel::rtmp::{Input, feed_session};
use livechannel::storage::{LIVE_CHUNK, UPLOAD_CHUNK};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType, ServerSession, ServerSessionConfig,
    ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LOOPS: u32 = 100;
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/media/av_bframes.flv");

/// The input file, and how many times it is looped.
fn source() -> (String, u32) {
    match std::env::var("REMUX_FLV") {
        Ok(path) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(1).max(1);
            let loops = (32_000_000 / size).clamp(1, u64::from(LOOPS)) as u32;
            (path, loops)
        }
        Err(_) => (FIXTURE.to_owned(), LOOPS),
    }
}

fn input() -> Vec<Tag> {
    let (path, loops) = source();
    let one = file::parse(Bytes::from(std::fs::read(&path).expect("bench input"))).expect("bench input parses");
    let span = one.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 40;
    let mut tags = Vec::new();
    for i in 0..loops {
        for (j, t) in one.iter().enumerate() {
            // Sequence headers only once, at the start, as a real publish sends them.
            let is_header = t.body.get(1) == Some(&0);
            if t.kind == TagKind::Script || (is_header && i > 0) {
                continue;
            }
            let _ = j;
            tags.push(Tag { kind: t.kind, timestamp_ms: t.timestamp_ms + i * span, body: t.body.clone() });
        }
    }
    tags
}

/// Remuxes every tag into chunks of about `chunk_size`; returns TS bytes produced.
fn remux(tags: &[Tag], chunk_size: usize, outputs: &mut Vec<Output>) -> usize {
    let mut ingest = Ingest::new(SegmenterConfig { chunk_size, ..SegmenterConfig::new(2) });
    let now = SystemTime::UNIX_EPOCH;
    let mut produced = 0;
    for tag in tags {
        let _ = match tag.kind {
            TagKind::Video => ingest.video(&tag.body, tag.timestamp_ms, now, outputs),
            TagKind::Audio => ingest.audio(&tag.body, tag.timestamp_ms, now, outputs),
            TagKind::Script => Ok(()),
        };
        for o in outputs.drain(..) {
            if let Output::Chunk { data, .. } = o {
                produced += data.len();
            }
        }
    }
    ingest.finish(outputs);
    produced
}

/// The publish as a client sends it: everything up to and including the publish command, and then the
/// media messages. rml_rtmp's client and server sessions talk to each other directly (no handshake:
/// sessions start after it).
struct RtmpInput {
    /// One entry per round: a client waits for each answer before it sends what comes next.
    commands: Vec<Vec<u8>>,
    media: Vec<u8>,
}

/// A client's results as the bytes it would write.
fn wire(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) {
    for result in results {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            out.extend_from_slice(&packet.bytes);
        }
    }
}

/// The server's answers fed back to the client, until it has nothing more to say.
fn answer(client: &mut ClientSession, server: &mut ServerSession, to_server: &[u8]) -> Vec<u8> {
    let mut to_client = Vec::new();
    for result in server.handle_input(to_server).expect("server reads the client") {
        match result {
            ServerSessionResult::OutboundResponse(packet) => to_client.extend_from_slice(&packet.bytes),
            ServerSessionResult::RaisedEvent(
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. },
            ) => {
                for r in server.accept_request(request_id).expect("server accepts") {
                    if let ServerSessionResult::OutboundResponse(packet) = r {
                        to_client.extend_from_slice(&packet.bytes);
                    }
                }
            }
            _ => {}
        }
    }
    let mut back = Vec::new();
    wire(client.handle_input(&to_client).expect("client reads the server"), &mut back);
    back
}

fn rtmp_input(tags: &[Tag]) -> RtmpInput {
    let (mut client, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client session");
    let (mut server, opening) = ServerSession::new(ServerSessionConfig::new()).expect("server session");
    let opening: Vec<u8> = opening
        .into_iter()
        .filter_map(|r| match r {
            ServerSessionResult::OutboundResponse(packet) => Some(packet.bytes),
            _ => None,
        })
        .flatten()
        .collect();
    // What the client writes, in order: its opening messages and connect, its answers to the server's
    // replies and publish, then its answers to those.
    let mut commands = Vec::new();
    wire(initial, &mut commands);
    wire(client.handle_input(&opening).expect("client reads the server's opening"), &mut commands);
    wire(vec![client.request_connection("live".into()).expect("connect")], &mut commands);
    let mut step = answer(&mut client, &mut server, &commands);
    let mut commands = vec![commands];
    wire(vec![client.request_publishing("bench".into(), PublishRequestType::Live).expect("publish")], &mut step);
    // publish is createStream, its result, then publish itself: rounds until the client has no more.
    while !step.is_empty() {
        let next = answer(&mut client, &mut server, &step);
        commands.push(std::mem::replace(&mut step, next));
    }
    let mut media = Vec::new();
    for tag in tags {
        let t = RtmpTimestamp::new(tag.timestamp_ms);
        let packet = match tag.kind {
            TagKind::Video => client.publish_video_data(tag.body.clone(), t, false),
            TagKind::Audio => client.publish_audio_data(tag.body.clone(), t, false),
            TagKind::Script => continue,
        };
        wire(vec![packet.expect("media message")], &mut media);
    }
    RtmpInput { commands, media }
}

/// One connection's read size (the server reads up to 64 KiB at a time).
const READ: usize = 64 * 1024;

/// Reads the RTMP input as a connection does and, with `remux`, hands its media to ingest. Returns the
/// media messages seen and the TS bytes produced.
fn rtmp_remux(input: &RtmpInput, remux: bool, outputs: &mut Vec<Output>) -> (u64, usize) {
    let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).expect("server session");
    let mut guard = Guard::new(Limits { max_message_bytes: 16 << 20 });
    let mut results = Vec::new();
    let accept = |session: &mut ServerSession, results: &mut Vec<Input>| {
        for result in std::mem::take(results) {
            if let Input::Session(ServerSessionResult::RaisedEvent(
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. },
            )) = result
            {
                session.accept_request(request_id).expect("accept");
            }
        }
    };
    for read in &input.commands {
        feed_session(&mut guard, &mut session, read, &mut results).expect("commands read");
        accept(&mut session, &mut results);
        guard.connected();
    }
    let mut ingest = Ingest::new(SegmenterConfig::new(2));
    let now = SystemTime::UNIX_EPOCH;
    let (mut messages, mut produced) = (0, 0);
    for read in input.media.chunks(READ) {
        let refused = feed_session(&mut guard, &mut session, read, &mut results).expect("media read");
        assert!(refused.is_none(), "the guard refused the bench's stream: {refused:?}");
        for input in results.drain(..) {
            let Input::Media(media) = input else { continue };
            messages += 1;
            if remux {
                let _ = if media.video {
                    ingest.video(&media.data, media.timestamp, now, outputs)
                } else {
                    ingest.audio(&media.data, media.timestamp, now, outputs)
                };
            }
            for o in outputs.drain(..) {
                if let Output::Chunk { data, .. } = o {
                    produced += data.len();
                }
            }
        }
        // As a connection does once it has handled a read.
        guard.release_buffers();
    }
    ingest.finish(outputs);
    (messages, produced)
}

fn bench(c: &mut Criterion) {
    let tags = input();
    let bytes: u64 = tags.iter().map(|t| t.body.len() as u64).sum();
    let mut group = c.benchmark_group("remux");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let mut outputs = Vec::with_capacity(16);
    group.bench_function("flv_tags_to_ts_segments", |b| b.iter(|| remux(&tags, UPLOAD_CHUNK, &mut outputs)));
    let rtmp = rtmp_input(&tags);
    group.throughput(Throughput::Bytes(rtmp.media.len() as u64));
    group.bench_function("rtmp_chunks_to_ts_segments", |b| b.iter(|| rtmp_remux(&rtmp, true, &mut outputs)));
    group.finish();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn compare_with_ffmpeg() {
    let tags = input();
    let tag_bytes: usize = tags.iter().map(|t| t.body.len()).sum();
    let flv = file::write(&tags);
    let frames = tags.iter().filter(|t| t.kind != TagKind::Script).count() as u64;

    let mut outputs = Vec::with_capacity(16);
    // One untimed run, counting its allocations: (TS bytes, allocations).
    let counted = |chunk_size: usize, outputs: &mut Vec<Output>| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let produced = remux(&tags, chunk_size, outputs);
        (produced, ALLOCATIONS.load(Ordering::Relaxed) - before)
    };
    let (ts_bytes, allocations) = counted(UPLOAD_CHUNK, &mut outputs);
    let timed = |chunk_size: usize, outputs: &mut Vec<Output>| {
        median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(remux(&tags, chunk_size, outputs));
                    t.elapsed()
                })
                .collect(),
        )
    };
    let ours = timed(UPLOAD_CHUNK, &mut outputs);
    let mb = |bytes: usize, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let (path, loops) = source();
    println!(
        "\n== remux comparison on the same input ({} MB FLV, {frames} frames, {loops} loops of {path})",
        flv.len() / 1_000_000
    );
    println!(
        "livechannel remux      : {:>8.1} MB/s of FLV in ({:?} per run, {} MB of TS out)",
        mb(flv.len(), ours),
        ours,
        ts_bytes / 1_000_000
    );
    println!(
        "heap allocations       : {allocations} for {frames} frames = {:.3} per frame; TS chunks of 64 KiB: {}",
        allocations as f64 / frames as f64,
        ts_bytes / 65536
    );
    let _ = tag_bytes;
    // The local backend's live path hands out smaller chunks (`LIVE_CHUNK`); a 720p P-frame is bigger.
    let (_, live_allocations) = counted(LIVE_CHUNK, &mut outputs);
    let live = timed(LIVE_CHUNK, &mut outputs);
    println!(
        "remux, {} KiB chunks    : {:>8.1} MB/s of FLV in ({live:?} per run); {:.3} heap allocations per frame",
        LIVE_CHUNK / 1024,
        mb(flv.len(), live),
        live_allocations as f64 / frames as f64
    );

    // The RTMP layer: the same tags as RTMP chunks, read as a connection reads them, without and with
    // the remux behind it. Allocations are counted over the media only (after publish).
    let rtmp = rtmp_input(&tags);
    let count = |remux: bool, outputs: &mut Vec<Output>| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let (messages, produced) = rtmp_remux(&rtmp, remux, outputs);
        (ALLOCATIONS.load(Ordering::Relaxed) - before, messages, produced)
    };
    let (rtmp_only, messages, _) = count(false, &mut outputs);
    let (rtmp_total, _, rtmp_ts) = count(true, &mut outputs);
    assert_eq!(messages, frames, "every tag arrives as one RTMP media message");
    assert_eq!(rtmp_ts, ts_bytes, "the RTMP path makes the same TS as the tags fed directly");
    let rtmp_time = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(rtmp_remux(&rtmp, true, &mut outputs));
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "rtmp + remux           : {:>8.1} MB/s of RTMP in ({:?} per run, {} MB of chunks)",
        mb(rtmp.media.len(), rtmp_time),
        rtmp_time,
        rtmp.media.len() / 1_000_000
    );
    println!(
        "heap allocations, RTMP : {rtmp_only} for {messages} messages = {:.3} per message (chunk reader + rml_rtmp)",
        rtmp_only as f64 / messages as f64
    );
    println!(
        "heap allocations, all  : {rtmp_total} for {messages} messages = {:.3} per message (RTMP + remux)",
        rtmp_total as f64 / messages as f64
    );

    let dir = std::env::temp_dir().join(format!("livechannel-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let input = dir.join("input.flv");
    std::fs::write(&input, &flv).expect("write bench input");
    let ffmpeg = |args: &[&str]| std::process::Command::new("ffmpeg").args(args).output();
    match ffmpeg(&["-version"]) {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
            let input = input.to_str().unwrap_or_default();
            let runs: Vec<Duration> = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let out = ffmpeg(&["-v", "error", "-i", input, "-c", "copy", "-f", "mpegts", "-y", "/dev/null"]);
                    assert!(out.map(|o| o.status.success()).unwrap_or(false), "ffmpeg remux failed");
                    t.elapsed()
                })
                .collect();
            let theirs = median(runs);
            println!(
                "ffmpeg -c copy -f mpegts: {:>8.1} MB/s of FLV in ({theirs:?} per run; {version})",
                mb(flv.len(), theirs)
            );
            println!("ratio                  : {:.2}x ffmpeg", theirs.as_secs_f64() / ours.as_secs_f64());
        }
        _ => println!("ffmpeg not installed: comparison skipped (install ffmpeg to measure it)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    compare_with_ffmpeg();
    Criterion::default().configure_from_args().final_summary();
}
