//! The HTTP listener: HLS playlists and segments for players (GET/HEAD, byte ranges, CORS), on hyper 1.
//!
//! Addressing: path style `/<bucket>/<channel>/<file>`, or virtual-host style `http://<bucket>.<base_domain>/
//! <channel>/<file>` when `base_domain` is configured. The path is percent-decoded, then split, then each
//! component is validated (`storage::validate_component`), so nothing outside a channel folder is reachable.
//! Request limits: header size and read timeout per connection; bodies are not accepted here.

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

use crate::config::Config;
use crate::storage::{ChannelKey, Store};

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head we read (request line + headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;

pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
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
    let mut response = match method {
        Method::OPTIONS => preflight(req.headers()),
        Method::GET | Method::HEAD => get_object(ctx, &req).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    if method == Method::HEAD {
        *response.body_mut() = empty();
    }
    cors(response.headers_mut());
    debug!(%remote, %method, path = req.uri().path(), status = response.status().as_u16(), "http");
    response
}

/// Where a request points: bucket, channel, file.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub key: ChannelKey,
    pub file: String,
}

/// Resolves path (and Host, for virtual-host style) into a target. `None` means 404.
pub fn resolve(config: &Config, host: Option<&str>, path: &str) -> Option<Target> {
    let decoded = percent_decode(path)?;
    let parts: Vec<&str> = decoded.strip_prefix('/')?.split('/').collect();
    let host_bucket = host.and_then(|h| virtual_host_bucket(config, h));
    let (bucket, channel, file) = match (host_bucket, parts.as_slice()) {
        (Some(bucket), [channel, file]) => (bucket, *channel, *file),
        (None, [bucket, channel, file]) => (*bucket, *channel, *file),
        _ => return None,
    };
    config.bucket(bucket)?;
    let key = ChannelKey::new(bucket, channel).ok()?;
    key.object(file).ok()?;
    Some(Target { key, file: file.to_owned() })
}

fn virtual_host_bucket<'a>(config: &Config, host: &'a str) -> Option<&'a str> {
    let base = config.base_domain.as_deref()?;
    let host =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let bucket = host.strip_suffix(base)?.strip_suffix('.')?;
    (!bucket.is_empty() && !bucket.contains('.')).then_some(bucket)
}

/// Strict percent-decoding to UTF-8; malformed escapes or invalid UTF-8 give `None` (a 404, never a guess).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn get_object(ctx: &Context, req: &Request<Incoming>) -> Response<Body> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let Some(target) = resolve(&ctx.config, host, req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let (content_type, cache_control) = if target.file.ends_with(".m3u8") {
        // Players poll the live playlist; it must not be cached for longer than a fraction of a segment.
        ("application/vnd.apple.mpegurl", "max-age=1")
    } else if crate::hls::parse_segment_file_name(&target.file).is_some() {
        // A segment name is never reused (sequence numbers only grow), so its bytes never change.
        ("video/mp2t", "max-age=86400, immutable")
    } else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Ok(path) = target.key.object(&target.file) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let range_header = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let mut status = StatusCode::OK;
    let mut options = GetOptions { head: req.method() == Method::HEAD, ..Default::default() };
    let mut content_range = None;
    if let Some(spec) = range_header.and_then(range::parse) {
        let size = match ctx.store.objects().head(&path).await {
            Ok(meta) => meta.size,
            Err(e) => return store_error(e),
        };
        match spec.resolve(size) {
            Some(r) => {
                content_range = Some(format!("bytes {}-{}/{size}", r.start, r.end - 1));
                options.range = Some(GetRange::Bounded(r));
                status = StatusCode::PARTIAL_CONTENT;
            }
            None => {
                let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                resp.headers_mut().insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
                return resp;
            }
        }
    }
    let result = match ctx.store.get(&path, options).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
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
    resp
}

fn store_error(e: object_store::Error) -> Response<Body> {
    match e {
        object_store::Error::NotFound { .. } => text(StatusCode::NOT_FOUND, "not found\n"),
        other => {
            warn!(error = %other, "storage read failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n")
        }
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cors(h: &mut hyper::HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Content-Length, Content-Range, ETag"));
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
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Range, Content-Type, Authorization"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
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

    fn config() -> Config {
        Config { base_domain: Some("live.example.com".into()), ..Config::default() }
    }

    #[test]
    fn path_style_and_virtual_host_style_resolve_to_the_same_object() {
        let c = config();
        let a = resolve(&c, Some("127.0.0.1:8080"), "/live/demo/playlist.m3u8").unwrap();
        let b = resolve(&c, Some("live.live.example.com:8080"), "/demo/playlist.m3u8").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.key.channel(), "demo");
    }

    #[test]
    fn paths_that_escape_or_are_malformed_resolve_to_nothing() {
        let c = config();
        for p in [
            "/live/../etc/passwd",
            "/live/%2e%2e/x.ts",
            "/live/demo/..%2f..%2fx",
            "/live/demo%2fx/1.ts",
            "/live/demo/1.ts/extra",
            "/live/demo",
            "/nobucket/demo/1.ts",
            "/live/demo/%zz.ts",
            "/live/demo/%ff.ts",
            "//demo/1.ts",
        ] {
            assert_eq!(resolve(&c, None, p), None, "{p}");
        }
        assert!(resolve(&c, None, "/live/d%C3%BCo/1.ts").is_some());
    }
}
