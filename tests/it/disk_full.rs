//! The local store's disk fills up mid-publish (a 160 KiB tmpfs under the media folder): the segments
//! that do not fit are left out with a `record_error` / RECORD_FAILED callback each, the playlist stays
//! valid and names only whole segments, and once there is space again the next publish is stored whole.
//! Needs root to mount the tmpfs; `.ci/run` runs as root.

use std::process::Command;

use livechannel::storage::Store;
use livechannel::ts::inspect::inspect;

use crate::support::*;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "static-token-0123456789";

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status();
        assert!(ok.is_ok_and(|s| s.success()), "mount a tmpfs on {} (needs root)", path.display());
        Tmpfs(path.to_owned())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status();
        assert!(ok.is_ok_and(|s| s.success()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// How many segments the playlist lists, each checked to be whole TS packets.
async fn whole_segments_listed(ts: &TestServer) -> usize {
    let pl = playlist(ts, "/live/full/playlist.m3u8").await;
    for seg in &pl.segments {
        let body = ts.get(&format!("/live/full/{}", seg.uri)).await.body;
        let report = inspect(&body).unwrap();
        assert_eq!(report.packets * 188, body.len(), "{} is whole", seg.uri);
    }
    pl.segments.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mounts a tmpfs)"]
async fn a_full_disk_loses_only_the_segments_that_do_not_fit_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("media"), "160k");
    let store = Store::local(&dir.path().join("media")).unwrap();
    let mut cfg = config(dir.path(), 1, 20);
    cfg.auth_tokens = vec![livechannel::config::AuthToken { token: TOKEN.into(), project_id: PROJECT.into() }];
    // The local folder's own writer threads: their write errors are what this is about.
    let mut ts = TestServer::start_with_store(cfg, Some(store)).await;
    let callback = serde_json::json!({"publish_domain": "live", "app": "live",
        "notify_callback_url": "http://127.0.0.1:9/rec", "notify_event_subscription": ["RECORD_FAILED"]});
    let headers = [("Content-Type", "application/json"), ("X-Auth-Token", TOKEN)];
    let made = http_request_body(
        ts.http(),
        "POST",
        &format!("/v1/{PROJECT}/record/callbacks"),
        &headers,
        callback.to_string().as_bytes(),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());

    // 10 s of 1 s segments, about 390 KB: more than the disk holds.
    let tags = tags("media/av_no_bframes.flv");
    publish(ts.rtmp(), "full", &tags).await.unwrap();
    ts.wait_flushed("full").await;
    let stored = ts.drain_stored().len();
    assert!(stored > 0 && stored < 10, "{stored} of 10 segments fit");
    let rows = ts.server.meta.outbox(None).await.unwrap();
    let failed = rows.iter().filter(|(e, _)| e.payload.contains("RECORD_FAILED")).count();
    assert!(failed >= 1, "a RECORD_FAILED callback per segment that did not fit ({failed})");
    let listed = whole_segments_listed(&ts).await;
    assert_eq!(listed, stored, "the playlist lists what was stored, nothing else");

    // Space returns: the next publish is stored whole, after a discontinuity.
    disk.resize("20m");
    publish(ts.rtmp(), "full", &tags).await.unwrap();
    ts.wait_flushed("full").await;
    assert_eq!(ts.drain_stored().len(), 10, "every segment stored once there is space");
    assert_eq!(whole_segments_listed(&ts).await, stored + 10);
    ts.server.shutdown(std::time::Duration::from_secs(10)).await;
    drop(disk);
}
