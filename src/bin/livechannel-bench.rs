//! `livechannel-bench`: publishes N concurrent RTMP streams at real-time pace to any RTMP server and
//! measures how that server copes: CPU and memory of its processes, keyframe-to-playlist latency, and
//! whether every stream's HLS output is correct and on time. One process, async, all streams sharing one
//! pre-parsed copy of the FLV tags.
//!
//! Phases (after the publishers connect): warm-up; CPU window (no HTTP polling, so it measures ingest
//! only); latency window (a sample of playlists polled every few ms); correctness check of every stream:
//! every playlist while the publishers still send (parses, on time), then, once they have stopped, every
//! segment those playlists listed (exists, TS, starts with a keyframe, one fragment long).
//! The report is printed and written as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use livechannel::flv::file::{self, Tag, TagKind};
use livechannel::rtmp::client::{ChunkedTag, Publisher};
use livechannel::ts::inspect::{annexb_nal_types, inspect};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Publish N real-time RTMP streams from an FLV file and measure the server")]
struct Args {
    /// RTMP server address (host:port).
    #[arg(long)]
    rtmp: SocketAddr,
    /// RTMP application.
    #[arg(long, default_value = "live")]
    app: String,
    /// FLV file to publish (looped, timestamps kept monotonic across loops).
    #[arg(long)]
    file: std::path::PathBuf,
    /// Number of concurrent streams.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Stream names are `<prefix><i>`.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Seconds between the first stream and the last one connecting (spreads keyframes over time).
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Seconds of warm-up after all streams are connected.
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,
    /// Seconds of the CPU/memory window.
    #[arg(long, default_value_t = 20.0)]
    window: f64,
    /// Seconds of the latency window (playlists of `latency_streams` streams polled).
    #[arg(long, default_value_t = 20.0)]
    latency_window: f64,
    /// Playlist URL template, `{name}` is replaced by the stream name; enables latency and HLS checks.
    #[arg(long)]
    hls: Option<String>,
    #[arg(long, default_value_t = 8)]
    latency_streams: usize,
    /// Poll interval for the latency measurement, milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Expected segment duration in seconds (the GOP of the input must divide it).
    #[arg(long, default_value_t = 2.0)]
    frag: f64,
    /// Server process ids whose CPU and memory are measured (all of them: master and workers).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Label for the report (e.g. the server's name).
    #[arg(long, default_value = "server")]
    label: String,
    /// Write the report here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Default, Serialize, Clone)]
struct StreamReport {
    name: String,
    bytes_sent: u64,
    /// Writes that took longer than 100 ms, or moments we fell more than 500 ms behind schedule.
    send_stalls: u64,
    errors: u64,
    first_error: Option<String>,
}

#[derive(Default, Serialize)]
struct HlsReport {
    streams_checked: usize,
    streams_ok: usize,
    /// Streams whose playlist lags more than one segment behind what was published.
    streams_late: usize,
    segments_checked: usize,
    failures: Vec<String>,
}

#[derive(Default, Serialize)]
struct Report {
    label: String,
    streams: usize,
    input: String,
    input_mbit_s: f64,
    cpu_ms_per_stream_second: Option<f64>,
    server_cpu_percent: Option<f64>,
    /// The server's CPU in the window by thread name (trailing numbers dropped), in % of one core, busiest
    /// first; "(ended threads, children)": what threads that ended in the window and reaped children used.
    server_cpu_by_thread: Vec<(String, f64)>,
    generator_cpu_percent: f64,
    rss_idle_kib: Option<u64>,
    rss_kib: Option<u64>,
    rss_kib_per_stream: Option<f64>,
    latency_samples: usize,
    latency_median_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    hls: HlsReport,
    total_bytes_sent: u64,
    total_send_stalls: u64,
    total_errors: u64,
    per_stream: Vec<StreamReport>,
}

/// Wall-clock times at which each stream sent its keyframes, by media time (ms).
type KeyframeLog = Arc<Mutex<Vec<(u64, Instant)>>>;

struct Input {
    tags: Vec<Tag>,
    /// The same tags as RTMP chunks, cut once for every publisher.
    chunked: Vec<ChunkedTag>,
    /// Media time of one pass through the file; the next loop's timestamps start here.
    span_ms: u64,
}

fn load(path: &std::path::Path) -> anyhow::Result<Input> {
    let tags = file::parse(Bytes::from(std::fs::read(path)?))?;
    let tags: Vec<Tag> = tags.into_iter().filter(|t| t.kind != TagKind::Script).collect();
    let video: Vec<u32> = tags.iter().filter(|t| t.kind == TagKind::Video).map(|t| t.timestamp_ms).collect();
    let step = video.windows(2).map(|w| w[1].saturating_sub(w[0])).filter(|d| *d > 0).min().unwrap_or(40);
    // One pass lasts as long as its video, so frame spacing stays even across loops; audio past the last
    // video frame (AAC encoders pad the end) would overlap the next pass and is left out.
    let span = match video.iter().max() {
        Some(last) => last + step,
        None => tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 23,
    };
    let tags: Vec<Tag> = tags.into_iter().filter(|t| t.timestamp_ms < span).collect();
    let chunk_size = ChunkedTag::publisher_chunk_size();
    let chunked = tags.iter().filter_map(|t| ChunkedTag::new(t, chunk_size)).collect();
    Ok(Input { tags, chunked, span_ms: u64::from(span) })
}

fn is_sequence_header(tag: &Tag) -> bool {
    tag.body.get(1) == Some(&0)
}

fn is_keyframe(tag: &Tag) -> bool {
    tag.kind == TagKind::Video && tag.body.first().is_some_and(|b| b >> 4 == 1) && !is_sequence_header(tag)
}

async fn publish(
    args: Arc<Args>,
    input: Arc<Input>,
    name: String,
    start_at: tokio::time::Instant,
    stop: tokio_util::sync::CancellationToken,
    keyframes: Option<KeyframeLog>,
) -> StreamReport {
    let mut report = StreamReport { name: name.clone(), ..Default::default() };
    tokio::time::sleep_until(start_at).await;
    let mut p = match Publisher::connect(args.rtmp, &args.app, &name).await {
        Ok(p) => p,
        Err(e) => {
            report.errors += 1;
            report.first_error = Some(e.to_string());
            return report;
        }
    };
    let origin = tokio::time::Instant::now();
    'outer: for pass in 0u64.. {
        for (tag, chunked) in input.tags.iter().zip(&input.chunked) {
            if pass > 0 && is_sequence_header(tag) {
                continue;
            }
            let media_ms = u64::from(tag.timestamp_ms) + pass * input.span_ms;
            let due = origin + Duration::from_millis(media_ms);
            let now = tokio::time::Instant::now();
            if now < due {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.cancelled() => break 'outer,
                }
            } else if stop.is_cancelled() {
                break 'outer;
            } else if now - due > Duration::from_millis(500) {
                report.send_stalls += 1;
            }
            let ts = (media_ms & 0xffff_ffff) as u32;
            let before = Instant::now();
            let sent = p.send_chunked(chunked, ts).await;
            if before.elapsed() > Duration::from_millis(100) {
                report.send_stalls += 1;
            }
            if let Err(e) = sent {
                report.errors += 1;
                report.first_error.get_or_insert(e.to_string());
                break 'outer;
            }
            if is_keyframe(tag)
                && let Some(log) = &keyframes
            {
                log.lock().unwrap_or_else(|p| p.into_inner()).push((media_ms, Instant::now()));
            }
        }
    }
    report.bytes_sent = p.bytes_sent();
    let _ = p.finish().await;
    report
}

