//! Snapshots end to end: a channel made with a PutLiveChannel Snapshot configuration, real pushes (ffmpeg
//! with x264 High profile and B-frames, or the fixtures), JPEGs in DestBucket that ffprobe decodes at the
//! stream's size, one signed NotifyTopic message per snapshot through the outbox, and the rules that keep
//! snapshots off the media path (a decoder that fails or falls behind never costs a segment).

use std::path::Path;
use std::time::Duration;

use crate::callbacks::{Received, Receiver};
use crate::interop::{live_pattern, run, strings};
use crate::support::*;
use livechannel::config::{Acl, Bucket, Config, NotifyTopic};
use livechannel::meta::snapshots::Order;
use tokio::net::TcpListener;

const SIGN_KEY: &str = "snapkey0123456789";

fn snap_config(dir: &Path, receiver: std::net::SocketAddr) -> Config {
    let mut c = config(dir, 1, 3);
    c.access_keys = vec![livechannel::config::AccessKey { id: "AKIDEXAMPLE".into(), secret: "SECRETEXAMPLE".into() }];
    c.buckets = vec![
        Bucket { name: "live".into(), acl: Acl::PublicReadWrite, auto_create_channels: true, ..Bucket::default() },
        Bucket { name: "snaps".into(), acl: Acl::Private, auto_create_channels: false, ..Bucket::default() },
    ];
    c.notify_topics = vec![NotifyTopic {
        name: "snapshotnotify".into(),
        url: format!("http://{receiver}/snapshots"),
        sign_key: Some(SIGN_KEY.into()),
    }];
    c.notify.retry_base = Duration::from_millis(50);
    c.notify.retry_max = Duration::from_millis(400);
    c
}

