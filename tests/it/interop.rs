//! Interop with real encoders and players. These need outside tools and are `#[ignore]`d for a plain
//! `cargo test`; `.ci/run` installs ffmpeg and GStreamer and runs them with `--include-ignored`.
//!
//! The checks use ffprobe/ffmpeg as the judge: every segment decodes without a single error message, the
//! first video frame of every segment is a keyframe, and the EXTINF durations add up to what was published.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

pub(crate) async fn run(cmd: &str, args: Vec<String>) -> Output {
    let cmd = cmd.to_string();
    tokio::task::spawn_blocking(move || Command::new(&cmd).args(&args).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {e}: is the tool installed?"))
}

pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// ffmpeg arguments for a real-time 640x360 25 fps test pattern with a tone, encoded to H.264 (2 B-frames,
/// GOP of `gop` frames) + AAC, followed by `output` (muxer options and the destination).
pub(crate) fn live_pattern(seconds: &str, gop: &str, output: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        seconds,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        gop,
        "-bf",
        "2",
    ]);
    args.extend(strings(output));
    args
}

/// Fetches every listed segment, and checks each with ffprobe and ffmpeg. Returns the EXTINF sum.
async fn verify_with_ffprobe(ts: &TestServer, channel: &str, dir: &Path, frag: f32) -> f32 {
    let pl = playlist(ts, &format!("/live/{channel}/playlist.m3u8")).await;
    assert!(pl.segments.len() >= 3, "{} segments", pl.segments.len());
    let mut sum = 0.0;
    for (i, seg) in pl.segments.iter().enumerate() {
        let body = ts.get(&format!("/live/{channel}/{}", seg.uri)).await.body;
        let file = dir.join(&seg.uri);
        std::fs::write(&file, &body).unwrap();
        let f = file.to_str().unwrap();
        let probe = run(
            "ffprobe",
            strings(&[
                "-v",
                "error",
                "-select_streams",
                "v",
                "-show_entries",
                "frame=key_frame,pict_type",
                "-of",
                "csv=p=0",
                f,
            ]),
        )
        .await;
        let errors = String::from_utf8_lossy(&probe.stderr);
        assert!(probe.status.success() && errors.trim().is_empty(), "ffprobe on {}: {errors}", seg.uri);
        let frames = String::from_utf8_lossy(&probe.stdout);
        let first = frames.lines().next().unwrap_or_default();
        assert!(first.starts_with("1,I"), "first video frame of {} is {first:?}", seg.uri);
        let decode = run("ffmpeg", strings(&["-v", "error", "-i", f, "-f", "null", "-"])).await;
        let errors = String::from_utf8_lossy(&decode.stderr);
        assert!(decode.status.success() && errors.trim().is_empty(), "decoding {}: {errors}", seg.uri);
        if i + 1 < pl.segments.len() {
            assert!(seg.duration >= frag - 0.001, "{} is {} s, below FragDuration", seg.uri, seg.duration);
        }
        sum += seg.duration;
    }
    sum
}

#[tokio::test]
#[ignore = "needs ffmpeg"]
async fn ffmpeg_publishes_a_live_pattern_and_ffprobe_decodes_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 20)).await;
    // The tee muxer keeps a copy of exactly what was published, to measure its duration.
    let copy = dir.path().join("published.flv");
    let url = format!("[f=flv]rtmp://{}/live/ffmpeg|[f=flv]{}", ts.rtmp(), copy.display());
    let out = run(
        "ffmpeg",
        live_pattern(
            "12",
            "50",
            &[
                "-flags:v",
                "+global_header",
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-f",
                "tee",
                &url,
            ],
        ),
    )
    .await;
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    ts.wait_flushed("ffmpeg").await;
    let sum = verify_with_ffprobe(&ts, "ffmpeg", dir.path(), 2.0).await;
    let published =
        media_duration(&livechannel::flv::file::parse(std::fs::read(&copy).unwrap().into()).unwrap()) as f32;
    assert!((sum - published).abs() <= 0.041, "EXTINF sum {sum}, published {published}");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

/// Publishes 10 s of test pattern + tone through a GStreamer pipeline ending in `sink` (which names the
/// RTMP URL with `{url}`) and checks every segment with ffprobe.
async fn gstreamer_publish_and_verify(channel: &str, bframes: u32, sink: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 20)).await;
    let sink = sink.replace("{url}", &format!("rtmp://{}/live/{channel}", ts.rtmp()));
    let pipeline = format!(
        "videotestsrc num-buffers=250 ! video/x-raw,width=320,height=240,framerate=25/1 ! \
         x264enc key-int-max=50 bframes={bframes} speed-preset=ultrafast ! h264parse ! \
         flvmux name=mux streamable=true ! {sink} \
         audiotestsrc num-buffers=430 samplesperbuffer=1024 ! audio/x-raw,rate=44100 ! voaacenc ! aacparse ! mux."
    );
    let mut args = vec!["-q".to_string()];
    args.extend(shell_words(&pipeline));
    let out = run("gst-launch-1.0", args).await;
    assert!(out.status.success(), "gst-launch failed: {}", String::from_utf8_lossy(&out.stderr));
    ts.wait_flushed(channel).await;
    let sum = verify_with_ffprobe(&ts, channel, dir.path(), 2.0).await;
    assert!((sum - 10.0).abs() <= 0.045, "EXTINF sum {sum}");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
#[ignore = "needs gstreamer"]
async fn gstreamer_librtmp_rtmpsink_publishes_and_ffprobe_decodes_every_segment() {
    // rtmpsink is the librtmp client, as OBS and many appliances use.
    gstreamer_publish_and_verify("gst", 0, "rtmpsink location=\"{url} live=1\"").await;
}

