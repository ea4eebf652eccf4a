//! Durable callbacks (`../spec/callbacks.md`): events from the media side become outbox rows in the
//! metadata database **before** anything is sent; `sender` delivers them at least once, in order per
//! (destination, channel), with retries, and records every attempt.
//!
//! Signatures that depend on the send time (Huawei's `auth_timestamp` is an expiry) are computed per attempt
//! by [`render`], so a callback retried an hour later is still valid for its receiver. Every request carries
//! `Idempotency-Key`, the same on every attempt of one callback, so receivers can drop duplicates.
//!
//! Not here: the configuration APIs (`api::huawei`), the tables (`meta::notify`).

pub mod sender;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::auth::hmac_sha256;
use crate::meta::notify::{CallbackKind, NewCallback, OutboxEntry, Payload, SignType};
use crate::meta::{Meta, MetaError};

/// How long a Huawei `auth_sign` stays valid after it is made (`auth_timestamp` = send time + this).
const HUAWEI_SIGN_VALIDITY: Duration = Duration::from_secs(300);

pub use crate::config::NotifyConfig;

/// Something that happened to a publish and may become callbacks.
#[derive(Debug, Clone)]
pub enum CallbackEvent {
    /// Publish started (`start = true`) or stopped: Huawei stream notification, Aliyun ingest callback,
    /// matching Aliyun event subscriptions, and the record start events.
    Publish { event: PublishEvent, start: bool },
    /// A segment (or a VOD playlist) was stored: Aliyun `file_created`, Huawei `RECORD_NEW_FILE_START`
    /// and `RECORD_FILE_COMPLETE`.
    FileCreated { event: PublishEvent, file: StoredFile },
    /// Something went wrong with a publish's recording: Aliyun `record_error`/`transformat_error`, Huawei
    /// `RECORD_FAILED`.
    RecordFailed { event: PublishEvent, failure: RecordFailure, code: &'static str, message: String },
    /// Every segment of the publish is dealt with: Huawei `RECORD_OVER`.
    RecordOver { event: PublishEvent },
}

/// Which recording failure: storage (`record_error`) or a stream we cannot remux (`transformat_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFailure {
    RecordError,
    TransformatError,
}

impl RecordFailure {
    pub fn notify_type(self) -> &'static str {
        match self {
            RecordFailure::RecordError => "record_error",
            RecordFailure::TransformatError => "transformat_error",
        }
    }
}

/// A publish session starting or ending.
#[derive(Debug, Clone)]
pub struct PublishEvent {
    pub bucket: String,
    pub channel: String,
    pub remote: SocketAddr,
    /// The raw query string of the publish URL.
    pub user_args: String,
    /// Unix seconds of the publish start: the same in the start and stop events of one session.
    pub publish_started: SystemTime,
    /// Unique for this session, across restarts and nodes: `p<push-history id>` (a database id) for a
    /// publish, a fresh request id otherwise. Idempotency keys are built from it.
    pub session_id: String,
}

impl PublishEvent {
    /// Names this publish session in idempotency keys: the same in its start and stop callbacks.
    pub fn session(&self) -> String {
        format!("{}-{}-{}", self.bucket, self.channel, self.session_id)
    }
}

/// Every callback configuration of one bucket, as the event builders need it.
#[derive(Debug, Default)]
struct BucketConfig {
    publish: Option<crate::meta::notify::PublishNotify>,
    streams: Option<crate::meta::aliyun::StreamsNotify>,
    subs: Vec<crate::meta::aliyun::EventSub>,
    record: Option<crate::meta::aliyun::RecordNotify>,
    huawei_records: Vec<crate::meta::notify::RecordCallback>,
}

/// Bucket configurations read once and kept until a `meta` write changes callback configuration:
/// without it every stored segment cost several database round trips before its callbacks were queued.
#[derive(Debug, Default)]
struct ConfigCache {
    buckets: std::sync::Mutex<std::collections::HashMap<String, Cached>>,
}

/// (configuration generation when loaded, when loaded, the configuration).
type Cached = (u64, std::time::Instant, Arc<BucketConfig>);

