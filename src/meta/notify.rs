//! Callback configuration, the outbox and the delivery log (schema: `migrations/0002_notify.sql`).

use std::collections::HashSet;
use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Meta, MetaError, Op, big, flag, from_millis, int, millis};

/// Which vendor callback an outbox row is: decides how it is rendered and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// Huawei stream notification (PUBLISH / PUBLISH_DONE).
    HuaweiPublish,
    /// Huawei recording callback.
    HuaweiRecord,
    /// Aliyun stream-ingest callback (a signed GET).
    AliyunIngest,
    /// Aliyun event subscription (ChannelEvent / UserEvent).
    AliyunEventsub,
    /// Aliyun recording callback.
    AliyunRecord,
    /// A snapshot taken (or failed), to the PutLiveChannel Snapshot NotifyTopic's `[[notify_topics]]` URL.
    Snapshot,
}

impl CallbackKind {
    /// The stored name, also the prefix of idempotency keys.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackKind::HuaweiPublish => "huawei_publish",
            CallbackKind::HuaweiRecord => "huawei_record",
            CallbackKind::AliyunIngest => "aliyun_ingest",
            CallbackKind::AliyunEventsub => "aliyun_eventsub",
            CallbackKind::AliyunRecord => "aliyun_record",
            CallbackKind::Snapshot => "snapshot",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            CallbackKind::HuaweiPublish,
            CallbackKind::HuaweiRecord,
            CallbackKind::AliyunIngest,
            CallbackKind::AliyunEventsub,
            CallbackKind::AliyunRecord,
            CallbackKind::Snapshot,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for CallbackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a callback carries, by kind: the kind column and the JSON payload column of one outbox row, so
/// the two cannot disagree. Per-attempt parts (signatures, timestamps, message ids) are added when it is
/// rendered, not stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Huawei stream-notification body.
    HuaweiPublish(serde_json::Value),
    /// Huawei recording-callback body, and how it is signed.
    HuaweiRecord { body: serde_json::Value, sign_type: SignType },
    /// Aliyun stream-ingest callback: query parameters appended to the URL, and the domain the
    /// signature covers.
    AliyunIngest { query: Vec<(String, String)>, sign_domain: String },
    /// Aliyun event-subscription body.
    AliyunEventsub(serde_json::Value),
    /// Aliyun recording-callback body, sent as is.
    AliyunRecord(serde_json::Value),
    /// Snapshot message body, sent as is (signed like an Aliyun recording callback).
    Snapshot(serde_json::Value),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredHuaweiRecord {
    body: serde_json::Value,
    sign_type: SignType,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredIngest {
    query: Vec<(String, String)>,
    sign_domain: String,
}

impl Payload {
    pub fn kind(&self) -> CallbackKind {
        match self {
            Payload::HuaweiPublish(_) => CallbackKind::HuaweiPublish,
            Payload::HuaweiRecord { .. } => CallbackKind::HuaweiRecord,
            Payload::AliyunIngest { .. } => CallbackKind::AliyunIngest,
            Payload::AliyunEventsub(_) => CallbackKind::AliyunEventsub,
            Payload::AliyunRecord(_) => CallbackKind::AliyunRecord,
            Payload::Snapshot(_) => CallbackKind::Snapshot,
        }
    }

    /// The payload column.
    pub fn to_stored(&self) -> String {
        let text = match self {
            Payload::HuaweiPublish(v)
            | Payload::AliyunEventsub(v)
            | Payload::AliyunRecord(v)
            | Payload::Snapshot(v) => Ok(v.to_string()),
            Payload::HuaweiRecord { body, sign_type } => {
                serde_json::to_string(&StoredHuaweiRecord { body: body.clone(), sign_type: *sign_type })
            }
            Payload::AliyunIngest { query, sign_domain } => {
                serde_json::to_string(&StoredIngest { query: query.clone(), sign_domain: sign_domain.clone() })
            }
        };
        // Serialising values and strings cannot fail.
        text.unwrap_or_default()
    }

    /// Reads a stored row back; an error names what is wrong with it.
    pub fn from_stored(kind: CallbackKind, text: &str) -> Result<Payload, String> {
        let bad = |e: serde_json::Error| format!("bad {kind} payload: {e}");
        Ok(match kind {
            CallbackKind::HuaweiPublish => Payload::HuaweiPublish(serde_json::from_str(text).map_err(bad)?),
            CallbackKind::AliyunEventsub => Payload::AliyunEventsub(serde_json::from_str(text).map_err(bad)?),
            CallbackKind::AliyunRecord => Payload::AliyunRecord(serde_json::from_str(text).map_err(bad)?),
            CallbackKind::Snapshot => Payload::Snapshot(serde_json::from_str(text).map_err(bad)?),
            CallbackKind::HuaweiRecord => {
                let s: StoredHuaweiRecord = serde_json::from_str(text).map_err(bad)?;
                Payload::HuaweiRecord { body: s.body, sign_type: s.sign_type }
            }
            CallbackKind::AliyunIngest => {
                let s: StoredIngest = serde_json::from_str(text).map_err(bad)?;
                Payload::AliyunIngest { query: s.query, sign_domain: s.sign_domain }
            }
        })
    }
}

/// Where an outbox row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [OutboxState::Pending, OutboxState::Delivered, OutboxState::Failed].into_iter().find(|k| k.as_str() == s)
    }
}

