//! Callbacks end to end: configured through the Huawei-style API (signed with SDK-HMAC-SHA256), triggered by
//! real RTMP publishes, delivered over HTTP to a receiver in this test that records what it gets, checks
//! signatures and can fail or be down on purpose; and durable across a receiver outage and a server restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use livechannel::auth::{huawei, parse_query};
use livechannel::config::{AccessKey, AuthToken, Config};
use livechannel::meta::notify::OutboxState;
use livechannel::notify::{NotifyConfig, huawei_publish_sign};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const AK: &str = "HWAKEXAMPLE";
const SK: &str = "HWSKEXAMPLE";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const SIGN_KEY: &str = "0123456789abcdef0123456789abcdef";

fn cb_config(dir: &Path) -> Config {
    Config {
        access_keys: vec![AccessKey { id: AK.into(), secret: SK.into() }],
        auth_tokens: vec![AuthToken { token: "static-token-0123456789".into(), project_id: PROJECT.into() }],
        notify: NotifyConfig {
            timeout: Duration::from_secs(2),
            max_attempts: 20,
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
            concurrency_per_destination: 4,
            ..config(dir, 1, 3).notify
        },
        ..config(dir, 1, 3)
    }
}

/// A Huawei-API request signed as huaweicloudsdkcore signs it.
async fn hw(addr: SocketAddr, method: &str, path: &str, query: &str, body: &str) -> (u16, Value) {
    hw_with(addr, method, path, query, body, SK, None).await
}

pub(crate) async fn hw_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    secret: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let host = addr.to_string();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    headers.insert("host", HeaderValue::from_str(&host).unwrap());
    headers.insert("x-project-id", HeaderValue::from_static(PROJECT));
    headers.insert("x-sdk-date", HeaderValue::from_str(&date).unwrap());
    let params = parse_query(query).unwrap();
    let signed: Vec<String> = ["content-type", "host", "x-project-id", "x-sdk-date"].map(String::from).to_vec();
    let req = huawei::Request { method, path, query: &params, headers: &headers, body: body.as_bytes() };
    let sts = huawei::string_to_sign(&date, &huawei::canonical_request(&req, &signed).unwrap());
    let auth = format!(
        "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={}, Signature={}",
        signed.join(";"),
        huawei::sign(secret, &sts)
    );
    let target = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    let mut h = vec![
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-Project-Id", PROJECT),
        ("X-Sdk-Date", date.as_str()),
    ];
    match token {
        Some(t) => h.push(("X-Auth-Token", t)),
        None => h.push(("Authorization", auth.as_str())),
    }
    let resp = http_request_body(addr, method, &target, &h, body.as_bytes()).await;
    assert!(resp.header("x-request-id").is_some(), "every response carries X-Request-Id");
    let v = if resp.body.is_empty() { Value::Null } else { serde_json::from_slice(&resp.body).unwrap() };
    (resp.status, v)
}

#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    /// The JSON body (Null for a GET).
    pub body: Value,
}

/// A callback receiver: records every request; answers 500 to the first `fail_first` requests.
#[derive(Clone)]
pub(crate) struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl Receiver {
    pub(crate) async fn start(listener: TcpListener, fail_first: usize) -> (Receiver, tokio::task::JoinHandle<()>) {
        let r = Receiver { got: Arc::default(), fail_first: Arc::new(Mutex::new(fail_first)) };
        let r2 = r.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let r = r2.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            let headers = req.headers().clone();
                            let method = req.method().to_string();
                            let uri = req.uri().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let fail = {
                                let mut f = r.fail_first.lock().unwrap();
                                let fail = *f > 0;
                                *f = f.saturating_sub(1);
                                fail
                            };
                            if !fail {
                                let body =
                                    if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
                                r.got.lock().unwrap().push(Received { method, uri, headers, body });
                            }
                            let status = if fail { 500 } else { 200 };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"{\"status\":1,\"result\":\"success\"}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (r, task)
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let what = format!("{n} callbacks");
        eventually(Duration::from_secs(20), &what, async || Some(self.got()).filter(|got| got.len() >= n)).await
    }
}

async fn configure(addr: SocketAddr, receiver: SocketAddr) {
    let body =
        json!({"url": format!("http://{receiver}/hw"), "auth_sign_key": SIGN_KEY, "call_back_area": "mainland_china"});
    let (status, _) =
        hw(addr, "PUT", &format!("/v1/{PROJECT}/notifications/publish"), "domain=live", &body.to_string()).await;
    assert_eq!(status, 201);
}

async fn publish_once(ts: &TestServer, channel: &str) {
    publish(ts.rtmp(), channel, &tags("media/av_no_bframes.flv")).await.unwrap();
    ts.wait_flushed(channel).await;
}

