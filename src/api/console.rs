//! The web console: a small page at `/` (and `/console/`), its assets built into the binary
//! (`assets/console/`), and the JSON it polls, `/console/api/overview`: buckets, channels, their status
//! and live stats as GetLiveChannelStat reports them, and what a streamer copies into OBS.
//!
//! Access follows the buckets' ACLs: without signing in, the console shows the public buckets, read-only.
//! Signed in with the `[console]` account (HTTP Basic on the API calls) it shows every bucket, gives
//! presigned publish and playback URLs for private ones, and may enable or disable a channel, or drain
//! the node (`POST /console/api/drain`, the admin call beside SIGTERM).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use tracing::info;

use crate::auth::uri_encode;
use crate::cluster::LiveView;
use crate::config::{Acl, Bucket};
use crate::meta::{ChannelRecord, ChannelStatus};
use crate::names::ChannelKey;
use crate::reply::{Body, full};
use crate::service::Context;

const INDEX: &str = include_str!("../../assets/console/index.html");
const SCRIPT: &str = include_str!("../../assets/console/console.js");
const STYLE: &str = include_str!("../../assets/console/console.css");
const HLS_JS: &str = include_str!("../../assets/console/hls.light.min.js");
/// Channels listed per bucket: the console is an overview, not a listing API.
const CHANNELS_SHOWN: u32 = 100;
/// How long the presigned URLs the console hands out for private buckets stay valid.
const PRESIGNED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// `/` without a bucket (no virtual host, no query, no signature: an SDK's service call keeps its
/// meaning) and everything under `/console/`.
pub fn wants(ctx: &Context, req: &Request<Incoming>) -> bool {
    let path = req.uri().path();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if path == "/" {
        matches!(*req.method(), Method::GET | Method::HEAD)
            && req.uri().query().is_none_or(str::is_empty)
            && !req.headers().contains_key(header::AUTHORIZATION)
            && super::objects::virtual_host_bucket(&ctx.config, host).is_none()
    } else {
        path == "/console" || path.starts_with("/console/")
    }
}

/// A same-origin write from the console page (browsers send `Origin` on every POST).
pub fn same_origin_console_write(path: &str, headers: &hyper::HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    path.starts_with("/console/api/") && (origin == format!("http://{host}") || origin == format!("https://{host}"))
}

pub async fn handle(ctx: &Context, req: Request<Incoming>) -> Response<Body> {
    let signed_in = match signed_in(ctx, req.headers()) {
        Ok(s) => s,
        Err(()) => return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "wrong console user or password"})),
    };
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/" | "/console" | "/console/" | "/console/index.html") => page(),
        (Method::GET | Method::HEAD, "/console/console.js") => asset(SCRIPT, "text/javascript; charset=utf-8"),
        (Method::GET | Method::HEAD, "/console/console.css") => asset(STYLE, "text/css; charset=utf-8"),
        (Method::GET | Method::HEAD, "/console/hls.light.min.js") => asset(HLS_JS, "text/javascript; charset=utf-8"),
        (Method::GET | Method::HEAD, "/console/api/overview") => match overview(ctx, &req, signed_in).await {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => unavailable(e),
        },
        (Method::POST, "/console/api/drain") => {
            if !signed_in {
                return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "sign in to drain the node"}));
            }
            // The admin form of SIGTERM's first half: out of the balancer (readyz 503), new publishes
            // refused, live ones ended after their open segment; the process keeps serving playback.
            let ended = ctx.cluster.drain();
            info!(publishes = ended, node = %ctx.config.node.id, "draining, asked from the console API");
            json_response(
                StatusCode::OK,
                &json!({"node": ctx.config.node.id, "draining": true, "publishes_ended": ended}),
            )
        }
        (Method::POST, p) if p.starts_with("/console/api/channels/") => {
            if !signed_in {
                return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "sign in to change a channel"}));
            }
            set_status(ctx, p, req.uri().query().unwrap_or("")).await
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "no such console page"})),
    }
}

/// Ok(true): the right account; Ok(false): none given; Err: a wrong one.
fn signed_in(ctx: &Context, headers: &hyper::HeaderMap) -> Result<bool, ()> {
    let Some(given) = headers.get(header::AUTHORIZATION) else { return Ok(false) };
    let Some(login) = &ctx.config.console else { return Err(()) };
    let decoded = given
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .ok_or(())?;
    let expected = format!("{}:{}", login.user, login.password);
    if bool::from(decoded.ct_eq(expected.as_bytes())) { Ok(true) } else { Err(()) }
}

fn page() -> Response<Body> {
    let mut resp = asset(INDEX, "text/html; charset=utf-8");
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only our own scripts; hls.js runs its demuxer in a blob worker and plays through MSE blobs. No
    // framing, so no page can click the console's buttons through an invisible frame.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn unavailable(e: crate::meta::MetaError) -> Response<Body> {
    tracing::warn!(error = %e, "console: metadata database error");
    json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": format!("metadata database: {e}")}))
}

async fn overview(ctx: &Context, req: &Request<Incoming>, signed_in: bool) -> Result<Value, crate::meta::MetaError> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(&ctx.endpoint);
    let host_name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let rtmp = format!("rtmp://{host_name}:{}", ctx.rtmp_addr.port());
    let mut buckets = Vec::new();
    for bucket in ctx.config.buckets.iter().filter(|b| signed_in || b.acl != Acl::Private) {
        let mut records = ctx.meta.list_channels(&bucket.name, "", "", CHANNELS_SHOWN + 1).await?;
        let more = records.len() > CHANNELS_SHOWN as usize;
        records.truncate(CHANNELS_SHOWN as usize);
        let mut channels = Vec::with_capacity(records.len());
        for record in &records {
            let Ok(key) = ChannelKey::new(&bucket.name, &record.name) else { continue };
            let live = ctx.cluster.live(&key).await?;
            channels.push(channel_json(ctx, bucket, record, &key, live.as_ref(), &rtmp));
        }
        buckets.push(json!({"name": bucket.name, "acl": acl_name(bucket.acl), "channels": channels, "more": more}));
    }
    Ok(json!({
        "node": ctx.config.node.id,
        "signed_in": signed_in,
        "can_sign_in": ctx.config.console.is_some(),
        "buckets": buckets,
    }))
}

