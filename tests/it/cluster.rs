//! Three livechannel nodes as separate processes (so one can be killed with SIGKILL) on one PostgreSQL
//! and one S3 server, on loopback. The story: a publish on A plays from C and a second publisher on B is
//! refused; A is killed mid-segment and the encoder's republish to B is taken once A's lease lapses; the
//! playlist on C stays monotonic with one discontinuity and lists only objects that exist and decode; no
//! object is ever overwritten; disabling through C kicks the publisher on B within 2 s; draining B moves
//! its publisher to C; the callback receiver sees every event once per idempotency key, the PUBLISH_DONE
//! of the killed publish included; `/metrics` parses as OpenMetrics and its counters move.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use livechannel::flv::file::{Tag, TagKind};
use livechannel::rtmp::client::{ClientError, Publisher};
use object_store::ObjectStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::callbacks::{Receiver, hw_with};
use crate::oss_api::Oss;
use crate::support::*;

const AK: &str = "CLUSTERAK";
const SK: &str = "CLUSTERSECRET";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "static-token-0123456789";
const SIGN_KEY: &str = "0123456789abcdef0123456789abcdef";
const LEASE_MS: u64 = 3_000;
const CHANNEL: &str = "story";

fn node_config(dir: &std::path::Path, id: &str, pg: &str, prefix: &str) -> String {
    let s3 = test_s3_storage(None);
    format!(
        r#"rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{data}"
[channel_defaults]
frag_duration = 1
frag_count = 30
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
[storage]
kind = "s3"
endpoint = "{endpoint}"
bucket = "{bucket}"
region = "us-east-1"
access_key_id = "{key}"
secret_access_key = "{secret}"
path_style = true
prefix = "{prefix}"
[database]
url = "{pg}"
max_connections = 8
[cluster]
lease_ms = {LEASE_MS}
renew_ms = 500
[notify]
allowed_destinations = ["127.0.0.0/8"]
retry_base_ms = 100
retry_max_ms = 1000
timeout_ms = 2000
"#,
        data = dir.join(id).display(),
        endpoint = s3.endpoint.unwrap(),
        bucket = s3.bucket.unwrap(),
        key = s3.access_key_id.unwrap(),
        secret = s3.secret_access_key.unwrap(),
    )
}

/// A signed OSS call on the `live` bucket.
async fn oss(addr: SocketAddr, method: &str, key: &str, query: &str) -> HttpResponse {
    Oss::with_key(addr, "live", AK, SK).call(method, key, query, b"").await
}

