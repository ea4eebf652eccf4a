//! Aliyun-style callback configuration (event subscriptions, recording and stream-ingest notification
//! configs) and the delivery-record queries (schema: `migrations/0003_aliyun.sql`).

use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::notify::{ATTEMPT_COLUMNS, attempt_from_row};
use super::{Meta, MetaError, Op, big, flag, from_millis, millis};

/// At most this many subscriptions per AppId (the vendor's quota).
pub const MAX_SUBS_PER_APP: i64 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSub {
    pub id: String,
    pub app_id: String,
    /// Empty: every channel.
    pub channel_id: String,
    pub users: Vec<String>,
    pub events: Vec<String>,
    pub callback_url: String,
    pub created: SystemTime,
    pub modified: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubRefused {
    /// 20 subscriptions already, or a second all-channel one.
    Quota(String),
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordNotify {
    pub domain: String,
    pub notify_url: String,
    pub on_demand_url: String,
    pub need_status_notify: bool,
    pub notify_req_auth: bool,
    pub notify_auth_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsNotify {
    pub domain: String,
    pub notify_url: String,
    pub notify_req_auth: bool,
    pub notify_auth_key: String,
    pub exception_notify_url: String,
    pub switch_notify_url: String,
}

/// One delivery attempt with what it delivered, for the record-query APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub bucket: String,
    pub channel: String,
    pub domain: String,
    pub source_ref: String,
    pub notify_type: String,
    pub idempotency_key: String,
    pub attempt: super::notify::Attempt,
}

#[derive(Debug, Clone, Default)]
pub struct RecordQuery<'a> {
    pub kinds: &'a [super::notify::CallbackKind],
    pub bucket: &'a str,
    pub channel: Option<&'a str>,
    pub source_ref: Option<&'a str>,
    pub success: Option<bool>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub offset: u64,
    pub limit: u64,
}

fn sub_from_row(r: &AnyRow) -> Result<EventSub, MetaError> {
    let users: String = r.try_get(3)?;
    let events: String = r.try_get(4)?;
    let corrupt = |e: serde_json::Error| MetaError::Corrupt(e.to_string());
    Ok(EventSub {
        id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        channel_id: r.try_get(2)?,
        users: serde_json::from_str(&users).map_err(corrupt)?,
        events: serde_json::from_str(&events).map_err(corrupt)?,
        callback_url: r.try_get(5)?,
        created: from_millis(r.try_get(6)?),
        modified: from_millis(r.try_get(7)?),
    })
}

const SUB_COLUMNS: &str = "id, app_id, channel_id, users, events, callback_url, created_ms, modified_ms";

impl Meta {
    /// Records a signature nonce until `expires`; false if any node recorded it before (a replay).
    /// Expired nonces are forgotten on the way.
    pub async fn claim_nonce(&self, key: &str, expires: SystemTime) -> Result<bool, MetaError> {
        let now = self.backend.now_ms();
        let mut tx = self.write_tx().await.op("claim_nonce")?;
        sqlx::query(&format!("DELETE FROM aliyun_nonces WHERE expires_ms < {now}"))
            .execute(&mut *tx)
            .await
            .op("claim_nonce")?;
        let inserted =
            sqlx::query("INSERT INTO aliyun_nonces (nonce, expires_ms) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING")
                .bind(key)
                .bind(millis(expires))
                .execute(&mut *tx)
                .await
                .op("claim_nonce")?;
        tx.commit().await.op("claim_nonce")?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Creates or replaces (`replace = true`) a subscription, enforcing the quotas in one transaction.
    pub async fn save_event_sub(
        &self,
        bucket: &str,
        sub: &EventSub,
        replace: bool,
    ) -> Result<Result<(), SubRefused>, MetaError> {
        let mut tx = self.write_tx().await.op("save_event_sub")?;
        // The quota is a count, then an insert: two nodes must not both pass it.
        self.lock_key(&mut tx, &format!("event_subs/{bucket}")).await.op("save_event_sub")?;
        let exists = sqlx::query("SELECT 1 FROM aliyun_event_subs WHERE id = $1 AND bucket = $2")
            .bind(&sub.id)
            .bind(bucket)
            .fetch_optional(&mut *tx)
            .await
            .op("save_event_sub")?
            .is_some();
        if replace && !exists {
            return Ok(Err(SubRefused::NotFound));
        }
        let others: i64 = sqlx::query("SELECT COUNT(*) FROM aliyun_event_subs WHERE bucket = $1 AND id != $2")
            .bind(bucket)
            .bind(&sub.id)
            .fetch_one(&mut *tx)
            .await
            .op("save_event_sub")?
            .try_get(0)?;
        if others >= MAX_SUBS_PER_APP {
            return Ok(Err(SubRefused::Quota(format!(
                "AppId {} already has {MAX_SUBS_PER_APP} subscriptions.",
                sub.app_id
            ))));
        }
        if sub.channel_id.is_empty() {
            let all: i64 = sqlx::query(
                "SELECT COUNT(*) FROM aliyun_event_subs WHERE bucket = $1 AND id != $2 AND channel_id = ''",
            )
            .bind(bucket)
            .bind(&sub.id)
            .fetch_one(&mut *tx)
            .await
            .op("save_event_sub")?
            .try_get(0)?;
            if all > 0 {
                return Ok(Err(SubRefused::Quota(format!(
                    "AppId {} already has a subscription to every channel.",
                    sub.app_id
                ))));
            }
        }
        sqlx::query(
            "INSERT INTO aliyun_event_subs (id, bucket, app_id, channel_id, users, events, callback_url, created_ms,
                 modified_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET channel_id = excluded.channel_id, users = excluded.users,
                 events = excluded.events, callback_url = excluded.callback_url, modified_ms = excluded.modified_ms",
        )
        .bind(&sub.id)
        .bind(bucket)
        .bind(&sub.app_id)
        .bind(&sub.channel_id)
        .bind(serde_json::to_string(&sub.users).unwrap_or_default())
        .bind(serde_json::to_string(&sub.events).unwrap_or_default())
        .bind(&sub.callback_url)
        .bind(millis(sub.created))
        .bind(millis(sub.modified))
        .execute(&mut *tx)
        .await
        .op("save_event_sub")?;
        tx.commit().await.op("save_event_sub")?;
        self.config_changed().await;
        Ok(Ok(()))
    }

    pub async fn event_subs(&self, bucket: &str) -> Result<Vec<EventSub>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM aliyun_event_subs WHERE bucket = $1 ORDER BY created_ms, id"
        ))
        .bind(bucket)
        .fetch_all(&self.read)
        .await
        .op("event_subs")?;
        rows.iter().map(sub_from_row).collect()
    }

    pub async fn delete_event_sub(&self, bucket: &str, id: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM aliyun_event_subs WHERE bucket = $1 AND id = $2")
            .bind(bucket)
            .bind(id)
            .execute(&self.pool)
            .await
            .op("delete_event_sub")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    /// Adds (`update = false`, refused when one exists) or updates (refused when none exists) the
    /// recording notification of a bucket. Returns false when refused.
    pub async fn save_record_notify(&self, bucket: &str, c: &RecordNotify, update: bool) -> Result<bool, MetaError> {
        let sql = if update {
            "UPDATE aliyun_record_notify SET domain = $2, notify_url = $3, on_demand_url = $4,
                 need_status_notify = $5, notify_req_auth = $6, notify_auth_key = $7, updated_ms = $8
             WHERE bucket = $1"
        } else {
            "INSERT INTO aliyun_record_notify (bucket, domain, notify_url, on_demand_url, need_status_notify,
                 notify_req_auth, notify_auth_key, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (bucket) DO NOTHING"
        };
        let done = sqlx::query(sql)
            .bind(bucket)
            .bind(&c.domain)
            .bind(&c.notify_url)
            .bind(&c.on_demand_url)
            .bind(i64::from(c.need_status_notify))
            .bind(i64::from(c.notify_req_auth))
            .bind(&c.notify_auth_key)
            .bind(millis(SystemTime::now()))
            .execute(&self.pool)
            .await
            .op("save_record_notify")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    pub async fn record_notify(&self, bucket: &str) -> Result<Option<RecordNotify>, MetaError> {
        let row = sqlx::query(
            "SELECT domain, notify_url, on_demand_url, need_status_notify, notify_req_auth, notify_auth_key
             FROM aliyun_record_notify WHERE bucket = $1",
        )
        .bind(bucket)
        .fetch_optional(&self.read)
        .await
        .op("record_notify")?;
        row.map(|r| {
            Ok(RecordNotify {
                domain: r.try_get(0)?,
                notify_url: r.try_get(1)?,
                on_demand_url: r.try_get(2)?,
                need_status_notify: flag(&r, 3)?,
                notify_req_auth: flag(&r, 4)?,
                notify_auth_key: r.try_get(5)?,
            })
        })
        .transpose()
    }

    pub async fn delete_record_notify(&self, bucket: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM aliyun_record_notify WHERE bucket = $1")
            .bind(bucket)
            .execute(&self.pool)
            .await
            .op("delete_record_notify")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_streams_notify(&self, bucket: &str, c: &StreamsNotify) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO aliyun_streams_notify (bucket, domain, notify_url, notify_req_auth, notify_auth_key,
                 exception_notify_url, switch_notify_url, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (bucket) DO UPDATE SET domain = excluded.domain, notify_url = excluded.notify_url,
                 notify_req_auth = excluded.notify_req_auth, notify_auth_key = excluded.notify_auth_key,
                 exception_notify_url = excluded.exception_notify_url,
                 switch_notify_url = excluded.switch_notify_url, updated_ms = excluded.updated_ms",
        )
        .bind(bucket)
        .bind(&c.domain)
        .bind(&c.notify_url)
        .bind(i64::from(c.notify_req_auth))
        .bind(&c.notify_auth_key)
        .bind(&c.exception_notify_url)
        .bind(&c.switch_notify_url)
        .bind(millis(SystemTime::now()))
        .execute(&self.pool)
        .await
        .op("set_streams_notify")?;
        self.config_changed().await;
        Ok(())
    }

    pub async fn streams_notify(&self, bucket: &str) -> Result<Option<StreamsNotify>, MetaError> {
        let row = sqlx::query(
            "SELECT domain, notify_url, notify_req_auth, notify_auth_key, exception_notify_url, switch_notify_url
             FROM aliyun_streams_notify WHERE bucket = $1",
        )
        .bind(bucket)
        .fetch_optional(&self.read)
        .await
        .op("streams_notify")?;
        row.map(|r| {
            Ok(StreamsNotify {
                domain: r.try_get(0)?,
                notify_url: r.try_get(1)?,
                notify_req_auth: flag(&r, 2)?,
                notify_auth_key: r.try_get(3)?,
                exception_notify_url: r.try_get(4)?,
                switch_notify_url: r.try_get(5)?,
            })
        })
        .transpose()
    }

    pub async fn delete_streams_notify(&self, bucket: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM aliyun_streams_notify WHERE bucket = $1")
            .bind(bucket)
            .execute(&self.pool)
            .await
            .op("delete_streams_notify")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    /// Delivery attempts matching `q`, newest first, with the total count before paging.
    pub async fn delivery_records(&self, q: &RecordQuery<'_>) -> Result<(u64, Vec<DeliveryRecord>), MetaError> {
        // Placeholders are numbered: $1.. for the kinds, then the fixed filters in bind order.
        let n = q.kinds.len().max(1);
        let kinds = (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let p = |i: usize| format!("${}", n + i);
        let filter = format!(
            "FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
             WHERE o.kind IN ({kinds}) AND o.bucket = {} AND ({} IS NULL OR o.channel = {})
               AND ({} IS NULL OR o.source_ref = {}) AND ({} IS NULL OR a.success = {})
               AND a.time_ms >= {} AND a.time_ms < {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8),
            p(9)
        );
        let (limit, offset) = (p(10), p(11));
        let success = q.success.map(i64::from);
        macro_rules! bind_filter {
            ($query:expr) => {{
                let mut query = $query;
                if q.kinds.is_empty() {
                    query = query.bind("");
                }
                for k in q.kinds {
                    query = query.bind(k.as_str());
                }
                query
                    .bind(q.bucket)
                    .bind(q.channel)
                    .bind(q.channel)
                    .bind(q.source_ref)
                    .bind(q.source_ref)
                    .bind(success)
                    .bind(success)
                    .bind(q.from.map_or(0, millis))
                    .bind(q.to.map_or(i64::MAX, millis))
            }};
        }
        let count_sql = format!("SELECT COUNT(*) {filter}");
        let total: i64 =
            bind_filter!(sqlx::query(&count_sql)).fetch_one(&self.read).await.op("delivery_records")?.try_get(0)?;
        let page_sql = format!(
            "SELECT o.bucket, o.channel, o.domain, o.source_ref, o.notify_type, o.idempotency_key, {ATTEMPT_COLUMNS}
             {filter} ORDER BY a.id DESC LIMIT {limit} OFFSET {offset}"
        );
        let rows = bind_filter!(sqlx::query(&page_sql))
            .bind(big(q.limit))
            .bind(big(q.offset))
            .fetch_all(&self.read)
            .await
            .op("delivery_records")?;
        let records = rows
            .iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    bucket: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    domain: r.try_get(2)?,
                    source_ref: r.try_get(3)?,
                    notify_type: r.try_get(4)?,
                    idempotency_key: r.try_get(5)?,
                    attempt: attempt_from_row(r, 6)?,
                })
            })
            .collect::<Result<Vec<_>, MetaError>>()?;
        Ok((u64::try_from(total).unwrap_or(0), records))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::meta::both::on_both;

    on_both! { async fn a_nonce_is_used_once_across_handles_until_it_expires(db) {
        // Two handles on one database stand for two nodes.
        let (a, b) = (db.open().await, db.open().await);
        let later = SystemTime::now() + Duration::from_secs(1800);
        assert!(a.claim_nonce("AK\nn1", later).await.unwrap());
        assert!(!b.claim_nonce("AK\nn1", later).await.unwrap(), "a replay to the other node is refused");
        assert!(b.claim_nonce("AK2\nn1", later).await.unwrap(), "nonces are per access key");
        // An expired one is forgotten (and may be used again: its request would be refused as expired).
        assert!(a.claim_nonce("AK\nold", SystemTime::now() - Duration::from_secs(1)).await.unwrap());
        assert!(b.claim_nonce("AK\nold", later).await.unwrap());
    }}

    on_both! { async fn the_subscription_quota_holds_when_nodes_race(db) {
        let handles = [db.open().await, db.open().await, db.open().await];
        let tasks: Vec<_> = (0..30).map(|i| {
            let meta = handles[i % 3].clone();
            tokio::spawn(async move {
                let sub = EventSub {
                    id: format!("sub-{i}"),
                    app_id: "app".into(),
                    channel_id: format!("c{i}"),
                    users: vec![],
                    events: vec!["PublishStart".into()],
                    callback_url: "http://192.0.2.1/cb".into(),
                    created: SystemTime::now(),
                    modified: SystemTime::now(),
                };
                meta.save_event_sub("live", &sub, false).await.unwrap().is_ok()
            })
        }).collect();
        let mut saved = 0;
        for t in tasks {
            saved += i64::from(t.await.unwrap());
        }
        assert_eq!(saved, MAX_SUBS_PER_APP, "exactly the quota, however the saves interleave");
        assert_eq!(handles[0].event_subs("live").await.unwrap().len() as i64, MAX_SUBS_PER_APP);
    }}
}
