//! What a streamer sees when things go wrong on the first day: an encoder that reconnects while its old
//! connection still looks open takes the channel over (on this node or on another one), and a publish
//! whose segments cannot be stored is ended with an RTMP error instead of pushing into the void.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use async_trait::async_trait;
use futures::stream::BoxStream;
use livechannel::config::{Acl, AuthToken, Bucket, Config, Database, Takeover, TakeoverPolicy};
use livechannel::flv::file::Tag;
use livechannel::rtmp::client::{ClientError, Publisher};
use livechannel::storage::Store;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

fn bucket(name: &str, policy: TakeoverPolicy) -> Bucket {
    Bucket {
        name: name.into(),
        acl: Acl::PublicReadWrite,
        auto_create_channels: true,
        takeover: Takeover { policy, after: Duration::from_millis(500) },
        ..Bucket::default()
    }
}

fn takeover_config(dir: &std::path::Path) -> Config {
    Config {
        buckets: vec![bucket("live", TakeoverPolicy::Idle), bucket("strict", TakeoverPolicy::Never)],
        ..config(dir, 1, 20)
    }
}

/// Publishes the first `n` media tags and leaves the connection open and silent: an encoder whose
/// network went away without the TCP connection noticing.
async fn go_silent(rtmp: SocketAddr, app: &str, channel: &str, tags: &[Tag], n: usize) -> Publisher {
    let mut p = Publisher::connect(rtmp, app, channel).await.expect("first publish accepted");
    send_all(&mut p, &tags[..n], 0).await.expect("first publish sends");
    p
}

/// Retries a publish until it is accepted, as an encoder reconnecting does; the refusals on the way
/// must be "already live".
async fn reconnect(rtmp: SocketAddr, app: &str, channel: &str) -> Publisher {
    eventually(Duration::from_secs(10), "the reconnect to be accepted", async || {
        match Publisher::connect(rtmp, app, channel).await {
            Ok(p) => Some(p),
            Err(ClientError::Refused { code, description }) => {
                assert_eq!(code, "NetStream.Publish.BadName", "{description}");
                assert!(description.contains("already live"), "{description}");
                None
            }
            Err(e) => panic!("reconnect: {e}"),
        }
    })
    .await
}

/// The old publisher learns why it was cut off.
async fn told_taken_over(old: Publisher) {
    match old.closed_by_server(Duration::from_secs(10)).await {
        // rml_rtmp's client hands over the status code only (ffmpeg prints the description too).
        Ok(Some(ClientError::Refused { code, .. })) => assert_eq!(code, "NetStream.Publish.Rejected"),
        other => panic!("the old publisher was not told: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_is_taken_over_and_a_live_one_or_a_never_bucket_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(takeover_config(dir.path())).await;
    let tags = tags("media/av_no_bframes.flv");
    let half = tags.len() / 2;

    // While the first publisher sends, a second one is refused.
    let mut first = Publisher::connect(ts.rtmp(), "live", "obs").await.unwrap();
    send_all(&mut first, &tags[..50], 0).await.unwrap();
    match Publisher::connect(ts.rtmp(), "live", "obs").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "NetStream.Publish.BadName"),
        Ok(_) => panic!("a publisher sending media was taken over"),
        Err(e) => panic!("{e}"),
    }
    // Then it goes silent (its connection stays open): the reconnect takes over once it was silent
    // for takeover_after_ms, and the old connection is told and closed.
    send_all(&mut first, &tags[50..half], 0).await.unwrap();
    let silent_since = std::time::Instant::now();
    let mut second = reconnect(ts.rtmp(), "live", "obs").await;
    assert!(silent_since.elapsed() >= Duration::from_millis(500), "taken over after {:?}", silent_since.elapsed());
    told_taken_over(first).await;
    send_all(&mut second, &config_tags(&tags), 0).await.unwrap();
    send_all(&mut second, &tags[half..], 0).await.unwrap();
    second.finish().await.unwrap();
    ts.wait_flushed("obs").await;

    // One playlist, both publishes, a discontinuity where the second one starts.
    let pl = playlist(&ts, "/live/obs/playlist.m3u8").await;
    let breaks = pl.segments.iter().skip(1).filter(|s| s.discontinuity).count();
    assert_eq!(breaks, 1, "{:?}", pl.segments.iter().map(|s| (&s.uri, s.discontinuity)).collect::<Vec<_>>());
    let history = ts.server.meta.history("live", "obs", 10).await.unwrap();
    assert_eq!(history.len(), 2, "both publishes are in the history");
    let metrics = ts.get("/metrics").await.text();
    assert!(metrics.lines().any(|l| l.starts_with("livechannel_takeovers_total ") && !l.ends_with(" 0")), "{metrics}");

    // A bucket that never takes over keeps the silent publisher.
    let strict = go_silent(ts.rtmp(), "strict/live", "obs", &tags, 50).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // longer than takeover_after_ms: silence is the point
    assert!(matches!(Publisher::connect(ts.rtmp(), "strict/live", "obs").await, Err(ClientError::Refused { .. })));
    strict.finish().await.unwrap();
}

