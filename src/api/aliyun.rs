//! ApsaraVideo Live-style RPC API (`../spec/aliyun-live-rpc.md`): `POST|GET /` with the action in the
//! `Action` parameter (legacy SDK, new SDK v2) or the `x-acs-action` header (new SDK, ACS3); business
//! parameters in the query (and, optionally, a form body); JSON responses with `RequestId`, errors with
//! `Code`/`Message` and the vendor's HTTP status.
//!
//! Operations: the EventSub family, the LiveRecordNotifyConfig family and DescribeLiveRecordNotifyRecords,
//! and the stream-ingest callback configuration (SetLiveStreamsNotifyUrlConfig and siblings,
//! DescribeLiveStreamsNotifyRecords). AppId and DomainName map onto buckets (README, "Vendor names").

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tracing::info;

use super::{Failure, http_url, int_in, read_body, utc_seconds};
use crate::auth::aliyun::{self, AuthError, parse_form};
use crate::config::Bucket;
use crate::meta::aliyun::{DeliveryRecord, EventSub, RecordNotify, RecordQuery, StreamsNotify, SubRefused};
use crate::meta::notify::CallbackKind;
use crate::reply::{Body, full};
use crate::service::Context;
use crate::wire::{MAX_UNIX_SECONDS, from_unix_seconds, parse_utc_seconds};

const VERSION: &str = "2016-11-01";
const RECORDS_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug)]
pub struct RpcError {
    status: StatusCode,
    code: String,
    message: String,
}

fn err(status: u16, code: &str, message: impl Into<String>) -> RpcError {
    RpcError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        code: code.to_owned(),
        message: message.into(),
    }
}

super::dialect_error!(RpcError);

impl From<Failure> for RpcError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::BodyTooLarge => err(400, "InvalidParameter", "The request body is too large."),
            Failure::BodyUnreadable(why) => {
                err(400, "InvalidParameter", format!("The request body could not be read: {why}"))
            }
            Failure::NoSuchDomain(domain) => {
                err(404, "InvalidDomain.NotFound", format!("The domain {domain} does not exist."))
            }
            Failure::Database(_) => {
                err(500, "InternalError", "The request processing has failed due to some unknown error.")
            }
            Failure::Unavailable(_) => {
                err(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
            }
        }
    }
}

/// Is this request for the RPC API? Path `/` with an action in the query or the `x-acs-action` header.
pub fn wants(req: &Request<Incoming>) -> bool {
    req.uri().path() == "/"
        && (req.headers().contains_key("x-acs-action")
            || req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("Action="))))
}

/// The vendor's request id form (a UUID in upper case) from our 24-hex id.
fn vendor_request_id(id: &str) -> String {
    let hex = format!("{id:0<32}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

pub async fn handle(ctx: &Context, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    let rid = vendor_request_id(request_id);
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
    let (status, body) = match route(ctx, req).await {
        Ok(mut v) => {
            v["RequestId"] = json!(rid);
            (StatusCode::OK, v)
        }
        Err(e) => (e.status, json!({"RequestId": rid, "HostId": host, "Code": e.code, "Message": e.message})),
    };
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    resp
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// `Name.1`, `Name.2`, ... in index order.
    fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.parse().ok()?, v.clone())))
            .filter(|(_, v): &(u32, String)| !v.is_empty())
            .collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("true") | Some("yes") => Ok(Some(true)),
            Some("false") | Some("no") => Ok(Some(false)),
            Some(other) => Err(err(400, "InvalidParameter", format!("{name} {other:?} is not a boolean."))),
        }
    }
}

/// For `fuzzing`: the parameter decoding every RPC call goes through.
#[doc(hidden)]
pub fn fuzz_params(text: &str) {
    let Some(params) = parse_form(text) else { return };
    let p = Params(params);
    for name in ["DomainName", "AppName", "StreamName", "Action", "NotifyUrl", "StartTime"] {
        let _ = p.get(name);
        let _ = p.bool(name);
        let _ = p.list(name);
    }
    if let Some(t) = p.get("StartTime") {
        let _ = parse_utc_seconds(t);
    }
}