/// Ends every publish (once: later calls find no task left) and adds the publishers' reports.
async fn stop_publishers(
    stop: &tokio_util::sync::CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<StreamReport>>,
    report: &mut Report,
) {
    stop.cancel();
    for t in tasks.drain(..) {
        if let Ok(r) = t.await {
            report.total_bytes_sent += r.bytes_sent;
            report.total_send_stalls += r.send_stalls;
            report.total_errors += r.errors;
            report.per_stream.push(r);
        }
    }
}

/// A keep-alive HTTP/1.1 GET client that understands Content-Length bodies (all our targets send it).
struct Http {
    addr: SocketAddr,
    host: String,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    fn new(url: &str) -> anyhow::Result<(Http, String)> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("only http:// URLs"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr: SocketAddr = host.parse()?;
        Ok((Http { addr, host: host.to_string(), conn: None, buf: Vec::with_capacity(64 * 1024) }, format!("/{path}")))
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                let c = TcpStream::connect(self.addr).await?;
                c.set_nodelay(true)?;
                self.conn = Some(c);
            }
            // A saturated server must show up as a failure in the report, not as a hung benchmark.
            let attempt_result = tokio::time::timeout(Duration::from_secs(10), self.try_get(path))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no response within 10 s")));
            match attempt_result {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 => {
                    self.conn = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    async fn try_get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let conn = self.conn.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))?;
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host).as_bytes()).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = conn.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?.to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1).unwrap_or("0").parse()?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse())
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
        // Straight into the response buffer: the check reads 3000 segments of 700 KB at 1000 streams, and a
        // zeroed scratch of up to 256 KiB per read (each read returns what loopback has, often far less)
        // then a copy was work the loaded machine took from the servers.
        self.buf.reserve((head_end + len).saturating_sub(self.buf.len()));
        while self.buf.len() < head_end + len {
            let n = conn.read_buf(&mut self.buf).await?;
            anyhow::ensure!(n > 0, "connection closed mid-body");
        }
        if head.contains("connection: close") {
            self.conn = None;
        }
        Ok((status, self.buf[head_end..head_end + len].to_vec()))
    }
}

