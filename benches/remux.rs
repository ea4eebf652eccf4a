//! Remux throughput: FLV tag bodies in, TS segments out (ingest -> segmenter -> muxer), on one core.
//!
//! Input: `fixtures/media/av_bframes.flv` looped 100 times with monotonic timestamps (~32 MB, ~1000 s of
//! 320x180 H.264 + AAC). Criterion reports our throughput. After it, the same input is remuxed by
//! `ffmpeg -c copy -f mpegts` (when ffmpeg is installed) and by us, five times each, and the medians are
//! printed side by side with their ratio, together with heap allocations per frame (counted by a wrapping
//! global allocator) to check that the media path allocates per segment chunk, not per frame.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use livechannel::flv::file::{self, Tag, TagKind};
use livechannel::hls::{Output, SegmenterConfig};
use livechannel::ingest::Ingest;

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

fn input() -> Vec<Tag> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/media/av_bframes.flv");
    let one = file::parse(Bytes::from(std::fs::read(path).expect("fixture"))).expect("fixture parses");
    let span = one.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 40;
    let mut tags = Vec::new();
    for i in 0..LOOPS {
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

/// Remuxes every tag; returns TS bytes produced.
fn remux(tags: &[Tag], outputs: &mut Vec<Output>) -> usize {
    let mut ingest = Ingest::new(SegmenterConfig::new(2));
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

fn bench(c: &mut Criterion) {
    let tags = input();
    let bytes: u64 = tags.iter().map(|t| t.body.len() as u64).sum();
    let mut group = c.benchmark_group("remux");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let mut outputs = Vec::with_capacity(16);
    group.bench_function("flv_tags_to_ts_segments", |b| b.iter(|| remux(&tags, &mut outputs)));
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
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let ts_bytes = remux(&tags, &mut outputs);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let ours = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(remux(&tags, &mut outputs));
                t.elapsed()
            })
            .collect(),
    );
    let mb = |bytes: usize, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "\n== remux comparison on the same input ({} MB FLV, {frames} frames, {LOOPS} loops of av_bframes.flv)",
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
