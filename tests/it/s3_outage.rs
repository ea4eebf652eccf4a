//! The S3 server goes away for 20 s in the middle of a publish, then comes back: ingest never stops, the
//! segments that could not be stored are left out whole and the next listed one is discontinuous,
//! `RECORD_FAILED` callbacks are queued, the playlist never names a missing object, and storing resumes
//! by itself. The test runs its own s3s-fs (`s3s-fs` on PATH, or `LIVECHANNEL_S3S_FS`), so it can stop it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use livechannel::config::{AuthToken, StorageConfig, StorageKind};
use livechannel::rtmp::client::Publisher;

use crate::support::*;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "static-token-0123456789";

struct S3s {
    child: Child,
    addr: SocketAddr,
    root: Option<tempfile::TempDir>,
}

impl S3s {
    fn spawn(addr: SocketAddr, root: tempfile::TempDir) -> S3s {
        let binary = std::env::var("LIVECHANNEL_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--access-key", "outage", "--secret-key", "outage-secret"])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary} (cargo install s3s-fs, or set LIVECHANNEL_S3S_FS): {e}"));
        S3s { child, addr, root: Some(root) }
    }

    async fn up(&self) {
        let addr = self.addr;
        eventually(Duration::from_secs(10), "s3s-fs to listen", async || {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await;
    }

    /// Kills the server; its data folder lives on for the next one.
    fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.root.take().expect("a running server has its folder")
    }
}

impl Drop for S3s {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (an S3-compatible server; .ci/run installs it)"]
async fn a_20_s_s3_outage_costs_whole_segments_never_ingest_or_a_dangling_playlist_entry() {
    let _ = tracing_subscriber::fmt().with_env_filter("livechannel=info").with_test_writer().try_init();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("outage")).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s3 = S3s::spawn(addr, root);
    s3.up().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 60);
    cfg.auth_tokens = vec![AuthToken { token: TOKEN.into(), project_id: PROJECT.into() }];
    cfg.storage = Some(StorageConfig {
        kind: StorageKind::S3,
        endpoint: Some(format!("http://{addr}")),
        bucket: Some("outage".into()),
        region: Some("us-east-1".into()),
        access_key_id: Some("outage".into()),
        secret_access_key: Some("outage-secret".into()),
        path_style: Some(true),
        prefix: None,
        part_size: None,
        // Fail a write after 2 s of retries, so the outage shows as failures, not as one long stall.
        retry_timeout_ms: Some(2_000),
        segment_redirect_expires_s: None,
    });
    let mut ts = TestServer::start(cfg).await;
    let callback = serde_json::json!({"publish_domain": "live", "app": "live",
        "notify_callback_url": "http://127.0.0.1:9/rec", "notify_event_subscription": ["RECORD_FAILED"]});
    let path = format!("/v1/{PROJECT}/record/callbacks");
    let headers = [("Content-Type", "application/json"), ("X-Auth-Token", TOKEN)];
    let made = http_request_body(ts.http(), "POST", &path, &headers, callback.to_string().as_bytes()).await;
    assert_eq!(made.status, 201, "{}", made.text());

    // About 44 s of media in real time: ~10 s before the outage, 20 s without S3, the rest after.
    let tags = tags("media/av_no_bframes.flv");
    let rtmp = ts.rtmp();
    let publisher = tokio::spawn(async move {
        let mut p = Publisher::connect(rtmp, "live", "outage").await?;
        for round in 0..4u32 {
            send_paced(&mut p, &tags, round * 11_000).await?;
        }
        p.finish().await
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let root = s3.stop();
    let before = ts.drain_stored().len();
    assert!(before >= 5, "{before} segments stored before the outage");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!publisher.is_finished(), "ingest must keep running while S3 is down");
    let during = ts.drain_stored().len();
    let s3 = S3s::spawn(addr, root);
    s3.up().await;
    publisher.await.unwrap().expect("the publisher never saw an error");
    ts.wait_flushed("outage").await;
    let after = ts.drain_stored();
    assert!(after.len() >= 5, "storing resumed by itself: {} segments after S3 came back", after.len());

    // The playlist lists only objects that exist, and the gap is marked.
    let pl = playlist(&ts, "/live/outage/playlist.m3u8").await;
    for seg in &pl.segments {
        let got = ts.get(&format!("/live/outage/{}", seg.uri)).await;
        assert_eq!(got.status, 200, "the playlist names {}, which is not stored", seg.uri);
    }
    let stored_seqs: Vec<u64> = pl.segments.iter().map(|s| s.uri.trim_end_matches(".ts").parse().unwrap()).collect();
    let listed = stored_seqs.len() as u64;
    let span = stored_seqs.last().unwrap() - stored_seqs.first().unwrap() + 1;
    assert!(span > listed, "about 20 segments were lost in the outage, so seqs skip: {stored_seqs:?}");
    assert!(pl.segments.iter().skip(1).any(|s| s.discontinuity), "the gap is marked: {stored_seqs:?}");
    assert!(during <= 2, "{during} segments stored while S3 was down");

    // Each failed write queued a RECORD_FAILED callback.
    let failed = eventually(Duration::from_secs(10), "RECORD_FAILED callbacks", async || {
        let rows = ts.server.meta.outbox(None).await.unwrap();
        let n = rows.iter().filter(|(e, _)| e.payload.contains("RECORD_FAILED")).count();
        (n >= 1).then_some(n)
    })
    .await;
    println!("stored {before} + {during} + {} segments; {failed} RECORD_FAILED callbacks", after.len());
    ts.server.shutdown(Duration::from_secs(10)).await;
    drop(s3);
}