async fn route(ctx: &Context, req: Request<Incoming>) -> Result<Value, RpcError> {
    let mut params = parse_form(req.uri().query().unwrap_or(""))
        .ok_or_else(|| err(400, "InvalidParameter", "The query string is not valid percent-encoding."))?;
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method.as_str().to_owned(), parts.headers);
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    aliyun::precheck(&params, &headers, &ctx.keys, SystemTime::now()).map_err(|e| {
        info!(error = %e, "aliyun api request refused before its body");
        auth_error(e)
    })?;
    let body = read_body(&headers, body, ctx.config.limits.http_body_timeout).await?;
    if form && !body.is_empty() {
        let text =
            std::str::from_utf8(&body).map_err(|_| err(400, "InvalidParameter", "The form body is not UTF-8."))?;
        params.extend(parse_form(text).ok_or_else(|| err(400, "InvalidParameter", "The form body is malformed."))?);
    }
    let signed_body: &[u8] = if form { b"" } else { &body };
    let request = aliyun::Request { method: &method, params: &params, headers: &headers, body: signed_body };
    let now = SystemTime::now();
    let verified = aliyun::verify(&request, &ctx.keys, &ctx.nonces, now).map_err(|e| {
        info!(error = %e, "aliyun api request refused");
        auth_error(e)
    })?;
    // The local check above is this node's; the shared table is every node's (a replay sent to another
    // node behind the balancer is refused there too).
    if !ctx.meta.claim_nonce(&verified.replay_key(), now + aliyun::NONCE_WINDOW).await? {
        info!(key_id = %verified.key_id, "aliyun api request refused: nonce already used on another node");
        return Err(auth_error(aliyun::AuthError::NonceUsed));
    }
    let header_value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let p = Params(params);
    let action = p.get("Action").map(str::to_owned).or_else(|| header_value("x-acs-action"));
    let version = p.get("Version").map(str::to_owned).or_else(|| header_value("x-acs-version"));
    if version.as_deref().is_some_and(|v| v != VERSION) {
        return Err(err(400, "InvalidVersion", format!("Specified parameter Version is not valid; use {VERSION}.")));
    }
    if p.get("Format").is_some_and(|f| !f.eq_ignore_ascii_case("json")) {
        return Err(err(400, "InvalidParameter", "Only Format=JSON is supported."));
    }
    let action = action.ok_or_else(|| err(400, "MissingParameter", "Action is mandatory for this action."))?;
    match action.as_str() {
        "CreateEventSub" => save_sub(ctx, &p, false).await,
        "UpdateEventSub" => save_sub(ctx, &p, true).await,
        "ListEventSub" => list_subs(ctx, &p).await,
        "DeleteEventSub" => delete_sub(ctx, &p).await,
        "ListEventSubEvent" => list_sub_events(ctx, &p).await,
        "AddLiveRecordNotifyConfig" => save_record_notify(ctx, &p, false).await,
        "UpdateLiveRecordNotifyConfig" => save_record_notify(ctx, &p, true).await,
        "DescribeLiveRecordNotifyConfig" => describe_record_notify(ctx, &p).await,
        "DeleteLiveRecordNotifyConfig" => delete_record_notify(ctx, &p).await,
        "DescribeLiveRecordNotifyRecords" => records(ctx, &p, &[CallbackKind::AliyunRecord], false).await,
        "SetLiveStreamsNotifyUrlConfig" => set_streams_notify(ctx, &p).await,
        "DescribeLiveStreamsNotifyUrlConfig" => describe_streams_notify(ctx, &p).await,
        "DeleteLiveStreamsNotifyUrlConfig" => delete_streams_notify(ctx, &p).await,
        "DescribeLiveStreamsNotifyRecords" => records(ctx, &p, &[CallbackKind::AliyunIngest], true).await,
        "DescribeLiveStreamSnapshotInfo" => snapshot_info(ctx, &p).await,
        other => Err(err(404, "InvalidApi.NotFound", format!("Specified api {other} is not found."))),
    }
}

