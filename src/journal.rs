//! The bookkeeping writer: segment-index rows and callback events from every channel go into one bounded
//! in-memory queue, and one task commits them to the metadata database in batches (one transaction every
//! few milliseconds), so the media path never waits on a commit.
//!
//! Media path -> [`Journal::segment`] / [`Journal::callback`] (never blocks; a full queue drops the entry,
//! counts it and logs it) -> [`run`] (batches, turns callback events into outbox rows with the notifier,
//! commits through [`JournalStore`], wakes the callback sender).
//!
//! Order: entries are committed in the order they were submitted, so a publish's start callbacks precede
//! its file callbacks, and RECORD_OVER follows the last file. A writer that must not get ahead of its
//! index rows (a stored playlist may only list indexed segments) submits them with a [`Progress`] and
//! watches it, without waiting on the database. A commit that fails is retried with backoff
//! while new entries wait in the queue. A segment row that collides with an existing `(bucket, channel,
//! seq)` is never replaced: it is logged and counted (two writers would be overwriting `<seq>.ts`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, error, warn};

pub use crate::meta::Committed;
use crate::meta::notify::NewCallback;
use crate::meta::{Meta, MetaError, SegmentRecord};
use crate::notify::{CallbackEvent, Notifier};

/// Entries the queue holds before new ones are dropped: about a minute of segments and callbacks for a
/// thousand channels, a few hundred bytes each.
pub const QUEUE_ENTRIES: usize = 64 * 1024;
/// How long the writer gathers entries before it commits them. Each commit costs a few hand-offs to the
/// database's thread; at 200 publishers a 5 ms window made one commit per segment. Nothing listed in a
/// stored playlist waits in the window unindexed (see [`Progress`]), so the window only delays callbacks
/// and other nodes' view of the stored playlists.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const MAX_BATCH: usize = 512;
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum Entry {
    Segment {
        bucket: String,
        channel: String,
        record: SegmentRecord,
        progress: Option<Arc<Progress>>,
    },
    Callback(CallbackEvent),
    /// An ended publish gives back the sequence numbers it did not use.
    ReturnSeqs(crate::meta::lease::SeqReturn),
    /// Answered once everything submitted before it is committed.
    Sync(oneshot::Sender<()>),
}

/// How many of one writer's tracked entries the journal has settled: committed, or dropped (a full queue,
/// a stopped writer) and so never to be committed. Entries of one writer are settled in the order it
/// submitted them.
#[derive(Debug, Default)]
pub struct Progress {
    settled: AtomicU64,
    changed: Notify,
}

impl Progress {
    pub fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    fn settle(&self) {
        self.settled.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Returns once at least `n` entries are settled.
    pub async fn until(&self, n: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.settled() >= n {
                return;
            }
            changed.await;
        }
    }
}

/// One transaction's worth of rows.
#[derive(Debug, Default)]
pub struct Batch {
    pub segments: Vec<(String, String, SegmentRecord)>,
    pub callbacks: Vec<NewCallback>,
    pub seq_returns: Vec<crate::meta::lease::SeqReturn>,
}

/// Where batches are committed: the metadata database (tests wrap it to make it slow or fail).
pub trait JournalStore: Send + Sync + 'static {
    fn commit<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Committed, MetaError>>;
}

impl JournalStore for Meta {
    fn commit<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Committed, MetaError>> {
        Box::pin(self.commit_journal(&batch.segments, &batch.callbacks, &batch.seq_returns))
    }
}

#[derive(Debug, Default)]
pub struct JournalCounters {
    /// Entries dropped because the queue was full (the database is down or far too slow).
    pub dropped: AtomicU64,
    pub committed_segments: AtomicU64,
    pub committed_callbacks: AtomicU64,
    pub conflicts: AtomicU64,
    /// Callbacks not queued because their idempotency key already was (a retried commit, or a bug).
    pub callback_conflicts: AtomicU64,
    pub commit_failures: AtomicU64,
}

/// The submitting side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Journal {
    tx: mpsc::Sender<Entry>,
    counters: Arc<JournalCounters>,
}

impl Journal {
    pub fn new() -> (Journal, mpsc::Receiver<Entry>) {
        Journal::with_capacity(QUEUE_ENTRIES)
    }

    pub fn with_capacity(entries: usize) -> (Journal, mpsc::Receiver<Entry>) {
        let (tx, rx) = mpsc::channel(entries.max(1));
        (Journal { tx, counters: Arc::default() }, rx)
    }

    pub fn counters(&self) -> &Arc<JournalCounters> {
        &self.counters
    }

    /// A handle that does not keep the writer running (the writer ends when the last `Journal` goes).
    pub fn downgrade(&self) -> WeakJournal {
        WeakJournal { tx: self.tx.downgrade(), counters: Arc::clone(&self.counters) }
    }