/// Checks a PUBLISH/PUBLISH_DONE pair as a receiver would: signature valid and not expired, fields right.
fn check_pair(got: &[Received], channel: &str) {
    let events: Vec<&str> = got.iter().map(|r| r.body["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["PUBLISH", "PUBLISH_DONE"], "in order");
    for r in got {
        let b = &r.body;
        assert_eq!(
            (b["domain"].as_str(), b["app"].as_str(), b["stream"].as_str()),
            (Some("live"), Some("live"), Some(channel))
        );
        assert_eq!(b["client_ip"], "127.0.0.1");
        let auth_ts = b["auth_timestamp"].as_u64().unwrap();
        assert!(auth_ts > SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
        let expected = huawei_publish_sign(SIGN_KEY, b["event"].as_str().unwrap(), "live", "live", channel, auth_ts);
        assert_eq!(b["auth_sign"].as_str(), Some(expected.as_str()), "signature");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    assert_eq!(got[0].body["publish_timestamp"], got[1].body["publish_timestamp"], "pairs share publish_timestamp");
    assert!(got[0].body["publish_timestamp"].as_str().unwrap().bytes().all(|c| c.is_ascii_digit()));
    assert_ne!(got[0].headers["idempotency-key"], got[1].headers["idempotency-key"]);
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_unpublish_reach_the_receiver_signed_and_in_order(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr = listener.local_addr().unwrap();
    let (receiver, _task) = Receiver::start(listener, 0).await;
    configure(ts.http(), raddr).await;
    publish_once(&ts, "cb1").await;
    let got = receiver.wait_for(2).await;
    check_pair(&got, "cb1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.got().len(), 2, "each callback once when the receiver answers 200");
    let outbox = ts.server.meta.outbox(None).await.unwrap();
    assert!(outbox.iter().all(|(_, state)| *state == OutboxState::Delivered), "{outbox:?}");
    let attempts = ts.server.meta.attempts(outbox[0].0.id).await.unwrap();
    assert_eq!((attempts.len(), attempts[0].status, attempts[0].success), (1, Some(200), true));
    assert!(attempts[0].request_body.contains("\"event\":\"PUBLISH\""));
    assert!(attempts[0].response_body.contains("success"));
}}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_and_nothing_overtakes(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr = listener.local_addr().unwrap();
    let (receiver, _task) = Receiver::start(listener, 3).await;
    configure(ts.http(), raddr).await;
    publish_once(&ts, "cb2").await;
    let got = receiver.wait_for(2).await;
    check_pair(&got, "cb2");
    let outbox = ts.server.meta.outbox(None).await.unwrap();
    let attempts = ts.server.meta.attempts(outbox[0].0.id).await.unwrap();
    assert_eq!(attempts.len(), 4, "three 500s, then success: {attempts:?}");
    assert!(attempts[..3].iter().all(|a| a.status == Some(500) && !a.success));
    assert_eq!(ts.server.meta.attempts(outbox[1].0.id).await.unwrap().len(), 1, "PUBLISH_DONE waited for PUBLISH");
}}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_survive_a_dead_receiver_and_a_server_restart(db) {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port for the receiver, then leave it closed: connections are refused.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr = probe.local_addr().unwrap();
    drop(probe);
    {
        let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
        configure(ts.http(), raddr).await;
        publish_once(&ts, "cb3").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pending = ts.server.meta.outbox(Some(OutboxState::Pending)).await.unwrap();
        assert_eq!(pending.len(), 2, "both callbacks wait in the outbox");
        let attempts = ts.server.meta.attempts(pending[0].0.id).await.unwrap();
        assert!(!attempts.is_empty() && attempts.iter().all(|a| a.status.is_none() && !a.error.is_empty()));
        ts.server.shutdown(Duration::from_secs(10)).await;
    }
    let listener = TcpListener::bind(raddr).await.unwrap();
    let (receiver, _task) = Receiver::start(listener, 0).await;
    let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
    let got = receiver.wait_for(2).await;
    check_pair(&got, "cb3");
    drop(ts);
}}

on_both! {
#[tokio::test]
async fn the_huawei_configuration_api_follows_the_spec(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
    let a = ts.http();
    let path = format!("/v1/{PROJECT}/notifications/publish");
    let body = json!({"url": "http://127.0.0.1:9/hw", "auth_sign_key": SIGN_KEY, "call_back_area": "mainland_china"})
        .to_string();
    assert_eq!(hw(a, "GET", &path, "domain=live", "").await.0, 404);
    assert_eq!(hw(a, "PUT", &path, "domain=live", &body).await.0, 201);
    assert_eq!(hw(a, "PUT", &path, "domain=live", &body).await.0, 200);
    let (status, got) = hw(a, "GET", &path, "domain=live", "").await;
    assert_eq!(
        (status, got["url"].as_str(), got["auth_sign_key"].as_str()),
        (200, Some("http://127.0.0.1:9/hw"), Some(SIGN_KEY))
    );
    let (status, e) = hw(a, "GET", &path, "domain=unknown.example.com", "").await;
    assert_eq!((status, e["error_code"].as_str()), (400, Some("LIVE.100011001")));
    for bad in [
        json!({"url": "ftp://x/y"}),
        json!({"url": "http://h/x", "auth_sign_key": "short"}),
        json!({"url": "http://h/x", "call_back_area": "mars"}),
    ] {
        assert_eq!(hw(a, "PUT", &path, "domain=live", &bad.to_string()).await.0, 400, "{bad}");
    }
    assert_eq!(hw(a, "PUT", &path, "domain=live", "not json").await.0, 400);
    let (status, e) = hw_with(a, "GET", &path, "domain=live", "", "wrong-secret", None).await;
    assert_eq!((status, e["error_code"].as_str()), (401, Some("APIG.0301")));
    assert_eq!(hw_with(a, "GET", &path, "domain=live", "", SK, Some("static-token-0123456789")).await.0, 200);
    assert_eq!(hw_with(a, "GET", &path, "domain=live", "", SK, Some("wrong-token-0123456789")).await.0, 401);
    assert_eq!(http_request(a, "GET", &format!("{path}?domain=live"), &[]).await.status, 401);
    assert_eq!(hw(a, "GET", "/v1/%7Bproject_id%7D/notifications/publish", "domain=live", "").await.0, 400);
    assert_eq!(hw(a, "DELETE", &path, "domain=live", "").await.0, 204);
    assert_eq!(hw(a, "DELETE", &path, "domain=live", "").await.0, 404);

    // Recording callbacks.
    let rpath = format!("/v1/{PROJECT}/record/callbacks");
    let rec = json!({"publish_domain": "live", "app": "live", "notify_callback_url": "http://127.0.0.1:9/rec",
                     "notify_event_subscription": ["RECORD_FILE_COMPLETE"], "sign_type": "HMACSHA256", "key": SIGN_KEY});
    let (status, created) = hw(a, "POST", &rpath, "", &rec.to_string()).await;
    assert_eq!(status, 201, "{created}");
    assert!(created.get("key").is_none(), "the key is never returned");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, e) = hw(a, "POST", &rpath, "", &rec.to_string()).await;
    assert_eq!((status, e["error_code"].as_str()), (400, Some("LIVE.103011018")));
    let (status, list) = hw(a, "GET", &rpath, "app=live&limit=10&offset=0&publish_domain=live", "").await;
    assert_eq!(
        (status, list["total"].as_u64(), list["callback_config"][0]["id"].as_str()),
        (200, Some(1), Some(id.as_str()))
    );
    assert_eq!(hw(a, "GET", &rpath, "limit=0", "").await.0, 400);
    let mut changed = rec.clone();
    changed["notify_event_subscription"] = json!(["RECORD_START", "RECORD_OVER"]);
    let (status, updated) = hw(a, "PUT", &format!("{rpath}/{id}"), "", &changed.to_string()).await;
    assert_eq!((status, updated["notify_event_subscription"].clone()), (200, json!(["RECORD_START", "RECORD_OVER"])));
    assert_eq!(hw(a, "GET", &format!("{rpath}/{id}"), "", "").await.1["create_time"], created["create_time"]);
    let mut bad = rec.clone();
    bad["notify_event_subscription"] = json!(["RECORD_SOMETHING"]);
    assert_eq!(hw(a, "POST", &rpath, "", &bad.to_string()).await.0, 400);
    assert_eq!(hw(a, "DELETE", &format!("{rpath}/{id}"), "", "").await.0, 204);
    assert_eq!(hw(a, "GET", &format!("{rpath}/{id}"), "", "").await.0, 404);
}}

// ------------------------------------------------------------------------------------------ Aliyun

/// An Aliyun RPC request signed as aliyun-python-sdk-core signs it (HMAC-SHA1, `secret&`).
async fn ali(addr: SocketAddr, method: &str, action: &str, params: &[(&str, &str)]) -> (u16, Value) {
    ali_with(addr, method, action, params, SK, None).await
}

async fn ali_with(
    addr: SocketAddr,
    method: &str,
    action: &str,
    params: &[(&str, &str)],
    secret: &str,
    nonce: Option<&str>,
) -> (u16, Value) {
    use livechannel::auth::aliyun::{rpc_sign, rpc_string_to_sign};
    let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let nonce = nonce.map_or_else(livechannel::api::request_id, str::to_owned);
    let mut all: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for (k, v) in [
        ("Action", action),
        ("Version", "2016-11-01"),
        ("Format", "JSON"),
        ("AccessKeyId", AK),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", timestamp.as_str()),
    ] {
        all.push((k.into(), v.into()));
    }
    let signature = rpc_sign(secret, &rpc_string_to_sign(method, &all));
    all.push(("Signature".into(), signature));
    let enc = |s: &str| livechannel::auth::uri_encode(s, false);
    let query = all.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
    let resp = http_request_body(addr, method, &format!("/?{query}"), &[], b"").await;
    assert_eq!(resp.header("content-type"), Some("application/json;charset=utf-8"));
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(v["RequestId"].as_str().is_some_and(|id| id.len() == 36), "{v}");
    (resp.status, v)
}

#[track_caller]
fn assert_code(got: (u16, Value), status: u16, code: &str) {
    assert_eq!((got.0, got.1["Code"].as_str()), (status, Some(code)), "{}", got.1);
}

on_both! {
#[tokio::test]
async fn the_aliyun_configuration_api_follows_the_spec(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
    let a = ts.http();
    let (status, created) = ali(
        a,
        "POST",
        "CreateEventSub",
        &[
            ("AppId", "live"),
            ("ChannelId", "room1"),
            ("Users.1", "u1"),
            ("Users.2", "u2"),
            ("Events.1", "ChannelEvent"),
            ("Events.2", "UserEvent"),
            ("CallbackUrl", "http://127.0.0.1:9/cb"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let sub = created["SubscribeId"].as_str().unwrap().to_owned();
    assert_code(
        ali(
            a,
            "POST",
            "CreateEventSub",
            &[
                ("AppId", "live"),
                ("Users.1", "u1"),
                ("Events.1", "UserEvent"),
                ("CallbackUrl", "http://127.0.0.1:9/cb"),
            ],
        )
        .await,
        400,
        "InputInvalid",
    );
    assert_code(
        ali(
            a,
            "POST",
            "CreateEventSub",
            &[("AppId", "live"), ("Events.1", "Nope"), ("CallbackUrl", "http://127.0.0.1:9/cb")],
        )
        .await,
        400,
        "InputInvalid",
    );
    assert_code(
        ali(a, "POST", "CreateEventSub", &[("AppId", "live"), ("Events.1", "UserEvent"), ("CallbackUrl", "ftp://x")])
            .await,
        400,
        "ErrorInvalidCallBackUrl",
    );
    assert_code(
        ali(
            a,
            "POST",
            "CreateEventSub",
            &[("AppId", "nosuchapp"), ("Events.1", "UserEvent"), ("CallbackUrl", "http://127.0.0.1:9/cb")],
        )
        .await,
        404,
        "ResourceNotExist",
    );
    let all =
        [("AppId", "live"), ("ChannelId", "*"), ("Events.1", "ChannelEvent"), ("CallbackUrl", "http://127.0.0.1:9/cb")];
    assert_eq!(ali(a, "POST", "CreateEventSub", &all).await.0, 200);
    assert_code(ali(a, "POST", "CreateEventSub", &all).await, 400, "QuotaLimitError");
    for i in 0..18 {
        let ch = format!("c{i}");
        assert_eq!(
            ali(
                a,
                "POST",
                "CreateEventSub",
                &[
                    ("AppId", "live"),
                    ("ChannelId", &ch),
                    ("Events.1", "UserEvent"),
                    ("CallbackUrl", "http://127.0.0.1:9/cb")
                ]
            )
            .await
            .0,
            200
        );
    }
    assert_code(
        ali(
            a,
            "POST",
            "CreateEventSub",
            &[
                ("AppId", "live"),
                ("ChannelId", "c99"),
                ("Events.1", "UserEvent"),
                ("CallbackUrl", "http://127.0.0.1:9/cb"),
            ],
        )
        .await,
        400,
        "QuotaLimitError",
    );
    let (status, list) = ali(a, "GET", "ListEventSub", &[("AppId", "live")]).await;
    assert_eq!((status, list["Subscribers"].as_array().unwrap().len()), (200, 20));
    let first = &list["Subscribers"][0];
    assert_eq!((first["SubId"].as_str(), first["Users"].clone()), (Some(sub.as_str()), json!(["u1", "u2"])));
    assert!(first["CreateTime"].as_str().unwrap().len() == 19);
    assert_eq!(
        ali(
            a,
            "POST",
            "UpdateEventSub",
            &[
                ("AppId", "live"),
                ("SubscribeId", &sub),
                ("ChannelId", "room1"),
                ("Events.1", "UserEvent"),
                ("CallbackUrl", "http://127.0.0.1:9/cb2")
            ]
        )
        .await
        .0,
        200
    );
    assert_code(
        ali(
            a,
            "POST",
            "UpdateEventSub",
            &[
                ("AppId", "live"),
                ("SubscribeId", "sub-x"),
                ("Events.1", "UserEvent"),
                ("CallbackUrl", "http://127.0.0.1:9/cb2"),
            ],
        )
        .await,
        404,
        "ResourceNotExist",
    );
    assert_eq!(ali(a, "POST", "DeleteEventSub", &[("AppId", "live"), ("SubscribeId", &sub)]).await.0, 200);
    assert_code(
        ali(a, "POST", "DeleteEventSub", &[("AppId", "live"), ("SubscribeId", &sub)]).await,
        404,
        "ResourceNotExist",
    );

    // Recording notification configuration.
    let add = [
        ("DomainName", "live"),
        ("NotifyUrl", "http://127.0.0.1:9/rec"),
        ("NeedStatusNotify", "True"),
        ("NotifyReqAuth", "True"),
        ("NotifyAuthKey", "abcdefgh12345678"),
    ];
    assert_eq!(ali(a, "POST", "AddLiveRecordNotifyConfig", &add).await.0, 200);
    assert_code(ali(a, "POST", "AddLiveRecordNotifyConfig", &add).await, 400, "ConfigAlreadyExists");
    let (_, d) = ali(a, "POST", "DescribeLiveRecordNotifyConfig", &[("DomainName", "live")]).await;
    assert_eq!(d["LiveRecordNotifyConfig"]["NeedStatusNotify"], true);
    assert_eq!(d["LiveRecordNotifyConfig"]["NotifyAuthKey"], "abcdefgh12345678");
    assert_code(
        ali(
            a,
            "POST",
            "AddLiveRecordNotifyConfig",
            &[("DomainName", "nosuch.example.com"), ("NotifyUrl", "http://127.0.0.1:9/rec")],
        )
        .await,
        404,
        "InvalidDomain.NotFound",
    );
    assert_eq!(ali(a, "POST", "DeleteLiveRecordNotifyConfig", &[("DomainName", "live")]).await.0, 200);
    assert_code(
        ali(a, "POST", "DescribeLiveRecordNotifyConfig", &[("DomainName", "live")]).await,
        404,
        "ConfigNotFound",
    );
    assert_code(ali(a, "POST", "UpdateLiveRecordNotifyConfig", &add).await, 404, "ConfigNotFound");

    // DescribeLiveRecordNotifyRecords: the vendor's exact parameter errors.
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let end = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let old = (now - chrono::Duration::days(8)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let base = |extra: &[(&'static str, &str)], skip: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("DomainName", "live"),
            ("StartTime", start.as_str()),
            ("EndTime", end.as_str()),
            ("PageSize", "20"),
            ("PageNumber", "1"),
        ]
        .iter()
        .filter(|(k, _)| *k != skip)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k.to_string(), val.to_string()));
        }
        v
    };
    let call = |v: Vec<(String, String)>| async move {
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ali(a, "POST", "DescribeLiveRecordNotifyRecords", &refs).await
    };
    let (status, ok) = call(base(&[], "")).await;
    assert_eq!(
        (status, ok["Code"].clone(), ok["Msg"].clone(), ok["TotalNum"].clone()),
        (200, json!(0), json!("ok"), json!(0)),
        "{ok}"
    );
    for skip in ["DomainName", "StartTime", "EndTime", "PageSize", "PageNumber"] {
        let (status, e) = call(base(&[], skip)).await;
        assert_eq!((status, e["Code"].as_str()), (400, Some("MissingParams")), "{skip}");
        assert_eq!(e["Message"].as_str().unwrap(), format!("{skip}, please check and try again later."));
    }
    for bad in [
        vec![("PageSize", "0")],
        vec![("PageSize", "501")],
        vec![("PageNumber", "100001")],
        vec![("Status", "maybe")],
        vec![("StartTime", old.as_str())],
        vec![("EndTime", start.as_str())],
        vec![("StartTime", "2025-01-06 08:00:00")],
    ] {
        assert_code(call(base(&bad, "")).await, 400, "MalformedParams");
    }

    // Signatures: a wrong secret (the message keeps the colon the legacy SDK splits on), a replayed nonce.
    let (status, e) = ali_with(a, "GET", "ListEventSub", &[("AppId", "live")], "wrong", None).await;
    assert_eq!((status, e["Code"].as_str()), (400, Some("SignatureDoesNotMatch")));
    assert!(e["Message"].as_str().unwrap().split(':').nth(1).unwrap().starts_with("GET&%2F&"));
    assert_eq!(ali_with(a, "GET", "ListEventSub", &[("AppId", "live")], SK, Some("nonce-1")).await.0, 200);
    assert_code(
        ali_with(a, "GET", "ListEventSub", &[("AppId", "live")], SK, Some("nonce-1")).await,
        400,
        "SignatureNonceUsed",
    );
    assert_code(ali(a, "POST", "NoSuchAction", &[]).await, 404, "InvalidApi.NotFound");
}}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_fires_every_configured_callback_and_the_records_are_queryable(db) {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(db.on(cb_config(dir.path()))).await;
    let a = ts.http();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = listener.local_addr().unwrap();
    let (receiver, _task) = Receiver::start(listener, 0).await;
    let url = |path: &str| format!("http://{r}/{path}");
    assert_eq!(
        ali(
            a,
            "POST",
            "SetLiveStreamsNotifyUrlConfig",
            &[
                ("DomainName", "live"),
                ("NotifyUrl", &url("ingest")),
                ("NotifyReqAuth", "yes"),
                ("NotifyAuthKey", "abcdefgh12345678")
            ]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        ali(
            a,
            "POST",
            "AddLiveRecordNotifyConfig",
            &[
                ("DomainName", "live"),
                ("NotifyUrl", &url("rec")),
                ("NeedStatusNotify", "true"),
                ("NotifyReqAuth", "true"),
                ("NotifyAuthKey", "abcdefgh12345678")
            ]
        )
        .await
        .0,
        200
    );
    let (_, sub) = ali(
        a,
        "POST",
        "CreateEventSub",
        &[
            ("AppId", "live"),
            ("ChannelId", "ev1"),
            ("Events.1", "ChannelEvent"),
            ("Events.2", "UserEvent"),
            ("CallbackUrl", &url("sub")),
        ],
    )
    .await;
    let rec = json!({"publish_domain": "live", "app": "live", "notify_callback_url": url("hwrec"),
                     "notify_event_subscription": ["RECORD_START", "RECORD_FILE_COMPLETE", "RECORD_OVER"], "key": SIGN_KEY});
    assert_eq!(hw(a, "POST", &format!("/v1/{PROJECT}/record/callbacks"), "", &rec.to_string()).await.0, 201);

    let tags = tags("media/av_no_bframes.flv");
    let mut p = livechannel::rtmp::client::Publisher::connect(ts.rtmp(), "live", "ev1?userId=alice&callback_myid=42")
        .await
        .unwrap();
    send_all(&mut p, &tags, 0).await.unwrap();
    p.finish().await.unwrap();
    ts.wait_flushed("ev1").await;
    let segments = ts
        .server
        .meta
        .segments_between("live", "ev1", SystemTime::UNIX_EPOCH, SystemTime::now() + Duration::from_secs(60))
        .await
        .unwrap()
        .len();
    assert!(segments >= 4);
    // ingest 2 + subscription 2 + record_started + file_created per segment + Huawei start/over + file complete per segment
    let expected = 2 + 2 + 1 + segments + 2 + segments;
    let got = receiver.wait_for(expected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_again = receiver.got();
    assert_eq!(got_again.len(), expected, "{got_again:#?}");
    let by = |path: &str| got.iter().filter(|x| x.uri.starts_with(&format!("/{path}"))).cloned().collect::<Vec<_>>();

    let ingest = by("ingest");
    assert_eq!(ingest.iter().map(|x| x.method.as_str()).collect::<Vec<_>>(), ["GET", "GET"]);
    assert!(ingest[0].uri.contains("action=publish&") && ingest[1].uri.contains("action=publish_done&"), "{ingest:?}");
    assert!(
        ingest[0].uri.contains("id=ev1")
            && ingest[0].uri.contains("appname=live")
            && ingest[0].uri.contains("usrargs=userId%3Dalice")
    );
    for x in &ingest {
        let ts_header = x.headers["ali-live-timestamp"].to_str().unwrap().parse().unwrap();
        let expected = livechannel::notify::ali_live_signature("live", ts_header, "abcdefgh12345678");
        assert_eq!(x.headers["ali-live-signature"], expected.as_str());
    }

    let subs = by("sub");
    assert_eq!(subs.len(), 2);
    let tags_of = |x: &Received| -> Vec<String> {
        x.body["Contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["UserEvent"]["EventTag"].as_str().or(c["ChannelEvent"]["EventTag"].as_str()).unwrap().to_owned())
            .collect()
    };
    assert_eq!(tags_of(&subs[0]), ["ChannelOpen", "Join", "Publish"]);
    assert_eq!(tags_of(&subs[1]), ["Unpublish", "Leave", "ChannelClose"]);
    assert_eq!(subs[0].body["Contents"][1]["UserEvent"]["UserId"], "alice");
    assert_eq!(subs[0].body["SubscribeID"], sub["SubscribeId"]);

    let recs = by("rec");
    assert_eq!(recs[0].body["event"], "record_started");
    let files: Vec<&Received> = recs.iter().filter(|x| x.body.get("uri").is_some()).collect();
    assert_eq!(files.len(), segments);
    assert_eq!(files[0].body["push_args"], json!({"callback_myid": "42"}));
    assert!(
        files[0].body["uri"].as_str().unwrap().starts_with("live/ev1/")
            && files[0].body["duration"].as_f64().unwrap() > 0.5
    );
    let host_sig = livechannel::notify::ali_live_signature(
        "127.0.0.1",
        files[0].headers["ali-live-timestamp"].to_str().unwrap().parse().unwrap(),
        "abcdefgh12345678",
    );
    assert_eq!(files[0].headers["ali-live-signature"], host_sig.as_str(), "signed with the callback host");

    let hw_recs = by("hwrec");
    let types: Vec<&str> = hw_recs.iter().map(|x| x.body["event_type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"RECORD_START"));
    assert_eq!(types.last(), Some(&"RECORD_OVER"));
    assert_eq!(types.iter().filter(|t| **t == "RECORD_FILE_COMPLETE").count(), segments);
    let complete = hw_recs.iter().find(|x| x.body["event_type"] == "RECORD_FILE_COMPLETE").unwrap();
    let auth_ts = complete.body["auth_timestamp"].as_u64().unwrap();
    assert_eq!(
        complete.body["auth_sign"].as_str().unwrap(),
        livechannel::notify::huawei_record_sign(
            livechannel::meta::notify::SignType::HmacSha256,
            SIGN_KEY,
            auth_ts,
            &complete.body
        )
    );
    assert_eq!((complete.body["width"].as_u64(), complete.body["height"].as_u64()), (Some(320), Some(180)));

    // The delivery records are queryable.
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let end = (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let window = [("DomainName", "live"), ("StartTime", start.as_str()), ("EndTime", end.as_str())];
    let mut q: Vec<(&str, &str)> = window.to_vec();
    q.extend([("PageSize", "2"), ("PageNumber", "1")]);
    let (_, page) = ali(a, "POST", "DescribeLiveRecordNotifyRecords", &q).await;
    assert_eq!(
        (page["TotalNum"].as_u64(), page["CallbackList"].as_array().unwrap().len()),
        (Some(1 + segments as u64), 2),
        "{page}"
    );
    let item = &page["CallbackList"][0];
    assert_eq!(
        (item["NotifyResult"].as_str(), item["AppName"].as_str(), item["StreamName"].as_str()),
        (Some("success"), Some("live"), Some("ev1"))
    );
    assert!(
        item["NotifyContent"].as_str().unwrap().starts_with('{')
            && item["NotifyUrl"].as_str().unwrap().ends_with("/rec")
    );
    q.push(("Status", "failed"));
    assert_eq!(ali(a, "POST", "DescribeLiveRecordNotifyRecords", &q).await.1["TotalNum"], 0);
    let mut q: Vec<(&str, &str)> = window.to_vec();
    q.extend([("PageSize", "20"), ("PageNumber", "1"), ("StreamName", "other")]);
    assert_eq!(ali(a, "POST", "DescribeLiveRecordNotifyRecords", &q).await.1["TotalNum"], 0);
    let mut q: Vec<(&str, &str)> = window.to_vec();
    q.extend([("PageSize", "20"), ("PageNumber", "1")]);
    let (_, ingest_records) = ali(a, "POST", "DescribeLiveStreamsNotifyRecords", &q).await;
    let list = ingest_records["NotifyRecordsInfo"]["LiveStreamNotifyRecordsInfo"].as_array().unwrap();
    assert_eq!(list.iter().map(|x| x["NotifyType"].as_str().unwrap()).collect::<Vec<_>>(), ["publish_done", "publish"]);
    let s = (SystemTime::now() - Duration::from_secs(3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let e = (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let (_, logs) = ali(
        a,
        "GET",
        "ListEventSubEvent",
        &[("AppId", "live"), ("StartTime", &s), ("EndTime", &e), ("PageNo", "1"), ("PageSize", "10")],
    )
    .await;
    assert_eq!((logs["Count"].as_u64(), logs["HasMore"].as_bool()), (Some(2), Some(false)), "{logs}");
    assert_eq!(logs["Logs"][0]["Code"], 200);
    assert!(logs["Logs"][0]["Data"].as_str().unwrap().contains("ChannelClose"));
    // Times past what SystemTime holds are refused (they used to panic the request's task).
    let huge = u64::MAX.to_string();
    let (status, body) = ali(
        a,
        "GET",
        "ListEventSubEvent",
        &[("AppId", "live"), ("StartTime", &s), ("EndTime", &huge), ("PageNo", "1"), ("PageSize", "10")],
    )
    .await;
    assert_eq!((status, body["Code"].as_str()), (400, Some("InputInvalid")), "{body}");
}}

/// Without `[notify] allowed_destinations`, a callback URL aimed inside the network is refused when it is
/// configured, in each dialect, with the reason and the way to allow it.
#[tokio::test]
async fn callback_urls_aimed_at_internal_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(Config { notify: NotifyConfig::default(), ..cb_config(dir.path()) }).await;
    let a = ts.http();
    for url in ["http://127.0.0.1:9/hw", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x"] {
        let body = json!({"url": url, "call_back_area": "mainland_china"});
        let (status, v) =
            hw(a, "PUT", &format!("/v1/{PROJECT}/notifications/publish"), "domain=live", &body.to_string()).await;
        assert_eq!(status, 400, "{url}: {v}");
        assert!(v.to_string().contains("allowed_destinations"), "{url}: {v}");
    }
    let add = [("DomainName", "live"), ("NotifyUrl", "http://10.0.0.8/rec")];
    let got = ali(a, "POST", "AddLiveRecordNotifyConfig", &add).await;
    assert_code(got.clone(), 400, "InvalidNotifyUrl");
    assert!(got.1["Message"].as_str().unwrap().contains("10.0.0.8"), "{}", got.1);
    // A public address is accepted (nothing is sent while no event happens).
    let body = json!({"url": "http://203.0.113.9/hw", "call_back_area": "mainland_china"});
    let (status, _) =
        hw(a, "PUT", &format!("/v1/{PROJECT}/notifications/publish"), "domain=live", &body.to_string()).await;
    assert_eq!(status, 201);
}

/// `record_resumed` is sent only when enabling ends a pause that disabling a live channel caused; a
/// disable and enable with nothing live sends neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_resumed_follows_a_pause_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(cb_config(dir.path())).await;
    let a = ts.http();
    let add = [("DomainName", "live"), ("NotifyUrl", "http://127.0.0.1:9/rec"), ("NeedStatusNotify", "True")];
    assert_eq!(ali(a, "POST", "AddLiveRecordNotifyConfig", &add).await.0, 200);
    let status = |s: &'static str| async move {
        let r = http_request_body(a, "PUT", &format!("/live/pause?live&status={s}"), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let sent = |what: &'static str| {
        let meta = ts.server.meta.clone();
        async move { meta.outbox(None).await.unwrap().iter().filter(|(e, _)| e.payload.contains(what)).count() }
    };
    publish_once(&ts, "pause").await;
    status("disabled").await;
    status("enabled").await;
    assert_eq!((sent("record_paused").await, sent("record_resumed").await), (0, 0), "nothing was live");

    let tags = tags("media/av_no_bframes.flv");
    let mut p = livechannel::rtmp::client::Publisher::connect(ts.rtmp(), "live", "pause").await.unwrap();
    send_all(&mut p, &tags[..tags.len() / 2], 0).await.unwrap();
    status("disabled").await;
    let _ = p.closed_by_server(Duration::from_secs(10)).await;
    status("enabled").await;
    status("enabled").await;
    assert_eq!((sent("record_paused").await, sent("record_resumed").await), (1, 1), "one pause, one resume");
}

/// Idempotency keys are unique per callback: a VOD playlist written twice under one name gets two
/// `file_created` callbacks (the second used to be dropped as a duplicate key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vod_playlist_written_twice_is_two_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(cb_config(dir.path())).await;
    let a = ts.http();
    let add = [("DomainName", "live"), ("NotifyUrl", "http://127.0.0.1:9/rec")];
    assert_eq!(ali(a, "POST", "AddLiveRecordNotifyConfig", &add).await.0, 200);
    let started = SystemTime::now() - Duration::from_secs(5);
    publish_once(&ts, "vodtwice").await;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let from = started.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let path = format!("/live/vodtwice/vod.m3u8?vod&endTime={}&startTime={from}", now + 60);
    for _ in 0..2 {
        let r = http_request_body(a, "POST", &path, &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let meta = ts.server.meta.clone();
    let vod = meta.outbox(None).await.unwrap().into_iter().filter(|(e, _)| e.payload.contains("vod.m3u8")).count();
    assert_eq!(vod, 2);
}

/// A Huawei request with a static token, as project `project`.
async fn hw_token(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let headers = [("X-Auth-Token", token), ("Content-Type", "application/json")];
    let resp = http_request_body(addr, method, path, &headers, body.as_bytes()).await;
    (resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
}

on_both! { #[tokio::test] async fn huawei_resources_belong_to_the_project_that_made_them(db) {
    const OTHER: &str = "fedcba9876543210fedcba9876543210";
    let (a, b) = ("static-token-0123456789", "static-token-other-project");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cb_config(dir.path());
    cfg.auth_tokens.push(AuthToken { token: b.into(), project_id: OTHER.into() });
    let ts = TestServer::start(db.on(cfg)).await;
    let addr = ts.http();

    // A recording callback made by project A.
    let body = json!({"publish_domain": "live", "app": "live", "notify_callback_url": "http://127.0.0.1:9/a"}).to_string();
    let (status, made) = hw_token(addr, a, "POST", &format!("/v1/{PROJECT}/record/callbacks"), &body).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();

    // Project B neither sees nor changes it.
    let (status, listed) = hw_token(addr, b, "GET", &format!("/v1/{OTHER}/record/callbacks"), "").await;
    assert_eq!((status, listed["total"].as_u64()), (200, Some(0)), "{listed}");
    for (method, body) in [("GET", ""), ("PUT", body.as_str()), ("DELETE", "")] {
        let (status, answer) = hw_token(addr, b, method, &format!("/v1/{OTHER}/record/callbacks/{id}"), body).await;
        assert_eq!(status, 404, "{method} by another project: {answer}");
    }
    // A token may not name another project's path.
    assert_eq!(hw_token(addr, b, "GET", &format!("/v1/{PROJECT}/record/callbacks/{id}"), "").await.0, 401);
    // Project A still has it, unchanged.
    let (status, shown) = hw_token(addr, a, "GET", &format!("/v1/{PROJECT}/record/callbacks/{id}"), "").await;
    assert_eq!((status, shown["notify_callback_url"].as_str()), (200, Some("http://127.0.0.1:9/a")));

    // The same for a domain's stream notification.
    let notify = json!({"url": "http://127.0.0.1:9/n"}).to_string();
    let path = |p: &str| format!("/v1/{p}/notifications/publish?domain=live");
    assert_eq!(hw_token(addr, a, "PUT", &path(PROJECT), &notify).await.0, 201);
    assert_eq!(hw_token(addr, b, "GET", &path(OTHER), "").await.0, 404);
    assert_eq!(hw_token(addr, b, "PUT", &path(OTHER), &notify).await.0, 403, "another project's is not replaced");
    assert_eq!(hw_token(addr, b, "DELETE", &path(OTHER), "").await.0, 404);
    let (status, got) = hw_token(addr, a, "GET", &path(PROJECT), "").await;
    assert_eq!((status, got["url"].as_str()), (200, Some("http://127.0.0.1:9/n")));
    assert_eq!(hw_token(addr, a, "DELETE", &path(PROJECT), "").await.0, 204);
    assert_eq!(hw_token(addr, a, "DELETE", &format!("/v1/{PROJECT}/record/callbacks/{id}"), "").await.0, 204);
}}