fn auth_error(e: AuthError) -> RpcError {
    let message = e.to_string();
    match e {
        AuthError::Incomplete(_) => err(400, "IncompleteSignature", message),
        AuthError::Method(_) => err(400, "InvalidSignatureMethod", message),
        AuthError::UnknownKey(_) => err(404, "InvalidAccessKeyId.NotFound", message),
        AuthError::TimeFormat => err(400, "InvalidTimeStamp.Format", message),
        AuthError::Expired => err(400, "InvalidTimeStamp.Expired", message),
        AuthError::NonceUsed => err(400, "SignatureNonceUsed", message),
        AuthError::ContentHash => err(
            400,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation. server string to sign is:x-acs-content-sha256 does not match the body",
        ),
        AuthError::Mismatch { .. } => err(400, "SignatureDoesNotMatch", message),
    }
}

fn beijing(t: SystemTime, millis: bool) -> String {
    let tz = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    let t = DateTime::<Utc>::from(t).with_timezone(&tz);
    if millis { t.format("%Y-%m-%d %H:%M:%S%.3f").to_string() } else { t.format("%Y-%m-%d %H:%M:%S").to_string() }
}

// ------------------------------------------------------------------------------------------ EventSub

fn app_bucket<'c>(ctx: &'c Context, p: &Params) -> Result<&'c Bucket, RpcError> {
    let app = p.get("AppId").ok_or_else(|| err(400, "InputInvalid", "AppId is required."))?;
    ctx.config.bucket(app).ok_or_else(|| err(404, "ResourceNotExist", format!("The AppId {app} does not exist.")))
}

async fn save_sub(ctx: &Context, p: &Params, update: bool) -> Result<Value, RpcError> {
    let bucket = app_bucket(ctx, p)?;
    let channel = p.get("ChannelId").filter(|c| *c != "*").unwrap_or("").to_owned();
    let users = p.list("Users");
    if !users.is_empty() && channel.is_empty() {
        return Err(err(400, "InputInvalid", "ChannelId is required when Users are given."));
    }
    if !channel.is_empty() {
        crate::names::ChannelKey::new(&bucket.name, &channel)
            .map_err(|e| err(400, "InputInvalid", format!("ChannelId is not a valid channel name: {e}.")))?;
    }
    let events = p.list("Events");
    if events.is_empty() || events.iter().any(|e| e != "ChannelEvent" && e != "UserEvent") {
        return Err(err(400, "InputInvalid", "Events must be ChannelEvent and/or UserEvent."));
    }
    let url = p.get("CallbackUrl").ok_or_else(|| err(400, "InputInvalid", "CallbackUrl is required."))?;
    if !http_url(url) {
        return Err(err(400, "ErrorInvalidCallBackUrl", "CallbackUrl must be an http:// or https:// URL."));
    }
    allowed(ctx, url, "ErrorInvalidCallBackUrl").await?;
    let now = SystemTime::now();
    let id = if update {
        p.get("SubscribeId").ok_or_else(|| err(400, "InputInvalid", "SubscribeId is required."))?.to_owned()
    } else {
        format!("sub-{}", crate::api::request_id().to_ascii_lowercase())
    };
    let created = if update {
        let subs = ctx.meta.event_subs(&bucket.name).await?;
        subs.iter().find(|s| s.id == id).map_or(now, |s| s.created)
    } else {
        now
    };
    let sub = EventSub {
        id: id.clone(),
        app_id: bucket.name.clone(),
        channel_id: channel,
        users,
        events,
        callback_url: url.to_owned(),
        created,
        modified: now,
    };
    match ctx.meta.save_event_sub(&bucket.name, &sub, update).await? {
        Ok(()) => {
            info!(bucket = %bucket.name, id, update, "event subscription saved");
            Ok(if update { json!({}) } else { json!({"SubscribeId": id}) })
        }
        Err(SubRefused::Quota(why)) => Err(err(400, "QuotaLimitError", why)),
        Err(SubRefused::NotFound) => Err(err(404, "ResourceNotExist", format!("The SubscribeId {id} does not exist."))),
    }
}