/// Keeps publishing through `nodes` in order, as an encoder behind a TCP balancer would: on a refused
/// or broken publish it reconnects to the next node. Reports each accepted publish (node index, when).
struct Encoder {
    stop: CancellationToken,
    target: Arc<Mutex<usize>>,
    accepted: Arc<Mutex<Vec<(usize, Instant)>>>,
    ended: Arc<Mutex<Vec<(usize, Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Encoder {
    fn start(nodes: Vec<SocketAddr>, first: usize, tags: Arc<Vec<Tag>>) -> Encoder {
        let stop = CancellationToken::new();
        let target = Arc::new(Mutex::new(first));
        let accepted: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
        let ended: Arc<Mutex<Vec<(usize, Instant, String)>>> = Arc::default();
        let (s, t, a, e) = (stop.clone(), Arc::clone(&target), Arc::clone(&accepted), Arc::clone(&ended));
        let task = tokio::spawn(async move {
            while !s.is_cancelled() {
                let at = *t.lock().unwrap();
                let a2 = Arc::clone(&a);
                // A publish counts as accepted once the first media went out after the publish handshake.
                let result = {
                    let tags = Arc::clone(&tags);
                    let s = s.clone();
                    let rtmp = nodes[at];
                    async move {
                        let connected = Publisher::connect(rtmp, "live", CHANNEL).await;
                        match connected {
                            Ok(p) => {
                                // The handshake worked: this node took the publish. Stream on a fresh
                                // connection would be a second publish, so go on with this one.
                                a2.lock().unwrap().push((at, Instant::now()));
                                stream_on(p, tags, s).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    .await
                };
                let why = match &result {
                    Ok(()) => "finished".to_owned(),
                    Err(e) => e.to_string(),
                };
                e.lock().unwrap().push((at, Instant::now(), why));
                if s.is_cancelled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Encoder { stop, target, accepted, ended, task }
    }

    fn retarget(&self, node: usize) {
        *self.target.lock().unwrap() = node;
    }

    fn accepted(&self) -> Vec<(usize, Instant)> {
        self.accepted.lock().unwrap().clone()
    }

    fn ended(&self) -> Vec<(usize, Instant, String)> {
        self.ended.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.unwrap().unwrap();
    }
}

async fn stream_on(mut p: Publisher, tags: Arc<Vec<Tag>>, stop: CancellationToken) -> Result<(), ClientError> {
    let media: Vec<&Tag> = tags.iter().filter(|t| t.kind != TagKind::Script).collect();
    let first = media.first().map_or(0, |t| t.timestamp_ms);
    let span = media.last().map_or(0, |t| t.timestamp_ms) - first + 40;
    let start = tokio::time::Instant::now();
    for round in 0u32.. {
        for tag in &media {
            let at = round * span + tag.timestamp_ms - first;
            let due = start + Duration::from_millis(u64::from(at));
            if due > tokio::time::Instant::now() {
                p.flush_queued().await?;
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.cancelled() => return p.finish().await,
                }
            }
            p.queue_tag(tag.kind, tag.body.clone(), at)?;
        }
    }
    Ok(())
}

/// Watches the prefix in S3: every object's ETag as it appears; a changed ETag is an overwrite.
fn watch_objects(
    store: Arc<dyn ObjectStore>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<(BTreeMap<String, String>, Vec<String>)> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut overwritten = Vec::new();
        while !stop.is_cancelled() {
            let mut list = store.list(None);
            while let Some(item) = list.next().await {
                let Ok(meta) = item else { continue };
                let key = meta.location.to_string();
                // Playlists are replaced on purpose; segments never are.
                if !key.ends_with(".ts") {
                    continue;
                }
                let etag = meta.e_tag.unwrap_or_default();
                match seen.get(&key) {
                    Some(old) if *old != etag => overwritten.push(format!("{key}: {old} -> {etag}")),
                    Some(_) => {}
                    None => {
                        seen.insert(key, etag);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        (seen, overwritten)
    })
}

/// Polls one node's playlist: every media sequence seen, and the last text.
fn watch_playlist(http: SocketAddr, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<m3u8_rs::MediaPlaylist>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.is_cancelled() {
            let resp = http_request(http, "GET", &format!("/live/{CHANNEL}/playlist.m3u8"), &[]).await;
            if resp.status == 200
                && let Ok((_, pl)) = m3u8_rs::parse_media_playlist(&resp.body)
            {
                seen.push(pl);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        seen
    })
}

fn stat_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let from = xml.find(&open)? + open.len();
    let to = xml[from..].find(&format!("</{tag}>"))? + from;
    Some(xml[from..to].to_owned())
}

/// Samples of an OpenMetrics text, parsed by prometheus_client (Python): name{labels} -> value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        out = {}\n\
        for fam in parse(sys.stdin.read()):\n\
        \x20   for s in fam.samples:\n\
        \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
        \x20       out[s.name + '{' + labels + '}'] = s.value\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(crate::sdk_interop::python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn scrape(node: &Node) -> HashMap<String, f64> {
    let resp = http_request(node.http, "GET", "/metrics", &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    parse_metrics(&resp.text())
}

async fn ffprobe_decodes(bytes: &[u8]) -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let path = file.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ffprobe").args(["-v", "error", "-show_packets", "-of", "csv"]).arg(&path).output()
    })
    .await
    .unwrap()
    .expect("ffprobe runs");
    // A publish that ends (kicked, drained) stores its open segment however short: a few frames.
    out.status.success() && out.stderr.is_empty() && String::from_utf8_lossy(&out.stdout).contains("packet,video")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs LIVECHANNEL_TEST_POSTGRES, LIVECHANNEL_TEST_S3 (an S3 server), ffprobe and prometheus_client in .venv"]
async fn three_nodes_one_publisher_a_killed_node_loses_nothing_and_draining_moves_the_encoder() {
    let pg = livechannel::meta::testing::fresh_postgres_database().await;
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis();
    let prefix = format!("cluster-{stamp}");
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(dir.path(), "node-a", &node_config(dir.path(), "node-a", &pg, &prefix));
    let b = Node::start(dir.path(), "node-b", &node_config(dir.path(), "node-b", &pg, &prefix));
    let c = Node::start(dir.path(), "node-c", &node_config(dir.path(), "node-c", &pg, &prefix));
    eprintln!("logs in {} (kept on failure)", dir.path().display());
    let dir = dir.keep();

    // Callbacks: the Huawei publish notifications, configured through C, received here.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let (receiver, _r) = Receiver::start(listener, 0).await;
    let body = serde_json::json!({"url": format!("http://{hook}/hw"), "auth_sign_key": SIGN_KEY});
    let path = format!("/v1/{PROJECT}/notifications/publish");
    let (status, answer) = hw_with(c.http, "PUT", &path, "domain=live", &body.to_string(), SK, Some(TOKEN)).await;
    assert_eq!(status, 201, "{answer}");

    let storage = livechannel::config::Config {
        storage: Some(test_s3_storage(Some(prefix.clone()))),
        ..livechannel::config::Config::default()
    };
    let store = livechannel::storage::Store::from_config(&storage).unwrap();
    let stop_watch = CancellationToken::new();
    let objects = watch_objects(Arc::clone(store.objects()), stop_watch.clone());
    let playlists = watch_playlist(c.http, stop_watch.clone());
    let tags = Arc::new(tags("media/av_no_bframes.flv"));
    let before = scrape(&c).await;

    // 1. A publish on A plays from C; a second publisher on B is refused as on one node.
    let nodes = vec![a.rtmp, b.rtmp, c.rtmp];
    let encoder = Encoder::start(nodes.clone(), 0, Arc::clone(&tags));
    let first_segments = eventually(Duration::from_secs(30), "segments from A listed on C", async || {
        let resp = http_request(c.http, "GET", &format!("/live/{CHANNEL}/playlist.m3u8"), &[]).await;
        let pl = m3u8_rs::parse_media_playlist(&resp.body).ok()?.1;
        (pl.segments.len() >= 3).then_some(pl.segments.len())
    })
    .await;
    eprintln!("{first_segments} segments from node A listed on node C");
    match Publisher::connect(b.rtmp, "live", CHANNEL).await {
        Err(ClientError::Refused { code, description }) => {
            assert_eq!(code, "NetStream.Publish.BadName", "{description}");
            assert!(description.contains("already live"), "{description}");
        }
        other => panic!("a second publisher on another node must be refused, got {:?}", other.map(|_| ())),
    }
    // Stat through C shows the stream on A, from the stats A writes into its lease row.
    let stat = eventually(Duration::from_secs(10), "stat of A's stream through C", async || {
        let xml = oss(c.http, "GET", CHANNEL, "live=&comp=stat").await.text();
        (stat_field(&xml, "Width").is_some()).then_some(xml)
    })
    .await;
    assert_eq!(stat_field(&stat, "Status").as_deref(), Some("Live"), "{stat}");
    assert!(stat_field(&stat, "RemoteAddr").is_some_and(|r| r.starts_with("127.0.0.1:")), "{stat}");
    assert!(stat_field(&stat, "Width").is_some_and(|w| w.parse::<u32>().unwrap() > 0), "{stat}");

    // 2. Kill -9 A in the middle of a segment (half a segment after one was listed); the encoder
    //    republishes to B, which takes the channel once A's lease lapsed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    encoder.retarget(1);
    let killed = Instant::now();
    a.kill9();
    let taken = eventually(Duration::from_secs(30), "the republish to B accepted", async || {
        encoder.accepted().into_iter().find(|(n, _)| *n == 1).map(|(_, at)| at)
    })
    .await;
    let takeover = taken - killed;
    eprintln!("republish accepted on B {takeover:?} after A was killed (lease {LEASE_MS} ms)");
    assert!(takeover < Duration::from_millis(LEASE_MS + 5_000), "takeover took {takeover:?}");
    // Let B record a few segments.
    let on_b = eventually(Duration::from_secs(30), "segments from B", async || {
        let resp = http_request(c.http, "GET", &format!("/live/{CHANNEL}/playlist.m3u8"), &[]).await;
        let pl = m3u8_rs::parse_media_playlist(&resp.body).ok()?.1;
        let after = pl.segments.iter().position(|s| s.discontinuity)?;
        (pl.segments.len() - after >= 4).then_some(pl)
    })
    .await;
    assert_eq!(on_b.segments.iter().filter(|s| s.discontinuity).count(), 1, "one discontinuity: {on_b:?}");

    // 3. Disabling through C kicks the publisher on B within 2 s; stat through C says Disabled.
    let ended_before = encoder.ended().len();
    let disabled_at = Instant::now();
    let resp = oss(c.http, "PUT", CHANNEL, "live=&status=disabled").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let kicked = eventually(Duration::from_secs(10), "the publisher on B kicked", async || {
        encoder.ended().get(ended_before).map(|(node, at, why)| (*node, *at, why.clone()))
    })
    .await;
    let kick_latency = kicked.1 - disabled_at;
    eprintln!("publisher on node B kicked {kick_latency:?} after the disable on node C ({})", kicked.2);
    assert_eq!(kicked.0, 1);
    assert!(kick_latency < Duration::from_secs(2), "kick took {kick_latency:?}");
    let stat = eventually(Duration::from_secs(10), "stat Disabled", async || {
        let xml = oss(c.http, "GET", CHANNEL, "live=&comp=stat").await.text();
        (stat_field(&xml, "Status").as_deref() == Some("Disabled")).then_some(xml)
    })
    .await;
    assert!(!stat.contains("<Video>"), "{stat}");

    // 5. Enabled again, the encoder is back on B; draining B moves it to C, and playback goes on.
    encoder.retarget(1);
    let resp = oss(c.http, "PUT", CHANNEL, "live=&status=enabled").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let accepted_before = encoder.accepted().len();
    eventually(Duration::from_secs(20), "the encoder back on B", async || {
        encoder.accepted().get(accepted_before).filter(|(n, _)| *n == 1).map(drop)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    encoder.retarget(2);
    let accepted_before = encoder.accepted().len();
    let term = Instant::now();
    b.sigterm();
    let moved = eventually(Duration::from_secs(30), "the encoder moved to C", async || {
        encoder.accepted().get(accepted_before).map(|(n, at)| (*n, *at))
    })
    .await;
    assert_eq!(moved.0, 2, "the drained node's encoder reconnected to C");
    let after_drain = eventually(Duration::from_secs(30), "segments from C after the drain", async || {
        let resp = http_request(c.http, "GET", &format!("/live/{CHANNEL}/playlist.m3u8"), &[]).await;
        let pl = m3u8_rs::parse_media_playlist(&resp.body).ok()?.1;
        let last = pl.segments.iter().rposition(|s| s.discontinuity)?;
        (pl.segments.len() - last >= 3 && pl.segments.iter().filter(|s| s.discontinuity).count() >= 3).then_some(pl)
    })
    .await;
    let publishes = encoder.accepted().len();
    encoder.stop().await;
    let mut b = b;
    let exited = tokio::task::spawn_blocking(move || {
        let status = b.child.wait();
        (b, status)
    })
    .await
    .unwrap();
    assert!(exited.1.unwrap().success(), "a drained node exits cleanly");
    eprintln!("node B drained and exited {:?} after SIGTERM", term.elapsed());
    assert!(term.elapsed() < Duration::from_secs(25), "draining took the whole grace period");

    // The playlist on C: media sequence never went back; every listed object exists and decodes.
    stop_watch.cancel();
    let seen = playlists.await.unwrap();
    let sequences: Vec<u64> = seen.iter().map(|p| p.media_sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] <= w[1]), "media sequence went back: {sequences:?}");
    for segment in &after_drain.segments {
        let resp = http_request(c.http, "GET", &format!("/live/{CHANNEL}/{}", segment.uri), &[]).await;
        assert_eq!(resp.status, 200, "{} is listed but not served", segment.uri);
        assert!(ffprobe_decodes(&resp.body).await, "{} does not decode", segment.uri);
    }
    let (objects, overwritten) = objects.await.unwrap();
    assert!(overwritten.is_empty(), "segment objects were overwritten: {overwritten:?}");
    assert!(objects.len() >= 10, "{} segment objects seen", objects.len());

    // 4. Callbacks: every event, one key each (a duplicate repeats its key), the killed publish's
    //    PUBLISH_DONE included (sent by a surviving node after A's lease lapsed).
    // A, B after the kill, B again after re-enabling, C after the drain.
    let expected_publishes = 4;
    assert_eq!(publishes, expected_publishes, "accepted publishes: {:?}", "A, B, B, C");
    let got = eventually(Duration::from_secs(30), "every callback", async || {
        let got = receiver.got();
        let keys: std::collections::BTreeSet<String> =
            got.iter().map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned()).collect();
        (keys.len() >= expected_publishes * 2).then_some(got)
    })
    .await;
    let mut by_key: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in &got {
        by_key.entry(r.headers["idempotency-key"].to_str().unwrap().to_owned()).or_default().push(r.body.clone());
    }
    for (key, bodies) in &by_key {
        assert!(bodies.windows(2).all(|w| w[0]["event"] == w[1]["event"]), "{key}: {bodies:?}");
    }
    let events: Vec<&str> = got.iter().map(|r| r.body["event"].as_str().unwrap()).collect();
    let starts = events.iter().filter(|e| **e == "PUBLISH").count();
    let dones = events.iter().filter(|e| **e == "PUBLISH_DONE").count();
    eprintln!("callbacks: {} requests, {} keys; {starts} PUBLISH, {dones} PUBLISH_DONE", got.len(), by_key.len());
    let done_keys = by_key.values().filter(|b| b[0]["event"] == "PUBLISH_DONE").count();
    let start_keys = by_key.values().filter(|b| b[0]["event"] == "PUBLISH").count();
    assert_eq!(start_keys, done_keys, "every publish ended with a PUBLISH_DONE, the killed one's too");
    assert_eq!(start_keys, expected_publishes, "A, B, B again after the kick, C after the drain");
    assert!(got.len() >= by_key.len());

    // 6. /metrics on C parses and moved: segments stored, callbacks delivered, a refusal counted on B
    //    (gone now) is not asked for; C's own counters are.
    let after = scrape(&c).await;
    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let stored = "livechannel_segments_total{outcome=stored}";
    assert!(get(&after, stored) > get(&before, stored), "{after:?}");
    let delivered = "livechannel_callback_attempts_total{result=delivered}";
    let delivered_anywhere = get(&after, delivered) > get(&before, delivered);
    eprintln!(
        "node C delivered callbacks: {delivered_anywhere}; outbox pending {}",
        get(&after, "livechannel_outbox_pending{}")
    );
    assert!(after.keys().any(|k| k.starts_with("livechannel_database_seconds_bucket")), "{after:?}");
    assert_eq!(after.get("livechannel_live_publishes{}"), Some(&0.0), "the encoder stopped: {after:?}");
    assert!(after.contains_key("livechannel_outbox_pending{}"), "{after:?}");
    let _ = std::fs::remove_dir_all(dir);
}
