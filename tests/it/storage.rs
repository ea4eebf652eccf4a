//! One conformance suite for every object store we support (local folder, in-memory, S3-compatible),
//! run through an `Arc<dyn ObjectStore>` that logs every request:
//! - each segment is complete before a playlist names it, and nothing is listed on the media path;
//! - a segment below the part size is one PUT, a larger one a multipart upload;
//! - a playlist is replaced without a reader ever seeing a torn one;
//! - multipart uploads complete whole, and an aborted one leaves nothing;
//! - a ranged read is one request.
//!
//! The S3 variants need a server: `LIVECHANNEL_TEST_S3=http://127.0.0.1:PORT` (with
//! `LIVECHANNEL_TEST_S3_BUCKET`, `..._ACCESS_KEY`, `..._SECRET_KEY`; `.ci/run` starts one).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use livechannel::config::Config;
use livechannel::hls::live::{ChannelState, Recorder};
use livechannel::hls::{Output, Playlist, Segment};
use livechannel::media::Timestamp90k;
use livechannel::names::ChannelKey;
use livechannel::notify::PublishEvent;
use livechannel::storage::Store;
use livechannel::storage::sink::Sink;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::support::*;

/// What the store was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Put(String),
    StartMultipart(String),
    Part(String),
    Complete(String),
    Abort(String),
    Get { path: String, ranged: bool, head: bool },
    List,
    Other(&'static str),
}

#[derive(Debug)]
struct Logged {
    inner: Arc<dyn ObjectStore>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Logged {
    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl fmt::Display for Logged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Logged({})", self.inner)
    }
}

#[derive(Debug)]
struct LoggedUpload {
    inner: Box<dyn MultipartUpload>,
    path: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[async_trait]
impl MultipartUpload for LoggedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.calls.lock().unwrap().push(Call::Part(self.path.clone()));
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await;
        self.calls.lock().unwrap().push(Call::Complete(self.path.clone()));
        done
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.calls.lock().unwrap().push(Call::Abort(self.path.clone()));
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Logged {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let done = self.inner.put_opts(location, payload, opts).await;
        self.log(Call::Put(location.to_string()));
        done
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.log(Call::StartMultipart(location.to_string()));
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(LoggedUpload { inner, path: location.to_string(), calls: Arc::clone(&self.calls) }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.log(Call::Get { path: location.to_string(), ranged: options.range.is_some(), head: options.head });
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.log(Call::Other("delete"));
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.log(Call::List);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.log(Call::List);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.log(Call::Other("copy"));
        self.inner.copy_opts(from, to, options).await
    }
}

/// A backend under test, behind the request log.
struct Backend {
    name: &'static str,
    store: Store,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Object keys of this run start with it, so runs on a shared S3 bucket never meet.
    bucket: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn wrap(name: &'static str, inner: Store, dir: Option<tempfile::TempDir>) -> Backend {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let logged = Logged { inner: Arc::clone(inner.objects()), calls: Arc::clone(&calls) };
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        Backend {
            name,
            store: Store::new(Arc::new(logged), inner.part_size()),
            calls,
            bucket: format!("t{}", nanos % 1_000_000_000_000),
            _dir: dir,
        }
    }

    fn local() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        Backend::wrap("local", store, Some(dir))
    }

    fn memory() -> Backend {
        Backend::wrap("memory", Store::new(Arc::new(object_store::memory::InMemory::new()), 64 * 1024), None)
    }

    /// The S3 server named by the environment, through the same `[storage]` config the server reads.
    fn s3() -> Backend {
        let config = Config { storage: Some(crate::support::test_s3_storage(None)), ..Config::default() };
        Backend::wrap("s3", Store::from_config(&config).expect("S3 store"), None)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn key(&self, channel: &str) -> ChannelKey {
        ChannelKey::new(&self.bucket, channel).unwrap()
    }
}

fn segment(index: u64, bytes: u64) -> Segment {
    Segment {
        index,
        start: Timestamp90k::from_secs(2 * index as i64),
        duration: Timestamp90k::from_secs(2),
        started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 2 * index),
        starts_with_keyframe: true,
        forced: false,
        discontinuity: false,
        bytes,
        picture: None,
    }
}