async fn create_channel(ts: &TestServer, channel: &str, interval: u32) {
    let xml = format!(
        "<LiveChannelConfiguration><Status>enabled</Status><Target><Type>HLS</Type><FragDuration>2</FragDuration>\
         <FragCount>3</FragCount></Target><Snapshot><RoleName>role_for_snapshot</RoleName><DestBucket>snaps</DestBucket>\
         <NotifyTopic>snapshotnotify</NotifyTopic><Interval>{interval}</Interval></Snapshot></LiveChannelConfiguration>"
    );
    let resp = http_request_body(ts.http(), "PUT", &format!("/live/{channel}?live"), &[], xml.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

async fn receiver() -> (Receiver, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (r, _task) = Receiver::start(listener, 0).await;
    (r, addr)
}

/// The messages of one status, once the outbox has delivered `n` of them.
async fn messages(r: &Receiver, status: &str, n: usize) -> Vec<Received> {
    eventually(Duration::from_secs(30), &format!("{n} {status} snapshot messages"), async || {
        let got: Vec<Received> = r.got().into_iter().filter(|m| m.body["status"] == status).collect();
        (got.len() >= n).then_some(got)
    })
    .await
}

/// Pushes the ffmpeg test pattern (640x360, 25 fps, x264 with B-frames) for `seconds` with `gop` frames
/// between keyframes.
async fn push(ts: &TestServer, channel: &str, seconds: &str, gop: &str) {
    let url = format!("rtmp://{}/live/{channel}", ts.rtmp());
    let out =
        run("ffmpeg", live_pattern(seconds, gop, &["-profile:v", "high", "-c:a", "aac", "-f", "flv", &url])).await;
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    ts.wait_flushed(channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ffmpeg and ffprobe"]
async fn a_one_second_gop_at_interval_one_gives_a_decodable_jpeg_per_second_each_announced_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (r, addr) = receiver().await;
    let ts = TestServer::start(snap_config(dir.path(), addr)).await;
    create_channel(&ts, "cam", 1).await;
    push(&ts, "cam", "12", "25").await;

    // Every decode finishes (the pool drains), then the index holds what was taken.
    let counters = ts.server.snapshot_counters().clone();
    let taken = eventually(Duration::from_secs(30), "the snapshot pool to drain", async || {
        let rows = ts.server.meta.snapshots_between(
            "live",
            "cam",
            std::time::UNIX_EPOCH,
            std::time::SystemTime::now() + Duration::from_secs(60),
            100,
            Order::Asc,
        );
        let rows = rows.await.unwrap();
        let done = counters.taken.load(std::sync::atomic::Ordering::Relaxed) as usize;
        (done == rows.len() && !rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(counters.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!((10..=14).contains(&taken.len()), "12 s with a 1 s GOP gave {} snapshots", taken.len());
    let skipped = counters.skipped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(skipped, 0, "two workers keep up with one channel");

    // Each object is a JPEG ffprobe decodes at the stream's size; latest.jpg is the newest.
    let media = dir.path().join("media/snaps");
    for s in &taken {
        assert_eq!((s.width, s.height, s.dest_bucket.as_str()), (640, 360, "snaps"));
        let file = media.join(&s.object_key);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), s.size);
        let probe = run(
            "ffprobe",
            strings(&[
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
                file.to_str().unwrap(),
            ]),
        )
        .await;
        let text = String::from_utf8_lossy(&probe.stdout);
        assert!(probe.status.success() && probe.stderr.is_empty(), "{}", String::from_utf8_lossy(&probe.stderr));
        assert_eq!(text.trim(), "mjpeg,640,360", "{}", s.object_key);
    }
    let newest = taken.last().unwrap();
    assert_eq!(
        std::fs::read(media.join("cam/latest.jpg")).unwrap(),
        std::fs::read(media.join(&newest.object_key)).unwrap()
    );
    // Media timestamps about a second apart, in order.
    let gaps: Vec<i64> = taken.windows(2).map(|w| w[1].media_ms - w[0].media_ms).collect();
    assert!(gaps.iter().all(|g| (900..=1100).contains(g)), "{gaps:?}");

    // One signed message per snapshot, naming the same objects.
    let got = messages(&r, "success", taken.len()).await;
    assert_eq!(got.len(), taken.len(), "exactly one message per snapshot");
    let mut objects: Vec<String> = got.iter().map(|m| m.body["object"].as_str().unwrap().to_owned()).collect();
    objects.sort();
    let mut want: Vec<String> = taken.iter().map(|s| s.object_key.clone()).collect();
    want.sort();
    assert_eq!(objects, want);
    for m in &got {
        assert_eq!(m.method, "POST");
        assert_eq!((m.body["bucket"].as_str(), m.body["channel"].as_str()), (Some("snaps"), Some("cam")));
        assert_eq!((m.body["width"].as_u64(), m.body["height"].as_u64()), (Some(640), Some(360)));
        let ts_header: u64 = m.headers["ali-live-timestamp"].to_str().unwrap().parse().unwrap();
        let want = livechannel::notify::ali_live_signature("127.0.0.1", ts_header, SIGN_KEY);
        assert_eq!(m.headers["ali-live-signature"].to_str().unwrap(), want);
        assert!(m.headers["idempotency-key"].to_str().unwrap().starts_with("snapshot-"));
    }

    // DeleteObject on a snapshot takes its index row with it.
    let oss = crate::oss_api::Oss::with_key(ts.http(), "snaps", "AKIDEXAMPLE", "SECRETEXAMPLE");
    let resp = oss.call("DELETE", &taken[0].object_key, "", b"").await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert!(!media.join(&taken[0].object_key).exists());
    let left = ts
        .server
        .meta
        .snapshots_between("live", "cam", std::time::UNIX_EPOCH, std::time::SystemTime::now(), 100, Order::Asc)
        .await
        .unwrap();
    assert_eq!(left, taken[1..].to_vec());
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ffmpeg"]
async fn a_four_second_gop_at_interval_one_gives_one_snapshot_per_keyframe_not_four() {
    let dir = tempfile::tempdir().unwrap();
    let (_r, addr) = receiver().await;
    let ts = TestServer::start(snap_config(dir.path(), addr)).await;
    create_channel(&ts, "slow", 1).await;
    // 10 s at 25 fps with a keyframe every 100 frames: keyframes at 0, 4 and 8 s.
    push(&ts, "slow", "10", "100").await;
    let counters = ts.server.snapshot_counters().clone();
    let taken = eventually(Duration::from_secs(30), "three snapshots", async || {
        let n = counters.taken.load(std::sync::atomic::Ordering::Relaxed)
            + counters.failed.load(std::sync::atomic::Ordering::Relaxed);
        (n >= 3).then_some(n)
    })
    .await;
    // Nothing else arrives later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counters.taken.load(std::sync::atomic::Ordering::Relaxed), 3, "got {taken}");
    ts.server.shutdown(Duration::from_secs(10)).await;
}

/// A decoder that cannot be run (ffmpeg not installed, or a stream it refuses): one logged error and one
/// failure message for the publish, no snapshot, and every segment still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoder_that_fails_costs_one_failure_message_and_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (r, addr) = receiver().await;
    let mut c = snap_config(dir.path(), addr);
    c.snapshots.ffmpeg = dir.path().join("no-such-ffmpeg");
    let ts = TestServer::start(c).await;
    create_channel(&ts, "broken", 1).await;
    let media = tags("media/av_bframes.flv");
    publish(ts.rtmp(), "broken", &media).await.unwrap();
    ts.wait_flushed("broken").await;
    let got = messages(&r, "failed", 1).await;
    assert_eq!(got[0].body["channel"], "broken");
    assert!(got[0].body["message"].as_str().unwrap().contains("no-such-ffmpeg"), "{}", got[0].body);
    let pl = playlist(&ts, "/live/broken/playlist.m3u8").await;
    assert!(!pl.segments.is_empty());
    let counters = ts.server.snapshot_counters();
    assert!(counters.failed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(counters.taken.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Later failures of the same publish are counted, not announced again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.got().iter().filter(|m| m.body["status"] == "failed").count(), 1);
    ts.server.shutdown(Duration::from_secs(10)).await;
}

/// A decoder slower than the keyframes: the queue fills, the rest are skipped and counted, and the
/// publish's segments are all stored while the first decode is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoder_that_falls_behind_skips_snapshots_and_never_delays_a_segment() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (_r, addr) = receiver().await;
    let slow = dir.path().join("slow-decoder.sh");
    std::fs::write(&slow, "#!/bin/sh\ncat > /dev/null\nsleep 3\nexit 1\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = snap_config(dir.path(), addr);
    c.snapshots.ffmpeg = slow;
    c.snapshots.workers = 1;
    c.snapshots.queue = 1;
    let ts = TestServer::start(c).await;
    create_channel(&ts, "busy", 1).await;
    // 10 s with a keyframe every second, sent as fast as the socket takes it.
    let media = tags("media/av_no_bframes.flv");
    let mut schedule = livechannel::snapshot::Schedule::new(1);
    let due = media
        .iter()
        .filter(|t| t.kind == livechannel::flv::file::TagKind::Video && t.body.get(..2) == Some(&[0x17, 1]))
        .filter(|t| schedule.due(livechannel::media::Timestamp90k::from_millis(i64::from(t.timestamp_ms))))
        .count();
    assert!(due >= 9, "the fixture has {due} keyframes a second apart");
    publish(ts.rtmp(), "busy", &media).await.unwrap();
    ts.wait_flushed("busy").await;
    let counters = ts.server.snapshot_counters();
    // Every segment is stored and listed while the first decode still sleeps.
    assert_eq!(counters.taken.load(Relaxed) + counters.failed.load(Relaxed), 0, "the publish waited for a decoder");
    let pl = playlist(&ts, "/live/busy/playlist.m3u8").await;
    assert_eq!(pl.segments.len(), 3, "a full window of FragCount segments");
    let skipped = counters.skipped.load(Relaxed);
    // One decoder run holds the first keyframe (and the second too, when it was already queued as the
    // run began), one more waits in the queue, and the rest are skipped.
    assert!((due - 3..=due - 2).contains(&(skipped as usize)), "{skipped} of {due} skipped");
    ts.server.shutdown(Duration::from_secs(10)).await;
}
