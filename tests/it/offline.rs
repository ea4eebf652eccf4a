//! What a viewer sees when a stream is over: a playlist that ends once the channel has had no publisher
//! for the bucket's reconnect window (and opens again with the next publish), and no fragment of a
//! publish that was refused mid-way.

use std::time::Duration;

use bytes::Bytes;
use livechannel::config::{Acl, Bucket, Config};
use livechannel::flv::file::TagKind;
use livechannel::rtmp::client::{ClientError, Publisher};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_reconnect_window_the_playlist_ends_and_the_next_publish_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let live = Bucket {
        name: "live".into(),
        acl: Acl::PublicReadWrite,
        auto_create_channels: true,
        reconnect_window: Some(Duration::from_secs(1)),
        ..Bucket::default()
    };
    let ts = TestServer::start(Config { buckets: vec![live], ..config(dir.path(), 1, 30) }).await;
    let tags = tags("media/av_no_bframes.flv");
    publish(ts.rtmp(), "gone", &tags).await.unwrap();
    ts.wait_flushed("gone").await;
    let first = playlist(&ts, "/live/gone/playlist.m3u8").await;
    assert!(!first.end_list, "the window has not passed: the encoder may still reconnect");

    let ended = eventually(Duration::from_secs(10), "EXT-X-ENDLIST", async || {
        let pl = playlist(&ts, "/live/gone/playlist.m3u8").await;
        pl.end_list.then_some(pl)
    })
    .await;
    assert_eq!(ended.segments, first.segments, "closing the playlist changes nothing else");

    // The next publish reopens it and goes on after a discontinuity.
    publish(ts.rtmp(), "gone", &tags).await.unwrap();
    ts.wait_flushed("gone").await;
    let reopened = playlist(&ts, "/live/gone/playlist.m3u8").await;
    assert!(!reopened.end_list);
    let last_old = first.segments.last().unwrap().uri.clone();
    let at = reopened.segments.iter().position(|s| s.uri == last_old).expect("the old segments are still listed");
    assert!(reopened.segments[at + 1].discontinuity, "{:?}", reopened.segments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_after_its_first_frame_leaves_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 1, 3)).await;
    let tags = tags("media/av_no_bframes.flv");
    // The codec configurations and the first keyframe: a segment is open.
    let configs = config_tags(&tags);
    let keyframe = tags.iter().find(|t| t.kind == TagKind::Video && t.body[0] >> 4 == 1 && t.body[1] == 1).unwrap();
    let mut p = Publisher::connect(ts.rtmp(), "live", "mp3").await.unwrap();
    for t in configs.iter().chain([keyframe]) {
        p.send(t, t.timestamp_ms).await.unwrap();
    }
    // Then MP3 audio, which HLS here cannot carry: the publish is refused.
    let mp3 = Bytes::from_static(&[0x2f, 0xff, 0xfb, 0x90, 0x64]);
    p.queue_tag(TagKind::Audio, mp3, keyframe.timestamp_ms + 26).unwrap();
    let _ = p.flush_queued().await;
    match p.closed_by_server(Duration::from_secs(10)).await {
        Ok(Some(ClientError::Refused { code, .. })) => assert_eq!(code, "NetStream.Publish.Rejected"),
        other => panic!("the publish was not refused: {other:?}"),
    }
    ts.wait_flushed("mp3").await;
    assert_eq!(ts.get("/live/mp3/playlist.m3u8").await.status, 404, "a one-frame segment was listed");
    assert!(ts.drain_stored().is_empty());
}