/// Records three segments through the real storage writer: small, larger than a part, small.
async fn record_three_segments(b: &Backend) -> Vec<(u64, usize)> {
    let key = b.key("conf");
    let part = b.store.part_size();
    let sizes = [188 * 100, part + 188 * 1000, 188 * 50];
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let budget = livechannel::budget::MediaBudget::new(64 << 20);
    let holding = budget.open().unwrap();
    let sink = Sink {
        store: b.store.clone(),
        key: key.clone(),
        on_stored: None,
        journal: None,
        event: PublishEvent {
            bucket: key.bucket().into(),
            channel: key.channel().into(),
            remote: "127.0.0.1:1".parse().unwrap(),
            user_args: String::new(),
            publish_started: UNIX_EPOCH,
            session_id: "p1".into(),
        },
        base_url: "http://127.0.0.1:1".into(),
        fence: livechannel::channels::Fence::unfenced(),
        health: None,
        seqs: None,
        budget: Some(std::sync::Arc::clone(&holding)),
    };
    let state = ChannelState::resume(Playlist::new(3, 2), None, "playlist.m3u8".into());
    let writer = tokio::spawn(sink.run(Recorder::new(state), rx));
    for (index, size) in sizes.iter().enumerate() {
        let mut left = *size;
        while left > 0 {
            let n = left.min(64 * 1024);
            assert!(holding.try_charge(n));
            tx.send(Output::Chunk { index: index as u64, data: Bytes::from(vec![0x47u8; n]) }).await.unwrap();
            left -= n;
        }
        tx.send(Output::Closed(segment(index as u64, *size as u64))).await.unwrap();
    }
    drop(tx);
    let recorder = writer.await.unwrap();
    assert_eq!(recorder.counters().stored, 3, "{}: every segment stored", b.name);
    assert_eq!(budget.used(), 0, "{}: the writer gave back every byte once its upload was done", b.name);
    sizes.iter().enumerate().map(|(i, s)| (i as u64, *s)).collect()
}

async fn segments_are_complete_before_a_playlist_names_them_and_nothing_is_listed(b: Backend) {
    let sizes = record_three_segments(&b).await;
    let calls = b.calls();
    let key = b.key("conf");
    let seg = |seq: u64| key.object(&format!("{seq}.ts")).unwrap().to_string();
    let playlist = key.object("playlist.m3u8").unwrap().to_string();
    let done_at = |seq: u64| {
        calls
            .iter()
            .position(|c| matches!(c, Call::Put(p) | Call::Complete(p) if *p == seg(seq)))
            .unwrap_or_else(|| panic!("{}: segment {seq} never completed: {calls:?}", b.name))
    };
    let playlist_puts: Vec<usize> =
        calls.iter().enumerate().filter(|(_, c)| **c == Call::Put(playlist.clone())).map(|(i, _)| i).collect();
    assert_eq!(playlist_puts.len(), 3, "{}: one playlist write per segment: {calls:?}", b.name);
    for (n, at) in playlist_puts.iter().enumerate() {
        assert!(done_at(n as u64) < *at, "{}: playlist {n} written before segment {n} completed", b.name);
    }
    assert!(!calls.contains(&Call::List), "{}: the media path listed the store: {calls:?}", b.name);
    // Requests per segment: one PUT below the part size; create + parts + complete above it.
    for (seq, size) in sizes {
        let requests = calls
            .iter()
            .filter(|c| {
                matches!(c, Call::Put(p) | Call::StartMultipart(p) | Call::Part(p) | Call::Complete(p) if *p == seg(seq))
            })
            .count();
        let expected = if size < b.store.part_size() { 1 } else { 2 + size.div_ceil(b.store.part_size()) };
        assert_eq!(requests, expected, "{}: segment {seq} of {size} bytes: {calls:?}", b.name);
        println!("{}: segment of {size} bytes (part size {}): {requests} requests", b.name, b.store.part_size());
    }
    // Every byte arrived.
    let big = b.store.get(&key.object("1.ts").unwrap(), GetOptions::default()).await.unwrap();
    assert_eq!(big.bytes().await.unwrap().len(), b.store.part_size() + 188 * 1000);
}

