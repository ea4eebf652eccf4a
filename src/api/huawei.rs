//! Huawei Cloud Live-style configuration APIs (`../spec/huawei-live-notify.md`), JSON over REST under
//! `/v1/{project_id}/`: the stream notification URL of an ingest domain (`notifications/publish`) and the
//! recording callbacks (`record/callbacks`). Authenticated with AK/SK `SDK-HMAC-SHA256` (the keys of
//! `[[access_keys]]`) or a static `X-Auth-Token` from `[[auth_tokens]]` bound to the project id.
//!
//! Domains map onto buckets (`Config::bucket_for_domain`); the app is always `live` (or `*` for record
//! callbacks); every resource belongs to the project whose path created it, and other projects neither
//! see nor change it.

use std::time::SystemTime;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::{Failure, domain_bucket, http_url, read_body, utc_seconds};
use crate::auth::{huawei, parse_query, percent_decode, same};
use crate::meta::notify::{PublishNotify, RecordCallback, SignType};
use crate::reply::{Body, full};
use crate::service::Context;

const RECORD_EVENTS: &[&str] =
    &["RECORD_START", "RECORD_NEW_FILE_START", "RECORD_FILE_COMPLETE", "RECORD_OVER", "RECORD_FAILED"];

#[derive(Debug)]
pub struct HwError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> HwError {
    HwError { status, code, message: message.into() }
}

fn invalid(message: impl Into<String>) -> HwError {
    err(StatusCode::BAD_REQUEST, "LIVE.100011001", message)
}

fn not_found(message: impl Into<String>) -> HwError {
    err(StatusCode::NOT_FOUND, "LIVE.103011019", message)
}

fn forbidden(message: impl Into<String>) -> HwError {
    err(StatusCode::FORBIDDEN, "LIVE.100011003", message)
}

super::dialect_error!(HwError);

impl From<Failure> for HwError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::BodyTooLarge => {
                err(StatusCode::PAYLOAD_TOO_LARGE, "LIVE.100011001", "The request body is too large.")
            }
            Failure::BodyUnreadable(why) => invalid(format!("The request body could not be read: {why}")),
            Failure::NoSuchDomain(domain) => invalid(format!("The domain {domain} does not exist.")),
            Failure::Database(_) => err(StatusCode::INTERNAL_SERVER_ERROR, "LIVE.100011000", "Internal error."),
            Failure::Unavailable(_) => {
                err(StatusCode::SERVICE_UNAVAILABLE, "LIVE.100011000", "Service temporarily unavailable.")
            }
        }
    }
}

fn json_response(status: StatusCode, body: Option<Value>) -> Response<Body> {
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub async fn handle(ctx: &Context, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    let mut resp = match route(ctx, req).await {
        Ok(resp) => resp,
        Err(e) => json_response(e.status, Some(json!({"error_code": e.code, "error_msg": e.message}))),
    };
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn route(ctx: &Context, req: Request<Incoming>) -> Result<Response<Body>, HwError> {
    let raw_path = req.uri().path().to_owned();
    let path = percent_decode(&raw_path).ok_or_else(|| invalid("The path is not valid percent-encoding."))?;
    let query = parse_query(req.uri().query().unwrap_or("")).ok_or_else(|| invalid("The query is malformed."))?;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (project, rest) = match segments.as_slice() {
        ["v1", project, rest @ ..] => (*project, rest.to_vec()),
        _ => return Err(not_found("No such API.")),
    };
    if project == "{project_id}" || project.is_empty() {
        return Err(invalid("The path has no project id: give BasicCredentials(ak, sk, project_id) a project id."));
    }
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    // Credentials first, so that nobody without them can hold a connection open with a slow body. A
    // token is the whole check; a signature is checked as far as it can be without the body.
    authenticate(ctx, &method, &raw_path, &query, &headers, None, project)?;
    let body = read_body(&headers, body, ctx.config.limits.http_body_timeout).await?;
    authenticate(ctx, &method, &raw_path, &query, &headers, Some(&body), project)?;
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match (method, rest.as_slice()) {
        // Every resource belongs to the project of the path that made it (authenticate checked it).
        (Method::PUT, ["notifications", "publish"]) => put_publish(ctx, project, param("domain"), &body).await,
        (Method::GET, ["notifications", "publish"]) => get_publish(ctx, project, param("domain")).await,
        (Method::DELETE, ["notifications", "publish"]) => delete_publish(ctx, project, param("domain")).await,
        (Method::POST, ["record", "callbacks"]) => create_record(ctx, project, &body).await,
        (Method::GET, ["record", "callbacks"]) => list_records(ctx, project, &query).await,
        (Method::GET, ["record", "callbacks", id]) => show_record(ctx, project, id).await,
        (Method::PUT, ["record", "callbacks", id]) => update_record(ctx, project, id, &body).await,
        (Method::DELETE, ["record", "callbacks", id]) => delete_record(ctx, project, id).await,
        _ => Err(not_found("No such API.")),
    }
}

fn authenticate(
    ctx: &Context,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &hyper::HeaderMap,
    body: Option<&[u8]>,
    project: &str,
) -> Result<(), HwError> {
    let unauthorized = |msg: String| err(StatusCode::UNAUTHORIZED, "APIG.0301", msg);
    if let Some(header_project) = headers.get("x-project-id").and_then(|v| v.to_str().ok())
        && header_project != project
    {
        return Err(unauthorized("X-Project-Id does not match the project id in the path.".into()));
    }
    if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        let ok = ctx.config.auth_tokens.iter().any(|t| same(&t.token, token) && t.project_id == project);
        return if ok {
            Ok(())
        } else {
            Err(unauthorized("Incorrect IAM authentication information: token is invalid for this project".into()))
        };
    }
    let checked = match body {
        None => huawei::precheck(headers, &ctx.keys, SystemTime::now()).map(|()| None),
        Some(body) => {
            let req = huawei::Request { method: method.as_str(), path, query, headers, body };
            huawei::verify(&req, &ctx.keys, SystemTime::now()).map(Some)
        }
    };
    checked
        .map(|ak| {
            if let Some(ak) = ak {
                tracing::debug!(ak, project, "huawei api request authenticated");
            }
        })
        .map_err(|e| {
            info!(error = %e, "huawei api request refused");
            match e {
                huawei::AuthError::Missing => unauthorized("No Authorization or X-Auth-Token header.".into()),
                other => unauthorized(format!(
                    "Incorrect IAM authentication information: verify aksk signature fail ({other})"
                )),
            }
        })
}

fn bucket_of<'c>(ctx: &'c Context, domain: Option<&str>) -> Result<(&'c crate::config::Bucket, String), HwError> {
    let domain = domain
        .filter(|d| !d.is_empty() && d.len() <= 255)
        .ok_or_else(|| invalid("domain is required (1-255 characters)."))?;
    let bucket = domain_bucket(&ctx.config, domain)?;
    Ok((bucket, domain.to_owned()))
}