    /// A stored segment's index row (after its object is complete, before a playlist names it).
    /// `progress`, if given, is settled once the row is committed or dropped.
    pub fn segment(&self, bucket: &str, channel: &str, record: SegmentRecord, progress: Option<&Arc<Progress>>) {
        let (bucket, channel, progress) = (bucket.to_owned(), channel.to_owned(), progress.cloned());
        self.submit(Entry::Segment { bucket, channel, record, progress });
    }

    pub fn callback(&self, event: CallbackEvent) {
        self.submit(Entry::Callback(event));
    }

    pub fn return_seqs(&self, r: crate::meta::lease::SeqReturn) {
        self.submit(Entry::ReturnSeqs(r));
    }

    /// Waits until every entry submitted before this call is committed (shutdown, tests). Returns false
    /// if the writer is gone.
    pub async fn sync(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        // Waits for room rather than dropping: a barrier is not data, and its caller wants to wait.
        if self.tx.send(Entry::Sync(tx)).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    fn submit(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(entry)) => {
                settle_dropped(&entry);
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // The first, then every 1000th: the database is behind, and every entry would say so.
                if dropped == 1 || dropped.is_multiple_of(1000) {
                    error!(dropped, entry = ?entry, "metadata queue full: index rows and callbacks are being dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(entry)) => {
                settle_dropped(&entry);
                warn!(entry = ?entry, "metadata writer has stopped; entry dropped");
            }
        }
    }
}

/// A dropped entry will never be committed: whoever waits for it must not wait forever (its row is lost,
/// and logged as such).
fn settle_dropped(entry: &Entry) {
    if let Entry::Segment { progress: Some(p), .. } = entry {
        p.settle();
    }
}

#[derive(Clone, Debug)]
pub struct WeakJournal {
    tx: mpsc::WeakSender<Entry>,
    counters: Arc<JournalCounters>,
}

impl WeakJournal {
    pub fn upgrade(&self) -> Option<Journal> {
        Some(Journal { tx: self.tx.upgrade()?, counters: Arc::clone(&self.counters) })
    }

    pub fn counters(&self) -> &Arc<JournalCounters> {
        &self.counters
    }
}

/// The writer task: runs until every [`Journal`] handle is gone and the queue is drained.
pub async fn run(
    mut rx: mpsc::Receiver<Entry>,
    store: Arc<dyn JournalStore>,
    notifier: Notifier,
    counters: Arc<JournalCounters>,
) {
    let mut entries = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut entries, MAX_BATCH).await == 0 {
            return;
        }
        // Entries come in bursts (a segment and its callbacks, many channels at once): gathering for a few
        // milliseconds makes one transaction of them.
        if entries.len() < MAX_BATCH {
            tokio::time::sleep(BATCH_WINDOW).await;
            while entries.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(e) => entries.push(e),
                    Err(_) => break,
                }
            }
        }
        let mut waiting = Vec::new();
        let mut tracked = Vec::new();
        let batch = build(&notifier, entries.drain(..), &mut waiting, &mut tracked).await;
        commit(&*store, &batch, &counters).await;
        for p in tracked {
            p.settle();
        }
        if !batch.callbacks.is_empty() {
            notifier.wake();
        }
        for w in waiting {
            let _ = w.send(());
        }
    }
}

async fn build(
    notifier: &Notifier,
    entries: impl Iterator<Item = Entry>,
    waiting: &mut Vec<oneshot::Sender<()>>,
    tracked: &mut Vec<Arc<Progress>>,
) -> Batch {
    let mut batch = Batch::default();
    for entry in entries {
        match entry {
            Entry::Segment { bucket, channel, record, progress } => {
                batch.segments.push((bucket, channel, record));
                tracked.extend(progress);
            }
            Entry::Callback(event) => notifier.callbacks(&event, &mut batch.callbacks).await,
            Entry::ReturnSeqs(r) => batch.seq_returns.push(r),
            Entry::Sync(tx) => waiting.push(tx),
        }
    }
    batch
}