fn playlist_url(template: &str, name: &str) -> String {
    template.replace("{name}", name)
}

/// Resolves a segment URI relative to its playlist URL's path.
fn segment_path(playlist_path: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let dir = playlist_path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{dir}/{uri}")
}

/// Follows one playlist from the stream's start until `until`: slowly (to keep the chain of segment
/// durations, so each segment's end media time is known) and, from `fast_from`, every `fast` ms. For each
/// segment first seen by a fast poll, finds the keyframe that closed it (the one sent at the segment's end
/// media time) and returns the delay from sending it to seeing the segment listed.
async fn measure_latency(
    url: String,
    keyframes: KeyframeLog,
    fast: Duration,
    fast_from: Instant,
    until: Instant,
) -> Vec<f64> {
    let Ok((mut http, path)) = Http::new(&url) else { return vec![] };
    let slow = Duration::from_millis(500);
    let mut ends: std::collections::BTreeMap<u64, f64> = Default::default(); // seq -> end media seconds
    let mut latencies = Vec::new();
    let mut last_poll: Option<Instant> = None;
    while Instant::now() < until {
        let polled_at = Instant::now();
        if let Ok((200, body)) = http.get(&path).await {
            let now = Instant::now();
            let timed = now >= fast_from && last_poll.is_some_and(|l| now - l <= fast * 4);
            if let Ok(pl) = m3u8_rs::parse_media_playlist_res(&body) {
                let mut prev_end: Option<f64> = None;
                for (i, seg) in pl.segments.iter().enumerate() {
                    let seq = pl.media_sequence + i as u64;
                    if let Some(end) = ends.get(&seq) {
                        prev_end = Some(*end);
                        continue;
                    }
                    // The very first segments we see start the stream at media time 0.
                    let start = match prev_end {
                        Some(e) => e,
                        None if ends.is_empty() => 0.0,
                        None => break, // lost the chain (a segment scrolled out unseen): stop timing
                    };
                    let end = start + f64::from(seg.duration);
                    ends.insert(seq, end);
                    prev_end = Some(end);
                    if !timed {
                        continue;
                    }
                    let end_ms = (end * 1000.0).round() as i64;
                    let log = keyframes.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((_, sent)) = log.iter().rev().find(|(m, _)| (*m as i64 - end_ms).abs() <= 30) {
                        latencies.push(now.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
                    }
                }
            }
            last_poll = Some(now);
        }
        let interval = if Instant::now() >= fast_from { fast } else { slow };
        tokio::time::sleep_until((polled_at + interval).into()).await;
    }
    latencies
}

/// How many HTTP requests the check keeps in flight.
const CHECK_CONCURRENCY: usize = 16;

/// One stream's playlist as the check's first pass saw it.
#[derive(Default)]
struct Listed {
    failures: Vec<String>,
    late: bool,
    /// Path and EXTINF of every segment it lists, oldest first.
    segments: Vec<(String, f32)>,
}

/// First pass of the check, while every publisher still sends: the playlist parses, and it lags at most one
/// segment behind what was published.
async fn check_playlist(http: &mut Http, url: &str, path: &str, published_s: f64, frag: f64) -> Listed {
    let mut listed = Listed::default();
    match http.get(path).await {
        Ok((200, body)) => match m3u8_rs::parse_media_playlist_res(&body) {
            Err(e) => listed.failures.push(format!("{url}: playlist does not parse: {e:?}")),
            Ok(pl) => {
                let produced = pl.media_sequence + pl.segments.len() as u64;
                let expected = (published_s / frag).floor() as u64;
                listed.late = produced + 1 < expected;
                listed.segments = pl.segments.iter().map(|s| (segment_path(path, &s.uri), s.duration)).collect();
            }
        },
        Ok((status, _)) => listed.failures.push(format!("{url}: HTTP {status}")),
        Err(e) => listed.failures.push(format!("{url}: {e}")),
    }
    listed
}

/// Second pass: a listed segment exists, is TS, starts with a keyframe and lasts one fragment.
async fn check_segment(http: &mut Http, path: &str, duration: f32, frag: f64) -> Vec<String> {
    let mut failures = Vec::new();
    match http.get(path).await {
        Ok((200, ts)) => match inspect(&ts) {
            Ok(r) => match r.video().next() {
                Some(v) if v.random_access || annexb_nal_types(&v.payload).contains(&5) => {}
                _ => failures.push(format!("{path}: does not start with a keyframe")),
            },
            Err(e) => failures.push(format!("{path}: not TS: {e}")),
        },
        Ok((status, _)) => failures.push(format!("{path}: HTTP {status}")),
        Err(e) => failures.push(format!("{path}: {e}")),
    }
    if (f64::from(duration) - frag).abs() > 0.1 {
        failures.push(format!("{path}: EXTINF {duration} s, expected {frag} s"));
    }
    failures
}

/// Runs `jobs` on [`CHECK_CONCURRENCY`] keep-alive connections to the host of `url`, in the order given;
/// the results come back in that order.
async fn in_parallel<J, R, F, Fut>(url: &str, jobs: Vec<J>, f: F) -> anyhow::Result<Vec<R>>
where
    J: Send + 'static,
    R: Send + 'static,
    F: Fn(Http, J) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Http, R)> + Send,
{
    let count = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<std::collections::VecDeque<_>>()));
    let f = Arc::new(f);
    let mut workers = Vec::new();
    for _ in 0..CHECK_CONCURRENCY.min(count) {
        let (mut http, _) = Http::new(url)?;
        let (queue, f) = (Arc::clone(&queue), Arc::clone(&f));
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, job)) = next else { break };
                let (h, r) = f(http, job).await;
                http = h;
                done.push((i, r));
            }
            done
        }));
    }
    let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
    for w in workers {
        for (i, r) in w.await? {
            results[i] = Some(r);
        }
    }
    results.into_iter().map(|r| r.ok_or_else(|| anyhow::anyhow!("a check job did not finish"))).collect()
}