/// A cached configuration is reloaded after this long even if no change was heard of: the safety net
/// for a change notification another node sent while this node's listener was reconnecting.
const CONFIG_TTL: Duration = Duration::from_secs(10);

/// Turns events into outbox rows and wakes the sender. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    meta: Meta,
    wake: Arc<Notify>,
    node_ip: String,
    /// This node's id (`node_id`): the `node` field of Huawei callbacks.
    node_name: String,
    cache: Arc<ConfigCache>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Notifier {
    pub fn new(meta: Meta, node_ip: String, node_name: String) -> Self {
        Notifier { meta, wake: Arc::new(Notify::new()), node_ip, node_name, cache: Arc::default() }
    }

    /// The bucket's callback configuration, from the cache unless a `meta` write (on this node, or on
    /// another one that notified) changed any configuration since it was read, or it is [`CONFIG_TTL`] old.
    async fn config(&self, bucket: &str) -> Result<Arc<BucketConfig>, crate::meta::MetaError> {
        let generation = self.meta.config_generation();
        if let Some((seen, at, c)) = self.cache.buckets.lock().unwrap_or_else(|p| p.into_inner()).get(bucket)
            && *seen == generation
            && at.elapsed() < CONFIG_TTL
        {
            return Ok(Arc::clone(c));
        }
        let loaded_at = std::time::Instant::now();
        let config = Arc::new(BucketConfig {
            publish: self.meta.get_publish_notify(None, bucket).await?,
            streams: self.meta.streams_notify(bucket).await?,
            subs: self.meta.event_subs(bucket).await?,
            record: self.meta.record_notify(bucket).await?,
            huawei_records: self.meta.list_record_callbacks(None, None, None, Some(bucket)).await?,
        });
        // Stamped with the generation read before loading: a change that raced with the load makes the
        // next lookup reload.
        self.cache
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_owned(), (generation, loaded_at, Arc::clone(&config)));
        Ok(config)
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Wakes the sender: new outbox rows were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The outbox rows an event becomes under the bucket's current callback configuration. Errors are
    /// logged, never returned: a callback problem must not end a publish.
    pub async fn callbacks(&self, event: &CallbackEvent, out: &mut Vec<NewCallback>) {
        let (publish, result) = match event {
            CallbackEvent::Publish { event, start } => (event, self.publish_callbacks(event, *start, out).await),
            CallbackEvent::FileCreated { event, file } => (event, self.file_callbacks(event, file, out).await),
            CallbackEvent::RecordFailed { event, failure, code, message } => {
                (event, self.failure_callbacks(event, *failure, code, message, out).await)
            }
            CallbackEvent::RecordOver { event } => (event, self.over_callbacks(event, out).await),
        };
        if let Err(e) = result {
            warn!(bucket = %publish.bucket, channel = %publish.channel, error = %e, "cannot read callback configuration; callbacks lost");
        }
    }

    /// Builds and queues an event's callbacks now (the control plane; the media path uses `journal`).
    pub async fn emit(&self, event: &CallbackEvent) {
        let mut out = Vec::new();
        self.callbacks(event, &mut out).await;
        self.enqueue(&out).await;
    }

    async fn publish_callbacks(
        &self,
        event: &PublishEvent,
        start: bool,
        out: &mut Vec<NewCallback>,
    ) -> Result<(), crate::meta::MetaError> {
        let started = unix(event.publish_started);
        let session = event.session();
        let base = |url: &str, payload: Payload, notify_type: &str, domain: &str| NewCallback {
            bucket: event.bucket.clone(),
            channel: event.channel.clone(),
            url: url.to_owned(),
            idempotency_key: format!("{}-{session}-{notify_type}", payload.kind()),
            payload,
            sign_key: String::new(),
            source_ref: String::new(),
            notify_type: notify_type.to_owned(),
            domain: domain.to_owned(),
        };
        let all = self.config(&event.bucket).await?;
        if let Some(config) = &all.publish {
            let name = if start { "PUBLISH" } else { "PUBLISH_DONE" };
            let payload = json!({
                "domain": config.domain, "app": "live", "stream": event.channel, "user_args": event.user_args,
                "client_ip": event.remote.ip().to_string(), "node_ip": self.node_ip,
                "publish_timestamp": started.to_string(), "event": name,
            });
            out.push(NewCallback {
                sign_key: config.auth_sign_key.clone(),
                ..base(&config.url, Payload::HuaweiPublish(payload), name, &config.domain)
            });
        }
        if let Some(config) = &all.streams {
            let action = if start { "publish" } else { "publish_done" };
            let pairs = [
                ("action", action.to_owned()),
                ("ip", event.remote.ip().to_string()),
                ("id", event.channel.clone()),
                ("app", config.domain.clone()),
                ("appname", "live".to_owned()),
                ("time", unix(SystemTime::now()).to_string()),
                ("usrargs", event.user_args.clone()),
                ("node", self.node_name()),
            ];
            let payload = Payload::AliyunIngest {
                query: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                sign_domain: config.domain.clone(),
            };
            out.push(NewCallback {
                sign_key: config.notify_auth_key.clone(),
                ..base(&config.notify_url, payload, action, &config.domain)
            });
        }
        let user = user_id(event);
        for sub in &all.subs {
            if !sub.channel_id.is_empty() && sub.channel_id != event.channel {
                continue;
            }
            let mut contents = Vec::new();
            let channel_event = json!({"Event": "ChannelEvent", "ChannelEvent": {
                "EventTag": if start { "ChannelOpen" } else { "ChannelClose" }, "Timestamp": unix(SystemTime::now())}});
            let user_events: Vec<Value> = (if start { ["Join", "Publish"] } else { ["Unpublish", "Leave"] })
                .iter()
                .map(|tag| json!({"Event": "UserEvent", "UserEvent": {"UserId": user, "EventTag": tag, "SessionId": session}}))
                .collect();
            let wants = |e: &str| sub.events.iter().any(|x| x == e);
            let user_ok = sub.users.is_empty() || sub.users.contains(&user);
            if wants("ChannelEvent") && start {
                contents.push(channel_event.clone());
            }
            if wants("UserEvent") && user_ok {
                contents.extend(user_events);
            }
            if wants("ChannelEvent") && !start {
                contents.push(channel_event);
            }
            if contents.is_empty() {
                continue;
            }
            let name = if start { "start" } else { "stop" };
            let payload =
                json!({"SubscribeID": sub.id, "AppId": sub.app_id, "ChannelID": event.channel, "Contents": contents});
            out.push(NewCallback {
                source_ref: sub.id.clone(),
                idempotency_key: format!("{}-{}-{session}-{name}", CallbackKind::AliyunEventsub, sub.id),
                ..base(&sub.callback_url, Payload::AliyunEventsub(payload), name, &event.bucket)
            });
        }
        if start {
            self.record_status(event, "record_started", &session, out).await?;
            self.huawei_record(event, "RECORD_START", &session, json!({}), out).await?;
        }
        Ok(())
    }

    /// The recording of a publish is over: every segment of it is stored (the sink sends this last, so
    /// RECORD_OVER follows the last RECORD_FILE_COMPLETE).
    async fn over_callbacks(&self, event: &PublishEvent, out: &mut Vec<NewCallback>) -> Result<(), MetaError> {
        let session = event.session();
        self.huawei_record(event, "RECORD_OVER", &session, json!({}), out).await
    }

    fn node_name(&self) -> String {
        self.node_name.clone()
    }

    /// An Aliyun recording status event (`record_started`, `record_paused`, ...), when the bucket's
    /// recording configuration asks for status notifications.
    async fn record_status(
        &self,
        event: &PublishEvent,
        status: &str,
        session: &str,
        out: &mut Vec<NewCallback>,
    ) -> Result<(), crate::meta::MetaError> {
        let all = self.config(&event.bucket).await?;
        let Some(config) = &all.record else { return Ok(()) };
        if !config.need_status_notify {
            return Ok(());
        }
        let payload = json!({"domain": config.domain, "app": "live", "stream": event.channel, "event": status});
        out.push(aliyun_record(
            event,
            config,
            payload,
            status,
            format!("{}-{session}-{status}", CallbackKind::AliyunRecord),
        ));
        Ok(())
    }

    /// A Huawei recording event, when a recording callback of the bucket subscribes to it.
    async fn huawei_record(
        &self,
        event: &PublishEvent,
        event_type: &str,
        key: &str,
        extra: Value,
        out: &mut Vec<NewCallback>,
    ) -> Result<(), crate::meta::MetaError> {
        for cb in &self.config(&event.bucket).await?.huawei_records {
            if !cb.events.iter().any(|e| e == event_type) {
                continue;
            }
            let mut body = json!({
                "project_id": "", "task_id": format!("{}-{}-{}", event.bucket, event.channel, unix(event.publish_started)),
                "event_type": event_type, "publish_domain": cb.domain, "app": "live", "stream": event.channel,
                "record_format": "HLS",
            });
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            out.push(NewCallback {
                bucket: event.bucket.clone(),
                channel: event.channel.clone(),
                url: cb.url.clone(),
                payload: Payload::HuaweiRecord { body, sign_type: cb.sign_type },
                sign_key: cb.sign_key.clone(),
                idempotency_key: format!("{}-{}-{key}-{event_type}", CallbackKind::HuaweiRecord, cb.id),
                source_ref: cb.id.clone(),
                notify_type: event_type.to_owned(),
                domain: cb.domain.clone(),
            });
        }
        Ok(())
    }

    /// A segment (or a VOD playlist) was stored: Aliyun `file_created`, Huawei `RECORD_NEW_FILE_START` and
    /// `RECORD_FILE_COMPLETE`.
    async fn file_callbacks(
        &self,
        event: &PublishEvent,
        file: &StoredFile,
        out: &mut Vec<NewCallback>,
    ) -> Result<(), MetaError> {
        // Object names repeat (a VOD playlist is rewritten under its name): the session makes the key unique.
        let key = format!("{}-{}", event.session(), file.object_key);
        if let Some(config) = &self.config(&event.bucket).await?.record {
            let mut payload = json!({
                "domain": config.domain, "app": "live", "stream": event.channel, "uri": file.object_key,
                "duration": (file.duration.as_secs_f64() * 1000.0).round() / 1000.0,
                "start_time": unix(file.start), "stop_time": unix(file.start + file.duration),
            });
            let push_args = push_args(&event.user_args);
            if !push_args.is_empty() {
                payload["push_args"] = Value::Object(push_args);
            }
            out.push(aliyun_record(
                event,
                config,
                payload,
                "file_created",
                format!("{}-{key}", CallbackKind::AliyunRecord),
            ));
        }
        let time = crate::wire::utc_seconds;
        let job = key.clone();
        self.huawei_record(event, "RECORD_NEW_FILE_START", &key, json!({"job_id": job}), out).await?;
        let extra = json!({
            "job_id": job, "download_url": file.url, "play_url": file.url, "asset_id": file.object_key,
            "file_size": file.bytes, "record_duration": file.duration.as_secs_f64().round() as u64,
            "start_time": time(file.start), "end_time": time(file.start + file.duration),
            "width": file.width, "height": file.height, "obs_location": "", "obs_bucket": event.bucket,
            "obs_object": file.object_key,
        });
        self.huawei_record(event, "RECORD_FILE_COMPLETE", &key, extra, out).await
    }

    /// Something went wrong with a publish's recording: Aliyun `record_error`/`transformat_error`, Huawei
    /// `RECORD_FAILED`.
    async fn failure_callbacks(
        &self,
        event: &PublishEvent,
        failure: RecordFailure,
        code: &str,
        message: &str,
        out: &mut Vec<NewCallback>,
    ) -> Result<(), MetaError> {
        let notify_type = failure.notify_type();
        let session = event.session();
        if let Some(config) = &self.config(&event.bucket).await?.record {
            let payload = json!({"domain": config.domain, "app": "live", "stream": event.channel,
                                 "event": notify_type, "code": code, "message": message});
            let key = format!("{}-{session}-{notify_type}-{code}", CallbackKind::AliyunRecord);
            out.push(aliyun_record(event, config, payload, notify_type, key));
        }
        if failure == RecordFailure::RecordError {
            let extra = json!({"error_code": code, "error_msg": message});
            self.huawei_record(event, "RECORD_FAILED", &session, extra, out).await?;
        }
        Ok(())
    }

    /// Channel disabled while live (`record_paused`) or enabled again (`record_resumed`): the status
    /// change `change_id` (a database id) names it in the idempotency key.
    pub async fn record_paused_or_resumed(&self, bucket: &str, channel: &str, paused: bool, change_id: i64) {
        let event = PublishEvent {
            bucket: bucket.to_owned(),
            channel: channel.to_owned(),
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
            user_args: String::new(),
            publish_started: SystemTime::now(),
            session_id: format!("c{change_id}"),
        };
        let status = if paused { "record_paused" } else { "record_resumed" };
        let session = format!("{bucket}-{channel}-c{change_id}");
        let mut out = Vec::new();
        if let Err(e) = self.record_status(&event, status, &session, &mut out).await {
            warn!(channel, error = %e, "cannot read recording callback configuration; callback lost");
        }
        self.enqueue(&out).await;
    }

    /// Writes callbacks to the outbox now and wakes the sender (control plane and snapshot workers; the
    /// media path goes through the journal). Failures are logged: the callbacks are lost.
    pub async fn enqueue(&self, callbacks: &[NewCallback]) {
        match self.meta.enqueue(callbacks).await {
            Ok(conflicts) => {
                for key in &conflicts {
                    warn!(idempotency_key = %key, "callback not queued: its idempotency key is already in the outbox; the existing row is kept");
                }
                debug!(count = callbacks.len() - conflicts.len(), "callbacks queued");
                self.wake.notify_one();
            }
            Err(e) => warn!(error = %e, count = callbacks.len(), "cannot write callbacks to the outbox; they are lost"),
        }
    }
}