// ------------------------------------------------------------------------------------------ notifications

#[derive(Deserialize)]
struct CallbackUrl {
    url: Option<String>,
    auth_sign_key: Option<String>,
    call_back_area: Option<String>,
}

async fn put_publish(
    ctx: &Context,
    project: &str,
    domain: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, HwError> {
    let (bucket, domain) = bucket_of(ctx, domain)?;
    let c: CallbackUrl =
        serde_json::from_slice(body).map_err(|e| invalid(format!("The body is not a CallbackUrl: {e}")))?;
    let url = c.url.filter(|u| http_url(u)).ok_or_else(|| invalid("url must be an http or https URL."))?;
    ctx.config.notify.destinations.check_url(&url).await.map_err(invalid)?;
    let key = c.auth_sign_key.unwrap_or_default();
    if !key.is_empty() && !(32..=128).contains(&key.len()) {
        return Err(invalid("auth_sign_key must be 32 to 128 characters."));
    }
    let area = c.call_back_area.unwrap_or_default();
    if !matches!(area.as_str(), "" | "mainland_china" | "outside_mainland_china") {
        return Err(invalid("call_back_area must be mainland_china or outside_mainland_china."));
    }
    let replaced = ctx
        .meta
        .put_publish_notify(
            project,
            &bucket.name,
            &PublishNotify { domain: domain.clone(), url, auth_sign_key: key, call_back_area: area },
        )
        .await?
        .ok_or_else(|| forbidden("The domain's stream notification belongs to another project."))?;
    info!(bucket = %bucket.name, domain, project, replaced, "stream notification configured");
    Ok(json_response(if replaced { StatusCode::OK } else { StatusCode::CREATED }, None))
}

async fn get_publish(ctx: &Context, project: &str, domain: Option<&str>) -> Result<Response<Body>, HwError> {
    let (bucket, _) = bucket_of(ctx, domain)?;
    let n = ctx
        .meta
        .get_publish_notify(Some(project), &bucket.name)
        .await?
        .ok_or_else(|| not_found("The resource does not exist."))?;
    Ok(json_response(
        StatusCode::OK,
        Some(json!({"url": n.url, "auth_sign_key": n.auth_sign_key, "call_back_area": n.call_back_area})),
    ))
}

async fn delete_publish(ctx: &Context, project: &str, domain: Option<&str>) -> Result<Response<Body>, HwError> {
    let (bucket, _) = bucket_of(ctx, domain)?;
    if !ctx.meta.delete_publish_notify(project, &bucket.name).await? {
        return Err(not_found("The resource does not exist."));
    }
    Ok(json_response(StatusCode::NO_CONTENT, None))
}

// ------------------------------------------------------------------------------------------ record callbacks

#[derive(Deserialize)]
struct RecordCallbackRequest {
    publish_domain: Option<String>,
    app: Option<String>,
    notify_callback_url: Option<String>,
    notify_event_subscription: Option<Vec<String>>,
    sign_type: Option<String>,
    key: Option<String>,
}

/// For `fuzzing`: the request bodies' JSON.
#[doc(hidden)]
pub fn fuzz_bodies(body: &[u8]) {
    let _ = serde_json::from_slice::<CallbackUrl>(body);
    let _ = serde_json::from_slice::<RecordCallbackRequest>(body);
}

fn record_json(c: &RecordCallback) -> Value {
    // The key is never returned (the SDK's response model has no field for it).
    json!({
        "id": c.id, "publish_domain": c.domain, "app": c.app, "notify_callback_url": c.url,
        "notify_event_subscription": c.events, "sign_type": c.sign_type,
        "create_time": utc_seconds(c.created), "update_time": utc_seconds(c.updated),
    })
}

async fn parse_record(
    ctx: &Context,
    body: &[u8],
    id: String,
    now: SystemTime,
) -> Result<(String, RecordCallback), HwError> {
    let r: RecordCallbackRequest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("The body is not a RecordCallbackConfigRequest: {e}")))?;
    let (bucket, domain) = bucket_of(ctx, r.publish_domain.as_deref())?;
    let app =
        r.app.filter(|a| a == "live" || a == "*").ok_or_else(|| invalid("app must be live (or * for any app)."))?;
    let url = r
        .notify_callback_url
        .filter(|u| http_url(u) && !u.contains('?'))
        .ok_or_else(|| invalid("notify_callback_url must be an http or https URL without query parameters."))?;
    ctx.config.notify.destinations.check_url(&url).await.map_err(invalid)?;
    let events = r.notify_event_subscription.unwrap_or_else(|| vec!["RECORD_FILE_COMPLETE".into()]);
    if events.is_empty() || events.iter().any(|e| !RECORD_EVENTS.contains(&e.as_str())) {
        return Err(invalid(format!("notify_event_subscription must be a non-empty subset of {RECORD_EVENTS:?}.")));
    }
    let Some(sign_type) = SignType::parse(r.sign_type.as_deref().unwrap_or("HMACSHA256")) else {
        return Err(invalid("sign_type must be HMACSHA256 or MD5."));
    };
    let key = r.key.unwrap_or_default();
    if !key.is_empty() && (key.len() != 32 || !key.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(invalid("key must be 32 letters and digits."));
    }
    Ok((
        bucket.name.clone(),
        RecordCallback { id, domain, app, url, events, sign_type, sign_key: key, created: now, updated: now },
    ))
}

