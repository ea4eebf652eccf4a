//! Retention: a background task that deletes the segments and snapshots of buckets with `retention_days`
//! once they are older than that, in batches, index row first and then the object (as DeleteObject does),
//! never a channel's last [`KEEP_LAST`] segments, so no live window or still-served playlist loses a
//! segment. Snapshots go by the bucket they are stored in (the Snapshot DestBucket); `latest.jpg` is not
//! indexed and always stays.
//! Reads `meta` and writes the store; nothing on the media path waits for it.

use std::time::{Duration, SystemTime};

use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::meta::{Meta, MetaError};
use crate::names::ChannelKey;
use crate::storage::Store;

/// Never deleted, whatever their age: a channel's newest segments. FragCount is at most 100, so every
/// segment a live or idle playlist lists is among them.
pub const KEEP_LAST: u64 = 100;
/// Rows per query, so one sweep of a year of backlog is many short transactions, not one long one.
const BATCH: u32 = 500;
/// How often each node sweeps. Deletes are idempotent, so nodes of a cluster may overlap.
pub const EVERY: Duration = Duration::from_secs(3600);

/// What one sweep of a bucket did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub deleted: u64,
    pub failed: u64,
    pub snapshots_deleted: u64,
}

/// Deletes the segments of `bucket` that ended before `now - keep`, batch by batch, until none is left
/// or a batch deletes nothing (every remaining one failed: the next sweep retries them).
pub async fn sweep(
    meta: &Meta,
    store: &Store,
    bucket: &str,
    keep: Duration,
    now: SystemTime,
) -> Result<Swept, MetaError> {
    let before = now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut swept = Swept::default();
    sweep_snapshots(meta, store, bucket, before, &mut swept).await?;
    loop {
        let batch = meta.expired_segments(bucket, before, KEEP_LAST, BATCH).await?;
        if batch.is_empty() {
            return Ok(swept);
        }
        let mut progressed = false;
        for (channel, segment) in batch {
            let Ok(key) = ChannelKey::new(bucket, &channel) else { continue };
            let Ok(path) = key.object(&crate::hls::segment_file_name(segment.seq)) else { continue };
            // The row first: a crash between the two leaves an unlisted object, never a dangling name.
            meta.delete_segment(bucket, &channel, segment.seq).await?;
            progressed = true;
            match store.objects().delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => swept.deleted += 1,
                Err(e) => {
                    swept.failed += 1;
                    warn!(channel = %key, seq = segment.seq, error = %e, "retention: deleting a segment object failed; it stays, unindexed");
                }
            }
        }
        if !progressed {
            return Ok(swept);
        }
    }
}

/// The snapshots stored in `bucket` taken before `before`, row first, then the object.
async fn sweep_snapshots(
    meta: &Meta,
    store: &Store,
    bucket: &str,
    before: SystemTime,
    swept: &mut Swept,
) -> Result<(), MetaError> {
    loop {
        let batch = meta.expired_snapshots(bucket, before, BATCH).await?;
        if batch.is_empty() {
            return Ok(());
        }
        for (id, snap) in batch {
            meta.delete_snapshot(id).await?;
            let path = snap
                .object_key
                .split_once('/')
                .and_then(|(channel, file)| ChannelKey::new(bucket, channel).ok().and_then(|k| k.object(file).ok()));
            let Some(path) = path else { continue };
            match store.objects().delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => swept.snapshots_deleted += 1,
                Err(e) => {
                    swept.failed += 1;
                    warn!(bucket, object = %snap.object_key, error = %e, "retention: deleting a snapshot failed; it stays, unindexed");
                }
            }
        }
    }
}