/// A text column holding one of a typed set of names.
fn named<T>(r: &AnyRow, i: usize, parse: impl Fn(&str) -> Option<T>) -> Result<T, MetaError> {
    let s: String = r.try_get(i)?;
    parse(&s).ok_or_else(|| MetaError::Corrupt(format!("unknown value {s:?} in column {i}")))
}

/// How a Huawei recording callback is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignType {
    #[serde(rename = "HMACSHA256")]
    HmacSha256,
    #[serde(rename = "MD5")]
    Md5,
}

impl SignType {
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::HmacSha256 => "HMACSHA256",
            SignType::Md5 => "MD5",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HMACSHA256" => Some(SignType::HmacSha256),
            "MD5" => Some(SignType::Md5),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishNotify {
    pub domain: String,
    pub url: String,
    pub auth_sign_key: String,
    pub call_back_area: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCallback {
    pub id: String,
    pub domain: String,
    pub app: String,
    pub url: String,
    pub events: Vec<String>,
    pub sign_type: SignType,
    pub sign_key: String,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// A callback waiting in (or done with) the outbox. `payload` is the stored text: it is decoded
/// ([`Payload::from_stored`]) when rendered, so one unreadable row fails its own attempts, not the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub kind: CallbackKind,
    pub bucket: String,
    pub channel: String,
    pub url: String,
    pub payload: String,
    pub sign_key: String,
    pub idempotency_key: String,
    pub attempts: u32,
}

/// What a new outbox entry carries.
#[derive(Debug, Clone)]
pub struct NewCallback {
    pub bucket: String,
    pub channel: String,
    pub url: String,
    pub payload: Payload,
    pub sign_key: String,
    pub idempotency_key: String,
    /// The configuration it came from (an EventSub id), for the record queries.
    pub source_ref: String,
    /// The vendor's notification type (`file_created`, `record_started`, `publish`, `PUBLISH`, ...).
    pub notify_type: String,
    /// The domain the configuration was made for.
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub time: SystemTime,
    pub url: String,
    pub request_headers: String,
    pub request_body: String,
    pub status: Option<u16>,
    pub response_body: String,
    pub success: bool,
    pub error: String,
    pub cost_ms: u64,
}

/// The outbox columns every entry query selects, in the order [`entry_from_row`] reads them.
const ENTRY_COLUMNS: &str =
    "o.id, o.kind, o.bucket, o.channel, o.url, o.payload, o.sign_key, o.idempotency_key, o.attempts";

fn entry_from_row(r: &AnyRow) -> Result<OutboxEntry, MetaError> {
    Ok(OutboxEntry {
        id: r.try_get(0)?,
        kind: named(r, 1, CallbackKind::parse)?,
        bucket: r.try_get(2)?,
        channel: r.try_get(3)?,
        url: r.try_get(4)?,
        payload: r.try_get(5)?,
        sign_key: r.try_get(6)?,
        idempotency_key: r.try_get(7)?,
        attempts: int(r, 8)?,
    })
}

/// The delivery-attempt columns, in the order [`attempt_from_row`] reads them from `first` on.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "a.time_ms, a.url, a.request_headers, a.request_body, a.status, a.response_body, a.success, a.error, a.cost_ms";

pub(crate) fn attempt_from_row(r: &AnyRow, first: usize) -> Result<Attempt, MetaError> {
    let status: Option<i64> = r.try_get(first + 4)?;
    let cost: i64 = r.try_get(first + 8)?;
    Ok(Attempt {
        time: from_millis(r.try_get(first)?),
        url: r.try_get(first + 1)?,
        request_headers: r.try_get(first + 2)?,
        request_body: r.try_get(first + 3)?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        response_body: r.try_get(first + 5)?,
        success: flag(r, first + 6)?,
        error: r.try_get(first + 7)?,
        cost_ms: u64::try_from(cost).unwrap_or(0),
    })
}

/// Outbox rows inside a caller's transaction, due now. A row whose idempotency key is already queued is
/// not written; its key is returned.
pub(crate) async fn insert_callbacks(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    callbacks: &[NewCallback],
) -> Result<Vec<String>, MetaError> {
    let now = millis(SystemTime::now());
    let mut conflicts = Vec::new();
    // One statement per chunk, not per row: each is a round trip made while the journal's transaction
    // holds the write lock (see `insert_segments`).
    for chunk in callbacks.chunks(super::ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO outbox (kind, bucket, channel, url, payload, sign_key, idempotency_key, created_ms,
                 next_attempt_ms, source_ref, notify_type, domain) VALUES {}
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key",
            super::values_list(chunk.len(), 12)
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for c in chunk {
            query = query
                .bind(c.payload.kind().as_str())
                .bind(&c.bucket)
                .bind(&c.channel)
                .bind(&c.url)
                .bind(c.payload.to_stored())
                .bind(&c.sign_key)
                .bind(&c.idempotency_key)
                .bind(now)
                .bind(now)
                .bind(&c.source_ref)
                .bind(&c.notify_type)
                .bind(&c.domain);
        }
        let rows = query.fetch_all(&mut **tx).await.op("insert_callbacks")?;
        let mut inserted = HashSet::with_capacity(rows.len());
        for r in &rows {
            inserted.insert(r.try_get::<String, _>(0)?);
        }
        // A key twice in one batch is queued once: the first is the one kept.
        conflicts
            .extend(chunk.iter().filter(|c| !inserted.remove(&c.idempotency_key)).map(|c| c.idempotency_key.clone()));
    }
    Ok(conflicts)
}

impl Meta {
    /// Sets the bucket's stream-notification URL for `project`; Some(true) when one existed (replaced),
    /// None when another project's is there (left alone).
    pub async fn put_publish_notify(
        &self,
        project: &str,
        bucket: &str,
        n: &PublishNotify,
    ) -> Result<Option<bool>, MetaError> {
        let mut tx = self.write_tx().await.op("put_publish_notify")?;
        let owner: Option<String> = sqlx::query("SELECT project_id FROM huawei_publish_notify WHERE bucket = $1")
            .bind(bucket)
            .fetch_optional(&mut *tx)
            .await
            .op("put_publish_notify")?
            .map(|r| r.try_get(0))
            .transpose()?;
        if owner.as_deref().is_some_and(|o| !o.is_empty() && o != project) {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO huawei_publish_notify (bucket, domain, url, auth_sign_key, call_back_area, updated_ms,
                 project_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (bucket) DO UPDATE SET domain = excluded.domain, url = excluded.url,
                 auth_sign_key = excluded.auth_sign_key, call_back_area = excluded.call_back_area,
                 updated_ms = excluded.updated_ms, project_id = excluded.project_id",
        )
        .bind(bucket)
        .bind(&n.domain)
        .bind(&n.url)
        .bind(&n.auth_sign_key)
        .bind(&n.call_back_area)
        .bind(millis(SystemTime::now()))
        .bind(project)
        .execute(&mut *tx)
        .await
        .op("put_publish_notify")?;
        tx.commit().await.op("put_publish_notify")?;
        self.config_changed().await;
        Ok(Some(owner.is_some()))
    }

    /// The bucket's stream-notification URL, as `project` may see it (None: any project, for delivery).
    pub async fn get_publish_notify(
        &self,
        project: Option<&str>,
        bucket: &str,
    ) -> Result<Option<PublishNotify>, MetaError> {
        let row = sqlx::query(
            "SELECT domain, url, auth_sign_key, call_back_area FROM huawei_publish_notify
             WHERE bucket = $1 AND ($2 IS NULL OR project_id = $3 OR project_id = '')",
        )
        .bind(bucket)
        .bind(project)
        .bind(project)
        .fetch_optional(&self.read)
        .await
        .op("get_publish_notify")?;
        row.map(|r| {
            Ok(PublishNotify {
                domain: r.try_get(0)?,
                url: r.try_get(1)?,
                auth_sign_key: r.try_get(2)?,
                call_back_area: r.try_get(3)?,
            })
        })
        .transpose()
    }

    pub async fn delete_publish_notify(&self, project: &str, bucket: &str) -> Result<bool, MetaError> {
        let done =
            sqlx::query("DELETE FROM huawei_publish_notify WHERE bucket = $1 AND (project_id = $2 OR project_id = '')")
                .bind(bucket)
                .bind(project)
                .execute(&self.pool)
                .await
                .op("delete_publish_notify")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    /// Inserts a recording callback; `Ok(false)` when (domain, app) already has one.
    pub async fn insert_record_callback(
        &self,
        project: &str,
        bucket: &str,
        c: &RecordCallback,
    ) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "INSERT INTO huawei_record_callbacks (id, bucket, domain, app, url, events, sign_type, sign_key,
                 created_ms, updated_ms, project_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(&c.id)
        .bind(bucket)
        .bind(&c.domain)
        .bind(&c.app)
        .bind(&c.url)
        .bind(serde_json::to_string(&c.events).unwrap_or_else(|_| "[]".into()))
        .bind(c.sign_type.as_str())
        .bind(&c.sign_key)
        .bind(millis(c.created))
        .bind(millis(c.updated))
        .bind(project)
        .execute(&self.pool)
        .await
        .op("insert_record_callback")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a recording callback by id; `Ok(false)` when there is none (or (domain, app) is taken).
    pub async fn update_record_callback(
        &self,
        project: &str,
        bucket: &str,
        c: &RecordCallback,
    ) -> Result<bool, MetaError> {
        // The NOT EXISTS answers the common case in the statement; a concurrent writer that takes (domain,
        // app) between its check and the update is the unique-violation arm.
        let done = sqlx::query(
            "UPDATE huawei_record_callbacks SET bucket = $1, domain = $2, app = $3, url = $4, events = $5,
                 sign_type = $6, sign_key = $7, updated_ms = $8, project_id = $10
             WHERE id = $9 AND (project_id = $10 OR project_id = '') AND NOT EXISTS (
                 SELECT 1 FROM huawei_record_callbacks o WHERE o.domain = $2 AND o.app = $3 AND o.id <> $9)",
        )
        .bind(bucket)
        .bind(&c.domain)
        .bind(&c.app)
        .bind(&c.url)
        .bind(serde_json::to_string(&c.events).unwrap_or_else(|_| "[]".into()))
        .bind(c.sign_type.as_str())
        .bind(&c.sign_key)
        .bind(millis(c.updated))
        .bind(&c.id)
        .bind(project)
        .execute(&self.pool)
        .await;
        let updated = match done {
            Ok(done) => done.rows_affected() > 0,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => false,
            Err(e) => return Err(MetaError::Query { op: "update_record_callback", source: e }),
        };
        self.config_changed().await;
        Ok(updated)
    }

    pub async fn delete_record_callback(&self, project: &str, id: &str) -> Result<bool, MetaError> {
        let done =
            sqlx::query("DELETE FROM huawei_record_callbacks WHERE id = $1 AND (project_id = $2 OR project_id = '')")
                .bind(id)
                .bind(project)
                .execute(&self.pool)
                .await
                .op("delete_record_callback")?;
        self.config_changed().await;
        Ok(done.rows_affected() > 0)
    }

    /// Recording callbacks `project` may see (None: every project's, for delivery), filtered by domain
    /// and app when given, ordered by creation.
    pub async fn list_record_callbacks(
        &self,
        project: Option<&str>,
        domain: Option<&str>,
        app: Option<&str>,
        bucket: Option<&str>,
    ) -> Result<Vec<RecordCallback>, MetaError> {
        self.record_callbacks(project, None, domain, app, bucket).await
    }

    pub async fn get_record_callback(&self, project: &str, id: &str) -> Result<Option<RecordCallback>, MetaError> {
        Ok(self.record_callbacks(Some(project), Some(id), None, None, None).await.op("get_record_callback")?.pop())
    }

    async fn record_callbacks(
        &self,
        project: Option<&str>,
        id: Option<&str>,
        domain: Option<&str>,
        app: Option<&str>,
        bucket: Option<&str>,
    ) -> Result<Vec<RecordCallback>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, domain, app, url, events, sign_type, sign_key, created_ms, updated_ms
             FROM huawei_record_callbacks
             WHERE ($1 IS NULL OR id = $2) AND ($3 IS NULL OR domain = $4) AND ($5 IS NULL OR app = $6)
               AND ($7 IS NULL OR bucket = $8) AND ($9 IS NULL OR project_id = $10 OR project_id = '')
             ORDER BY created_ms, id",
        )
        .bind(id)
        .bind(id)
        .bind(domain)
        .bind(domain)
        .bind(app)
        .bind(app)
        .bind(bucket)
        .bind(bucket)
        .bind(project)
        .bind(project)
        .fetch_all(&self.read)
        .await
        .op("record_callbacks")?;
        rows.iter()
            .map(|r| {
                let events: String = r.try_get(4)?;
                Ok(RecordCallback {
                    id: r.try_get(0)?,
                    domain: r.try_get(1)?,
                    app: r.try_get(2)?,
                    url: r.try_get(3)?,
                    events: serde_json::from_str(&events).map_err(|e| MetaError::Corrupt(e.to_string()))?,
                    sign_type: named(r, 5, SignType::parse)?,
                    sign_key: r.try_get(6)?,
                    created: from_millis(r.try_get(7)?),
                    updated: from_millis(r.try_get(8)?),
                })
            })
            .collect()
    }

    /// Writes callbacks to the outbox in one transaction (all or none), due now. Returns the idempotency
    /// keys that were already queued (those rows are kept as they were).
    pub async fn enqueue(&self, callbacks: &[NewCallback]) -> Result<Vec<String>, MetaError> {
        let mut tx = self.write_tx().await.op("enqueue")?;
        let conflicts = insert_callbacks(&mut tx, callbacks).await.op("enqueue")?;
        tx.commit().await.op("enqueue")?;
        Ok(conflicts)
    }

    /// Claims pending entries that are due, at most `limit`, and only the oldest pending entry of each
    /// (destination, channel): a later callback never overtakes an earlier one to the same receiver.
    /// Each claimed row is `node`'s for `claim` (database clock): no other node sends it meanwhile, and
    /// if `node` dies mid-delivery, the claim lapses and another node sends it, with the same key.
    /// PostgreSQL skips rows another node is claiming (`FOR UPDATE SKIP LOCKED`); SQLite has one writer.
    pub async fn due_callbacks(
        &self,
        node: &str,
        claim: std::time::Duration,
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        let db_now = self.backend.now_ms();
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE OF o SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.write_tx().await.op("due_callbacks")?;
        let rows = sqlx::query(&format!(
            "UPDATE outbox SET claimed_by = $1, claim_until_ms = {db_now} + $2 WHERE id IN (
                 SELECT o.id FROM outbox o JOIN (SELECT MIN(id) AS id FROM outbox WHERE state = 'pending'
                                                 GROUP BY url, bucket, channel) head ON o.id = head.id
                 WHERE o.next_attempt_ms <= $3 AND o.claim_until_ms < {db_now}
                 ORDER BY o.id LIMIT $4 {lock})
             RETURNING {}",
            ENTRY_COLUMNS.replace("o.", "")
        ))
        .bind(node)
        .bind(big(claim.as_millis()))
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .op("due_callbacks")?;
        tx.commit().await.op("due_callbacks")?;
        let mut entries = rows.iter().map(entry_from_row).collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    /// Gives back `node`'s claim on an entry it did not send.
    pub async fn release_callback_claim(&self, id: i64, node: &str) -> Result<(), MetaError> {
        sqlx::query("UPDATE outbox SET claimed_by = '', claim_until_ms = 0 WHERE id = $1 AND claimed_by = $2")
            .bind(id)
            .bind(node)
            .execute(&self.pool)
            .await
            .op("release_callback_claim")?;
        Ok(())
    }

    /// Records one attempt and moves the entry on: delivered, retried at `retry_at`, or failed for good.
    pub async fn record_attempt(
        &self,
        outbox_id: i64,
        attempt: &Attempt,
        retry_at: Option<SystemTime>,
    ) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await.op("record_attempt")?;
        sqlx::query(
            "INSERT INTO delivery_attempts (outbox_id, time_ms, url, request_headers, request_body, status,
                 response_body, success, error, cost_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(outbox_id)
        .bind(millis(attempt.time))
        .bind(&attempt.url)
        .bind(&attempt.request_headers)
        .bind(&attempt.request_body)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.response_body)
        .bind(i64::from(attempt.success))
        .bind(&attempt.error)
        .bind(big(attempt.cost_ms))
        .execute(&mut *tx)
        .await
        .op("record_attempt")?;
        let (state, next) = match (attempt.success, retry_at) {
            (true, _) => (OutboxState::Delivered, millis(attempt.time)),
            (false, Some(at)) => (OutboxState::Pending, millis(at)),
            (false, None) => (OutboxState::Failed, millis(attempt.time)),
        };
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, state = $1, next_attempt_ms = $2, claimed_by = '',
                 claim_until_ms = 0 WHERE id = $3",
        )
        .bind(state.as_str())
        .bind(next)
        .bind(outbox_id)
        .execute(&mut *tx)
        .await
        .op("record_attempt")?;
        tx.commit().await.op("record_attempt")?;
        Ok(())
    }