fn acl_name(acl: Acl) -> &'static str {
    match acl {
        Acl::Private => "private",
        Acl::PublicRead => "public-read",
        Acl::PublicReadWrite => "public-read-write",
    }
}

fn channel_json(
    ctx: &Context,
    bucket: &Bucket,
    record: &ChannelRecord,
    key: &ChannelKey,
    live: Option<&LiveView>,
    rtmp: &str,
) -> Value {
    let status = match (live, record.status) {
        (Some(_), _) => "live",
        (None, ChannelStatus::Disabled) => "disabled",
        (None, ChannelStatus::Enabled) => "idle",
    };
    let server = if bucket.name == ctx.config.default_bucket().name {
        format!("{rtmp}/live")
    } else {
        format!("{rtmp}/{}/live", bucket.name)
    };
    let playlist = &record.settings.playlist_name;
    let path = format!("/{}/{}/{}", bucket.name, uri_encode(&record.name, false), uri_encode(playlist, false));
    // A private bucket needs signatures: the signed-in console hands out presigned URLs (the publish
    // signature as oss2's sign_rtmp_url makes it, the playlist with hls/sign so its segments play too).
    let (stream_key, playback) = match (bucket.acl, ctx.config.access_keys.first()) {
        (Acl::PublicReadWrite, _) => (record.name.clone(), path),
        (acl, Some(k)) => {
            let expires = SystemTime::now()
                .checked_add(PRESIGNED_FOR)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let query = crate::auth::oss::sign_rtmp_query(&bucket.name, &record.name, None, expires, &k.id, &k.secret);
            let playback = if acl == Acl::PublicRead { path } else { presigned_playlist(key, playlist, expires, k) };
            (format!("{}?{query}", record.name), playback)
        }
        (_, None) => (record.name.clone(), path),
    };
    json!({
        "name": record.name,
        "status": status,
        "frag_duration": record.settings.frag_duration,
        "frag_count": record.settings.frag_count,
        "publish": {"server": server, "key": stream_key},
        "playback": playback,
        "live": live.map(|l| {
            let s = &l.stats;
            json!({
                "node": l.node_id,
                "remote": l.remote,
                "since": crate::wire::oss_time(l.since),
                "video": s.video.as_ref().map(|v| json!({"width": v.width, "height": v.height, "frame_rate": v.frame_rate, "bandwidth": v.bandwidth})),
                "audio": s.audio.as_ref().map(|a| json!({"sample_rate": a.sample_rate, "bandwidth": a.bandwidth})),
                "segments": {"stored": s.segments.stored, "failed": s.segments.failed, "dropped": s.segments.dropped,
                             "forced": s.segments.forced, "last_ms": s.segments.last_ms},
                "store_error": s.store_error,
            })
        }),
    })
}

/// A V1-presigned playlist URL with `x-oss-process=hls/sign`, as oss2's `sign_url` makes it.
fn presigned_playlist(key: &ChannelKey, playlist: &str, expires: u64, k: &crate::config::AccessKey) -> String {
    let query = vec![("x-oss-process".to_owned(), "hls/sign".to_owned())];
    let headers = hyper::HeaderMap::new();
    let object = format!("{}/{playlist}", key.channel());
    let req = crate::auth::oss::Request {
        method: "GET",
        bucket: Some(key.bucket()),
        key: &object,
        query: &query,
        headers: &headers,
    };
    let expires = expires.to_string();
    let signature = crate::auth::oss::sign_v1(&k.secret, &crate::auth::oss::string_to_sign_v1(&req, &expires));
    format!(
        "/{}/{}?x-oss-process=hls%2Fsign&OSSAccessKeyId={}&Expires={expires}&Signature={}",
        key.bucket(),
        uri_encode(&object, false),
        uri_encode(&k.id, true),
        uri_encode(&signature, true)
    )
}

/// `POST /console/api/channels/<bucket>/<channel>?status=enabled|disabled`.
async fn set_status(ctx: &Context, path: &str, query: &str) -> Response<Body> {
    let rest = path.trim_start_matches("/console/api/channels/");
    let parsed = rest.split_once('/').and_then(|(b, c)| {
        let (b, c) = (crate::auth::percent_decode(b)?, crate::auth::percent_decode(c)?);
        ChannelKey::new(&b, &c).ok().filter(|_| ctx.config.bucket(&b).is_some())
    });
    let Some(key) = parsed else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such bucket or channel name"}));
    };
    let status = match query {
        "status=enabled" => ChannelStatus::Enabled,
        "status=disabled" => ChannelStatus::Disabled,
        _ => return json_response(StatusCode::BAD_REQUEST, &json!({"error": "status=enabled or status=disabled"})),
    };
    match super::oss::set_channel_status(ctx, &key, status).await {
        Ok(true) => {
            info!(channel = %key, status = status.as_str(), "channel status set from the console");
            json_response(StatusCode::OK, &json!({"channel": key.to_string(), "status": status.as_str()}))
        }
        Ok(false) => json_response(StatusCode::NOT_FOUND, &json!({"error": "no such channel"})),
        Err(e) => unavailable(e),
    }
}
