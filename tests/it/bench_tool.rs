//! The load generator as a user runs it: against a real server, one short run, JSON report checked.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn livechannel_bench_publishes_measures_latency_and_checks_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 2, 3)).await;
    let json = dir.path().join("report.json");
    let args = vec![
        "--rtmp".to_string(),
        ts.rtmp().to_string(),
        "--file".into(),
        fixture("media/av_bframes.flv").display().to_string(),
        "--streams".into(),
        "3".into(),
        "--ramp".into(),
        "0.2".into(),
        "--warmup".into(),
        "1".into(),
        "--window".into(),
        "2".into(),
        "--latency-window".into(),
        "5".into(),
        "--latency-streams".into(),
        "2".into(),
        "--hls".into(),
        format!("http://{}/live/{{name}}/playlist.m3u8", ts.http()),
        "--pids".into(),
        std::process::id().to_string(),
        "--json".into(),
        json.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_livechannel-bench")).args(args).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["streams"], 3);
    assert_eq!(report["total_errors"], 0);
    assert_eq!(report["hls"]["streams_checked"], 3);
    assert_eq!(report["hls"]["streams_ok"], 3, "{}", report["hls"]);
    assert_eq!(report["hls"]["streams_late"], 0);
    // The second pass read every segment the playlists listed (3 per stream at ~9 s of 2 s fragments).
    assert!(report["hls"]["segments_checked"].as_u64().unwrap() >= 6, "{}", report["hls"]);
    assert!(report["latency_samples"].as_u64().unwrap() >= 2, "{}", report);
    assert!(report["latency_median_ms"].as_f64().unwrap() < 1000.0);
    // ~9 s of a ~250 kbit/s stream each: bytes were really sent and counted per stream.
    let streams = report["per_stream"].as_array().unwrap();
    assert_eq!(streams.len(), 3);
    assert!(streams.iter().all(|s| s["bytes_sent"].as_u64().unwrap() > 100_000), "{}", report["per_stream"]);
    assert!(report["cpu_ms_per_stream_second"].as_f64().is_some());
    ts.server.shutdown(Duration::from_secs(5)).await;
}
