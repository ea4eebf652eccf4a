//! The HTTP listener, on hyper 1: HLS playlists and segments for players (GET/HEAD, byte ranges, CORS) and
//! the control-plane APIs (`api`), which also address and authorize object reads.
//!
//! Addressing: path style `/<bucket>/<channel>/<file>`, or virtual-host style `http://<bucket>.<base_domain>/
//! <channel>/<file>` when `base_domain` is configured. The path is percent-decoded, then split, then each
//! component is validated (`storage::validate_component`), so nothing outside a channel folder is reachable.
//! Request limits: header size and read timeout per connection; bodies only where an API reads one, capped.
//!
//! RTMP on this port: oss2's `sign_rtmp_url` on an IP endpoint points publishers at the HTTP port, so a
//! connection whose first byte is 0x03 (RTMP C0; HTTP starts with a method letter) goes to `rtmp`.

mod range;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::api::oss::OssError;
use crate::auth::Keys;
use crate::channels::Channels;
use crate::config::Config;
use crate::meta::Meta;
use crate::storage::{ChannelKey, Store};

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head we read (request line + headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The first byte of an RTMP handshake (C0: protocol version 3).
const RTMP_C0: u8 = 0x03;

pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    pub meta: Meta,
    pub channels: Arc<Channels>,
    pub keys: Keys,
    /// Nonces of Aliyun-signed requests seen in the last 15 minutes (replays are refused).
    pub nonces: crate::auth::aliyun::Nonces,
    pub notifier: crate::notify::Notifier,
    /// `host[:port]` written into PublishUrls and PlayUrls.
    pub endpoint: String,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Where RTMP connections that arrive on this port go.
    pub rtmp: Option<Arc<crate::rtmp::Context>>,
}

pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let (stream, remote) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = ctx.shutdown.cancelled() => return,
        };
        let ctx2 = Arc::clone(&ctx);
        let shutdown = ctx.shutdown.clone();
        ctx.tracker.spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Some(rtmp) = &ctx2.rtmp {
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await;
                match peeked {
                    Ok(Ok(1)) if first[0] == RTMP_C0 => {
                        crate::rtmp::accept(stream, remote, Arc::clone(rtmp));
                        return;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    _ => {}
                }
            }
            let service = hyper::service::service_fn(move |req| {
                let ctx = Arc::clone(&ctx2);
                async move { Ok::<_, Infallible>(handle(&ctx, req, remote).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { debug!(%remote, error = %e, "HTTP connection error") },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

pub async fn handle(ctx: &Context, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = crate::api::request_id();
    let mut response = match method {
        Method::OPTIONS => preflight(req.headers()),
        // OSS bucket names are at least 3 characters, so `/v1/` never names a bucket.
        _ if path.starts_with("/v1/") => crate::api::huawei::handle(ctx, req, &request_id).await,
        _ if crate::api::aliyun::wants(&req) => crate::api::aliyun::handle(ctx, req, &request_id).await,
        _ => crate::api::oss::handle(ctx, req, &request_id).await,
    };
    if method == Method::HEAD {
        *response.body_mut() = empty();
    }
    let h = response.headers_mut();
    cors(h);
    // Both OSS SDKs read the request id; oss-v2 cannot parse an error response without Date.
    h.insert("x-oss-request-id", header_value(&request_id));
    h.insert(header::DATE, header_value(&crate::api::http_date(std::time::SystemTime::now())));
    h.insert(header::SERVER, HeaderValue::from_static("AliyunOSS"));
    let status = response.status().as_u16();
    if status >= 500 {
        warn!(%remote, %method, path, status, request_id, "http");
    } else {
        debug!(%remote, %method, path, status, request_id, "http");
    }
    response
}

pub(crate) fn virtual_host_bucket<'a>(config: &Config, host: &'a str) -> Option<&'a str> {
    let base = config.base_domain.as_deref()?;
    let host =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let bucket = host.strip_suffix(base)?.strip_suffix('.')?;
    (!bucket.is_empty() && !bucket.contains('.')).then_some(bucket)
}

/// Serves one object of a channel's folder (the API has addressed and authorized the request).
pub(crate) async fn get_object(
    ctx: &Context,
    req: &Request<Incoming>,
    key: &ChannelKey,
    file: &str,
) -> Result<Response<Body>, OssError> {
    let (content_type, cache_control) = if file.ends_with(".m3u8") {
        // Players poll the live playlist; it must not be cached for longer than a fraction of a segment.
        ("application/vnd.apple.mpegurl", "max-age=1")
    } else if crate::hls::parse_segment_file_name(file).is_some() {
        // A segment name is never reused (sequence numbers only grow), so its bytes never change.
        ("video/mp2t", "max-age=86400, immutable")
    } else {
        return Err(OssError::no_such_key());
    };
    let path = key.object(file).map_err(|_| OssError::no_such_key())?;
    let range_header = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let mut status = StatusCode::OK;
    let mut options = GetOptions { head: req.method() == Method::HEAD, ..Default::default() };
    let mut content_range = None;
    if let Some(spec) = range_header.and_then(range::parse) {
        let size = ctx.store.objects().head(&path).await.map_err(store_error)?.size;
        match spec.resolve(size) {
            Some(r) => {
                content_range = Some(format!("bytes {}-{}/{size}", r.start, r.end - 1));
                options.range = Some(GetRange::Bounded(r));
                status = StatusCode::PARTIAL_CONTENT;
            }
            None => {
                let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                resp.headers_mut().insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
                return Ok(resp);
            }
        }
    }
    let result = ctx.store.get(&path, options).await.map_err(store_error)?;
    let length = result.range.end - result.range.start;
    let etag = result.meta.e_tag.clone();
    let modified = result.meta.last_modified;
    let body: Body = if req.method() == Method::HEAD {
        empty()
    } else {
        let stream = result.into_stream().map_ok(Frame::data).map_err(std::io::Error::other);
        BodyExt::boxed_unsync(StreamBody::new(stream))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::LAST_MODIFIED, header_value(&modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()));
    if let Some(etag) = etag {
        h.insert(header::ETAG, header_value(&format!("\"{}\"", etag.trim_matches('"'))));
    }
    if let Some(cr) = content_range {
        h.insert(header::CONTENT_RANGE, header_value(&cr));
    }
    Ok(resp)
}

fn store_error(e: object_store::Error) -> OssError {
    match e {
        object_store::Error::NotFound { .. } => OssError::no_such_key(),
        other => OssError::internal("storage read failed", other),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cors(h: &mut hyper::HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, ETag, x-oss-request-id"),
    );
}

fn preflight(request: &hyper::HeaderMap) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    // Chromium's Private Network Access: a page on a public origin may play from a server on a private or
    // loopback address only if the preflight says so.
    if request.get("access-control-request-private-network").is_some_and(|v| v == "true") {
        h.insert("access-control-allow-private-network", HeaderValue::from_static("true"));
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Range, Content-Type, Authorization"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp =
        Response::new(Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_comes_from_a_virtual_host_under_the_base_domain_only() {
        let c = Config { base_domain: Some("live.example.com".into()), ..Config::default() };
        assert_eq!(virtual_host_bucket(&c, "live.live.example.com:8080"), Some("live"));
        assert_eq!(virtual_host_bucket(&c, "b1.live.example.com"), Some("b1"));
        assert_eq!(virtual_host_bucket(&c, "live.example.com"), None);
        assert_eq!(virtual_host_bucket(&c, "a.b.live.example.com"), None);
        assert_eq!(virtual_host_bucket(&c, "127.0.0.1:8080"), None);
        assert_eq!(virtual_host_bucket(&Config::default(), "live.live.example.com"), None);
    }
}