async fn list_subs(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let bucket = app_bucket(ctx, p)?;
    let subs: Vec<Value> = ctx
        .meta
        .event_subs(&bucket.name)
        .await?
        .iter()
        .map(|s| {
            json!({"SubId": s.id, "ChannelId": if s.channel_id.is_empty() { "*" } else { &s.channel_id },
                   "CallbackUrl": s.callback_url, "Events": s.events, "Users": s.users,
                   "CreateTime": beijing(s.created, false), "ModifyTime": beijing(s.modified, false)})
        })
        .collect();
    Ok(json!({"Subscribers": subs}))
}

async fn delete_sub(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let bucket = app_bucket(ctx, p)?;
    let id = p.get("SubscribeId").ok_or_else(|| err(400, "InputInvalid", "SubscribeId is required."))?;
    if !ctx.meta.delete_event_sub(&bucket.name, id).await? {
        return Err(err(404, "ResourceNotExist", format!("The SubscribeId {id} does not exist.")));
    }
    Ok(json!({}))
}

async fn list_sub_events(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let bucket = app_bucket(ctx, p)?;
    let number = |name: &str, range: std::ops::RangeInclusive<u64>| -> Result<u64, RpcError> {
        let value = p.get(name).ok_or_else(|| err(400, "InputInvalid", format!("{name} is required.")))?;
        int_in(value, range).ok_or_else(|| err(400, "InputInvalid", format!("{name} is out of range.")))
    };
    let start = number("StartTime", 0..=MAX_UNIX_SECONDS)?;
    let end = number("EndTime", 0..=MAX_UNIX_SECONDS)?;
    if end <= start {
        return Err(err(400, "InputInvalid", "EndTime must be later than StartTime."));
    }
    let page = number("PageNo", 1..=100_000)?;
    let size = number("PageSize", 1..=100)?;
    let q = RecordQuery {
        kinds: &[CallbackKind::AliyunEventsub],
        bucket: &bucket.name,
        source_ref: p.get("SubscribeId"),
        from: from_unix_seconds(start),
        to: from_unix_seconds(end),
        offset: (page - 1) * size,
        limit: size,
        ..Default::default()
    };
    let (total, records) = ctx.meta.delivery_records(&q).await?;
    let logs: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({"AppId": bucket.name, "SubId": r.source_ref, "MessageId": r.idempotency_key, "Url": r.attempt.url,
                   "Code": r.attempt.status.unwrap_or(0), "Cost": r.attempt.cost_ms, "Data": r.attempt.request_body,
                   "Time": beijing(r.attempt.time, true)})
        })
        .collect();
    Ok(json!({"Count": logs.len(), "HasMore": (page * size) < total, "Logs": logs}))
}

// ------------------------------------------------------------------------------------------ record notify

fn domain_bucket<'c>(ctx: &'c Context, p: &Params) -> Result<(&'c Bucket, String), RpcError> {
    let domain =
        p.get("DomainName").ok_or_else(|| err(400, "MissingDomainName", "DomainName is mandatory for this action."))?;
    Ok((super::domain_bucket(&ctx.config, domain)?, domain.to_owned()))
}

fn auth_key(key: Option<&str>, range: std::ops::RangeInclusive<usize>) -> Result<String, RpcError> {
    let key =
        key.ok_or_else(|| err(400, "MissingNotifyAuthKey", "NotifyAuthKey is required when NotifyReqAuth is on."))?;
    if !range.contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(err(400, "InvalidNotifyAuthKey", format!("NotifyAuthKey must be {range:?} letters and digits.")));
    }
    Ok(key.to_owned())
}

/// A callback URL must reach an allowed destination (see `egress`).
async fn allowed(ctx: &Context, url: &str, code: &str) -> Result<(), RpcError> {
    ctx.config.notify.destinations.check_url(url).await.map_err(|why| err(400, code, why))
}

