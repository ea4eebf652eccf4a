//! The snapshot index: one row per stored snapshot object, written in the same transaction as its
//! NotifyTopic message, so a snapshot that is listed was announced and one that was announced is listed.
//! Read by DescribeLiveStreamSnapshotInfo (by the channel's bucket) and by retention (by the bucket the
//! objects are in).

use std::time::SystemTime;

use sqlx::Row;

use super::notify::{self, NewCallback};
use super::{Meta, MetaError, Op, big, from_millis, int, millis};

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The channel's bucket (where it is published).
    pub bucket: String,
    pub channel: String,
    /// The Snapshot DestBucket: where the object is.
    pub dest_bucket: String,
    /// The object's key inside `dest_bucket` (`<channel>/<unix_ms>.jpg`).
    pub object_key: String,
    /// Wall time of the capture.
    pub created: SystemTime,
    /// The keyframe's presentation time on the publish's timeline, in milliseconds.
    pub media_ms: i64,
    pub width: u32,
    pub height: u32,
    pub size: u64,
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

const COLUMNS: &str = "id, bucket, channel, dest_bucket, object_key, created_ms, media_ms, width, height, size";

fn record(r: &sqlx::any::AnyRow) -> Result<(i64, SnapshotRecord), MetaError> {
    Ok((
        r.try_get(0)?,
        SnapshotRecord {
            bucket: r.try_get(1)?,
            channel: r.try_get(2)?,
            dest_bucket: r.try_get(3)?,
            object_key: r.try_get(4)?,
            created: from_millis(r.try_get(5)?),
            media_ms: r.try_get(6)?,
            width: int(r, 7)?,
            height: int(r, 8)?,
            size: int(r, 9)?,
        },
    ))
}

impl Meta {
    /// Indexes a stored snapshot and queues the callback `announce` builds from the row's id (a database
    /// id: unique across restarts and nodes, so it makes the idempotency key), in one transaction.
    /// Returns the row id.
    pub async fn add_snapshot(
        &self,
        s: &SnapshotRecord,
        announce: impl FnOnce(i64) -> Option<NewCallback>,
    ) -> Result<i64, MetaError> {
        let mut tx = self.write_tx().await.op("add_snapshot")?;
        let row = sqlx::query(
            "INSERT INTO snapshots (bucket, channel, dest_bucket, object_key, created_ms, media_ms, width, height, size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&s.bucket)
        .bind(&s.channel)
        .bind(&s.dest_bucket)
        .bind(&s.object_key)
        .bind(millis(s.created))
        .bind(s.media_ms)
        .bind(i64::from(s.width))
        .bind(i64::from(s.height))
        .bind(big(s.size))
        .fetch_one(&mut *tx)
        .await
        .op("add_snapshot")?;
        let id: i64 = row.try_get(0)?;
        if let Some(callback) = announce(id) {
            let conflicts = notify::insert_callbacks(&mut tx, std::slice::from_ref(&callback)).await?;
            if let Some(key) = conflicts.first() {
                // The key holds a fresh database id: a conflict means the outbox holds a row it should not.
                return Err(MetaError::Corrupt(format!("snapshot callback idempotency key {key} is already queued")));
            }
        }
        tx.commit().await.op("add_snapshot")?;
        Ok(id)
    }

    /// A channel's snapshots taken in `[from, to)`, at most `limit`, in `order` of creation.
    pub async fn snapshots_between(
        &self,
        bucket: &str,
        channel: &str,
        from: SystemTime,
        to: SystemTime,
        limit: u32,
        order: Order,
    ) -> Result<Vec<SnapshotRecord>, MetaError> {
        let dir = match order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE bucket = $1 AND channel = $2 AND created_ms >= $3 AND created_ms < $4
             ORDER BY created_ms {dir}, id {dir} LIMIT $5"
        ))
        .bind(bucket)
        .bind(channel)
        .bind(millis(from))
        .bind(millis(to))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .op("snapshots_between")?;
        rows.iter().map(|r| record(r).map(|(_, s)| s)).collect()
    }

    /// Up to `limit` snapshots whose objects are in `dest_bucket` and were taken before `before`, oldest
    /// first, with their row ids: what retention deletes next.
    pub async fn expired_snapshots(
        &self,
        dest_bucket: &str,
        before: SystemTime,
        limit: u32,
    ) -> Result<Vec<(i64, SnapshotRecord)>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE dest_bucket = $1 AND created_ms < $2 ORDER BY created_ms, id LIMIT $3"
        ))
        .bind(dest_bucket)
        .bind(millis(before))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .op("expired_snapshots")?;
        rows.iter().map(record).collect()
    }

    /// Removes one snapshot row (its object is being deleted). True when a row was removed.
    pub async fn delete_snapshot(&self, id: i64) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .op("delete_snapshot")?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the row of the snapshot stored at `dest_bucket`/`object_key` (DeleteObject on it). True
    /// when a row was removed.
    pub async fn delete_snapshot_object(&self, dest_bucket: &str, object_key: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM snapshots WHERE dest_bucket = $1 AND object_key = $2")
            .bind(dest_bucket)
            .bind(object_key)
            .execute(&self.pool)
            .await
            .op("delete_snapshot_object")?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::both::on_both;
    use std::time::Duration;

    fn snap(channel: &str, at_s: u64) -> SnapshotRecord {
        SnapshotRecord {
            bucket: "live".into(),
            channel: channel.into(),
            dest_bucket: "snaps".into(),
            object_key: format!("{channel}/{}.jpg", at_s * 1000),
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(at_s),
            media_ms: 40,
            width: 1280,
            height: 720,
            size: 12345,
        }
    }

    on_both! {
        async fn snapshot_index(db) {
            index_round_trip(db.open().await).await;
        }
    }

    async fn index_round_trip(meta: Meta) {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        for at in [100, 101, 102, 103] {
            meta.add_snapshot(&snap("a", at), |_| None).await.unwrap();
        }
        meta.add_snapshot(&snap("b", 101), |_| None).await.unwrap();
        let asc = meta.snapshots_between("live", "a", t(101), t(103), 10, Order::Asc).await.unwrap();
        assert_eq!(asc, vec![snap("a", 101), snap("a", 102)]);
        let desc = meta.snapshots_between("live", "a", t(0), t(200), 3, Order::Desc).await.unwrap();
        assert_eq!(desc.iter().map(|s| s.created).collect::<Vec<_>>(), vec![t(103), t(102), t(101)]);
        let old = meta.expired_snapshots("snaps", t(102), 10).await.unwrap();
        assert_eq!(old.len(), 3, "a@100, a@101 and b@101");
        assert!(meta.delete_snapshot(old[0].0).await.unwrap());
        assert!(!meta.delete_snapshot(old[0].0).await.unwrap());
        assert!(meta.delete_snapshot_object("snaps", "b/101000.jpg").await.unwrap());
        assert_eq!(meta.expired_snapshots("snaps", t(102), 10).await.unwrap().len(), 1);
        assert!(meta.expired_snapshots("other", t(1000), 10).await.unwrap().is_empty());
    }
}