/// Huawei stream-notification signature: `hex(HMAC-SHA256(key, event + domain + app + stream + auth_ts))`.
pub fn huawei_publish_sign(key: &str, event: &str, domain: &str, app: &str, stream: &str, auth_ts: u64) -> String {
    hex::encode(hmac_sha256(key.as_bytes(), format!("{event}{domain}{app}{stream}{auth_ts}").as_bytes()))
}

/// A stored recording file (a segment or a VOD playlist).
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub object_key: String,
    /// Where it can be fetched (our HTTP endpoint).
    pub url: String,
    pub start: SystemTime,
    pub duration: Duration,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
}

/// The RTC user a publisher is: the `userId` parameter of its URL, else its address.
fn user_id(event: &PublishEvent) -> String {
    crate::auth::parse_query(&event.user_args)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, v)| k == "userId" && !v.is_empty())
        .map_or_else(|| event.remote.to_string(), |(_, v)| v)
}

/// Publish-URL parameters named `callback_*`; the first value of a repeated name wins.
fn push_args(user_args: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in crate::auth::parse_query(user_args).unwrap_or_default() {
        if k.starts_with("callback_") && !out.contains_key(&k) {
            out.insert(k, Value::String(v));
        }
    }
    out
}

fn aliyun_record(
    event: &PublishEvent,
    config: &crate::meta::aliyun::RecordNotify,
    payload: Value,
    notify_type: &str,
    idempotency_key: String,
) -> NewCallback {
    NewCallback {
        bucket: event.bucket.clone(),
        channel: event.channel.clone(),
        url: config.notify_url.clone(),
        payload: Payload::AliyunRecord(payload),
        sign_key: if config.notify_req_auth { config.notify_auth_key.clone() } else { String::new() },
        idempotency_key,
        source_ref: String::new(),
        notify_type: notify_type.to_owned(),
        domain: config.domain.clone(),
    }
}