async fn create_record(ctx: &Context, project: &str, body: &[u8]) -> Result<Response<Body>, HwError> {
    let now = SystemTime::now();
    let id = crate::api::request_id().to_ascii_lowercase();
    let (bucket, record) = parse_record(ctx, body, id, now).await?;
    if !ctx.meta.insert_record_callback(project, &bucket, &record).await? {
        return Err(invalid("The resource already exists.").with_code("LIVE.103011018"));
    }
    info!(bucket, id = %record.id, domain = %record.domain, app = %record.app, "recording callback created");
    Ok(json_response(StatusCode::CREATED, Some(record_json(&record))))
}

impl HwError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

async fn list_records(ctx: &Context, project: &str, query: &[(String, String)]) -> Result<Response<Body>, HwError> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let number = |name: &str, default: usize, range: std::ops::RangeInclusive<usize>| -> Result<usize, HwError> {
        match param(name) {
            None | Some("") => Ok(default),
            Some(v) => {
                v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| invalid(format!("{name} is out of range.")))
            }
        }
    };
    let offset = number("offset", 0, 0..=usize::MAX)?;
    let limit = number("limit", 10, 1..=100)?;
    let all = ctx
        .meta
        .list_record_callbacks(
            Some(project),
            param("publish_domain").filter(|d| !d.is_empty()),
            param("app").filter(|a| !a.is_empty()),
            None,
        )
        .await?;
    let page: Vec<Value> = all.iter().skip(offset).take(limit).map(record_json).collect();
    Ok(json_response(StatusCode::OK, Some(json!({"total": all.len(), "callback_config": page}))))
}

async fn show_record(ctx: &Context, project: &str, id: &str) -> Result<Response<Body>, HwError> {
    let c =
        ctx.meta.get_record_callback(project, id).await?.ok_or_else(|| not_found("The resource does not exist."))?;
    Ok(json_response(StatusCode::OK, Some(record_json(&c))))
}

async fn update_record(ctx: &Context, project: &str, id: &str, body: &[u8]) -> Result<Response<Body>, HwError> {
    let existing =
        ctx.meta.get_record_callback(project, id).await?.ok_or_else(|| not_found("The resource does not exist."))?;
    let (bucket, mut record) = parse_record(ctx, body, id.to_owned(), SystemTime::now()).await?;
    record.created = existing.created;
    if !ctx.meta.update_record_callback(project, &bucket, &record).await? {
        return Err(invalid("The resource already exists.").with_code("LIVE.103011018"));
    }
    Ok(json_response(StatusCode::OK, Some(record_json(&record))))
}

async fn delete_record(ctx: &Context, project: &str, id: &str) -> Result<Response<Body>, HwError> {
    if !ctx.meta.delete_record_callback(project, id).await? {
        return Err(not_found("The resource does not exist."));
    }
    Ok(json_response(StatusCode::NO_CONTENT, None))
}