/// utime+stime in clock ticks (with the children each process ran and reaped: the snapshot decoders),
/// and RSS in KiB, summed over `pids`.
fn proc_usage(pids: &[u32]) -> Option<(u64, u64)> {
    let mut ticks = 0;
    let mut rss = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ticks += stat_ticks(&stat, 11..=14)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse::<u64>()
            .ok()?;
    }
    Some((ticks, rss))
}

/// The sum of the clock-tick fields `fields` of a `/proc/.../stat` line, counted after the command name
/// (which may hold spaces and parentheses: it ends at the last `)`), 11 being utime.
fn stat_ticks(stat: &str, fields: std::ops::RangeInclusive<usize>) -> Option<u64> {
    let after_comm: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    fields.map(|i| after_comm.get(i)?.parse::<u64>().ok()).sum()
}

/// utime+stime in clock ticks of every thread of `pids`, summed by thread name without its trailing
/// number (`tokio-runtime-w`, `livechannel-wri`, `nginx`), so that a run says where its CPU went.
fn thread_ticks(pids: &[u32]) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let name = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_');
            // A thread's own utime and stime (its children's fields are the process's).
            let Some(ticks) = stat_ticks(&stat, 11..=12) else { continue };
            *by_name.entry(name.to_owned()).or_default() += ticks;
        }
    }
    by_name
}

