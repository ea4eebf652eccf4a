//! Interop with the vendors' real Python SDKs. `tests/sdk/oss_livechannel.py` drives every LiveChannel call
//! through oss2 (V1 and V4) and alibabacloud-oss-v2's `invoke_operation` (V4, and V1 with its sub-resource
//! metadata) against this server, pushes with ffmpeg to the URL from oss2's `sign_rtmp_url` (the HTTP port),
//! and plays the VOD playlist with ffprobe. `tests/sdk/live_callbacks.py` drives every callback
//! configuration and query call through aliyun-python-sdk-live, alibabacloud-live20161101 (ACS3 and v2) and
//! huaweicloudsdklive, and checks the record queries over an ffmpeg push. `.ci/run` creates `.venv` with
//! the pinned SDKs; set `LIVECHANNEL_PYTHON` to use another interpreter.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;
use livechannel::config::{AccessKey, Acl, Bucket, Config};

pub(crate) fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LIVECHANNEL_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(venv.exists(), "no Python with the SDKs: run .ci/run's venv step (it pins them) or set LIVECHANNEL_PYTHON");
    venv
}

/// Runs one SDK script against the server and asserts it finished with its `ALL OK` line.
async fn run_script(ts: &TestServer, script: &str, all_ok: &str) {
    run_script_with(ts, script, &[], all_ok).await
}

async fn run_script_with(ts: &TestServer, script: &str, args: &[String], all_ok: &str) {
    let endpoint = format!("http://{}", ts.http());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let python = python();
    let args = args.to_vec();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg("--endpoint").arg(endpoint).args(args).output()
    });
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.expect("SDK script timed out").unwrap();
    let output = output.expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "SDK script failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(all_ok), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python sdks (oss2, alibabacloud-oss-v2), ffmpeg and ffprobe"]
async fn oss_sdks_drive_every_live_channel_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        access_keys: vec![AccessKey { id: "AKIDEXAMPLE".into(), secret: "SECRETEXAMPLE".into() }],
        buckets: vec![Bucket {
            name: "examplebucket".into(),
            acl: Acl::Private,
            auto_create_channels: false,
            ..Bucket::default()
        }],
        ..config(dir.path(), 1, 3)
    };
    let ts = TestServer::start(config).await;
    run_script(&ts, "oss_livechannel.py", "ALL OK: oss2-v1, oss2-v4, ossv2-v4, ossv2-v1").await;
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python sdks (aliyun-python-sdk-live, alibabacloud-live20161101, huaweicloudsdklive) and ffmpeg"]
async fn live_and_huawei_sdks_drive_every_callback_call() {
    let dir = tempfile::tempdir().unwrap();
    let key = |id: &str, secret: &str| AccessKey { id: id.into(), secret: secret.into() };
    let config = Config {
        access_keys: vec![key("AKIDEXAMPLE", "SECRETEXAMPLE"), key("HWAKEXAMPLE", "HWSKEXAMPLE")],
        buckets: vec![Bucket {
            name: "live".into(),
            acl: Acl::PublicReadWrite,
            auto_create_channels: true,
            domains: vec!["push.example.com".into()],
            ..Bucket::default()
        }],
        ..config(dir.path(), 1, 3)
    };
    let ts = TestServer::start(config).await;
    run_script(&ts, "live_callbacks.py", "ALL OK: aliyun-legacy, aliyun-acs3, aliyun-v2, huawei, records").await;
    ts.server.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python sdks (oss2, alibabacloud-oss-v2, aliyun-python-sdk-live, alibabacloud-live20161101), ffmpeg and ffprobe"]
async fn sdks_drive_snapshots_from_put_live_channel_to_describe_live_stream_snapshot_info() {
    let dir = tempfile::tempdir().unwrap();
    // The script's receiver listens here; the topic points at it before the server starts.
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let private =
        |name: &str| Bucket { name: name.into(), acl: Acl::Private, auto_create_channels: false, ..Bucket::default() };
    let mut config = Config {
        access_keys: vec![AccessKey { id: "AKIDEXAMPLE".into(), secret: "SECRETEXAMPLE".into() }],
        buckets: vec![
            Bucket { domains: vec!["push.example.com".into()], ..private("examplebucket") },
            private("snaps"),
        ],
        notify_topics: vec![livechannel::config::NotifyTopic {
            name: "snapshotnotify".into(),
            url: format!("http://{receiver}/snapshots"),
            sign_key: Some("snapkey0123456789".into()),
        }],
        ..config(dir.path(), 2, 3)
    };
    config.notify.retry_base = Duration::from_millis(100);
    config.notify.retry_max = Duration::from_millis(500);
    let ts = TestServer::start(config).await;
    let args = ["--receiver".to_owned(), receiver.to_string(), "--sign-key".to_owned(), "snapkey0123456789".to_owned()];
    run_script_with(&ts, "snapshots.py", &args, "ALL OK: snapshots oss2-v1, oss2-v4, ossv2, aliyun-legacy, aliyun-new")
        .await;
    ts.server.shutdown(Duration::from_secs(10)).await;
}