/// Sweeps every bucket with a retention setting, now and then every [`EVERY`], until shutdown.
pub async fn run(config: std::sync::Arc<Config>, meta: Meta, store: Store, shutdown: CancellationToken) {
    let buckets: Vec<(String, Duration)> =
        config.buckets.iter().filter_map(|b| b.retention.map(|r| (b.name.clone(), r))).collect();
    if buckets.is_empty() {
        return;
    }
    loop {
        for (bucket, keep) in &buckets {
            match sweep(&meta, &store, bucket, *keep, SystemTime::now()).await {
                Ok(s) if s.deleted + s.failed + s.snapshots_deleted > 0 => {
                    info!(
                        bucket,
                        days = keep.as_secs() / 86_400,
                        deleted = s.deleted,
                        snapshots_deleted = s.snapshots_deleted,
                        failed = s.failed,
                        "retention: deleted old segments and snapshots"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(bucket, error = %e, "retention: the sweep failed; retried next hour"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::SegmentRecord;
    use bytes::Bytes;

    #[tokio::test]
    async fn old_segments_go_with_their_rows_and_the_newest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.db")).await.unwrap();
        let store = Store::local(&dir.path().join("media")).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let key = ChannelKey::new("live", "ch").unwrap();
        // 150 segments of 10 s, ten days old, then 20 of today; a second channel has only old ones, 50.
        let put = async |channel: &str, seq: u64, start: SystemTime| {
            let k = ChannelKey::new("live", channel).unwrap();
            let path = k.object(&crate::hls::segment_file_name(seq)).unwrap();
            store.objects().put(&path, Bytes::from_static(b"ts").into()).await.unwrap();
            let s =
                SegmentRecord { seq, start, duration_ms: 10_000, object_key: path.to_string(), discontinuity: false };
            meta.add_segment("live", channel, &s).await.unwrap();
        };
        for seq in 0..150 {
            put("ch", seq, now - 10 * day + Duration::from_secs(seq * 10)).await;
        }
        for seq in 150..170 {
            put("ch", seq, now - Duration::from_secs(3600) + Duration::from_secs((seq - 150) * 10)).await;
        }
        for seq in 0..50 {
            put("small", seq, now - 10 * day).await;
        }
        let swept = sweep(&meta, &store, "live", 7 * day, now).await.unwrap();
        // ch keeps its last 100 (70..170: 80 old and 20 new); small keeps all 50.
        assert_eq!(swept, Swept { deleted: 70, failed: 0, snapshots_deleted: 0 });
        let left = meta.segments_between("live", "ch", SystemTime::UNIX_EPOCH, now + day).await.unwrap();
        assert_eq!(left.first().map(|s| s.seq), Some(70));
        assert_eq!(left.len(), 100);
        let gone = key.object(&crate::hls::segment_file_name(69)).unwrap();
        assert!(matches!(store.objects().head(&gone).await, Err(object_store::Error::NotFound { .. })));
        let kept = key.object(&crate::hls::segment_file_name(70)).unwrap();
        assert!(store.objects().head(&kept).await.is_ok());
        assert_eq!(meta.segments_between("live", "small", SystemTime::UNIX_EPOCH, now).await.unwrap().len(), 50);
        // Nothing more to do, and a bucket without that much age loses nothing.
        assert_eq!(sweep(&meta, &store, "live", 7 * day, now).await.unwrap(), Swept::default());
        assert_eq!(sweep(&meta, &store, "live", 30 * day, now + day).await.unwrap(), Swept::default());
    }

    #[tokio::test]
    async fn old_snapshots_go_with_their_rows_and_latest_stays() {
        use crate::meta::snapshots::{Order, SnapshotRecord};
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.db")).await.unwrap();
        let store = Store::local(&dir.path().join("media")).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let key = ChannelKey::new("snaps", "cam").unwrap();
        store.objects().put(&key.object("latest.jpg").unwrap(), Bytes::from_static(b"jpg").into()).await.unwrap();
        // Ten old snapshots (8 days) and five new ones (an hour), stored in `snaps` for channel live/cam.
        for (i, age) in (0..15).map(|i| (i, if i < 10 { 8 * day } else { Duration::from_secs(3600) })) {
            let at = now - age + Duration::from_secs(i);
            let (own, _) = crate::snapshot::object_keys("cam", at);
            let file = key.object(&crate::snapshot::file_name(at)).unwrap();
            store.objects().put(&file, Bytes::from_static(b"jpg").into()).await.unwrap();
            let s = SnapshotRecord {
                bucket: "live".into(),
                channel: "cam".into(),
                dest_bucket: "snaps".into(),
                object_key: own,
                created: at,
                media_ms: 0,
                width: 2,
                height: 2,
                size: 3,
            };
            meta.add_snapshot(&s, |_| None).await.unwrap();
        }
        // The channel's own bucket holds none of them.
        assert_eq!(sweep(&meta, &store, "live", 7 * day, now).await.unwrap(), Swept::default());
        let swept = sweep(&meta, &store, "snaps", 7 * day, now).await.unwrap();
        assert_eq!(swept, Swept { deleted: 0, failed: 0, snapshots_deleted: 10 });
        let left =
            meta.snapshots_between("live", "cam", SystemTime::UNIX_EPOCH, now + day, 100, Order::Asc).await.unwrap();
        assert_eq!(left.len(), 5);
        let listed = store.objects().list_with_delimiter(Some(&key.prefix())).await.unwrap();
        assert_eq!(listed.objects.len(), 6, "five new snapshots and latest.jpg");
        assert!(store.objects().head(&key.object("latest.jpg").unwrap()).await.is_ok());
    }
}