async fn a_playlist_is_replaced_without_a_reader_seeing_a_torn_one(b: Backend) {
    let path = b.key("torn").object("playlist.m3u8").unwrap();
    let versions: Vec<Bytes> =
        (0..40).map(|i| Bytes::from(format!("#EXTM3U\n#v{i}\n{}\n#END\n", "x".repeat(100 + i * 997)))).collect();
    b.store.put(&path, versions[0].clone()).await.unwrap();
    let writer = {
        let (store, path, versions) = (b.store.clone(), path.clone(), versions.clone());
        tokio::spawn(async move {
            for v in &versions[1..] {
                store.put(&path, v.clone()).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 10 {
        let got = b.store.get(&path, GetOptions::default()).await.unwrap().bytes().await.unwrap();
        assert!(versions.contains(&got), "{}: a torn playlist of {} bytes", b.name, got.len());
        reads += 1;
    }
    writer.await.unwrap();
}

async fn multipart_uploads_complete_whole_and_aborted_ones_leave_nothing(b: Backend) {
    // S3 wants every part but the last to be at least 5 MiB.
    let part = vec![1u8; 5 * 1024 * 1024];
    let whole = b.key("mp").object("whole.ts").unwrap();
    let mut upload = b.store.objects().put_multipart(&whole).await.unwrap();
    upload.put_part(PutPayload::from(part.clone())).await.unwrap();
    upload.put_part(PutPayload::from(vec![2u8; 1000])).await.unwrap();
    upload.complete().await.unwrap();
    let got = b.store.get(&whole, GetOptions::default()).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), part.len() + 1000, "{}", b.name);
    assert_eq!((got[0], got[got.len() - 1]), (1, 2), "{}: parts in order", b.name);

    let aborted = b.key("mp").object("aborted.ts").unwrap();
    let mut upload = b.store.objects().put_multipart(&aborted).await.unwrap();
    upload.put_part(PutPayload::from(part)).await.unwrap();
    upload.abort().await.unwrap();
    let gone = b.store.get(&aborted, GetOptions::default()).await;
    assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "{}: {gone:?}", b.name);
}

/// Through the server's HTTP path: `Range` requests are one store request each, and a range past the
/// end is a 416.
async fn a_ranged_read_is_one_request(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2, 3);
    cfg.buckets[0].name = b.bucket.clone();
    let ts = TestServer::start_with_store(cfg, Some(b.store.clone())).await;
    let key = b.key("ranged");
    let body: Vec<u8> = (0..188 * 20).map(|i| (i % 251) as u8).collect();
    b.store.put(&key.object("0.ts").unwrap(), Bytes::from(body.clone())).await.unwrap();
    let url = format!("/{}/ranged/0.ts", b.bucket);
    for (range, want) in
        [("bytes=100-199", 100..200), ("bytes=3700-", 3700..body.len()), ("bytes=-60", body.len() - 60..body.len())]
    {
        b.calls.lock().unwrap().clear();
        let resp = http_request(ts.http(), "GET", &url, &[("Range", range)]).await;
        assert_eq!(resp.status, 206, "{}: {range}", b.name);
        assert_eq!(resp.body, &body[want.clone()], "{}: {range}", b.name);
        let expected = format!("bytes {}-{}/{}", want.start, want.end - 1, body.len());
        assert_eq!(resp.header("content-range"), Some(expected.as_str()), "{}", b.name);
        let calls = b.calls();
        assert_eq!(calls.len(), 1, "{}: {range} cost {calls:?}", b.name);
        assert!(matches!(&calls[0], Call::Get { ranged: true, head: false, .. }), "{}: {calls:?}", b.name);
    }
    let past = http_request(ts.http(), "GET", &url, &[("Range", "bytes=99999-")]).await;
    assert_eq!(past.status, 416, "{}", b.name);
    assert_eq!(past.header("content-range"), Some(format!("bytes */{}", body.len()).as_str()));
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::local()).await })*
        }
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::memory()).await })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs an S3-compatible server (LIVECHANNEL_TEST_S3; .ci/run starts s3s-fs)"]
            async fn $test() { super::$test(super::Backend::s3()).await })*
        }
    };
}

conformance!(
    segments_are_complete_before_a_playlist_names_them_and_nothing_is_listed,
    a_playlist_is_replaced_without_a_reader_seeing_a_torn_one,
    multipart_uploads_complete_whole_and_aborted_ones_leave_nothing,
    a_ranged_read_is_one_request,
);
