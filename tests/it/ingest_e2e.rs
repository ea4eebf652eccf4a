//! End to end, with no outside tools: the real server on 127.0.0.1:0, fixtures published over RTMP by our
//! rml_rtmp-based client faster than real time, playlists and segments fetched over HTTP and checked with
//! an independent TS parser (mpeg2ts) and playlist parser (m3u8-rs).

use std::time::Duration;

use crate::support::*;
use livechannel::flv::file::TagKind;
use livechannel::rtmp::client::{ClientError, Publisher};
use livechannel::ts::inspect::{annexb_nal_types, inspect};

/// Fetches every segment the playlist lists and checks it as a player would need it.
async fn check_listed_segments(ts: &TestServer, channel: &str, expect_video: bool) -> m3u8_rs::MediaPlaylist {
    let pl = playlist(ts, &format!("/live/{channel}/playlist.m3u8")).await;
    assert!(!pl.segments.is_empty());
    for seg in &pl.segments {
        assert!(seg.program_date_time.is_some(), "EXT-X-PROGRAM-DATE-TIME on {}", seg.uri);
        assert!(pl.target_duration as f32 >= seg.duration.round(), "target duration below EXTINF of {}", seg.uri);
        let resp = ts.get(&format!("/live/{channel}/{}", seg.uri)).await;
        assert_eq!(resp.status, 200, "{}", seg.uri);
        assert_eq!(resp.header("content-type"), Some("video/mp2t"));
        let report = inspect(&resp.body).expect("segment parses as TS");
        assert_eq!(report.first_pids, vec![0, livechannel::ts::PMT_PID], "PAT+PMT first in {}", seg.uri);
        assert_eq!(report.continuity_errors, 0, "{}", seg.uri);
        assert!(report.max_pcr_gap_90k() <= 9000, "PCR gap {} in {}", report.max_pcr_gap_90k(), seg.uri);
        if expect_video {
            let first = report.video().next().expect("video in segment");
            assert!(first.random_access, "{} does not start with a keyframe", seg.uri);
            assert_eq!(annexb_nal_types(&first.payload)[..3], [9, 7, 8], "AUD+SPS+PPS before the IDR in {}", seg.uri);
        } else {
            assert!(report.audio().next().is_some());
        }
    }
    pl
}

async fn publish_fixture_and_check(name: &str, frag: u32, expect_video: bool) -> (Vec<f64>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), frag, 3)).await;
    let tags = tags(name);
    publish(ts.rtmp(), "demo", &tags).await.expect("publish");
    ts.wait_flushed("demo").await;
    check_listed_segments(&ts, "demo", expect_video).await;
    let stored = ts.drain_stored();
    let durations: Vec<f64> = stored.iter().map(|s| s.segment.duration.as_secs_f64()).collect();
    let total: f64 = durations.iter().sum();
    let expected = media_duration(&tags);
    ts.server.shutdown(Duration::from_secs(10)).await;
    (durations, total - expected)
}

#[tokio::test]
async fn h264_with_b_frames_and_aac_becomes_keyframe_aligned_segments() {
    let (durations, error) = publish_fixture_and_check("media/av_bframes.flv", 2, true).await;
    // 2 s GOP, FragDuration 2: every segment but the last is exactly one GOP.
    assert_eq!(durations.len(), 5, "{durations:?}");
    assert!(durations[..4].iter().all(|d| (d - 2.0).abs() < 1e-6), "{durations:?}");
    assert!(error.abs() <= 0.041, "EXTINF sum off by {error} s");
}

#[tokio::test]
async fn h264_without_b_frames_cuts_at_the_first_keyframe_past_frag_duration() {
    // 1 s GOP, FragDuration 3: segments of 3 s.
    let (durations, error) = publish_fixture_and_check("media/av_no_bframes.flv", 3, true).await;
    assert!(durations[..3].iter().all(|d| (d - 3.0).abs() < 0.001), "{durations:?}");
    assert!(error.abs() <= 0.034, "EXTINF sum off by {error} s");
}

#[tokio::test]
async fn audio_only_publishes_segment() {
    let (durations, error) = publish_fixture_and_check("media/audio_only.flv", 2, false).await;
    assert!(durations.len() >= 5);
    assert!(durations[..durations.len() - 1].iter().all(|d| (2.0..2.05).contains(d)), "{durations:?}");
    assert!(error.abs() <= 0.024, "EXTINF sum off by {error} s");
}