/// Commits until it succeeds: the entries behind it wait in the queue (bounded), so a database outage
/// costs the newest entries, never ingest.
async fn commit(store: &dyn JournalStore, batch: &Batch, counters: &JournalCounters) {
    if batch.segments.is_empty() && batch.callbacks.is_empty() && batch.seq_returns.is_empty() {
        return;
    }
    let mut delay = RETRY_FIRST;
    loop {
        let started = std::time::Instant::now();
        let result = store.commit(batch).await;
        crate::metrics::metrics().database(crate::metrics::DatabaseOp::Commit, started.elapsed());
        match result {
            Ok(done) => {
                counters.committed_segments.fetch_add(batch.segments.len() as u64, Ordering::Relaxed);
                counters.committed_callbacks.fetch_add(batch.callbacks.len() as u64, Ordering::Relaxed);
                for (bucket, channel, seq) in &done.conflicts {
                    counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    error!(
                        channel = %format_args!("{bucket}/{channel}"),
                        seq,
                        "segment index conflict: this seq is already indexed (another writer?); the existing row is kept"
                    );
                }
                for key in &done.callback_conflicts {
                    counters.callback_conflicts.fetch_add(1, Ordering::Relaxed);
                    warn!(idempotency_key = %key, "callback not queued: its idempotency key is already in the outbox (a retried commit, or two callbacks with one key); the existing row is kept");
                }
                debug!(segments = batch.segments.len(), callbacks = batch.callbacks.len(), "metadata batch committed");
                return;
            }
            Err(e) => {
                let failures = counters.commit_failures.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(
                    error = %e,
                    failures,
                    segments = batch.segments.len(),
                    callbacks = batch.callbacks.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "metadata batch commit failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::both::on_both;
    use crate::meta::from_millis;

    fn seg(seq: u64) -> SegmentRecord {
        SegmentRecord {
            seq,
            start: from_millis(0),
            duration_ms: 1_000,
            object_key: format!("live/c/{seq}.ts"),
            discontinuity: false,
        }
    }

    on_both! { async fn rows_are_committed_in_batches_and_a_seq_conflict_is_counted_not_replaced(db) {
        let meta = db.open().await;
        meta.add_segment("live", "c", &seg(1)).await.unwrap();
        let (journal, rx) = Journal::new();
        let notifier = Notifier::new(meta.clone(), "127.0.0.1".into(), "node-1".into());
        let writer = tokio::spawn(run(rx, Arc::new(meta.clone()), notifier, Arc::clone(journal.counters())));
        for seq in 0..5 {
            journal.segment("live", "c", SegmentRecord { object_key: "second writer".into(), ..seg(seq) }, None);
        }
        assert!(journal.sync().await);
        let c = journal.counters();
        assert_eq!(c.conflicts.load(Ordering::Relaxed), 1);
        assert_eq!(c.committed_segments.load(Ordering::Relaxed), 5);
        let rows = meta.segments_between("live", "c", from_millis(0), from_millis(1)).await.unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[1].object_key, "live/c/1.ts", "the first writer's row stays");
        drop(journal);
        writer.await.unwrap();
    }}

    /// Commits wait for a permit: the test decides when the database answers.
    struct Gate(tokio::sync::Semaphore);

    impl JournalStore for Gate {
        fn commit<'a>(&'a self, _batch: &'a Batch) -> BoxFuture<'a, Result<Committed, MetaError>> {
            Box::pin(async {
                self.0.acquire().await.expect("gate open").forget();
                Ok(Committed::default())
            })
        }
    }

    #[tokio::test]
    async fn tracked_rows_are_settled_only_once_their_commit_is_done() {
        let dir = tempfile::tempdir().unwrap();
        // The notifier needs a database, but this test's commits never reach it.
        let meta = Meta::open(&dir.path().join("meta.db")).await.unwrap();
        tokio::time::pause();
        let gate = Arc::new(Gate(tokio::sync::Semaphore::new(0)));
        let (journal, rx) = Journal::new();
        let notifier = Notifier::new(meta, "127.0.0.1".into(), "node-1".into());
        let writer = tokio::spawn(run(rx, Arc::clone(&gate) as Arc<dyn JournalStore>, notifier, Arc::default()));
        let progress = Arc::new(Progress::default());
        journal.segment("live", "c", seg(1), Some(&progress));
        journal.segment("live", "c", seg(2), Some(&progress));
        // Well past the batch window, the commit is still waiting for the database: nothing is settled.
        tokio::time::sleep(BATCH_WINDOW * 20).await;
        assert_eq!(progress.settled(), 0);
        let waiter = tokio::spawn({
            let progress = Arc::clone(&progress);
            async move { progress.until(2).await }
        });
        tokio::time::sleep(BATCH_WINDOW).await;
        assert!(!waiter.is_finished(), "until(2) returned before the commit");
        gate.0.add_permits(1);
        waiter.await.unwrap();
        assert_eq!(progress.settled(), 2);
        drop(journal);
        gate.0.add_permits(10);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (journal, _rx) = Journal::with_capacity(2);
        let progress = Arc::new(Progress::default());
        for seq in 0..5 {
            journal.segment("live", "c", seg(seq), Some(&progress));
        }
        assert_eq!(journal.counters().dropped.load(Ordering::Relaxed), 3);
        assert_eq!(progress.settled(), 3, "a dropped row is settled at once: nobody waits for it");
    }
}