/// `lower-hex(MD5(domain|timestamp|key))`, the ALI-LIVE-SIGNATURE header.
pub fn ali_live_signature(domain: &str, timestamp: u64, key: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(format!("{domain}|{timestamp}|{key}").as_bytes()))
}

/// Huawei recording-callback signature: MD5(key + ts) or HMAC-SHA256(key, ts + event + domain + app +
/// stream + download_url + play_url), lower-case hex.
pub fn huawei_record_sign(sign_type: SignType, key: &str, auth_ts: u64, body: &Value) -> String {
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    if sign_type == SignType::Md5 {
        use md5::Digest;
        return hex::encode(md5::Md5::digest(format!("{key}{auth_ts}").as_bytes()));
    }
    let msg = format!(
        "{auth_ts}{}{}{}{}{}{}",
        field("event_type"),
        field("publish_domain"),
        field("app"),
        field("stream"),
        field("download_url"),
        field("play_url")
    );
    hex::encode(hmac_sha256(key.as_bytes(), msg.as_bytes()))
}

/// The request one attempt sends: method, headers, body. Time-dependent signatures are made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub fn render(entry: &OutboxEntry, now: SystemTime) -> Result<Rendered, String> {
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Idempotency-Key".to_owned(), entry.idempotency_key.clone()),
        ("User-Agent".to_owned(), concat!("livechannel/", env!("CARGO_PKG_VERSION")).to_owned()),
    ];
    match Payload::from_stored(entry.kind, &entry.payload)? {
        Payload::HuaweiPublish(mut body) => {
            if !entry.sign_key.is_empty() {
                let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
                let auth_ts = unix(now + HUAWEI_SIGN_VALIDITY);
                let sign = huawei_publish_sign(
                    &entry.sign_key,
                    &field("event"),
                    &field("domain"),
                    &field("app"),
                    &field("stream"),
                    auth_ts,
                );
                body["auth_timestamp"] = json!(auth_ts);
                body["auth_sign"] = json!(sign);
            }
            Ok(Rendered { method: "POST", url: entry.url.clone(), headers, body: body.to_string() })
        }
        Payload::AliyunIngest { query, sign_domain } => {
            let mut url = reqwest::Url::parse(&entry.url).map_err(|e| format!("bad URL: {e}"))?;
            url.query_pairs_mut().extend_pairs(&query);
            let mut headers = headers;
            headers.retain(|(k, _)| k != "Content-Type");
            if !entry.sign_key.is_empty() {
                let ts = unix(now);
                headers.push(("ALI-LIVE-TIMESTAMP".into(), ts.to_string()));
                headers.push(("ALI-LIVE-SIGNATURE".into(), ali_live_signature(&sign_domain, ts, &entry.sign_key)));
            }
            Ok(Rendered { method: "GET", url: url.to_string(), headers, body: String::new() })
        }
        Payload::AliyunEventsub(mut body) => {
            body["MsgId"] = json!(entry.idempotency_key);
            body["MsgTimestamp"] = json!(unix(now));
            Ok(Rendered { method: "POST", url: entry.url.clone(), headers, body: body.to_string() })
        }
        Payload::AliyunRecord(body) | Payload::Snapshot(body) => {
            let mut headers = headers;
            if !entry.sign_key.is_empty() {
                let ts = unix(now);
                // The callback host, without port or path.
                let host = reqwest::Url::parse(&entry.url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                headers.push(("ALI-LIVE-TIMESTAMP".into(), ts.to_string()));
                headers.push(("ALI-LIVE-SIGNATURE".into(), ali_live_signature(&host, ts, &entry.sign_key)));
            }
            Ok(Rendered { method: "POST", url: entry.url.clone(), headers, body: body.to_string() })
        }
        Payload::HuaweiRecord { mut body, sign_type } => {
            if !entry.sign_key.is_empty() {
                let auth_ts = unix(now + HUAWEI_SIGN_VALIDITY);
                body["auth_timestamp"] = json!(auth_ts);
                body["auth_sign"] = json!(huawei_record_sign(sign_type, &entry.sign_key, auth_ts, &body));
            }
            Ok(Rendered { method: "POST", url: entry.url.clone(), headers, body: body.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::captures::vectors;
    use crate::meta::both::on_both;

    #[test]
    fn aliyun_and_huawei_record_signatures_match_the_vectors() {
        let v = &vectors()["callbacks"];
        assert_eq!(
            ali_live_signature("callback.example.com", 1736150400, "abcdefgh12345678"),
            v["ali_live_signature"]["md5"]
        );
        let key = "0123456789abcdef0123456789abcdef";
        assert_eq!(huawei_record_sign(SignType::Md5, key, 1736150400, &json!({})), v["huawei_record_md5"]["md5"]);
        let body = json!({"event_type": "RECORD_FILE_COMPLETE", "publish_domain": "push.example.com", "app": "live",
            "stream": "stream1", "download_url": "http://127.0.0.1:8080/dl/stream1.m3u8",
            "play_url": "http://127.0.0.1:8080/play/stream1.m3u8"});
        assert_eq!(
            huawei_record_sign(SignType::HmacSha256, key, 1736150400, &body),
            v["huawei_record_hmac"]["hmac_sha256_hex"]
        );
    }

    fn entry(kind: CallbackKind, url: &str, payload: Value, key: &str) -> OutboxEntry {
        OutboxEntry {
            id: 7,
            kind,
            bucket: "live".into(),
            channel: "ch1".into(),
            url: url.into(),
            payload: payload.to_string(),
            sign_key: key.into(),
            idempotency_key: "idem-1".into(),
            attempts: 0,
        }
    }

    #[test]
    fn the_aliyun_ingest_callback_is_a_signed_get_with_the_spec_parameters_appended() {
        let payload = json!({"query": [["action", "publish"], ["ip", "127.0.0.1"], ["id", "ch1"], ["app", "push.example.com"],
            ["appname", "live"], ["time", "1736150400"], ["usrargs", "token=abc"], ["node", "livechannel-1"]],
            "sign_domain": "push.example.com"});
        let r = render(
            &entry(CallbackKind::AliyunIngest, "http://hooks.example.com/pub?x=1", payload, "abcdefgh12345678"),
            UNIX_EPOCH + Duration::from_secs(1736150400),
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.url,
            "http://hooks.example.com/pub?x=1&action=publish&ip=127.0.0.1&id=ch1&app=push.example.com\
                           &appname=live&time=1736150400&usrargs=token%3Dabc&node=livechannel-1"
        );
        assert!(r.body.is_empty());
        assert!(r.headers.contains(&("ALI-LIVE-TIMESTAMP".into(), "1736150400".into())));
        let sig = ali_live_signature("push.example.com", 1736150400, "abcdefgh12345678");
        assert!(r.headers.contains(&("ALI-LIVE-SIGNATURE".into(), sig)));
    }

    #[test]
    fn event_subscription_and_record_bodies_follow_the_spec() {
        let now = UNIX_EPOCH + Duration::from_secs(1736150400);
        let sub = json!({"SubscribeID": "sub-1", "AppId": "live", "ChannelID": "ch1", "Contents": []});
        let r = render(&entry(CallbackKind::AliyunEventsub, "http://127.0.0.1:9/cb", sub, ""), now).unwrap();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((body["MsgId"].as_str(), body["MsgTimestamp"].as_u64()), (Some("idem-1"), Some(1736150400)));
        assert!(!r.headers.iter().any(|(k, _)| k.starts_with("ALI-LIVE")), "event subscriptions are not signed");
        let file = json!({"domain": "live", "app": "live", "stream": "ch1", "uri": "live/ch1/3.ts", "duration": 2.0,
                          "start_time": 1736150398, "stop_time": 1736150400});
        let r = render(
            &entry(
                CallbackKind::AliyunRecord,
                "https://callback.example.com:8443/rec",
                file.clone(),
                "abcdefgh12345678",
            ),
            now,
        )
        .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap(), file);
        // Signed with the callback host, port stripped: the spec's worked example.
        assert!(r.headers.contains(&("ALI-LIVE-SIGNATURE".into(), "69c23bcb480fc493ead95eb175bf0550".into())));
        let hw = json!({"body": {"event_type": "RECORD_FILE_COMPLETE", "publish_domain": "push.example.com", "app": "live",
            "stream": "stream1", "download_url": "http://127.0.0.1:8080/dl/stream1.m3u8",
            "play_url": "http://127.0.0.1:8080/play/stream1.m3u8"}, "sign_type": "MD5"});
        let r = render(
            &entry(CallbackKind::HuaweiRecord, "http://127.0.0.1:9/rec", hw, "0123456789abcdef0123456789abcdef"),
            now - HUAWEI_SIGN_VALIDITY,
        )
        .unwrap();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            (body["auth_timestamp"].as_u64(), body["auth_sign"].as_str()),
            (Some(1736150400), Some("81de7e7b0d37200afedd7dfaad0c6da2"))
        );
    }

    #[test]
    fn push_args_keep_callback_parameters_first_value_first() {
        let args = push_args("callback_myid=1&token=x&callback_myid=2&callback_b=%20y");
        assert_eq!(Value::Object(args), json!({"callback_myid": "1", "callback_b": " y"}));
    }

    #[test]
    fn huawei_publish_signature_matches_the_vector() {
        let v = &vectors()["callbacks"]["huawei_publish_auth_sign"];
        assert_eq!(v["message"], "PUBLISHpush.example.comlivestream11736150400");
        let sign = huawei_publish_sign(
            v["key"].as_str().unwrap(),
            "PUBLISH",
            "push.example.com",
            "live",
            "stream1",
            1736150400,
        );
        assert_eq!(sign, v["hmac_sha256_hex"].as_str().unwrap());
    }

    #[test]
    fn a_huawei_publish_callback_is_signed_at_send_time_and_keeps_its_idempotency_key() {
        let entry = OutboxEntry {
            id: 1,
            kind: CallbackKind::HuaweiPublish,
            bucket: "live".into(),
            channel: "stream1".into(),
            url: "http://127.0.0.1:9/hw".into(),
            payload: json!({"domain": "push.example.com", "app": "live", "stream": "stream1", "event": "PUBLISH",
                            "publish_timestamp": "1736150000"})
            .to_string(),
            sign_key: "0123456789abcdef0123456789abcdef".into(),
            idempotency_key: "k1".into(),
            attempts: 0,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1736150100);
        let r = render(&entry, now).unwrap();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["auth_timestamp"], 1736150400);
        assert_eq!(body["auth_sign"], "c03cee6ed954f6a250c2cf168b3581add115ac7c573a70b813328affcf689dec");
        assert_eq!(body["publish_timestamp"], "1736150000");
        assert!(r.headers.contains(&("Idempotency-Key".into(), "k1".into())));
        let later = render(&entry, now + Duration::from_secs(3600)).unwrap();
        assert_ne!(serde_json::from_str::<Value>(&later.body).unwrap()["auth_timestamp"], 1736150400);
        let unsigned = render(&OutboxEntry { sign_key: String::new(), ..entry }, now).unwrap();
        assert!(!unsigned.body.contains("auth_sign"));
    }

    on_both! { async fn cached_callback_configuration_follows_meta_writes_and_only_writes(db) {
        let meta = db.open().await;
        let notifier = Notifier::new(meta.clone(), "127.0.0.1".into(), "node-1".into());
        let event = CallbackEvent::Publish {
            event: PublishEvent {
                bucket: "live".into(),
                channel: "c".into(),
                remote: "127.0.0.1:5000".parse().unwrap(),
                user_args: String::new(),
                publish_started: UNIX_EPOCH + Duration::from_secs(1736150400),
                session_id: "p1".into(),
            },
            start: true,
        };
        let count = async || {
            let mut out = Vec::new();
            notifier.callbacks(&event, &mut out).await;
            out.len()
        };
        assert_eq!(count().await, 0);
        let config = crate::meta::notify::PublishNotify {
            domain: "live".into(),
            url: "http://127.0.0.1:9/hw".into(),
            auth_sign_key: String::new(),
            call_back_area: String::new(),
        };
        meta.put_publish_notify("p1", "live", &config).await.unwrap();
        assert_eq!(count().await, 1, "the write made the cached (empty) configuration stale");
        let generation = meta.config_generation();
        meta.get_publish_notify(None, "live").await.unwrap();
        meta.list_record_callbacks(None, None, None, None).await.unwrap();
        assert_eq!(meta.config_generation(), generation, "reads do not invalidate");
        assert!(meta.delete_publish_notify("p1", "live").await.unwrap());
        assert_eq!(count().await, 0);
    }}
}