async fn save_record_notify(ctx: &Context, p: &Params, update: bool) -> Result<Value, RpcError> {
    let (bucket, domain) = domain_bucket(ctx, p)?;
    let url =
        p.get("NotifyUrl").ok_or_else(|| err(400, "MissingNotifyUrl", "NotifyUrl is mandatory for this action."))?;
    if !http_url(url) {
        return Err(err(400, "InvalidNotifyUrl", "NotifyUrl must start with http:// or https://."));
    }
    allowed(ctx, url, "InvalidNotifyUrl").await?;
    let on_demand = p.get("OnDemandUrl").unwrap_or("");
    if !on_demand.is_empty() && !http_url(on_demand) {
        return Err(err(400, "InvalidOnDemandUrl", "OnDemandUrl must start with http:// or https://."));
    }
    if !on_demand.is_empty() {
        allowed(ctx, on_demand, "InvalidOnDemandUrl").await?;
    }
    let req_auth = p.bool("NotifyReqAuth")?.unwrap_or(false);
    let key = if req_auth { auth_key(p.get("NotifyAuthKey"), 16..=32)? } else { String::new() };
    let config = RecordNotify {
        domain,
        notify_url: url.to_owned(),
        on_demand_url: on_demand.to_owned(),
        need_status_notify: p.bool("NeedStatusNotify")?.unwrap_or(false),
        notify_req_auth: req_auth,
        notify_auth_key: key,
    };
    if !ctx.meta.save_record_notify(&bucket.name, &config, update).await? {
        return Err(if update {
            err(404, "ConfigNotFound", "The recording callback configuration does not exist.")
        } else {
            err(400, "ConfigAlreadyExists", "The recording callback configuration already exists.")
        });
    }
    Ok(json!({}))
}

async fn describe_record_notify(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let (bucket, _) = domain_bucket(ctx, p)?;
    let c = ctx
        .meta
        .record_notify(&bucket.name)
        .await?
        .ok_or_else(|| err(404, "ConfigNotFound", "The recording callback configuration does not exist."))?;
    Ok(
        json!({"LiveRecordNotifyConfig": {"DomainName": c.domain, "NotifyUrl": c.notify_url, "OnDemandUrl": c.on_demand_url,
        "NeedStatusNotify": c.need_status_notify, "NotifyReqAuth": c.notify_req_auth, "NotifyAuthKey": c.notify_auth_key}}),
    )
}

async fn delete_record_notify(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let (bucket, _) = domain_bucket(ctx, p)?;
    if !ctx.meta.delete_record_notify(&bucket.name).await? {
        return Err(err(404, "ConfigNotFound", "The recording callback configuration does not exist."));
    }
    Ok(json!({}))
}

// ------------------------------------------------------------------------------------------ ingest notify

async fn set_streams_notify(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let (bucket, domain) = domain_bucket(ctx, p)?;
    let url =
        p.get("NotifyUrl").ok_or_else(|| err(400, "MissingNotifyUrl", "NotifyUrl is mandatory for this action."))?;
    let optional_url = |name: &str| -> Result<String, RpcError> {
        match p.get(name) {
            Some(u) if !http_url(u) => {
                Err(err(400, &format!("Invalid{name}"), format!("{name} must be an http(s) URL.")))
            }
            other => Ok(other.unwrap_or("").to_owned()),
        }
    };
    if !http_url(url) {
        return Err(err(400, "InvalidNotifyUrl", "NotifyUrl must start with http:// or https://."));
    }
    allowed(ctx, url, "InvalidNotifyUrl").await?;
    for name in ["ExceptionNotifyUrl", "SwitchNotifyUrl"] {
        if let Some(u) = p.get(name).filter(|u| !u.is_empty()) {
            allowed(ctx, u, &format!("Invalid{name}")).await?;
        }
    }
    let req_auth = p.bool("NotifyReqAuth")?.unwrap_or(false);
    let key = if req_auth { auth_key(p.get("NotifyAuthKey"), 16..=64)? } else { String::new() };
    let config = StreamsNotify {
        domain,
        notify_url: url.to_owned(),
        notify_req_auth: req_auth,
        notify_auth_key: key,
        exception_notify_url: optional_url("ExceptionNotifyUrl")?,
        switch_notify_url: optional_url("SwitchNotifyUrl")?,
    };
    ctx.meta.set_streams_notify(&bucket.name, &config).await?;
    Ok(json!({}))
}

