//! `kill -9` in the middle of a publish, twenty times at pseudo-random moments, each followed by a restart
//! of the same node (embedded SQLite, local folder). After every restart:
//! - the live playlist parses and names only complete objects (whole TS packets, no continuity error);
//! - every segment-index row (what VOD playlists are made of) names an object that exists;
//! - no `N.ts#k` fragment of an interrupted upload is left;
//! - the killed publish is closed in the push history;
//! - its PUBLISH_DONE callback is delivered (a receiver here records them);
//! - the next publish continues the sequence numbers, and its first segment is a discontinuity.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livechannel::rtmp::client::Publisher;
use livechannel::ts::inspect::inspect;
use tokio::net::TcpListener;

use crate::callbacks::{Receiver, hw_with};
use crate::support::*;

const AK: &str = "CRASHAK";
const SK: &str = "CRASHSECRET";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "static-token-0123456789";
const CHANNEL: &str = "crash";
const ROUNDS: usize = 20;

fn node_config(dir: &std::path::Path) -> String {
    format!(
        r#"rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{data}"
[channel_defaults]
frag_duration = 1
frag_count = 100
[[access_keys]]
id = "{AK}"
secret = "{SK}"
[[buckets]]
name = "live"
acl = "public-read-write"
auto_create_channels = true
[[auth_tokens]]
token = "{TOKEN}"
project_id = "{PROJECT}"
[notify]
retry_base_ms = 100
retry_max_ms = 500
allowed_destinations = ["127.0.0.0/8"]
"#,
        data = dir.join("data").display()
    )
}

fn playlist_of(text: &[u8]) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}\n{}", String::from_utf8_lossy(text)),
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

/// What was checked after one restart.
struct Seen {
    seqs: BTreeSet<u64>,
}