fn self_ticks() -> u64 {
    proc_usage(&[std::process::id()]).map_or(0, |(t, _)| t)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let input = Arc::new(load(&args.file)?);
    let tick = 100.0; // USER_HZ on Linux
    let bytes: u64 = input.tags.iter().map(|t| t.body.len() as u64).sum();
    let input_mbit_s = bytes as f64 * 8.0 / (input.span_ms as f64 / 1000.0) / 1e6;
    // The idle server's RSS: the highest of a second's samples, as a server that has just opened its port
    // may not have touched all of its start-up memory yet (one sample once read 3.4 MB below the usual
    // figure, which put 17 KiB per stream on top at 200 streams).
    let mut idle_rss = None;
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        idle_rss = idle_rss.max(proc_usage(&args.pids).map(|(_, rss)| rss));
    }

    let t0 = tokio::time::Instant::now();
    let ramp = Duration::from_secs_f64(args.ramp);
    let warm_end = t0 + ramp + Duration::from_secs_f64(args.warmup);
    let cpu_end = warm_end + Duration::from_secs_f64(args.window);
    let lat_end = cpu_end + Duration::from_secs_f64(if args.hls.is_some() { args.latency_window } else { 0.0 });
    // Publishers keep going through the check's first pass (the playlists), then stop and report.
    let stop = tokio_util::sync::CancellationToken::new();

    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let name = format!("{}{i}", args.prefix);
        let log: Option<KeyframeLog> = (i < args.latency_streams).then(|| Arc::new(Mutex::new(Vec::new())));
        if let Some(l) = &log {
            logs.push((name.clone(), Arc::clone(l)));
        }
        let start = t0 + ramp.mul_f64(i as f64 / args.streams.max(1) as f64);
        tasks.push(tokio::spawn(publish(Arc::clone(&args), Arc::clone(&input), name, start, stop.clone(), log)));
    }

    // Latency pollers follow their playlists from the start (slowly until the latency window), on a thread
    // of their own: on the publishers' runtime at 1000 streams they could not poll every 5 ms, and a sample
    // needs two polls close together, so that run had none.
    let pollers = match &args.hls {
        None => None,
        Some(template) => {
            let jobs: Vec<_> = logs.iter().map(|(name, log)| (playlist_url(template, name), Arc::clone(log))).collect();
            let (fast, from, until) = (Duration::from_millis(args.poll_ms), cpu_end.into_std(), lat_end.into_std());
            Some(std::thread::Builder::new().name("latency".into()).spawn(move || -> anyhow::Result<Vec<f64>> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok(runtime.block_on(async move {
                    let polls: Vec<_> = jobs
                        .into_iter()
                        .map(|(url, log)| tokio::spawn(measure_latency(url, log, fast, from, until)))
                        .collect();
                    let mut all = Vec::new();
                    for p in polls {
                        all.extend(p.await.unwrap_or_default());
                    }
                    all
                }))
            })?)
        }
    };

    tokio::time::sleep_until(warm_end).await;
    let cpu_start = proc_usage(&args.pids);
    let threads_start = thread_ticks(&args.pids);
    let gen_start = self_ticks();
    tokio::time::sleep_until(cpu_end).await;
    let cpu_stop = proc_usage(&args.pids);
    let threads_stop = thread_ticks(&args.pids);
    let gen_stop = self_ticks();
    let window = args.window;

    let mut report = Report {
        label: args.label.clone(),
        streams: args.streams,
        input: args.file.display().to_string(),
        input_mbit_s,
        generator_cpu_percent: (gen_stop - gen_start) as f64 / tick / window * 100.0,
        ..Default::default()
    };
    if let (Some((a, _)), Some((b, rss))) = (cpu_start, cpu_stop) {
        let cpu_s = (b - a) as f64 / tick;
        report.server_cpu_percent = Some(cpu_s / window * 100.0);
        report.cpu_ms_per_stream_second = Some(cpu_s * 1000.0 / (window * args.streams as f64));
        report.rss_kib = Some(rss);
        let mut by_thread: Vec<(String, f64)> = threads_stop
            .iter()
            .map(|(name, t)| (name.clone(), t.saturating_sub(threads_start.get(name).copied().unwrap_or(0))))
            .map(|(name, t)| (name, t as f64 / tick / window * 100.0))
            .collect();
        let seen: f64 = by_thread.iter().map(|(_, p)| p).sum();
        by_thread.push(("(ended threads, children)".to_owned(), (cpu_s / window * 100.0 - seen).max(0.0)));
        by_thread.retain(|(_, p)| *p >= 0.05);
        by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
        report.server_cpu_by_thread = by_thread;
        if let Some(idle_rss) = idle_rss {
            report.rss_idle_kib = Some(idle_rss);
            report.rss_kib_per_stream = Some(rss.saturating_sub(idle_rss) as f64 / args.streams as f64);
        }
    }

    if let Some(template) = &args.hls {
        let mut all = match pollers {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the latency thread panicked"))??,
            None => Vec::new(),
        };
        all.sort_by(f64::total_cmp);
        report.latency_samples = all.len();
        report.latency_median_ms = percentile(&all, 0.5);
        report.latency_p99_ms = percentile(&all, 0.99);
        report.latency_max_ms = all.last().copied();

        let published_s = (tokio::time::Instant::now() - t0).as_secs_f64() - args.ramp;
        // Pass 1, publishers still sending: every stream's playlist, so "on time" is judged for all of them
        // within moments of one instant.
        let urls: Vec<String> =
            (0..args.streams).map(|i| playlist_url(template, &format!("{}{i}", args.prefix))).collect();
        let frag = args.frag;
        let mut listed = in_parallel(template, urls, move |mut http, url| async move {
            let listed = match Http::new(&url) {
                Ok((_, path)) => check_playlist(&mut http, &url, &path, published_s, frag).await,
                Err(e) => Listed { failures: vec![format!("{url}: {e}")], ..Default::default() },
            };
            (http, listed)
        })
        .await?;
        // Pass 2 reads every listed segment after the publishers stop. Reading 3000 segments (2 GB) from a
        // server that is still ingesting 1000 streams took minutes, while those streams wrote 350 MB/s more
        // to its disk; stopped, it serves them in seconds. The oldest listed segments of every stream go
        // first: nginx-rtmp deletes a fragment once it is two playlist lengths old.
        stop_publishers(&stop, &mut tasks, &mut report).await;
        let deepest = listed.iter().map(|l| l.segments.len()).max().unwrap_or(0);
        let jobs: Vec<(usize, String, f32)> = (0..deepest)
            .flat_map(|k| listed.iter().enumerate().filter_map(move |(i, l)| l.segments.get(k).map(|s| (i, s))))
            .map(|(i, (path, duration))| (i, path.clone(), *duration))
            .collect();
        let segment_failures = in_parallel(template, jobs, move |mut http, (i, path, duration)| async move {
            let failures = check_segment(&mut http, &path, duration, frag).await;
            (http, (i, failures))
        })
        .await?;
        let mut h = HlsReport::default();
        for (owner, failures) in segment_failures {
            h.segments_checked += 1;
            listed[owner].failures.extend(failures);
        }
        for (l, url) in listed.into_iter().zip((0..args.streams).map(|i| format!("{}{i}", args.prefix))) {
            h.streams_checked += 1;
            h.streams_late += usize::from(l.late);
            if l.failures.is_empty() {
                h.streams_ok += 1;
            }
            h.failures.extend(l.failures.into_iter().take(3).map(|f| format!("{url}: {f}")));
        }
        report.hls = h;
    }
    stop_publishers(&stop, &mut tasks, &mut report).await;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn print_report(r: &Report) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!("{}: {} streams of {:.2} Mbit/s", r.label, r.streams, r.input_mbit_s);
    println!(
        "  server CPU            : {} % ({} ms per stream-second)",
        opt(r.server_cpu_percent),
        opt(r.cpu_ms_per_stream_second)
    );
    if !r.server_cpu_by_thread.is_empty() {
        let threads: Vec<String> = r.server_cpu_by_thread.iter().map(|(n, p)| format!("{n} {p:.1}")).collect();
        println!("  server CPU by thread  : {} (% of a core)", threads.join(", "));
    }
    println!("  generator CPU         : {:.1} %", r.generator_cpu_percent);
    println!("  server RSS            : {} KiB ({} KiB per stream)", r.rss_kib.unwrap_or(0), opt(r.rss_kib_per_stream));
    println!(
        "  keyframe->playlist    : median {} ms, p99 {} ms, max {} ms ({} samples)",
        opt(r.latency_median_ms),
        opt(r.latency_p99_ms),
        opt(r.latency_max_ms),
        r.latency_samples
    );
    println!(
        "  HLS                   : {}/{} streams correct, {} late, {} segments checked",
        r.hls.streams_ok, r.hls.streams_checked, r.hls.streams_late, r.hls.segments_checked
    );
    for f in r.hls.failures.iter().take(5) {
        println!("    {f}");
    }
}