#[tokio::test]
async fn video_only_publishes_segment() {
    let (durations, error) = publish_fixture_and_check("media/video_only.flv", 4, true).await;
    assert_eq!(durations.len(), 3, "{durations:?}");
    assert!(error.abs() <= 0.041, "EXTINF sum off by {error} s");
}

#[tokio::test]
async fn a_gop_longer_than_sixty_seconds_is_force_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 1, 5)).await;
    publish(ts.rtmp(), "long", &tags("media/long_gop.flv")).await.unwrap();
    ts.wait_flushed("long").await;
    let stored = ts.drain_stored();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[0].segment.forced);
    let first = stored[0].segment.duration.as_secs_f64();
    assert!((59.0..=60.0).contains(&first), "forced cut after {first} s");
    assert!(!stored[1].segment.starts_with_keyframe);
    let pl = playlist(&ts, "/live/long/playlist.m3u8").await;
    assert!(pl.target_duration >= 60);
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_second_publisher_is_refused_while_the_channel_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 3)).await;
    let first = Publisher::connect(ts.rtmp(), "live", "busy").await.unwrap();
    let second = Publisher::connect(ts.rtmp(), "live", "busy?token=x").await;
    match second {
        Err(ClientError::Refused { code, description }) => {
            assert_eq!(code, "NetStream.Publish.BadName");
            assert!(description.contains("already live"), "{description}");
        }
        other => panic!("second publisher was not refused: {:?}", other.err()),
    }
    first.finish().await.unwrap();
    ts.wait_flushed("busy").await;
    let again = Publisher::connect(ts.rtmp(), "live", "busy").await;
    assert!(again.is_ok(), "channel is free after unpublish");
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn bad_apps_bad_names_and_play_requests_are_refused_politely() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 3)).await;
    let bad_app = Publisher::connect(ts.rtmp(), "vod", "x").await;
    assert!(
        matches!(bad_app, Err(ClientError::Refused { ref code, .. }) if code == "NetConnection.Connect.Rejected"),
        "{:?}",
        bad_app.err()
    );
    let unknown_bucket = Publisher::connect(ts.rtmp(), "nope/live", "x").await;
    assert!(matches!(unknown_bucket, Err(ClientError::Refused { .. })));
    for name in ["..", "a#b", "%2e%2e", &"x".repeat(65)] {
        let r = Publisher::connect(ts.rtmp(), "live", name).await;
        assert!(
            matches!(r, Err(ClientError::Refused { ref code, .. }) if code == "NetStream.Publish.BadName"),
            "{name}: {:?}",
            r.err()
        );
    }
    // The bucket app form that oss2's sign_rtmp_url produces is accepted.
    let p = Publisher::connect(ts.rtmp(), "live/live", "bucketform").await.unwrap();
    p.finish().await.unwrap();
    // The server is still healthy.
    publish(ts.rtmp(), "fine", &tags("media/audio_only.flv")).await.unwrap();
    ts.wait_flushed("fine").await;
    assert_eq!(ts.get("/live/fine/playlist.m3u8").await.status, 200);
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_dropped_tcp_connection_ends_the_publish_and_flushes_like_delete_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 2, 3)).await;
    let all = tags("media/av_bframes.flv");
    let half = &all[..all.len() / 2];
    let mut p = Publisher::connect(ts.rtmp(), "live", "drop").await.unwrap();
    send_all(&mut p, half, 0).await.unwrap();
    drop(p); // TCP close without deleteStream
    ts.wait_flushed("drop").await;
    let stored = ts.drain_stored();
    let total: f64 = stored.iter().map(|s| s.segment.duration.as_secs_f64()).sum();
    assert!(total > 4.0, "the open segment was flushed: {total} s stored");
    let pl = playlist(&ts, "/live/drop/playlist.m3u8").await;
    assert_eq!(pl.segments.last().unwrap().uri, format!("{}.ts", stored.last().unwrap().seq));
    assert!(Publisher::connect(ts.rtmp(), "live", "drop").await.is_ok(), "the channel is not stuck live");
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn republishing_continues_sequence_numbers_with_a_discontinuity() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 2, 10)).await;
    let t = tags("media/av_bframes.flv");
    publish(ts.rtmp(), "again", &t).await.unwrap();
    ts.wait_flushed("again").await;
    let first: Vec<u64> = ts.drain_stored().iter().map(|s| s.seq).collect();
    publish(ts.rtmp(), "again", &t).await.unwrap();
    ts.wait_flushed("again").await;
    let second: Vec<u64> = ts.drain_stored().iter().map(|s| s.seq).collect();
    assert_eq!(second[0], first.last().unwrap() + 1, "{first:?} then {second:?}");
    let pl = playlist(&ts, "/live/again/playlist.m3u8").await;
    let disc: Vec<bool> = pl.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(disc.iter().filter(|d| **d).count(), 1, "{disc:?}");
    assert!(pl.segments[first.len()].discontinuity, "the first segment of the re-publish is marked");
    ts.server.shutdown(Duration::from_secs(10)).await;
}

