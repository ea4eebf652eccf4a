//! The web console, seen from outside: the page and its assets, what the overview shows to whom, the
//! sign-in, enabling and disabling a channel, and (in Chromium) a live channel pushed by ffmpeg listed
//! and played by the console's own player.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use livechannel::config::{AccessKey, Acl, Bucket, Config, ConsoleLogin};
use livechannel::rtmp::client::Publisher;

use crate::support::*;

const USER: &str = "admin";
const PASSWORD: &str = "a-long-console-password";

fn console_config(dir: &Path) -> Config {
    Config {
        buckets: vec![
            Bucket { name: "live".into(), acl: Acl::PublicReadWrite, auto_create_channels: true, ..Bucket::default() },
            Bucket { name: "secret".into(), acl: Acl::Private, auto_create_channels: true, ..Bucket::default() },
        ],
        access_keys: vec![AccessKey { id: "AKIDEXAMPLE".into(), secret: "SECRETEXAMPLE".into() }],
        console: Some(ConsoleLogin { user: USER.into(), password: PASSWORD.into() }),
        ..config(dir, 1, 5)
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn overview(ts: &TestServer, auth: Option<&str>) -> (u16, serde_json::Value) {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let resp = http_request(ts.http(), "GET", "/console/api/overview", &headers).await;
    (resp.status, serde_json::from_slice(&resp.body).unwrap_or_default())
}

fn channel<'a>(o: &'a serde_json::Value, bucket: &str, name: &str) -> Option<&'a serde_json::Value> {
    o["buckets"].as_array()?.iter().find(|b| b["name"] == bucket)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_public_buckets_to_all_and_private_ones_after_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(console_config(dir.path())).await;
    let tags = tags("media/av_no_bframes.flv");

    // The page and its assets, from the binary.
    let page = http_request(ts.http(), "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert!(page.text().contains("/console/console.js"));
    for (asset, kind) in [("console.js", "javascript"), ("console.css", "css"), ("hls.light.min.js", "javascript")] {
        let r = http_request(ts.http(), "GET", &format!("/console/{asset}"), &[]).await;
        assert!(r.status == 200 && r.header("content-type").is_some_and(|t| t.contains(kind)), "{asset}");
    }
    // A signed OSS service call on `/` is still the API's.
    let sdk = http_request(ts.http(), "GET", "/", &[("Authorization", "OSS AKIDEXAMPLE:bad")]).await;
    assert_ne!(sdk.status, 200);

    // A live channel in the open bucket, an idle one in the private bucket.
    let mut p = Publisher::connect(ts.rtmp(), "live", "cam1").await.unwrap();
    send_all(&mut p, &tags[..tags.len() / 2], 0).await.unwrap();
    ts.server
        .meta
        .get_or_create_channel("secret", "hidden", &livechannel::config::ChannelSettings::default())
        .await
        .unwrap();

    let anonymous = eventually(Duration::from_secs(10), "the live channel with its stats", async || {
        let (status, o) = overview(&ts, None).await;
        assert_eq!(status, 200);
        let c = channel(&o, "live", "cam1")?;
        (c["status"] == "live"
            && c["live"]["video"]["width"].as_u64()? > 0
            && c["live"]["segments"]["stored"].as_u64()? > 0)
            .then_some(o)
    })
    .await;
    assert!(channel(&anonymous, "secret", "hidden").is_none(), "a private bucket shown without signing in");
    assert_eq!(anonymous["signed_in"], false);
    assert_eq!(anonymous["can_sign_in"], true);
    let cam = channel(&anonymous, "live", "cam1").unwrap();
    assert_eq!(cam["publish"]["server"], format!("rtmp://127.0.0.1:{}/live", ts.rtmp().port()));
    assert_eq!(cam["publish"]["key"], "cam1");
    assert_eq!(cam["playback"], "/live/cam1/playlist.m3u8");
    assert_eq!(cam["live"]["segments"]["last_ms"].as_u64().unwrap() / 100, 10, "1 s segments: {cam}");

    // Anonymous writes are refused; a wrong password is refused everywhere.
    let anon_write = http_request(ts.http(), "POST", "/console/api/channels/live/cam1?status=disabled", &[]).await;
    assert_eq!(anon_write.status, 401);
    assert_eq!(overview(&ts, Some(&basic(USER, "wrong-password-here"))).await.0, 401);

    // Signed in: the private bucket, with presigned URLs that work.
    let auth = basic(USER, PASSWORD);
    let (status, signed) = overview(&ts, Some(&auth)).await;
    assert_eq!((status, &signed["signed_in"]), (200, &serde_json::json!(true)));
    let hidden = channel(&signed, "secret", "hidden").expect("the private bucket after sign-in");
    assert_eq!(hidden["status"], "idle");
    let key = hidden["publish"]["key"].as_str().unwrap();
    assert!(key.starts_with("hidden?") && key.contains("Signature="), "{key}");
    let mut private = Publisher::connect(ts.rtmp(), "secret/live", key).await.expect("the presigned publish URL works");
    send_all(&mut private, &tags, 0).await.unwrap();
    private.finish().await.unwrap();
    let key = livechannel::names::ChannelKey::new("secret", "hidden").unwrap();
    assert!(ts.server.channels.wait_flushed(&key, Duration::from_secs(20)).await);
    let playback = hidden["playback"].as_str().unwrap();
    let pl = http_request(ts.http(), "GET", playback, &[]).await;
    assert_eq!(pl.status, 200, "the presigned playlist plays: {playback}");
    assert!(pl.text().contains("Signature="), "its segments are presigned too");

    // Disabling from the console kicks the live publisher; enabling lets it back.
    let origin = format!("http://{}", ts.http());
    let disable = http_request(
        ts.http(),
        "POST",
        "/console/api/channels/live/cam1?status=disabled",
        &[("Authorization", &auth), ("Origin", &origin)],
    )
    .await;
    assert_eq!(disable.status, 200, "{}", disable.text());
    let _ = p.closed_by_server(Duration::from_secs(10)).await;
    ts.wait_flushed("cam1").await;
    assert_eq!(channel(&overview(&ts, None).await.1, "live", "cam1").unwrap()["status"], "disabled");
    let enable =
        http_request(ts.http(), "POST", "/console/api/channels/live/cam1?status=enabled", &[("Authorization", &auth)])
            .await;
    assert_eq!(enable.status, 200);
    assert_eq!(channel(&overview(&ts, None).await.1, "live", "cam1").unwrap()["status"], "idle");
    // Another page's write is refused even with the password.
    let foreign = http_request(
        ts.http(),
        "POST",
        "/console/api/channels/live/cam1?status=disabled",
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(foreign.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ffmpeg, node with tests/browser's packages (npm ci) and chromium"]
async fn the_console_lists_and_plays_a_channel_pushed_by_ffmpeg_in_chromium() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(browser_dir.join("node_modules/playwright-core").exists(), "run `npm ci` in tests/browser first");
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(console_config(dir.path())).await;
    let url = format!("rtmp://{}/live/studio", ts.rtmp());
    let mut encoder = std::process::Command::new("ffmpeg")
        .args(crate::interop::live_pattern("40", "25", &["-c:a", "aac", "-f", "flv", &url]))
        .spawn()
        .expect("ffmpeg");
    eventually(Duration::from_secs(20), "two segments", async || {
        (ts.get("/live/studio/playlist.m3u8").await.status == 200
            && playlist(&ts, "/live/studio/playlist.m3u8").await.segments.len() >= 2)
            .then_some(())
    })
    .await;
    let screenshot = dir.path().join("console.png");
    let out = crate::interop::run(
        "node",
        vec![
            browser_dir.join("console.mjs").display().to_string(),
            format!("http://{}/", ts.http()),
            "live/studio".into(),
            screenshot.display().to_string(),
        ],
    )
    .await;
    let _ = encoder.kill();
    let _ = encoder.wait();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "console test: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("\"errors\":[]") && report.contains("\"width\":640"), "{report}");
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    println!("console screenshot: {} ({} bytes); {report}", screenshot.display(), png.len());
    // The temporary folder goes with the test; LIVECHANNEL_KEEP_SCREENSHOT=path keeps a copy to look at.
    if let Some(keep) = std::env::var_os("LIVECHANNEL_KEEP_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_drain_call_takes_the_node_out_like_sigterm_and_needs_the_console_account() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(console_config(dir.path())).await;
    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "busy").await.unwrap();
    send_all(&mut p, &tags[..tags.len() / 2], 0).await.unwrap();
    assert_eq!(http_request(ts.http(), "POST", "/console/api/drain", &[]).await.status, 401);
    assert_eq!(ts.get("/readyz").await.status, 200, "an anonymous call changed nothing");

    let auth = basic(USER, PASSWORD);
    let drained = http_request(ts.http(), "POST", "/console/api/drain", &[("Authorization", &auth)]).await;
    assert_eq!(drained.status, 200, "{}", drained.text());
    let body: serde_json::Value = serde_json::from_slice(&drained.body).unwrap();
    assert_eq!((body["draining"].as_bool(), body["publishes_ended"].as_u64()), (Some(true), Some(1)));
    assert_eq!(ts.get("/readyz").await.status, 503);
    match p.closed_by_server(Duration::from_secs(10)).await {
        Ok(Some(livechannel::rtmp::client::ClientError::Refused { code, .. })) => {
            assert_eq!(code, "NetStream.Publish.Failed")
        }
        other => panic!("the live publisher was not told: {other:?}"),
    }
    assert!(Publisher::connect(ts.rtmp(), "live", "next").await.is_err(), "a draining node takes no publish");
    ts.wait_flushed("busy").await;
    assert_eq!(ts.get("/live/busy/playlist.m3u8").await.status, 200, "playback goes on");
}
