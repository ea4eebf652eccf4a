//! The media path never waits on the metadata database: with every commit taking 500 ms, a healthy
//! channel loses no segment and gets no discontinuity, and the index rows arrive anyway, batched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use livechannel::journal::{Batch, Committed, JournalStore};
use livechannel::meta::{Meta, MetaError};
use livechannel::rtmp::client::Publisher;
use livechannel::server::Observers;

use crate::support::*;

const COMMIT_DELAY: Duration = Duration::from_millis(500);

/// The real database behind a 500 ms wait per commit, counting commits and the rows in them.
struct SlowCommits {
    inner: Meta,
    commits: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl JournalStore for SlowCommits {
    fn commit<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Committed, MetaError>> {
        Box::pin(async move {
            tokio::time::sleep(COMMIT_DELAY).await;
            let done = self.inner.commit_journal(&batch.segments, &batch.callbacks, &batch.seq_returns).await?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.rows.fetch_add((batch.segments.len() + batch.callbacks.len()) as u64, Ordering::Relaxed);
            Ok(done)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_taking_500_ms_per_commit_costs_a_healthy_channel_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let commits = Arc::new(AtomicU64::new(0));
    let rows = Arc::new(AtomicU64::new(0));
    let (c, r) = (Arc::clone(&commits), Arc::clone(&rows));
    let observers = Observers {
        journal_store: Some(Box::new(move |inner| Arc::new(SlowCommits { inner, commits: c, rows: r }))),
        ..Observers::default()
    };
    let mut cfg = config(dir.path(), 1, 20);
    // The smallest queue the config allows (4 chunks): a writer that waited for each commit would overflow it.
    cfg.limits.storage_queue_bytes = 256 * 1024;
    let (tx, stored_rx) = tokio::sync::mpsc::unbounded_channel();
    let server =
        livechannel::server::Server::start_with(cfg, Observers { on_stored: Some(tx), ..observers }).await.unwrap();
    let mut ts = TestServer::from_parts(server, stored_rx);

    // 10 s of 1 s segments at about 5x real time: a segment every ~200 ms, a commit every 500 ms.
    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "steady").await.unwrap();
    for chunk in tags.chunks(8) {
        send_all(&mut p, chunk, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.finish().await.unwrap();
    ts.wait_flushed("steady").await;
    let stored = ts.drain_stored();
    assert_eq!(stored.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>(), "every segment");
    let pl = playlist(&ts, "/live/steady/playlist.m3u8").await;
    assert_eq!(pl.segments.len(), 10);
    assert!(pl.segments.iter().all(|s| !s.discontinuity), "no gap, so no discontinuity");

    // The index catches up after the media: every row, in a few batched commits.
    let meta = ts.server.meta.clone();
    let all = (SystemTime::UNIX_EPOCH, SystemTime::now() + Duration::from_secs(3600));
    let indexed = eventually(Duration::from_secs(20), "10 index rows", async || {
        let rows = meta.segments_between("live", "steady", all.0, all.1).await.unwrap();
        (rows.len() == 10).then_some(rows)
    })
    .await;
    assert_eq!(indexed.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    let commits = commits.load(Ordering::Relaxed);
    assert!(commits < 10, "{commits} commits for 10 segments: rows were not batched");
    assert!(rows.load(Ordering::Relaxed) >= 10);
    ts.server.shutdown(Duration::from_secs(20)).await;
}

/// The real database, unreachable while `down` is set.
struct Outage {
    inner: Meta,
    down: Arc<std::sync::atomic::AtomicBool>,
    failures: Arc<AtomicU64>,
}

impl JournalStore for Outage {
    fn commit<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Committed, MetaError>> {
        Box::pin(async move {
            if self.down.load(Ordering::Relaxed) {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(MetaError::Query { op: "commit_batch", source: sqlx::Error::PoolTimedOut });
            }
            self.inner.commit_batch(&batch.segments, &batch.callbacks).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_ingest_goes_on_and_the_rows_arrive_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let (d, f) = (Arc::clone(&down), Arc::clone(&failures));
    let (tx, stored_rx) = tokio::sync::mpsc::unbounded_channel();
    let observers = Observers {
        on_stored: Some(tx),
        journal_store: Some(Box::new(move |inner| Arc::new(Outage { inner, down: d, failures: f }))),
        ..Observers::default()
    };
    let server = livechannel::server::Server::start_with(config(dir.path(), 1, 20), observers).await.unwrap();
    let mut ts = TestServer::from_parts(server, stored_rx);
    // The database goes away after the publish started (admission reads the channel record).
    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "nodb").await.unwrap();
    down.store(true, Ordering::Relaxed);
    for chunk in tags.chunks(8) {
        send_all(&mut p, chunk, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.finish().await.unwrap();
    let key = livechannel::names::ChannelKey::new("live", "nodb").unwrap();
    assert!(ts.server.channels.wait_flushed(&key, Duration::from_secs(20)).await);
    // Media and playlists did not wait for the database.
    assert_eq!(ts.drain_stored().len(), 10, "every segment stored while the database was down");
    let pl = playlist(&ts, "/live/nodb/playlist.m3u8").await;
    assert_eq!(pl.segments.len(), 10, "the playlist is current");
    let meta = ts.server.meta.clone();
    let all = (SystemTime::UNIX_EPOCH, SystemTime::now() + Duration::from_secs(3600));
    assert!(meta.segments_between("live", "nodb", all.0, all.1).await.unwrap().is_empty());
    assert!(failures.load(Ordering::Relaxed) >= 1, "commits were tried and failed");
    // Back: the queued rows are committed, nothing was dropped.
    down.store(false, Ordering::Relaxed);
    let rows = eventually(Duration::from_secs(20), "the index rows after the outage", async || {
        let rows = meta.segments_between("live", "nodb", all.0, all.1).await.unwrap();
        (rows.len() == 10).then_some(rows)
    })
    .await;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    let counters = ts.server.journal_counters();
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    assert!(counters.commit_failures.load(Ordering::Relaxed) >= 1);
    ts.server.shutdown(Duration::from_secs(20)).await;
}

/// The real database, whose commits wait while `held` is set.
struct Held {
    inner: Meta,
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl JournalStore for Held {
    fn commit<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Committed, MetaError>> {
        Box::pin(async move {
            while self.held.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.inner.commit_journal(&batch.segments, &batch.callbacks, &batch.seq_returns).await
        })
    }
}

/// The stored playlist as another node or a restarted one reads it: the object itself, not the copy this
/// node serves from memory. None while there is none.
async fn stored_playlist(ts: &TestServer, channel: &str) -> Option<m3u8_rs::MediaPlaylist> {
    let path = object_store::path::Path::from(format!("live/{channel}/playlist.m3u8"));
    let got = object_store::ObjectStoreExt::get(ts.server.store.objects().as_ref(), &path).await;
    let body = match got {
        Ok(got) => got.bytes().await.unwrap(),
        Err(object_store::Error::NotFound { .. }) => return None,
        Err(e) => panic!("reading the stored playlist: {e}"),
    };
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => Some(p),
        other => panic!("not a media playlist: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_playlist_never_lists_a_segment_whose_index_row_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = Arc::clone(&held);
    let (tx, stored_rx) = tokio::sync::mpsc::unbounded_channel();
    let observers = Observers {
        on_stored: Some(tx),
        journal_store: Some(Box::new(move |inner| Arc::new(Held { inner, held: h }))),
        ..Observers::default()
    };
    let server = livechannel::server::Server::start_with(config(dir.path(), 1, 20), observers).await.unwrap();
    let mut ts = TestServer::from_parts(server, stored_rx);
    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "held").await.unwrap();
    let half = tags.len() / 2;
    for chunk in tags[..half].chunks(8) {
        send_all(&mut p, chunk, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Players already see the new segments: this node serves its playlist from memory.
    let live = eventually(Duration::from_secs(20), "three segments in the served playlist", async || {
        let pl = playlist(&ts, "/live/held/playlist.m3u8").await;
        (pl.segments.len() >= 3).then_some(pl)
    })
    .await;
    // A node killed now must not leave a stored playlist naming segments the index has never heard of.
    let meta = ts.server.meta.clone();
    let all = (SystemTime::UNIX_EPOCH, SystemTime::now() + Duration::from_secs(3600));
    assert!(meta.segments_between("live", "held", all.0, all.1).await.unwrap().is_empty(), "nothing committed yet");
    let stored = stored_playlist(&ts, "held").await;
    assert!(
        stored.as_ref().is_none_or(|pl| pl.segments.is_empty()),
        "the stored playlist lists {:?} before any index row is committed",
        stored.map(|pl| pl.segments.into_iter().map(|s| s.uri).collect::<Vec<_>>())
    );
    assert!(ts.drain_stored().is_empty(), "observers hear of a segment once its stored playlist is written");

    // The database answers: the stored copy catches up, and lists only indexed segments.
    held.store(false, Ordering::Relaxed);
    let stored = eventually(Duration::from_secs(20), "the stored playlist", async || {
        stored_playlist(&ts, "held").await.filter(|pl| pl.segments.len() >= live.segments.len())
    })
    .await;
    let indexed: Vec<String> = meta
        .segments_between("live", "held", all.0, all.1)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{}.ts", r.seq))
        .collect();
    for s in &stored.segments {
        assert!(indexed.contains(&s.uri), "{} is stored-listed but not indexed ({indexed:?})", s.uri);
    }
    for chunk in tags[half..].chunks(8) {
        send_all(&mut p, chunk, 0).await.unwrap();
    }
    p.finish().await.unwrap();
    ts.wait_flushed("held").await;
    let seqs: Vec<u64> = ts.drain_stored().iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "every segment reported, in order");
    let last = stored_playlist(&ts, "held").await.expect("the final stored playlist");
    assert_eq!(last.segments.len(), 10);
    ts.server.shutdown(Duration::from_secs(20)).await;
}
