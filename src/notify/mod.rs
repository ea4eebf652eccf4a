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
use crate::meta::Meta;
use crate::meta::notify::{NewCallback, OutboxEntry};

/// How long a Huawei `auth_sign` stays valid after it is made (`auth_timestamp` = send time + this).
const HUAWEI_SIGN_VALIDITY: Duration = Duration::from_secs(300);
pub const KIND_HUAWEI_PUBLISH: &str = "huawei_publish";

/// Delivery settings (`[notify]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub concurrency_per_destination: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            timeout: Duration::from_secs(5),
            max_attempts: 12,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            concurrency_per_destination: 4,
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
    pub publish_id: u64,
}

/// Turns events into outbox rows and wakes the sender. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    meta: Meta,
    wake: Arc<Notify>,
    node_ip: String,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Notifier {
    pub fn new(meta: Meta, node_ip: String) -> Self {
        Notifier { meta, wake: Arc::new(Notify::new()), node_ip }
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Publish started (`start = true`) or stopped: Huawei stream notification when the bucket has one.
    /// Errors are logged, never returned: a callback problem must not end a publish.
    pub async fn publish(&self, event: &PublishEvent, start: bool) {
        let config = match self.meta.get_publish_notify(&event.bucket).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                warn!(bucket = %event.bucket, channel = %event.channel, error = %e, "cannot read the notification configuration; callback lost");
                return;
            }
        };
        let name = if start { "PUBLISH" } else { "PUBLISH_DONE" };
        let payload = json!({
            "domain": config.domain,
            "app": "live",
            "stream": event.channel,
            "user_args": event.user_args,
            "client_ip": event.remote.ip().to_string(),
            "node_ip": self.node_ip,
            "publish_timestamp": unix(event.publish_started).to_string(),
            "event": name,
        });
        let callback = NewCallback {
            kind: KIND_HUAWEI_PUBLISH,
            bucket: event.bucket.clone(),
            channel: event.channel.clone(),
            url: config.url,
            payload: payload.to_string(),
            sign_key: config.auth_sign_key,
            idempotency_key: format!(
                "{KIND_HUAWEI_PUBLISH}-{}-{}-{}-{}-{name}",
                event.bucket,
                event.channel,
                unix(event.publish_started),
                event.publish_id
            ),
        };
        self.enqueue(&[callback]).await;
    }

    async fn enqueue(&self, callbacks: &[NewCallback]) {
        match self.meta.enqueue(callbacks).await {
            Ok(()) => {
                debug!(count = callbacks.len(), "callbacks queued");
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

/// The request one attempt sends: method, headers, body. Time-dependent signatures are made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub method: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub fn render(entry: &OutboxEntry, now: SystemTime) -> Result<Rendered, String> {
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Idempotency-Key".to_owned(), entry.idempotency_key.clone()),
        ("User-Agent".to_owned(), concat!("livechannel/", env!("CARGO_PKG_VERSION")).to_owned()),
    ];
    match entry.kind.as_str() {
        KIND_HUAWEI_PUBLISH => {
            let mut body: Value = serde_json::from_str(&entry.payload).map_err(|e| format!("bad payload: {e}"))?;
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
            Ok(Rendered { method: "POST", headers, body: body.to_string() })
        }
        other => Err(format!("unknown callback kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spec/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
            kind: KIND_HUAWEI_PUBLISH.into(),
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
}