async fn describe_streams_notify(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let (bucket, _) = domain_bucket(ctx, p)?;
    let c = ctx
        .meta
        .streams_notify(&bucket.name)
        .await?
        .ok_or_else(|| err(404, "ConfigNotFound", "The stream notification configuration does not exist."))?;
    Ok(json!({"LiveStreamsNotifyConfig": {"DomainName": c.domain, "NotifyUrl": c.notify_url,
        "NotifyReqAuth": if c.notify_req_auth { "yes" } else { "no" }, "NotifyAuthKey": c.notify_auth_key,
        "ExceptionNotifyUrl": c.exception_notify_url, "SwitchNotifyUrl": c.switch_notify_url}}))
}

async fn delete_streams_notify(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    let (bucket, _) = domain_bucket(ctx, p)?;
    if !ctx.meta.delete_streams_notify(&bucket.name).await? {
        return Err(err(404, "ConfigNotFound", "The stream notification configuration does not exist."));
    }
    Ok(json!({}))
}

// ------------------------------------------------------------------------------------------ records

/// DescribeLiveRecordNotifyRecords (and the ingest twin): the vendor's exact parameter errors.
async fn records(ctx: &Context, p: &Params, kinds: &[CallbackKind], wrapped: bool) -> Result<Value, RpcError> {
    let missing = |name: &str| err(400, "MissingParams", format!("{name}, please check and try again later."));
    let malformed = |name: &str| err(400, "MalformedParams", format!("{name}, please check and try again later."));
    let domain = p.get("DomainName").ok_or_else(|| missing("DomainName"))?;
    let start = p.get("StartTime").ok_or_else(|| missing("StartTime"))?;
    let end = p.get("EndTime").ok_or_else(|| missing("EndTime"))?;
    let size = p.get("PageSize").ok_or_else(|| missing("PageSize"))?;
    let page = p.get("PageNumber").ok_or_else(|| missing("PageNumber"))?;
    let size: u64 = size.parse().ok().filter(|n| (1..=500).contains(n)).ok_or_else(|| malformed("PageSize"))?;
    let page: u64 = page.parse().ok().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| malformed("PageNumber"))?;
    let time = |s: &str, name: &str| parse_utc_seconds(s).ok_or_else(|| malformed(name));
    let (start, end) = (time(start, "StartTime")?, time(end, "EndTime")?);
    if end <= start {
        return Err(malformed("EndTime"));
    }
    if start < SystemTime::now() - RECORDS_WINDOW {
        return Err(malformed("StartTime"));
    }
    let success = match p.get("Status") {
        None => None,
        Some("success") => Some(true),
        Some("failed") => Some(false),
        Some(_) => return Err(malformed("Status")),
    };
    if p.get("AppName").is_some_and(|a| a != "live") {
        return Ok(page_json(page, size, 0, Vec::new(), wrapped));
    }
    let bucket = ctx.config.bucket_for_domain(domain).ok_or_else(|| malformed("DomainName"))?;
    let q = RecordQuery {
        kinds,
        bucket: &bucket.name,
        channel: p.get("StreamName"),
        success,
        from: Some(start),
        to: Some(end),
        offset: (page - 1) * size,
        limit: size,
        ..Default::default()
    };
    let (total, records) = ctx.meta.delivery_records(&q).await?;
    let list = records.iter().map(|r| record_json(r, !wrapped)).collect();
    Ok(page_json(page, size, total, list, wrapped))
}

// ------------------------------------------------------------------------------------------ Snapshots