/// Two nodes on one database (SQLite here, so no notifications: the holder sees the request at its
/// next renewal) and one media store: a reconnect that the balancer sends to the other node takes the
/// channel over there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_to_another_node_takes_over_there() {
    let dir = tempfile::tempdir().unwrap();
    let media = Store::local(&dir.path().join("shared-media")).unwrap();
    let node = |name: &str| {
        let mut c = takeover_config(&dir.path().join(name));
        c.database = Database::Sqlite { path: Some(dir.path().join("shared.db")), max_connections: 4 };
        c.node.id = name.into();
        c.node.renew = Duration::from_millis(200);
        c.node.lease = Duration::from_millis(1000);
        c
    };
    let a = TestServer::start_with_store(node("node-a"), Some(media.clone())).await;
    let b = TestServer::start_with_store(node("node-b"), Some(media)).await;
    let tags = tags("media/av_no_bframes.flv");
    let half = tags.len() / 2;

    // A publisher sending media on node A is not taken over from node B.
    let mut first = Publisher::connect(a.rtmp(), "live", "hop").await.unwrap();
    let sender = tokio::spawn(async move {
        for chunk in tags[..half].chunks(8) {
            send_all(&mut first, chunk, 0).await.unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        (first, tags)
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the publish is under way on node A
    let refused = Publisher::connect(b.rtmp(), "live", "hop").await;
    assert!(matches!(refused, Err(ClientError::Refused { .. })), "a sending publisher was taken over");
    let (first, tags) = sender.await.unwrap();

    // Silent now: node B's publish asks node A, which ends its publish; B then holds the channel.
    let mut second = reconnect(b.rtmp(), "live", "hop").await;
    told_taken_over(first).await;
    assert!(a.server.channels.live(&livechannel::names::ChannelKey::new("live", "hop").unwrap()).is_none());
    send_all(&mut second, &config_tags(&tags), 0).await.unwrap();
    send_all(&mut second, &tags[half..], 0).await.unwrap();
    second.finish().await.unwrap();
    b.wait_flushed("hop").await;
    let pl = playlist(&b, "/live/hop/playlist.m3u8").await;
    assert!(pl.segments.iter().skip(1).any(|s| s.discontinuity), "the second node's segments follow a discontinuity");
    let seqs: Vec<&str> = pl.segments.iter().map(|s| s.uri.as_str()).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(seqs.len(), sorted.len(), "no sequence number twice: {seqs:?}");
}

/// A local store whose segment writes all fail, as an unwritable folder or an unreachable S3 does.
#[derive(Debug)]
struct NoSegments {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Display for NoSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoSegments({})", self.inner)
    }
}

fn refused(location: &Path) -> object_store::Error {
    object_store::Error::Generic { store: "NoSegments", source: format!("permission denied writing {location}").into() }
}

#[async_trait]
impl ObjectStore for NoSegments {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().ends_with(".ts") {
            return Err(refused(location));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(refused(location))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_segments_cannot_be_stored_is_ended_with_an_rtmp_error() {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::local(&dir.path().join("media")).unwrap();
    let store = Store::new(Arc::new(NoSegments { inner: Arc::clone(local.objects()) }), 64 * 1024);
    let mut cfg = config(dir.path(), 1, 5);
    cfg.limits.storage_failure_timeout = Duration::from_secs(2);
    cfg.auth_tokens = vec![AuthToken { token: TOKEN.into(), project_id: PROJECT.into() }];
    let ts = TestServer::start_with_store(cfg, Some(store)).await;
    let tags = tags("media/av_no_bframes.flv");
    let callback = serde_json::json!({"publish_domain": "live", "app": "live",
        "notify_callback_url": "http://127.0.0.1:9/rec", "notify_event_subscription": ["RECORD_FAILED"]});
    let headers = [("Content-Type", "application/json"), ("X-Auth-Token", TOKEN)];
    let path = format!("/v1/{PROJECT}/record/callbacks");
    let made = http_request_body(ts.http(), "POST", &path, &headers, callback.to_string().as_bytes()).await;
    assert_eq!(made.status, 201, "{}", made.text());

    // Paced like a live encoder (about 2x real time), so the publish outlives the timeout.
    let mut p = Publisher::connect(ts.rtmp(), "live", "void").await.unwrap();
    let key = livechannel::names::ChannelKey::new("live", "void").unwrap();
    let mut ended = None;
    let mut stat_seen = None;
    for chunk in tags.chunks(8) {
        if let Err(e) = send_all(&mut p, chunk, 0).await {
            ended = Some(e);
            break;
        }
        if stat_seen.is_none() && ts.server.channels.live(&key).is_some_and(|l| l.health.counts().failed > 0) {
            stat_seen = Some(ts.get("/live/void?live&comp=stat").await.text());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = match ended {
        Some(e) => e,
        None => p.closed_by_server(Duration::from_secs(10)).await.unwrap().expect("an error status"),
    };
    match ended {
        ClientError::Refused { code, .. } => assert_eq!(code, "NetStream.Publish.Failed"),
        other => panic!("the publish was not ended with an error status: {other}"),
    }

    // Stat said so while it was live: failed segments and the storage error.
    let stat = stat_seen.expect("Stat was read while segments failed");
    let failed: u64 = tag(&stat, "Failed").and_then(|f| f.parse().ok()).unwrap_or_else(|| panic!("{stat}"));
    assert!(failed >= 1, "{stat}");
    assert!(tag(&stat, "LastError").is_some_and(|e| e.contains("permission denied")), "{stat}");
    ts.wait_flushed("void").await;
    assert!(ts.server.channels.live(&key).is_none());
    // Each failed segment queued a RECORD_FAILED callback.
    let rows = ts.server.meta.outbox(None).await.unwrap();
    let record_failed = rows.iter().filter(|(e, _)| e.payload.contains("RECORD_FAILED")).count() as u64;
    assert!(record_failed >= failed, "{record_failed} RECORD_FAILED callbacks for {failed}+ failed segments");
}

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "static-token-0123456789";

/// The case users hit: ffmpeg pushing into storage that refuses every segment used to exit 0. Now it is
/// told, prints the server's reason and exits with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ffmpeg"]
async fn ffmpeg_pushing_into_failing_storage_is_stopped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::local(&dir.path().join("media")).unwrap();
    let store = Store::new(Arc::new(NoSegments { inner: Arc::clone(local.objects()) }), 64 * 1024);
    let mut cfg = config(dir.path(), 1, 5);
    cfg.limits.storage_failure_timeout = Duration::from_secs(2);
    let ts = TestServer::start_with_store(cfg, Some(store)).await;
    let url = format!("rtmp://{}/live/void", ts.rtmp());
    let out =
        crate::interop::run("ffmpeg", crate::interop::live_pattern("20", "25", &["-c:a", "aac", "-f", "flv", &url]))
            .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ffmpeg exited 0: {stderr}");
    assert!(stderr.contains("no segment could be stored"), "ffmpeg said: {stderr}");
}
