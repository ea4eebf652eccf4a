//! Control-plane dialects on the HTTP listener, each mapped onto the same channels, metadata and storage:
//! [`route`] picks one per request. `oss` is the OSS LiveChannel XML API (and the ACL-checked object reads
//! players make, served by `objects`); `aliyun` the Aliyun live RPC API (event subscriptions, recording and
//! stream-ingest callback configuration and records, `Action=` requests); `huawei` the Huawei-style
//! callback configuration (JSON under `/v1/{project_id}/`).
//!
//! Each dialect maps errors to its own wire format once (OSS: XML `<Error>` bodies; Aliyun and Huawei:
//! their JSON error documents).

pub mod aliyun;
pub mod conditional;
pub mod console;
pub mod huawei;
pub mod listing;
pub mod objects;
pub mod ops;
pub mod oss;
pub mod range;

pub use crate::wire::{http_date, oss_time, request_id, utc_seconds};

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use tracing::{debug, warn};

use crate::meta::MetaError;
use crate::reply::{Body, empty, header_value, text};
use crate::service::Context;

/// Largest request body any API reads (its documents are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// What can go wrong in any dialect before or beside its own rules. Each dialect renders it once, in its
/// `From<Failure>`; [`dialect_error!`] gives it the `?` conversions from the shared error sources.
#[derive(Debug)]
pub enum Failure {
    /// The request body is over [`MAX_BODY`].
    BodyTooLarge,
    /// The request body could not be read (the client went away, broken chunking).
    BodyUnreadable(String),
    /// No bucket serves this ingest domain.
    NoSuchDomain(String),
    /// The metadata database failed (already logged, with the operation).
    Database(MetaError),
    /// The metadata database cannot be reached: 503, try again later.
    Unavailable(MetaError),
}

impl From<MetaError> for Failure {
    fn from(e: MetaError) -> Self {
        tracing::warn!(error = %e, "metadata database error");
        if e.is_unavailable() { Failure::Unavailable(e) } else { Failure::Database(e) }
    }
}

/// `?` from the shared error sources into a dialect's error type, through [`Failure`].
macro_rules! dialect_error {
    ($t:ty) => {
        impl From<crate::meta::MetaError> for $t {
            fn from(e: crate::meta::MetaError) -> Self {
                crate::api::Failure::from(e).into()
            }
        }
    };
}
pub(crate) use dialect_error;

/// A number within `range`, or None (not a number, or outside it).
pub fn int_in<T: std::str::FromStr + PartialOrd>(value: &str, range: std::ops::RangeInclusive<T>) -> Option<T> {
    value.parse::<T>().ok().filter(|n| range.contains(n))
}

/// The bucket an ingest domain maps onto (its name, or one of its `domains`).
pub fn domain_bucket<'c>(
    config: &'c crate::config::Config,
    domain: &str,
) -> Result<&'c crate::config::Bucket, Failure> {
    config.bucket_for_domain(domain).ok_or_else(|| Failure::NoSuchDomain(domain.to_owned()))
}

/// Reads a request body, refusing one over [`MAX_BODY`]: from Content-Length before reading anything,
/// else as soon as the limit is crossed; and one that takes longer than `timeout` to arrive (a client
/// trickling a byte at a time holds a connection and memory). Each frame is copied out, so a body sent in
/// one-byte packets costs its size, not a read buffer per byte. Each dialect maps the error to its own
/// wire format.
pub async fn read_body(headers: &HeaderMap, body: Incoming, timeout: std::time::Duration) -> Result<Bytes, Failure> {
    let declared =
        headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Failure::BodyTooLarge);
    }
    let capacity = declared.map_or(0, |n| n as usize);
    let read = async move {
        let mut body = body;
        let mut out = bytes::BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::BodyUnreadable(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                if out.len() + data.len() > MAX_BODY {
                    return Err(Failure::BodyTooLarge);
                }
                out.extend_from_slice(data);
            }
        }
        Ok(out.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(Failure::BodyUnreadable(format!("the body did not arrive within {} s", timeout.as_secs_f64()))),
    }
}