/// The longest StartTime..EndTime the vendor allows for a snapshot query.
const SNAPSHOT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// DescribeLiveStreamSnapshotInfo: a channel's snapshots from the index, `Limit` at a time, with
/// `NextStartTime` naming where the next page starts when there is more.
async fn snapshot_info(ctx: &Context, p: &Params) -> Result<Value, RpcError> {
    use crate::meta::snapshots::Order;
    let missing = |name: &str| err(400, "MissingParameter", format!("{name} is mandatory for this action."));
    let (bucket, _) = domain_bucket(ctx, p)?;
    p.get("AppName").ok_or_else(|| missing("AppName"))?;
    let stream = p.get("StreamName").ok_or_else(|| missing("StreamName"))?;
    let time = |name: &str| -> Result<SystemTime, RpcError> {
        let value = p.get(name).ok_or_else(|| missing(name))?;
        parse_utc_seconds(value).ok_or_else(|| {
            err(400, &format!("Invalid{name}.Malformed"), format!("Specified parameter {name} is not valid."))
        })
    };
    let (start, end) = (time("StartTime")?, time("EndTime")?);
    if end <= start || end.duration_since(start).unwrap_or_default() > SNAPSHOT_WINDOW {
        return Err(err(
            400,
            "InvalidEndTime.Mismatch",
            "Specified EndTime must be later than StartTime, and at most one day after it.",
        ));
    }
    let limit = match p.get("Limit") {
        None => 10,
        Some(v) => int_in(v, 1..=100).ok_or_else(|| err(400, "InvalidLimit.Malformed", "Limit must be 1-100."))?,
    };
    let order = match p.get("Order").map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(_) => return Err(err(400, "InvalidOrder.Malformed", "Order must be asc or desc.")),
    };
    let limit = u32::try_from(limit).unwrap_or(100);
    let mut rows = ctx.meta.snapshots_between(&bucket.name, stream, start, end, limit + 1, order).await?;
    let next = (rows.len() > limit as usize).then(|| rows.remove(limit as usize));
    let list: Vec<Value> = rows
        .iter()
        .map(|s| {
            json!({"OssBucket": s.dest_bucket, "OssEndpoint": ctx.endpoint, "OssObject": s.object_key,
                   "CreateTime": utc_seconds(s.created), "CreateTimestamp": crate::meta::millis(s.created),
                   "IsOverlay": false})
        })
        .collect();
    let mut v = json!({"LiveStreamSnapshotInfoList": {"LiveStreamSnapshotInfo": list}});
    if let Some(next) = next {
        v["NextStartTime"] = json!(utc_seconds(next.created));
    }
    Ok(v)
}

fn page_json(page: u64, size: u64, total: u64, list: Vec<Value>, wrapped: bool) -> Value {
    let mut v = json!({"PageNum": page, "PageSize": size, "TotalNum": total, "TotalPage": total.div_ceil(size)});
    if wrapped {
        v["NotifyRecordsInfo"] = json!({"LiveStreamNotifyRecordsInfo": list});
    } else {
        v["Code"] = json!(0);
        v["Msg"] = json!("ok");
        v["CallbackList"] = Value::Array(list);
    }
    v
}

fn record_json(r: &DeliveryRecord, storage_type: bool) -> Value {
    let a = &r.attempt;
    let description = if a.success { "success".to_owned() } else { a.error.clone() };
    let mut v = json!({"DomainName": r.domain, "AppName": "live", "StreamName": r.channel, "NotifyType": r.notify_type,
        "NotifyUrl": a.url, "NotifyTime": utc_seconds(a.time), "NotifyResult": if a.success { "success" } else { "failed" },
        "Description": description, "NotifyContent": a.request_body, "NotifyHeader": a.request_headers,
        "NotifyResponse": a.response_body});
    if storage_type {
        v["StorageType"] = json!("oss");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_take_the_vendor_form() {
        let id = vendor_request_id("6B03325473991E375E76BB36");
        assert_eq!(id, "6B033254-7399-1E37-5E76-BB3600000000");
    }

    #[test]
    fn list_parameters_are_read_in_index_order() {
        let p = Params(vec![
            ("Users.2".into(), "b".into()),
            ("Users.1".into(), "a".into()),
            ("Users.10".into(), "c".into()),
            ("Usersx".into(), "z".into()),
        ]);
        assert_eq!(p.list("Users"), ["a", "b", "c"]);
        assert_eq!(Params(vec![("B".into(), "True".into())]).bool("B").unwrap(), Some(true));
        assert!(Params(vec![("B".into(), "maybe".into())]).bool("B").is_err());
    }

    #[test]
    fn times_print_in_the_vendor_forms() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_736_150_400_250);
        assert_eq!(beijing(t, false), "2025-01-06 16:00:00");
        assert_eq!(beijing(t, true), "2025-01-06 16:00:00.250");
        assert_eq!(utc_seconds(t), "2025-01-06T08:00:00Z");
    }
}