on_both! {
#[tokio::test]
async fn a_restart_continues_sequence_numbers_and_the_discontinuity_sequence(db) {
    let dir = tempfile::tempdir().unwrap();
    let t = tags("media/av_bframes.flv");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let mut ts = TestServer::start(db.on(config(dir.path(), 2, 5))).await;
        publish(ts.rtmp(), "restart", &t).await.unwrap();
        ts.wait_flushed("restart").await;
        seqs.push(ts.drain_stored().iter().map(|s| s.seq).collect::<Vec<_>>());
        if seqs.len() == 3 {
            // 3 publishes x 5 segments, window of 5: segments 10..=14 are listed; the discontinuity of
            // segment 5 has scrolled out, that of segment 10 is the first listed.
            let pl = playlist(&ts, "/live/restart/playlist.m3u8").await;
            assert_eq!(pl.media_sequence, 10);
            assert_eq!(pl.discontinuity_sequence, 1);
            assert!(pl.segments[0].discontinuity, "segment 10 starts the third publish");
        }
        ts.server.shutdown(Duration::from_secs(10)).await;
    }
    assert_eq!(seqs[0], vec![0, 1, 2, 3, 4]);
    assert_eq!(seqs[1], vec![5, 6, 7, 8, 9]);
    assert_eq!(seqs[2], vec![10, 11, 12, 13, 14]);
}}

#[tokio::test]
async fn shutdown_flushes_the_open_segment_of_a_live_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 100, 3)).await;
    let mut p = Publisher::connect(ts.rtmp(), "live", "live1").await.unwrap();
    send_all(&mut p, &tags("media/av_bframes.flv"), 0).await.unwrap();
    // FragDuration 100: nothing is cut until the publish ends, which shutdown does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ts.drain_stored().is_empty());
    let store = ts.server.store.clone();
    assert!(ts.server.shutdown(Duration::from_secs(10)).await);
    let stored = ts.stored.recv().await.expect("the open segment was stored on shutdown");
    assert!(stored.segment.duration.as_secs_f64() > 9.9);
    let key = livechannel::names::ChannelKey::new("live", "live1").unwrap();
    let path = key.object("playlist.m3u8").unwrap();
    let body = object_store::ObjectStoreExt::get(store.objects().as_ref(), &path).await.unwrap().bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("\n0.ts"));
    drop(p);
}

#[tokio::test]
async fn garbage_on_the_rtmp_port_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 3)).await;
    // Not a handshake at all.
    let mut s = tokio::net::TcpStream::connect(ts.rtmp()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("server closes");
    // A good handshake and publish, then a broken chunk stream mid-publish.
    let mut p = Publisher::connect(ts.rtmp(), "live", "broken").await.unwrap();
    send_all(&mut p, &tags("media/av_bframes.flv")[..100], 0).await.unwrap();
    p.send_raw(&[0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5]).await.unwrap();
    p.send_raw(&[0xc4; 8000]).await.unwrap();
    let _ = p.closed_by_server(Duration::from_secs(10)).await;
    ts.wait_flushed("broken").await;
    // Everything received before the breakage is stored and listed.
    assert_eq!(ts.get("/live/broken/playlist.m3u8").await.status, 200);
    publish(ts.rtmp(), "after", &tags("media/audio_only.flv")).await.unwrap();
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn rtmp_timestamps_crossing_2_pow_32_use_extended_timestamps_and_are_not_a_jump() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 2, 10)).await;
    let t = tags("media/av_bframes.flv");
    // Start 4 s before the 32-bit millisecond wrap: every timestamp is above 0xFFFFFF (extended timestamp
    // in the chunk header) until the wrap, then small again.
    let mut p = Publisher::connect(ts.rtmp(), "live", "wrap").await.unwrap();
    send_all(&mut p, &t, u32::MAX - 4_000).await.unwrap();
    p.finish().await.unwrap();
    ts.wait_flushed("wrap").await;
    let stored = ts.drain_stored();
    let durations: Vec<f64> = stored.iter().map(|s| s.segment.duration.as_secs_f64()).collect();
    assert!(stored.iter().all(|s| !s.segment.discontinuity), "{durations:?}");
    assert_eq!(durations.len(), 5, "{durations:?}");
    assert!(durations[..4].iter().all(|d| (d - 2.0).abs() < 1e-6), "{durations:?}");
    let total: f64 = durations.iter().sum();
    assert!((total - media_duration(&t)).abs() <= 0.041);
    check_listed_segments(&ts, "wrap", true).await;
    ts.server.shutdown(Duration::from_secs(10)).await;
}