async fn check_after_restart(node: &Node, dir: &std::path::Path, round: usize, before: &Seen) -> Seen {
    let http = node.http;
    let base = format!("/live/{CHANNEL}");
    // 1. The live playlist names only complete objects.
    let resp = http_request(http, "GET", &format!("{base}/playlist.m3u8"), &[]).await;
    assert_eq!(resp.status, 200, "round {round}: the playlist");
    let pl = playlist_of(&resp.body);
    let mut seqs = BTreeSet::new();
    for seg in &pl.segments {
        let body = http_request(http, "GET", &format!("{base}/{}", seg.uri), &[]).await;
        assert_eq!(body.status, 200, "round {round}: {} is listed but not served", seg.uri);
        let report = inspect(&body.body).unwrap_or_else(|e| panic!("round {round}: {}: {e}", seg.uri));
        assert_eq!(report.packets * 188, body.body.len(), "round {round}: {} is cut short", seg.uri);
        assert_eq!(report.continuity_errors, 0, "round {round}: {}", seg.uri);
        assert!(report.video().next().is_some_and(|v| v.random_access), "round {round}: {}", seg.uri);
        seqs.insert(seg.uri.trim_end_matches(".ts").parse::<u64>().unwrap());
    }
    let listed: Vec<u64> = pl.segments.iter().map(|s| s.uri.trim_end_matches(".ts").parse().unwrap()).collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "round {round}: sequence numbers go up: {listed:?}");
    // 2. The next publish continued the sequence, with a discontinuity at its first segment.
    if let Some(first_new) = pl.segments.iter().find(|s| {
        let seq: u64 = s.uri.trim_end_matches(".ts").parse().unwrap();
        before.seqs.last().is_none_or(|last| seq > *last)
    }) && !before.seqs.is_empty()
    {
        assert!(
            first_new.discontinuity,
            "round {round}: the first segment of a publish, {}, is a discontinuity",
            first_new.uri
        );
    }
    // 3. Every index row names an object that exists.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (start, end) = (now - 3600, now + 60);
    let vod = http_request(http, "GET", &format!("{base}?vod&startTime={start}&endTime={end}"), &[]).await;
    if vod.status == 200 {
        let vod = playlist_of(&vod.body);
        let indexed: BTreeSet<u64> =
            vod.segments.iter().filter_map(|s| s.uri.rsplit('/').next()?.split('.').next()?.parse().ok()).collect();
        let unindexed: Vec<&u64> = seqs.difference(&indexed).collect();
        assert!(unindexed.is_empty(), "round {round}: listed live but not in the index: {unindexed:?}");
        for seg in vod.segments {
            let path = if seg.uri.starts_with('/') { seg.uri.clone() } else { format!("{base}/{}", seg.uri) };
            let head = http_request(http, "HEAD", &path, &[]).await;
            assert_eq!(head.status, 200, "round {round}: the index names {} which does not exist", seg.uri);
        }
    } else {
        assert!(
            seqs.is_empty(),
            "round {round}: no VOD playlist ({} {}) though segments are listed",
            vod.status,
            vod.text()
        );
    }
    // 4. No fragment of an interrupted upload is left.
    let fragments: Vec<_> =
        files(&dir.join("data")).into_iter().filter(|p| p.to_string_lossy().contains('#')).collect();
    assert!(fragments.is_empty(), "round {round}: upload fragments left: {fragments:?}");
    // 5. The killed publish is closed in the push history.
    let history = http_request(http, "GET", &format!("{base}?live&comp=history"), &[]).await.text();
    let records = history.matches("<LiveRecord>").count();
    assert_eq!(records, round.min(10), "round {round}: every earlier publish is in the history: {history}");
    eprintln!("round {round}: {} segments listed, last {:?}", seqs.len(), seqs.last());
    Seen { seqs }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_publish_twenty_times_the_node_restarts_consistent_and_loses_no_callback() {
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let (receiver, _task) = Receiver::start(listener, 0).await;
    let tags = tags("media/av_no_bframes.flv");
    // xorshift: the kill moments are pseudo-random but the same on every run.
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seen = Seen { seqs: BTreeSet::new() };
    for round in 0..=ROUNDS {
        let mut node = Node::start(dir.path(), "crash", &config);
        if round == 0 {
            let body = serde_json::json!({"url": format!("http://{hook}/hw"), "auth_sign_key": "0123456789abcdef0123456789abcdef"});
            let path = format!("/v1/{PROJECT}/notifications/publish");
            let (status, answer) =
                hw_with(node.http, "PUT", &path, "domain=live", &body.to_string(), SK, Some(TOKEN)).await;
            assert_eq!(status, 201, "{answer}");
        } else {
            seen = check_after_restart(&node, dir.path(), round, &seen).await;
            // The killed publishes' PUBLISH_DONE, sent after the restart (or before the kill).
            let dones = eventually(Duration::from_secs(20), "the killed publish's PUBLISH_DONE", async || {
                let done: BTreeSet<String> = receiver
                    .got()
                    .iter()
                    .filter(|r| r.body["event"] == "PUBLISH_DONE")
                    .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
                    .collect();
                (done.len() >= round).then_some(done.len())
            })
            .await;
            assert_eq!(dones, round, "round {round}: one PUBLISH_DONE per publish");
        }
        if round == ROUNDS {
            break;
        }
        // Publish at about 10x real time, and kill the node 0.3 to 1.5 s in: mid-segment, mid-upload or
        // mid-commit, wherever that falls.
        let mut p = Publisher::connect(node.rtmp, "live", CHANNEL).await.unwrap();
        let kill_at = Duration::from_millis(300 + next() % 1200);
        let started = std::time::Instant::now();
        let mut offset = 0;
        'publish: loop {
            for chunk in tags.chunks(8) {
                if started.elapsed() >= kill_at || send_all(&mut p, chunk, offset).await.is_err() {
                    break 'publish;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            offset += 10_000;
        }
        node.kill9();
        drop(p);
    }
    let publishes = receiver.got().iter().filter(|r| r.body["event"] == "PUBLISH").count();
    assert!(publishes >= ROUNDS, "every PUBLISH callback was delivered: {publishes} of {ROUNDS}");
}