/// A callback URL the vendors accept: http or https with a host.
pub fn http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// Every HTTP request: CORS preflight, then the dialect that the path or parameters name; the headers
/// every answer carries are added here once.
pub async fn route(ctx: &Context, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = request_id();
    let mut response = match method {
        _ if !trusted_host(ctx, req.headers()) => {
            warn!(%remote, host = ?req.headers().get(header::HOST), "refused: a host name this loopback server does not serve (DNS rebinding?)");
            text(StatusCode::MISDIRECTED_REQUEST, "this server does not serve that host name\n")
        }
        _ if cross_origin_write(&method, req.headers())
            && !console::same_origin_console_write(&path, req.headers()) =>
        {
            warn!(%remote, %method, path, origin = ?req.headers().get(header::ORIGIN), "refused: a cross-origin write from a web page");
            text(StatusCode::FORBIDDEN, "cross-origin writes are not accepted\n")
        }
        Method::OPTIONS => preflight(req.headers()),
        _ if ops::wants(&method, &path, req.uri().query()) => ops::handle(ctx, &path).await,
        _ if console::wants(ctx, &req) => console::handle(ctx, req).await,
        // OSS bucket names are at least 3 characters, so `/v1/` never names a bucket.
        _ if path.starts_with("/v1/") => huawei::handle(ctx, req, &request_id).await,
        _ if aliyun::wants(&req) => aliyun::handle(ctx, req, &request_id).await,
        _ => oss::handle(ctx, req, &request_id).await,
    };
    if method == Method::HEAD {
        *response.body_mut() = empty();
    }
    let h = response.headers_mut();
    cors(h);
    // Both OSS SDKs read the request id; oss-v2 cannot parse an error response without Date.
    h.insert("x-oss-request-id", header_value(&request_id));
    h.insert(header::DATE, header_value(&http_date(std::time::SystemTime::now())));
    h.insert(header::SERVER, HeaderValue::from_static("AliyunOSS"));
    let status = response.status().as_u16();
    if status >= 500 {
        warn!(%remote, %method, path, status, request_id, "http");
    } else {
        debug!(%remote, %method, path, status, request_id, "http");
    }
    response
}

fn cors(h: &mut hyper::HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, ETag, x-oss-request-id"),
    );
}

/// Web pages may play from here (GET, HEAD) but not manage it: the APIs are for SDKs and tools, which
/// send no `Origin`. A browser's write carries one, and a "simple" POST needs no preflight, so it is
/// refused here rather than left to CORS (which only hides the answer).
fn cross_origin_write(method: &Method, headers: &hyper::HeaderMap) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && headers.contains_key(header::ORIGIN)
}

/// DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 talks to a server on
/// loopback as if it were its own origin. A server listening on loopback therefore serves only Host
/// values that are addresses, `localhost`, or names it is configured with.
fn trusted_host(ctx: &Context, headers: &hyper::HeaderMap) -> bool {
    if !ctx.config.http_listen.ip().is_loopback() {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    let c = &ctx.config;
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || c.public_endpoint
            .as_deref()
            .is_some_and(|e| e.split(':').next().is_some_and(|h| h.eq_ignore_ascii_case(&name)))
        || c.base_domain
            .as_deref()
            .is_some_and(|b| name == b.to_ascii_lowercase() || name.ends_with(&format!(".{}", b.to_ascii_lowercase())))
        || c.buckets.iter().any(|b| b.domains.iter().any(|d| d.eq_ignore_ascii_case(&name)))
}

fn preflight(request: &hyper::HeaderMap) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    let reads = request.get(header::ACCESS_CONTROL_REQUEST_METHOD).is_none_or(|m| m == "GET" || m == "HEAD");
    // Chromium's Private Network Access: a page on a public origin may play from a server on a private or
    // loopback address only if the preflight says so. Granted for playback only.
    if reads && request.get("access-control-request-private-network").is_some_and(|v| v == "true") {
        h.insert("access-control-allow-private-network", HeaderValue::from_static("true"));
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Range, Content-Type, Authorization"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_and_a_failed_query_a_500() {
        let down = MetaError::Query { op: "get_channel", source: sqlx::Error::PoolTimedOut };
        assert!(down.is_unavailable());
        let oss: oss::OssError = Failure::from(down).into();
        assert_eq!((oss.status, oss.code), (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"));
        let broken = MetaError::Query { op: "get_channel", source: sqlx::Error::RowNotFound };
        assert!(!broken.is_unavailable());
        let oss: oss::OssError = Failure::from(broken).into();
        assert_eq!((oss.status, oss.code), (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"));
    }
}
