//! The one bounded queue between ingest and storage: when storage is slower than the stream, ingest keeps
//! flowing, the segment being produced is dropped whole (never half-listed), and the next listed segment
//! is marked discontinuous. When storage recovers, nothing else is lost.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use async_trait::async_trait;
use futures::stream::BoxStream;
use livechannel::rtmp::client::ClientError;
use livechannel::storage::Store;
use livechannel::ts::inspect::inspect;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};

/// A local store whose segment writes (parts, or single PUTs) take `DELAY` each while `slow` is set, and
/// wait for as long as `blocked` is.
#[derive(Debug, Clone)]
struct Throttled {
    inner: Arc<dyn ObjectStore>,
    slow: Arc<AtomicBool>,
    blocked: Arc<AtomicBool>,
}

const DELAY: Duration = Duration::from_millis(400);

/// Waits as a segment write on `Throttled` does.
async fn hold(slow: bool, blocked: &AtomicBool) {
    while blocked.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if slow {
        tokio::time::sleep(DELAY).await;
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Throttled({})", self.inner)
    }
}

#[derive(Debug)]
struct SlowUpload {
    inner: Box<dyn MultipartUpload>,
    slow: Arc<AtomicBool>,
    blocked: Arc<AtomicBool>,
}

#[async_trait]
impl MultipartUpload for SlowUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let (slow, blocked) = (self.slow.load(Ordering::Relaxed), Arc::clone(&self.blocked));
        Box::pin(async move {
            hold(slow, &blocked).await;
            part.await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Throttled {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // A segment smaller than a part is one PUT: it is as slow as a part would be.
        if location.as_ref().ends_with(".ts") {
            hold(self.slow.load(Ordering::Relaxed), &self.blocked).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SlowUpload { inner, slow: Arc::clone(&self.slow), blocked: Arc::clone(&self.blocked) }))
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

#[tokio::test]
async fn slow_storage_drops_whole_segments_without_stalling_ingest_or_listing_partial_ones() {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::local(&dir.path().join("media")).unwrap();
    let slow = Arc::new(AtomicBool::new(true));
    let throttled = Throttled { inner: Arc::clone(local.objects()), slow: Arc::clone(&slow), blocked: Arc::default() };
    let store = Store::new(Arc::new(throttled), 64 * 1024);
    let mut cfg = config(dir.path(), 1, 20);
    cfg.limits.storage_queue_bytes = 256 * 1024; // 4 chunks of 64 KiB
    let mut ts = TestServer::start_with_store(cfg, Some(store)).await;

    // 10 s of 1 s segments (~390 KB of TS) published in a burst: far more than 4 queued chunks.
    let tags = tags("media/av_no_bframes.flv");
    let started = Instant::now();
    publish(ts.rtmp(), "slow", &tags).await.unwrap();
    let publish_time = started.elapsed();
    assert!(publish_time < Duration::from_secs(2), "ingest stalled behind storage: {publish_time:?}");
    ts.wait_flushed("slow").await;
    let stored = ts.drain_stored();
    assert!(!stored.is_empty() && stored.len() < 10, "{} of 10 segments stored", stored.len());

    // Every listed segment is whole; the one after a gap says so.
    let pl = playlist(&ts, "/live/slow/playlist.m3u8").await;
    assert_eq!(pl.segments.len(), stored.len());
    let indices: Vec<u64> = stored.iter().map(|s| s.segment.index).collect();
    assert!(pl.segments.iter().skip(1).any(|s| s.discontinuity), "a gap must be marked: stored {indices:?}");
    for seg in &pl.segments {
        let body = ts.get(&format!("/live/slow/{}", seg.uri)).await.body;
        let report = inspect(&body).unwrap();
        assert_eq!(report.continuity_errors, 0);
        assert_eq!(report.packets * 188, body.len());
        assert!(report.video().next().unwrap().random_access);
    }

    // Storage recovers: the next publish, paced like an encoder (though still ~5x real time, so the test
    // stays short even when other tests load the machine), loses nothing.
    slow.store(false, Ordering::Relaxed);
    let mut p = livechannel::rtmp::client::Publisher::connect(ts.rtmp(), "live", "slow").await.unwrap();
    for chunk in tags.chunks(8) {
        send_all(&mut p, chunk, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.finish().await.unwrap();
    ts.wait_flushed("slow").await;
    assert_eq!(ts.drain_stored().len(), 10);
    ts.server.shutdown(Duration::from_secs(10)).await;
}

/// The node-wide budget for media waiting for storage: with storage stalled, a publisher bursting into it
/// fills the budget; past three quarters a new publish is refused with the reason, past the whole budget
/// the publisher holding it loses its newest segments instead of growing. Once storage moves again every
/// byte is given back and publishes are taken again.
#[tokio::test]
async fn a_stalled_store_fills_the_node_budget_then_new_publishes_are_refused_and_the_biggest_sheds() {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::local(&dir.path().join("media")).unwrap();
    let blocked = Arc::new(AtomicBool::new(true));
    let throttled =
        Throttled { inner: Arc::clone(local.objects()), slow: Arc::default(), blocked: Arc::clone(&blocked) };
    let store = Store::new(Arc::new(throttled), 64 * 1024);
    // 10 s segments of ~390 KB: six 64 KiB chunks each.
    let mut cfg = config(dir.path(), 10, 20);
    const BUDGET: usize = 512 * 1024;
    cfg.limits.storage_queue_bytes = BUDGET;
    cfg.limits.media_memory_bytes = BUDGET;
    let mut ts = TestServer::start_with_store(cfg, Some(store)).await;

    // 40 s of media in a burst, against storage that takes nothing.
    let tags = tags("media/av_no_bframes.flv");
    let mut big = livechannel::rtmp::client::Publisher::connect(ts.rtmp(), "live", "big").await.unwrap();
    for round in 0..4 {
        send_all(&mut big, &tags, round * 10_000).await.unwrap();
    }
    let refusal = eventually(Duration::from_secs(10), "a refusal for budget", async || {
        match livechannel::rtmp::client::Publisher::connect(ts.rtmp(), "live", "small").await {
            Err(ClientError::Refused { code, description }) => Some((code, description)),
            Ok(p) => {
                drop(p);
                None
            }
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert_eq!(refusal.0, "NetStream.Publish.Failed");
    assert!(refusal.1.contains("overloaded") && refusal.1.contains("media_memory_bytes"), "{}", refusal.1);
    let used: usize = refusal.1.split(" at ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!((BUDGET * 3 / 4..=BUDGET * 5 / 4).contains(&used), "{used} bytes counted");
    let stat = ts.get("/live/big?live&comp=stat").await.text();
    let dropped: u64 = tag(&stat, "Dropped").and_then(|d| d.parse().ok()).unwrap_or(0);
    assert!(dropped >= 1, "the biggest holder shed its newest segments: {stat}");
    big.finish().await.unwrap();

    // Storage moves again: everything is given back, and publishes are taken.
    blocked.store(false, Ordering::Relaxed);
    ts.wait_flushed("big").await;
    let stored = ts.drain_stored();
    assert!(!stored.is_empty() && stored.len() < 4, "{} of 4 segments stored", stored.len());
    publish(ts.rtmp(), "small", &tags).await.unwrap();
    ts.wait_flushed("small").await;
    assert_eq!(ts.drain_stored().len(), 1);
    ts.server.shutdown(Duration::from_secs(10)).await;
}
