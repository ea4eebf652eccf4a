//! Interop with the vendors' real Python SDKs: `tests/sdk/oss_livechannel.py` drives every LiveChannel call
//! through oss2 (V1 and V4) and alibabacloud-oss-v2's `invoke_operation` (V4, and V1 with its sub-resource
//! metadata) against this server, pushes with ffmpeg to the URL from oss2's `sign_rtmp_url` (the HTTP port),
//! and plays the VOD playlist with ffprobe. `.ci/run` creates `.venv` with the pinned SDKs; set
//! `LIVECHANNEL_PYTHON` to use another interpreter.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use livechannel::config::{AccessKey, Acl, Bucket, Config};
use support::*;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LIVECHANNEL_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the SDKs: run `python3 -m venv .venv && .venv/bin/pip install oss2==2.19.1 \
         alibabacloud-oss-v2==1.4.1` (what .ci/run does) or set LIVECHANNEL_PYTHON"
    );
    venv
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
            domains: vec![],
        }],
        ..config(dir.path(), 1, 3)
    };
    let ts = TestServer::start(config).await;
    let endpoint = format!("http://{}", ts.http());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/oss_livechannel.py");
    let python = python();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg("--endpoint").arg(endpoint).output()
    });
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.expect("SDK script timed out").unwrap();
    let output = output.expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "SDK script failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("ALL OK: oss2-v1, oss2-v4, ossv2-v4, ossv2-v1"), "{stdout}");
    ts.server.shutdown(Duration::from_secs(10)).await;
}