#[tokio::test]
#[ignore = "needs gstreamer"]
async fn gstreamer_rtmp2sink_publishes_and_ffprobe_decodes_every_segment() {
    // rtmp2sink is GStreamer's own RTMP implementation: a third client.
    gstreamer_publish_and_verify("gst2", 2, "rtmp2sink location={url}").await;
}

#[tokio::test]
#[ignore = "needs ffmpeg"]
async fn rtmp_playback_from_ffmpeg_is_refused_politely() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 3)).await;
    let url = format!("rtmp://{}/live/anything", ts.rtmp());
    let out = run(
        "ffmpeg",
        strings(&["-hide_banner", "-loglevel", "error", "-rw_timeout", "5000000", "-i", &url, "-f", "null", "-"]),
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HLS") || stderr.contains("Play.Failed"), "ffmpeg said: {stderr}");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
#[ignore = "needs ffmpeg"]
async fn an_unsupported_codec_from_ffmpeg_is_refused_with_an_rtmp_error() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 3)).await;
    let url = format!("rtmp://{}/live/h263", ts.rtmp());
    let out = run(
        "ffmpeg",
        strings(&[
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "4",
            "-c:v",
            "flv1",
            "-f",
            "flv",
            &url,
        ]),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ffmpeg should fail");
    assert!(stderr.contains("unsupported video codec"), "ffmpeg said: {stderr}");
    ts.wait_flushed("h263").await;
    assert_eq!(ts.get("/live/h263/playlist.m3u8").await.status, 404);
    ts.server.shutdown(Duration::from_secs(5)).await;
}

/// Splits a gst-launch description on spaces outside double quotes (quotes removed).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[tokio::test]
#[ignore = "needs ffmpeg, chromium and the npm packages in tests/browser"]
async fn hls_js_in_chromium_plays_a_live_publish_cross_origin() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/hls.js").exists() && browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 5)).await;
    let url = format!("rtmp://{}/live/web", ts.rtmp());
    let mut encoder = Command::new("ffmpeg")
        .args(live_pattern("40", "25", &["-c:a", "aac", "-f", "flv", &url]))
        .spawn()
        .expect("ffmpeg");
    // Wait for the first segments of the live publish.
    eventually(Duration::from_secs(20), "two segments in the live playlist", async || {
        let live = ts.get("/live/web/playlist.m3u8").await.status == 200
            && playlist(&ts, "/live/web/playlist.m3u8").await.segments.len() >= 2;
        live.then_some(())
    })
    .await;
    let script = browser_dir.join("play.mjs");
    let playlist_url = format!("http://{}/live/web/playlist.m3u8", ts.http());
    let out = run("node", vec![script.display().to_string(), playlist_url, "4".into()]).await;
    let _ = encoder.kill();
    let _ = encoder.wait();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hls.js did not play: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("\"fatal\":null") && report.contains("\"width\":640"), "{report}");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

/// A channel whose publisher left longer ago than the bucket's reconnect window: hls.js plays what is
/// listed and ends (the `ended` event) instead of spinning while it waits for segments that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node with tests/browser's packages (npm ci) and chromium"]
async fn hls_js_ends_a_channel_whose_publisher_left() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(browser_dir.join("node_modules/hls.js").exists(), "run `npm ci` in tests/browser first (.ci/run does)");
    let dir = tempfile::tempdir().unwrap();
    let live = livechannel::config::Bucket {
        name: "live".into(),
        acl: livechannel::config::Acl::PublicReadWrite,
        auto_create_channels: true,
        reconnect_window: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let ts = TestServer::start(livechannel::config::Config { buckets: vec![live], ..config(dir.path(), 1, 4) }).await;
    publish(ts.rtmp(), "over", &tags("media/av_no_bframes.flv")).await.unwrap();
    ts.wait_flushed("over").await;
    eventually(Duration::from_secs(10), "EXT-X-ENDLIST", async || {
        playlist(&ts, "/live/over/playlist.m3u8").await.end_list.then_some(())
    })
    .await;
    let playlist_url = format!("http://{}/live/over/playlist.m3u8", ts.http());
    let out = run("node", vec![browser_dir.join("play.mjs").display().to_string(), playlist_url, "ended".into()]).await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hls.js did not end: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("\"ended\":true") && report.contains("\"fatal\":null"), "{report}");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

/// ffmpeg reads a channel across a re-publish without "corrupt input packet": each publish's muxer starts
/// its continuity counters afresh, and the first packet of every PID says so (discontinuity_indicator),
/// as the EXT-X-DISCONTINUITY tag does for players.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ffmpeg"]
async fn ffmpeg_reads_across_a_republish_without_continuity_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 30)).await;
    let tags = tags("media/av_no_bframes.flv");
    for _ in 0..2 {
        publish(ts.rtmp(), "again", &tags).await.unwrap();
        ts.wait_flushed("again").await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let window = format!("vod&startTime={}&endTime={}", now - 300, now + 600);
    let posted = http_request(ts.http(), "POST", &format!("/live/again/vod.m3u8?{window}"), &[]).await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let vod = format!("http://{}/live/again/vod.m3u8", ts.http());
    let out = run("ffmpeg", strings(&["-hide_banner", "-v", "warning", "-i", &vod, "-f", "null", "-"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("corrupt") && !stderr.contains("ontinuity"), "ffmpeg said: {stderr}");
    ts.server.shutdown(Duration::from_secs(5)).await;
}