/// The PES packets of every segment a channel's playlist lists, in order: (pid, pts, dts, payload).
async fn recorded_frames(ts: &TestServer, channel: &str) -> Vec<(u16, Option<u64>, Option<u64>, Vec<u8>)> {
    let pl = playlist(ts, &format!("/live/{channel}/playlist.m3u8")).await;
    let mut frames = Vec::new();
    for seg in &pl.segments {
        let resp = ts.get(&format!("/live/{channel}/{}", seg.uri)).await;
        assert_eq!(resp.status, 200, "{}", seg.uri);
        let report = inspect(&resp.body).expect("segment parses as TS");
        assert_eq!(report.continuity_errors, 0, "{}", seg.uri);
        frames.extend(report.pes.into_iter().map(|p| (p.pid, p.pts, p.dts, p.payload)));
    }
    frames
}

/// RTMP lets an encoder interleave chunk streams: audio chunks go out between the chunks of a large
/// keyframe (hardware encoders and some software ones do). The chunk reader assembles each chunk
/// stream's message on its own and hands them over in the order they started; the recording must be
/// exactly what a publisher that does not interleave gets, with timestamps past the 24-bit field too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_that_interleaves_chunk_streams_is_recorded_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 100)).await;
    let tags = tags("media/av_no_bframes.flv");
    let big = tags.iter().filter(|t| t.kind == TagKind::Video && t.body.len() > 4 * 128).count();
    assert!(big > 10, "the fixture has video frames that span several 128-byte chunks");
    for (channel, offset) in [("plain", 0), ("woven", 0), ("plain-ext", 0x0100_0000), ("woven-ext", 0x0100_0000)] {
        let mut p = Publisher::connect(ts.rtmp(), "live", channel).await.unwrap();
        if channel.starts_with("woven") {
            p.send_interleaved(&tags, offset, 128).await.unwrap();
        } else {
            send_all(&mut p, &tags, offset).await.unwrap();
        }
        p.finish().await.unwrap();
        ts.wait_flushed(channel).await;
    }
    for (plain, woven) in [("plain", "woven"), ("plain-ext", "woven-ext")] {
        let (expected, got) = (recorded_frames(&ts, plain).await, recorded_frames(&ts, woven).await);
        assert!(!expected.is_empty());
        assert_eq!(got.len(), expected.len(), "{woven}: every frame recorded");
        assert!(got == expected, "{woven}: the same frames with the same timestamps as {plain}");
    }
}

/// A connection reads its data ahead of its kick and shutdown waits; a publisher that never lets its
/// socket run dry must be kicked all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_data_never_stops_is_still_kicked() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 5)).await;
    let tags = tags("media/av_no_bframes.flv");
    let round_ms = (media_duration(&tags) * 1000.0) as u32 + 40;
    let mut p = Publisher::connect(ts.rtmp(), "live", "flood").await.unwrap();
    let pusher = tokio::spawn(async move {
        for round in 0u32.. {
            send_all(&mut p, &tags, round * round_ms).await?;
        }
        Ok::<(), ClientError>(())
    });
    let key = livechannel::names::ChannelKey::new("live", "flood").unwrap();
    eventually(Duration::from_secs(20), "live", async || ts.server.channels.live(&key)).await;
    assert!(ts.server.channels.kick(&key), "a live publish to kick");
    let ended = tokio::time::timeout(Duration::from_secs(15), pusher).await.expect("the flooding publisher was kicked");
    assert!(ended.unwrap().is_err(), "the kicked publisher kept sending successfully");
    eventually(Duration::from_secs(20), "the kick", async || ts.server.channels.live(&key).is_none().then_some(()))
        .await;
}