    /// Every attempt made for an outbox entry, oldest first.
    pub async fn attempts(&self, outbox_id: i64) -> Result<Vec<Attempt>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts a WHERE a.outbox_id = $1 ORDER BY a.id"
        ))
        .bind(outbox_id)
        .fetch_all(&self.read)
        .await
        .op("attempts")?;
        rows.iter().map(|r| attempt_from_row(r, 0)).collect()
    }

    /// Outbox entries by state (tests and the query APIs).
    pub async fn outbox(&self, state: Option<OutboxState>) -> Result<Vec<(OutboxEntry, OutboxState)>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS}, o.state FROM outbox o WHERE ($1 IS NULL OR o.state = $2) ORDER BY o.id"
        ))
        .bind(state.map(OutboxState::as_str))
        .bind(state.map(OutboxState::as_str))
        .fetch_all(&self.read)
        .await
        .op("outbox")?;
        rows.iter().map(|r| Ok((entry_from_row(r)?, named(r, 9, OutboxState::parse)?))).collect()
    }

    /// Forgets finished callbacks (and their attempts) older than `before`; pending ones are never
    /// dropped. Returns how many outbox rows went.
    pub async fn prune_callbacks(&self, before: SystemTime) -> Result<u64, MetaError> {
        let cutoff = millis(before);
        let mut tx = self.write_tx().await.op("prune_callbacks")?;
        sqlx::query(
            "DELETE FROM delivery_attempts WHERE outbox_id IN
                 (SELECT id FROM outbox WHERE state != 'pending' AND created_ms < $1)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .op("prune_callbacks")?;
        let done = sqlx::query("DELETE FROM outbox WHERE state != 'pending' AND created_ms < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .op("prune_callbacks")?;
        tx.commit().await.op("prune_callbacks")?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::super::both::on_both;
    use super::*;

    fn callback(key: &str) -> NewCallback {
        NewCallback {
            bucket: "live".into(),
            channel: "c".into(),
            url: "http://127.0.0.1:9/x".into(),
            payload: Payload::HuaweiPublish(serde_json::json!({})),
            sign_key: String::new(),
            idempotency_key: key.into(),
            source_ref: String::new(),
            notify_type: "PUBLISH".into(),
            domain: "live".into(),
        }
    }

    on_both! { async fn the_outbox_orders_per_destination_dedupes_keys_and_prunes_only_finished_rows(db) {
        let meta = db.open().await;
        let conflicts = meta.enqueue(&[callback("a"), callback("b"), callback("a")]).await.unwrap();
        assert_eq!(conflicts, ["a"], "a key queued twice is reported");
        let all = meta.outbox(None).await.unwrap();
        assert_eq!(all.len(), 2, "the same idempotency key is queued once");
        let far = SystemTime::now() + std::time::Duration::from_secs(3600);
        let claim = std::time::Duration::from_secs(60);
        let due = meta.due_callbacks("n1", claim, far, 10).await.unwrap();
        assert_eq!(due.iter().map(|e| e.idempotency_key.as_str()).collect::<Vec<_>>(), ["a"], "b waits for a");
        assert!(meta.due_callbacks("n2", claim, far, 10).await.unwrap().is_empty(), "n1 claimed a: n2 does not send it");
        let attempt = Attempt {
            time: SystemTime::now(),
            url: "u".into(),
            request_headers: "{}".into(),
            request_body: "{}".into(),
            status: Some(200),
            response_body: String::new(),
            success: true,
            error: String::new(),
            cost_ms: 1,
        };
        meta.record_attempt(due[0].id, &attempt, None).await.unwrap();
        assert_eq!(meta.due_callbacks("n2", claim, far, 10).await.unwrap()[0].idempotency_key, "b");
        assert_eq!(meta.prune_callbacks(far).await.unwrap(), 1, "only the delivered row goes");
        assert!(meta.attempts(due[0].id).await.unwrap().is_empty());
        assert_eq!(meta.outbox(Some(OutboxState::Pending)).await.unwrap().len(), 1);
        // More rows than one statement takes: only the key already queued is reported, in place.
        let mut many: Vec<NewCallback> = (0..300).map(|i| callback(&format!("m{i}"))).collect();
        many.insert(150, callback("b"));
        assert_eq!(meta.enqueue(&many).await.unwrap(), ["b"]);
        assert_eq!(meta.outbox(Some(OutboxState::Pending)).await.unwrap().len(), 301);
    }}

    on_both! { async fn a_claim_of_a_dead_node_lapses_and_another_node_sends_the_row(db) {
        let meta = db.open().await;
        meta.enqueue(&[callback("k")]).await.unwrap();
        let far = SystemTime::now() + std::time::Duration::from_secs(3600);
        let short = std::time::Duration::from_millis(1);
        let first = meta.due_callbacks("dead", short, far, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let again = meta.due_callbacks("alive", std::time::Duration::from_secs(60), far, 10).await.unwrap();
        assert_eq!(again.iter().map(|e| (e.id, e.idempotency_key.as_str())).collect::<Vec<_>>(), [(first[0].id, "k")]);
    }}

    on_both! { async fn concurrent_claims_hand_each_row_to_one_node(db) {
        let meta = db.open().await;
        let rows: Vec<NewCallback> = (0..40).map(|i| NewCallback { channel: format!("c{i}"), ..callback(&format!("k{i}")) }).collect();
        meta.enqueue(&rows).await.unwrap();
        let far = SystemTime::now() + std::time::Duration::from_secs(3600);
        let claim = std::time::Duration::from_secs(60);
        let tasks: Vec<_> = (0..4).map(|n| {
            let meta = meta.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..10 {
                    got.extend(meta.due_callbacks(&format!("n{n}"), claim, far, 3).await.unwrap().into_iter().map(|e| e.id));
                }
                got
            })
        }).collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!((before, all.len()), (40, 40), "every row claimed exactly once");
    }}

    #[test]
    fn payloads_round_trip_through_their_stored_form_and_a_bad_row_says_what_it_is() {
        use serde_json::json;
        let all = [
            Payload::HuaweiPublish(json!({"event": "PUBLISH"})),
            Payload::HuaweiRecord { body: json!({"event_type": "RECORD_OVER"}), sign_type: SignType::Md5 },
            Payload::AliyunIngest { query: vec![("action".into(), "publish".into())], sign_domain: "d".into() },
            Payload::AliyunEventsub(json!({"SubscribeID": "s"})),
            Payload::AliyunRecord(json!({"uri": "live/c/1.ts"})),
        ];
        for p in all {
            assert_eq!(Payload::from_stored(p.kind(), &p.to_stored()).unwrap(), p);
        }
        // The stored form is what earlier versions wrote: rows queued before an upgrade still send.
        let old = r#"{"body":{"app":"live"},"sign_type":"HMACSHA256"}"#;
        assert_eq!(
            Payload::from_stored(CallbackKind::HuaweiRecord, old).unwrap(),
            Payload::HuaweiRecord { body: json!({"app": "live"}), sign_type: SignType::HmacSha256 }
        );
        let err = Payload::from_stored(CallbackKind::AliyunIngest, "{}").unwrap_err();
        assert!(err.starts_with("bad aliyun_ingest payload"), "{err}");
    }
}
