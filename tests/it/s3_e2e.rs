//! End to end on a real S3-compatible server: ffmpeg publishes to a server whose `[storage]` is S3, ffprobe
//! plays the live playlist and a VOD playlist made by PostVodPlaylist, and an independent S3 client
//! (boto3) finds every listed segment in the bucket, under the configured prefix, with the size we serve;
//! the metadata is on PostgreSQL, and `psql` finds the segment index and the push history there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livechannel::config::StorageConfig;

use crate::interop::{live_pattern, run, strings};
use crate::sdk_interop::python;
use crate::support::*;

/// ffprobe reads a playlist URL with every segment; returns its stderr (empty when all is well).
async fn ffprobe_errors(url: &str) -> String {
    let out =
        run("ffprobe", strings(&["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url])).await;
    assert!(out.status.success(), "ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ffmpeg, ffprobe, an S3-compatible server (LIVECHANNEL_TEST_S3), boto3 in the venv, PostgreSQL (LIVECHANNEL_TEST_POSTGRES) and psql"]
async fn ffmpeg_to_s3_and_postgres_then_ffprobe_plays_live_and_vod_and_boto3_and_psql_find_everything() {
    let prefix = format!("e2e-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis());
    let storage = test_s3_storage(Some(prefix.clone()));
    let some = |v: &Option<String>| v.clone().unwrap_or_default();
    let (endpoint, bucket) = (some(&storage.endpoint), some(&storage.bucket));
    let (access, secret) = (some(&storage.access_key_id), some(&storage.secret_access_key));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2, 20);
    cfg.storage = Some(storage);
    let db = Db::new(true).await;
    let Db::Postgres(pg_url) = &db else { unreachable!() };
    let pg_url = pg_url.clone();
    let ts = TestServer::start(db.on(cfg)).await;
    let started = SystemTime::now();
    let url = format!("rtmp://{}/live/s3cam", ts.rtmp());
    let out = run("ffmpeg", live_pattern("10", "50", &["-c:a", "aac", "-f", "flv", &url])).await;
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    ts.wait_flushed("s3cam").await;

    let live = format!("http://{}/live/s3cam/playlist.m3u8", ts.http());
    assert_eq!(ffprobe_errors(&live).await.trim(), "", "the live playlist plays from S3");
    let pl = playlist(&ts, "/live/s3cam/playlist.m3u8").await;
    assert!(pl.segments.len() >= 4, "{} segments", pl.segments.len());

    let window = format!(
        "endTime={}&startTime={}&vod=",
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 1,
        started.duration_since(UNIX_EPOCH).unwrap().as_secs() - 1
    );
    let posted = http_request_body(ts.http(), "POST", &format!("/live/s3cam/vod.m3u8?{window}"), &[], b"").await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let vod = format!("http://{}/live/s3cam/vod.m3u8", ts.http());
    assert_eq!(ffprobe_errors(&vod).await.trim(), "", "the VOD playlist plays from S3");

    // An independent client: every listed segment is an object under the prefix, with the size we serve.
    let script = r#"
import json, sys, boto3
endpoint, bucket, prefix, key, secret = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
out = {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for o in page.get("Contents", []):
        out[o["Key"]] = o["Size"]
print(json.dumps(out))
"#;
    let py = python();
    let args = [script.to_owned(), endpoint, bucket, prefix.clone(), access, secret];
    let listed = tokio::task::spawn_blocking(move || std::process::Command::new(py).arg("-c").args(args).output())
        .await
        .unwrap()
        .expect("python with boto3");
    assert!(listed.status.success(), "boto3: {}", String::from_utf8_lossy(&listed.stderr));
    let objects: std::collections::HashMap<String, u64> = serde_json::from_slice(&listed.stdout).unwrap();
    for seg in &pl.segments {
        let served = ts.get(&format!("/live/s3cam/{}", seg.uri)).await.body.len() as u64;
        let key = format!("{prefix}/live/s3cam/{}", seg.uri);
        assert_eq!(objects.get(&key), Some(&served), "{key} in S3: {objects:?}");
    }
    assert!(objects.contains_key(&format!("{prefix}/live/s3cam/playlist.m3u8")));
    assert!(objects.contains_key(&format!("{prefix}/live/s3cam/vod.m3u8")));
    ts.server.shutdown(Duration::from_secs(10)).await;

    // And the rows, read with psql: one index row per listed segment, and one closed push.
    let psql = |sql: &'static str| {
        let url = pg_url.clone();
        async move {
            let out = run("psql", strings(&["-X", "-At", "-v", "ON_ERROR_STOP=1", &url, "-c", sql])).await;
            assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    let rows = psql("SELECT object_key FROM segments WHERE bucket = 'live' AND channel = 's3cam' ORDER BY seq").await;
    let indexed: Vec<&str> = rows.lines().collect();
    let listed: Vec<String> = pl.segments.iter().map(|s| format!("live/s3cam/{}", s.uri)).collect();
    assert_eq!(indexed, listed, "the segment index in PostgreSQL");
    let pushes = psql("SELECT count(*) FROM push_history WHERE channel = 's3cam' AND end_ms >= start_ms").await;
    assert_eq!(pushes, "1");
}

/// `segment_redirect_expires_s`: a segment GET is a 302 to a presigned URL that the S3 server itself
/// answers with the segment's bytes; playlists and HEAD are still served by us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3-compatible server (LIVECHANNEL_TEST_S3)"]
async fn segment_reads_can_be_redirected_to_presigned_s3_urls() {
    let prefix = format!("redirect-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis());
    let storage = StorageConfig { segment_redirect_expires_s: Some(300), ..test_s3_storage(Some(prefix.clone())) };
    let endpoint = storage.endpoint.clone().unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 10);
    cfg.storage = Some(storage);
    let ts = TestServer::start(cfg).await;
    publish(ts.rtmp(), "cdn", &tags("media/av_no_bframes.flv")).await.unwrap();
    ts.wait_flushed("cdn").await;
    let pl = playlist(&ts, "/live/cdn/playlist.m3u8").await;
    let seg = &pl.segments[0].uri;
    let resp = ts.get(&format!("/live/cdn/{seg}")).await;
    assert_eq!(resp.status, 302, "{}", resp.text());
    let location = resp.header("location").unwrap().to_owned();
    assert!(location.starts_with(&format!("{endpoint}/")), "{location}");
    assert!(location.contains(&format!("{prefix}/live/cdn/{seg}")) && location.contains("X-Amz-Signature="));
    assert_eq!(resp.header("cache-control"), Some("private, max-age=150"));
    let head = http_request(ts.http(), "HEAD", &format!("/live/cdn/{seg}"), &[]).await;
    assert_eq!(head.status, 200);
    let size: usize = head.header("content-length").unwrap().parse().unwrap();
    // The S3 server checks the signature and serves the bytes.
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), 200);
    let bytes = fetched.bytes().await.unwrap();
    assert_eq!(bytes.len(), size);
    let report = livechannel::ts::inspect::inspect(&bytes).expect("a TS segment");
    assert_eq!(report.continuity_errors, 0);
    // A tampered URL is refused by the S3 server: the redirect grants this object only.
    let other = location.replace(&format!("/{seg}"), "/playlist.m3u8");
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 403);
    ts.server.shutdown(Duration::from_secs(10)).await;
}