/// Publishes the first `ms` of a fixture paced at real time on a server with a long read batch, leaves
/// the connection open and silent, and returns the video frames sent and the server.
async fn publish_then_fall_silent(ms: u32, idle: Duration) -> (usize, TestServer, Publisher, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 100, 3);
    // A long batch, so that the last frames before the silence sit below the socket's low-water mark.
    config.limits.rtmp_read_batch = Duration::from_millis(300);
    config.limits.rtmp_idle_timeout = idle;
    let ts = TestServer::start(config).await;
    let all = tags("media/av_bframes.flv");
    let first = all.iter().find(|t| t.kind != TagKind::Script).map_or(0, |t| t.timestamp_ms);
    let sent: Vec<_> = all.into_iter().filter(|t| t.timestamp_ms <= first + ms).collect();
    let video = sent.iter().filter(|t| t.kind == TagKind::Video && t.body.get(1) == Some(&1)).count();
    let mut p = Publisher::connect(ts.rtmp(), "live", "held").await.unwrap();
    send_paced(&mut p, &sent, 0).await.unwrap();
    (video, ts, p, dir)
}

/// The video frames in the segment a publish ended with (FragDuration 100: its only segment).
async fn stored_video_frames(
    stored: &mut tokio::sync::mpsc::UnboundedReceiver<livechannel::storage::sink::Stored>,
    store: &livechannel::storage::Store,
) -> usize {
    let segment = tokio::time::timeout(Duration::from_secs(20), stored.recv()).await.unwrap().expect("a segment");
    assert_eq!(segment.segment.index, 0);
    let key = livechannel::names::ChannelKey::new("live", "held").unwrap();
    let path = key.object("0.ts").unwrap();
    let objects = store.objects();
    let body = object_store::ObjectStoreExt::get(objects.as_ref(), &path).await.unwrap().bytes().await.unwrap();
    let report = inspect(&body).expect("segment parses as TS");
    report.pes.iter().filter(|p| p.pid == livechannel::ts::VIDEO_PID).count()
}

/// Media that a publisher sent just before falling silent waits in its socket below the read batch's
/// mark; when the server shuts down, it is read and recorded before the publish ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_held_by_the_read_batch_is_recorded_at_shutdown() {
    let (video, mut ts, p, _dir) = publish_then_fall_silent(2500, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = ts.server.store.clone();
    assert!(ts.server.shutdown(Duration::from_secs(10)).await);
    assert_eq!(stored_video_frames(&mut ts.stored, &store).await, video, "every frame sent is in the last segment");
    drop(p);
}

/// The same when the publisher stays silent until the idle timeout: the connection reads what sits
/// below the mark first, and is closed only when nothing was there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_held_by_the_read_batch_is_recorded_before_an_idle_close() {
    let (video, mut ts, p, _dir) = publish_then_fall_silent(2500, Duration::from_secs(1)).await;
    let store = ts.server.store.clone();
    assert_eq!(stored_video_frames(&mut ts.stored, &store).await, video, "every frame sent is in the last segment");
    let closed = p.closed_by_server(Duration::from_secs(10)).await;
    assert!(closed.is_ok(), "the idle connection was closed: {closed:?}");
}

/// A deleteStream is a few dozen bytes, below the mark: an encoder that sends it and waits for the server
/// (instead of closing) still has its publish ended within seconds, not at the 30 s idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_stream_below_the_read_batch_mark_ends_the_publish_within_seconds() {
    let (video, mut ts, mut p, _dir) = publish_then_fall_silent(2500, Duration::from_secs(30)).await;
    p.unpublish().await.unwrap();
    let store = ts.server.store.clone();
    let started = tokio::time::Instant::now();
    assert_eq!(stored_video_frames(&mut ts.stored, &store).await, video, "every frame sent is in the last segment");
    assert!(started.elapsed() < Duration::from_secs(5), "the publish ended after {:?}", started.elapsed());
    drop(p);
}
