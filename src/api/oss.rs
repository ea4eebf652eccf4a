//! The OSS LiveChannel XML API (`../spec/oss-livechannel.md`, and the PutLiveChannel seed): PutLiveChannel,
//! ListLiveChannel, GetLiveChannelInfo, GetLiveChannelStat, GetLiveChannelHistory, PutLiveChannelStatus,
//! DeleteLiveChannel, PostVodPlaylist, GetVodPlaylist; plus the ACL check for object reads (playlists and
//! segments) that players make on the same listener.
//!
//! Order of work for every request: address (bucket from the vhost or the first path segment, after
//! percent-decoding the whole path), parse the query, authenticate (`auth::oss`), authorize against the
//! bucket ACL, then the operation. Every failure becomes one OSS `<Error>` body with the status code the
//! SDKs map to the right exception class.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use quick_xml::escape::escape;
use serde::Deserialize;
use tracing::{info, warn};

use super::oss_time;
use crate::auth::oss::{AuthError, verify};
use crate::auth::{Principal, parse_query, percent_decode};
use crate::config::{Acl, Bucket, ChannelSettings, validate_playlist_name};
use crate::hls::{PlaylistSegment, render_vod};
use crate::meta::{ChannelRecord, ChannelStatus, Snapshot, StatusChange};
use crate::names::ChannelKey;
use crate::reply::{Body, full};
use crate::service::Context;
use crate::wire::from_unix_seconds;

pub use super::MAX_BODY;
/// Largest VOD playlist we write or return (the vendor's limit).
const MAX_VOD_PLAYLIST: usize = 1 << 20;
/// Longest VOD window (the vendor's limit: less than one day).
const MAX_VOD_SECONDS: u64 = 24 * 3600;
const HISTORY_LEN: u32 = 10;

/// An OSS error, rendered as the `<Error>` XML body.
#[derive(Debug)]
pub struct OssError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub ec: Option<&'static str>,
    pub extra: Vec<(&'static str, String)>,
}

impl OssError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        OssError { status, code, message: message.into(), ec: None, extra: Vec::new() }
    }

    fn ec(mut self, ec: &'static str) -> Self {
        self.ec = Some(ec);
        self
    }

    fn invalid(message: impl Into<String>, ec: &'static str) -> Self {
        OssError::new(StatusCode::BAD_REQUEST, "InvalidArgument", message).ec(ec)
    }

    fn no_channel() -> Self {
        OssError::new(StatusCode::NOT_FOUND, "NoSuchLiveChannel", "The specified live channel does not exist.")
            .ec("0026-00000021")
    }

    fn still_live() -> Self {
        OssError::new(StatusCode::CONFLICT, "ChannelStillLive", "The live channel is still live.").ec("0044-00000201")
    }

    fn denied(message: impl Into<String>) -> Self {
        OssError::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        warn!(error = %e, "{what}");
        OssError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    }

    pub fn into_response(self, host: &str, request_id: &str) -> Response<Body> {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  <Message>{}</Message>\n  <RequestId>{request_id}</RequestId>\n  <HostId>{}</HostId>\n",
            self.code,
            escape(&self.message),
            escape(host)
        );
        for (name, value) in &self.extra {
            xml.push_str(&format!("  <{name}>{}</{name}>\n", escape(value)));
        }
        if let Some(ec) = self.ec {
            xml.push_str(&format!("  <EC>{ec}</EC>\n"));
        }
        xml.push_str("</Error>\n");
        let mut resp = xml_response(self.status, xml);
        if let Some(ec) = self.ec {
            resp.headers_mut().insert("x-oss-ec", HeaderValue::from_static(ec));
        }
        resp
    }
}

super::dialect_error!(OssError);

impl From<super::Failure> for OssError {
    fn from(f: super::Failure) -> Self {
        match f {
            super::Failure::BodyTooLarge => OssError::new(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                format!("Your proposed upload exceeds the maximum allowed size of {MAX_BODY} bytes."),
            ),
            super::Failure::BodyUnreadable(why) => OssError::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("The request body could not be read: {why}"),
            ),
            super::Failure::NoSuchDomain(domain) => {
                OssError::new(StatusCode::NOT_FOUND, "NoSuchBucket", format!("No bucket serves {domain}."))
            }
            super::Failure::Database(_) => OssError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ),
            super::Failure::Unavailable(_) => {
                OssError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Please reduce your request rate.")
            }
        }
    }
}

impl From<AuthError> for OssError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        match e {
            AuthError::Denied(_) => OssError::denied(message),
            AuthError::UnknownKey(id) => OssError {
                extra: vec![("OSSAccessKeyId", id)],
                ..OssError::new(StatusCode::FORBIDDEN, "InvalidAccessKeyId", message)
            },
            AuthError::Skewed => OssError::new(StatusCode::FORBIDDEN, "RequestTimeTooSkewed", message),
            AuthError::Mismatch { key_id, string_to_sign, provided } => {
                let bytes = string_to_sign.bytes().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
                OssError {
                    extra: vec![
                        ("StringToSign", string_to_sign),
                        ("StringToSignBytes", bytes),
                        ("SignatureProvided", provided),
                        ("OSSAccessKeyId", key_id),
                    ],
                    ..OssError::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", message)
                }
            }
        }
    }
}

/// The request's addressing: which bucket, whether it came by virtual host, and the decoded key.
struct Addressed<'c> {
    bucket: &'c Bucket,
    vhost: bool,
    key: String,
}

/// Handles every request that is not a CORS preflight: the API operations and object reads.
pub async fn handle(ctx: &Context, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
    match route(ctx, req, &host).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(&host, request_id),
    }
}

async fn route(ctx: &Context, req: Request<Incoming>, host: &str) -> Result<Response<Body>, OssError> {
    let path = percent_decode(req.uri().path()).ok_or_else(|| {
        OssError::new(StatusCode::BAD_REQUEST, "InvalidURI", "The path is not valid percent-encoded UTF-8.")
    })?;
    let query = parse_query(req.uri().query().unwrap_or("")).ok_or_else(|| {
        OssError::new(StatusCode::BAD_REQUEST, "InvalidURI", "The query is not valid percent-encoded UTF-8.")
    })?;
    let at = address(ctx, host, &path)?;
    let principal = verify(
        &crate::auth::oss::Request {
            method: req.method().as_str(),
            bucket: Some(&at.bucket.name),
            key: &at.key,
            query: &query,
            headers: req.headers(),
        },
        &ctx.keys,
        SystemTime::now(),
    )
    .inspect_err(|e| info!(bucket = %at.bucket.name, key = %at.key, error = %e, "request refused: bad credentials"))?;
    let has = |name: &str| query.iter().any(|(k, _)| k == name);
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let method = req.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD);
    authorize(at.bucket, &principal, write)?;

    if has("live") {
        if at.key.is_empty() {
            return match method {
                Method::GET => list(ctx, &at, param("prefix"), param("marker"), param("max-keys")).await,
                _ => Err(method_not_allowed()),
            };
        }
        let key = channel_key(&at.bucket.name, &at.key)?;
        return match method {
            Method::PUT if has("status") => put_status(ctx, &key, param("status").unwrap_or("")).await,
            Method::PUT => put_channel(ctx, &at, &key, req).await,
            Method::GET => match param("comp") {
                Some("stat") => stat(ctx, &key).await,
                Some("history") => history(ctx, &key).await,
                Some(other) => Err(OssError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    format!("comp={other} is not a LiveChannel operation."),
                )),
                None => info_op(ctx, &key).await,
            },
            Method::DELETE => delete(ctx, &key).await,
            _ => Err(method_not_allowed()),
        };
    }
    if has("vod") {
        let window = vod_window(param("startTime"), param("endTime"))?;
        return match method {
            Method::POST => {
                let (channel, playlist) = at.key.split_once('/').ok_or_else(|| {
                    OssError::invalid("PostVodPlaylist needs /{channel}/{playlist}.m3u8.", "0044-00000403")
                })?;
                let key = channel_key(&at.bucket.name, channel)?;
                post_vod(ctx, &key, playlist, window).await
            }
            Method::GET => get_vod(ctx, &channel_key(&at.bucket.name, &at.key)?, window).await,
            _ => Err(method_not_allowed()),
        };
    }
    if at.key.is_empty() {
        return match method {
            Method::GET => super::objects::list_objects(ctx, &at.bucket.name, &query).await,
            Method::POST if has("delete") => {
                let md5 = req.headers().get("content-md5").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let url_encoded = param("encoding-type") == Some("url");
                let body = read_body(ctx, req).await?;
                super::objects::delete_objects(ctx, &at.bucket.name, &body, url_encoded, md5.as_deref()).await
            }
            _ => Err(method_not_allowed()),
        };
    }
    match method {
        Method::GET | Method::HEAD => {
            let (channel, file) = at.key.split_once('/').ok_or_else(OssError::no_such_key)?;
            let key = ChannelKey::new(&at.bucket.name, channel).map_err(|_| OssError::no_such_key())?;
            if file.contains('/') {
                return Err(OssError::no_such_key());
            }
            if let (Some("hls/sign"), Principal::Key(id), true) =
                (param("x-oss-process"), &principal, file.ends_with(".m3u8"))
            {
                // The segment URLs live as long as the playlist URL did, never longer: only the signed
                // parameters count (an `Expires` added to a V4 or header-signed request is nobody's word).
                let expires = crate::auth::oss::presigned_expiry(&query);
                return signed_playlist(ctx, &key, file, id, expires, at.vhost).await;
            }
            super::objects::get_object(ctx, &req, &key, file).await
        }
        Method::DELETE => {
            super::objects::delete_object(ctx, &at.bucket.name, &at.key).await?;
            Ok(empty_ok(StatusCode::NO_CONTENT))
        }
        _ => Err(method_not_allowed()),
    }
}

fn address<'c>(ctx: &'c Context, host: &str, path: &str) -> Result<Addressed<'c>, OssError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (name, key, vhost) = match super::objects::virtual_host_bucket(&ctx.config, host) {
        Some(bucket) => (bucket, path, true),
        None => match path.split_once('/') {
            Some((bucket, key)) => (bucket, key, false),
            None => (path, "", false),
        },
    };
    if name.is_empty() {
        return Err(OssError::new(StatusCode::NOT_FOUND, "NoSuchBucket", "The request names no bucket."));
    }
    let bucket = ctx.config.bucket(name).ok_or_else(|| {
        OssError::new(StatusCode::NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist.")
            .with_extra("BucketName", name)
    })?;
    Ok(Addressed { bucket, vhost, key: key.to_owned() })
}

impl OssError {
    fn with_extra(mut self, name: &'static str, value: &str) -> Self {
        self.extra.push((name, value.to_owned()));
        self
    }
}

/// The bucket ACL: anonymous requests may read a public-read bucket and do anything on a public-read-write
/// one; a valid signature (any configured key) may do everything.
fn authorize(bucket: &Bucket, principal: &Principal, write: bool) -> Result<(), OssError> {
    let allowed = match (principal, bucket.acl) {
        (Principal::Key(_), _) => true,
        (Principal::Anonymous, Acl::PublicReadWrite) => true,
        (Principal::Anonymous, Acl::PublicRead) => !write,
        (Principal::Anonymous, Acl::Private) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(OssError::denied("You have no right to access this object because of bucket acl."))
    }
}

fn method_not_allowed() -> OssError {
    OssError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
    )
}

impl OssError {
    pub(crate) fn no_such_key() -> Self {
        OssError::new(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
    }
}

/// Channel names: 1..=64 bytes of UTF-8 without `/` or `\` (OSS), and none of the characters our object
/// keys cannot hold safely (`#`, `%`, `?`, `*`, control characters, `.`/`..`).
fn channel_key(bucket: &str, channel: &str) -> Result<ChannelKey, OssError> {
    ChannelKey::new(bucket, channel).map_err(|e| {
        OssError::new(StatusCode::BAD_REQUEST, "InvalidChannelName", format!("The live channel name is invalid: {e}."))
    })
}

/// Public URLs of a channel, in the addressing style the request used.
fn urls(ctx: &Context, at: &Addressed, channel: &str, playlist: &str) -> (String, String) {
    let endpoint = &ctx.endpoint;
    let bucket = &at.bucket.name;
    match (&ctx.config.base_domain, at.vhost) {
        (Some(base), true) => {
            // Keep the endpoint's port: RTMP is accepted on the HTTP port too.
            let port = endpoint.rsplit_once(':').map(|(_, p)| format!(":{p}")).unwrap_or_default();
            (
                format!("rtmp://{bucket}.{base}{port}/live/{channel}"),
                format!("http://{bucket}.{base}{port}/{channel}/{playlist}"),
            )
        }
        _ => (
            format!("rtmp://{endpoint}/{bucket}/live/{channel}"),
            format!("http://{endpoint}/{bucket}/{channel}/{playlist}"),
        ),
    }
}

// ------------------------------------------------------------------------------------------ PutLiveChannel

#[derive(Debug, Deserialize, Default)]
struct ConfigurationXml {
    #[serde(rename = "Description")]
    description: Option<String>,
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "Target")]
    target: Option<TargetXml>,
    #[serde(rename = "Snapshot")]
    snapshot: Option<SnapshotXml>,
}

#[derive(Debug, Deserialize, Default)]
struct TargetXml {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "FragDuration")]
    frag_duration: Option<String>,
    #[serde(rename = "FragCount")]
    frag_count: Option<String>,
    #[serde(rename = "PlaylistName")]
    playlist_name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct SnapshotXml {
    #[serde(rename = "RoleName")]
    role_name: Option<String>,
    #[serde(rename = "DestBucket")]
    dest_bucket: Option<String>,
    #[serde(rename = "NotifyTopic")]
    notify_topic: Option<String>,
    #[serde(rename = "Interval")]
    interval: Option<String>,
}

fn malformed(why: impl std::fmt::Display) -> OssError {
    OssError::new(
        StatusCode::BAD_REQUEST,
        "MalformedXML",
        format!("The XML you provided was not well-formed or did not validate against our published schema: {why}"),
    )
}

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Parses and validates a LiveChannelConfiguration body into a record (every rule of the spec).
pub fn parse_configuration(
    body: &[u8],
    name: &str,
    defaults: &ChannelSettings,
    now: SystemTime,
) -> Result<ChannelRecord, OssError> {
    let body = std::str::from_utf8(body).map_err(|_| malformed("the body is not UTF-8"))?;
    // serde ignores the root element's name; a body for another API must not pass as this one.
    let mut reader = quick_xml::Reader::from_str(body);
    loop {
        match reader.read_event().map_err(malformed)? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                if e.name().as_ref() != b"LiveChannelConfiguration" {
                    return Err(malformed("the root element must be LiveChannelConfiguration"));
                }
                break;
            }
            quick_xml::events::Event::Eof => return Err(malformed("the body is empty")),
            _ => {}
        }
    }
    let xml: ConfigurationXml = quick_xml::de::from_str(body).map_err(malformed)?;
    let description = xml.description.as_deref().map(str::trim).unwrap_or("").to_owned();
    if description.len() > 128 {
        return Err(OssError::invalid("Description is longer than 128 bytes.", "0044-00000001"));
    }
    let status = match text(&xml.status) {
        None => ChannelStatus::Enabled,
        Some(s) => ChannelStatus::parse(s)
            .ok_or_else(|| OssError::invalid(format!("Status {s:?} is not enabled or disabled."), "0044-00000002"))?,
    };
    let target = xml.target.ok_or_else(|| malformed("Target is required"))?;
    match text(&target.kind) {
        Some("HLS") => {}
        other => {
            return Err(OssError::invalid(
                format!("Target Type {:?} is not supported; use HLS.", other.unwrap_or("")),
                "0044-00000013",
            ));
        }
    }
    let number = |v: &Option<String>, what: &str, ec: &'static str| -> Result<Option<u32>, OssError> {
        match text(v) {
            None => Ok(None),
            Some(s) => super::int_in(s, 1..=100)
                .map(Some)
                .ok_or_else(|| OssError::invalid(format!("{what} {s:?} must be an integer in [1, 100]."), ec)),
        }
    };
    let duration = number(&target.frag_duration, "FragDuration", "0044-00000014")?;
    let count = number(&target.frag_count, "FragCount", "0044-00000015")?;
    let (frag_duration, frag_count) = match (duration, count) {
        (Some(d), Some(c)) => (d, c),
        (None, None) => (defaults.frag_duration, defaults.frag_count),
        (Some(_), None) => {
            return Err(OssError::invalid("FragDuration and FragCount must be given together.", "0044-00000015"));
        }
        (None, Some(_)) => {
            return Err(OssError::invalid("FragDuration and FragCount must be given together.", "0044-00000014"));
        }
    };
    let playlist_name = match text(&target.playlist_name) {
        None => defaults.playlist_name.clone(),
        Some(p) => {
            let ec = if !p.ends_with(".m3u8") {
                "0044-00000017"
            } else if p.contains('/') {
                "0044-00000018"
            } else {
                "0044-00000016"
            };
            validate_playlist_name(p).map_err(|e| OssError::invalid(format!("PlaylistName: {e}."), ec))?;
            crate::names::validate_component(p, 128)
                .map_err(|e| OssError::invalid(format!("PlaylistName: {e}."), "0044-00000016"))?;
            p.to_owned()
        }
    };
    let snapshot = match xml.snapshot {
        None => None,
        Some(s) => {
            let interval = match text(&s.interval) {
                Some(v) => super::int_in(v, 1..=100),
                None => None,
            }
            .ok_or_else(|| OssError::invalid("Snapshot Interval must be an integer in [1, 100].", "0044-00000019"))?;
            Some(Snapshot {
                role_name: text(&s.role_name).map(str::to_owned),
                dest_bucket: text(&s.dest_bucket).map(str::to_owned),
                notify_topic: text(&s.notify_topic).map(str::to_owned),
                interval,
            })
        }
    };
    Ok(ChannelRecord {
        name: name.to_owned(),
        description,
        status,
        settings: ChannelSettings { frag_duration, frag_count, playlist_name },
        snapshot,
        last_modified: now,
    })
}

/// Reads a request body, refusing one larger than [`MAX_BODY`] before it is read whole.
/// The body must also be the one the signature covers: V1 signs `Content-MD5` and V4 signs
/// `x-oss-content-sha256`, so when a client sends either, the body must match it.
async fn read_body(ctx: &Context, req: Request<Incoming>) -> Result<Bytes, OssError> {
    let (parts, body) = req.into_parts();
    let body = super::read_body(&parts.headers, body, ctx.config.limits.http_body_timeout).await?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(md5) = header("content-md5") {
        use base64::Engine as _;
        use md5::Digest as _;
        let actual = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        if md5 != actual {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    if let Some(sha) = header("x-oss-content-sha256").filter(|v| *v != "UNSIGNED-PAYLOAD") {
        use sha2::Digest as _;
        if !sha.eq_ignore_ascii_case(&hex::encode(sha2::Sha256::digest(&body))) {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                "The x-oss-content-sha256 you specified did not match what we received.",
            ));
        }
    }
    Ok(body)
}

async fn put_channel(
    ctx: &Context,
    at: &Addressed<'_>,
    key: &ChannelKey,
    req: Request<Incoming>,
) -> Result<Response<Body>, OssError> {
    let body = read_body(ctx, req).await?;
    let record = parse_configuration(&body, key.channel(), &ctx.config.channel_defaults, SystemTime::now())?;
    if let Some(s) = &record.snapshot {
        check_snapshot(&ctx.config, s)?;
    }
    // The check and the write are one claim: while the configuration is written, the channel is held as
    // a publish would hold it, so no publish can start with the old settings in between.
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let hold = ctx.channels.claim(key, unspecified).map_err(|_| OssError::still_live())?;
    let elsewhere = ctx.meta.live_lease(key.bucket(), key.channel()).await;
    if !matches!(elsewhere, Ok(None)) {
        drop(hold);
        ctx.channels.release(key);
        elsewhere?;
        return Err(OssError::still_live());
    }
    let written = ctx.meta.put_channel(key.bucket(), &record).await;
    drop(hold);
    ctx.channels.release(key);
    written?;
    info!(channel = %key, status = record.status.as_str(), frag_duration = record.settings.frag_duration,
          frag_count = record.settings.frag_count, playlist = %record.settings.playlist_name, "live channel put");
    let (publish, play) = urls(ctx, at, key.channel(), &record.settings.playlist_name);
    Ok(xml_ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateLiveChannelResult>\n  <PublishUrls>\n    <Url>{}</Url>\n  </PublishUrls>\n  <PlayUrls>\n    <Url>{}</Url>\n  </PlayUrls>\n</CreateLiveChannelResult>\n",
        escape(&publish),
        escape(&play)
    )))
}

// ------------------------------------------------------------------------------------------ reads

/// A Snapshot configuration must name what this server can deliver: a configured DestBucket (snapshots
/// are stored there, on the same storage) and a `[[notify_topics]]` NotifyTopic (OSS's MNS topic); RoleName
/// is required as on OSS, though this server has no RAM roles to check it against.
pub(crate) fn check_snapshot(config: &crate::config::Config, s: &Snapshot) -> Result<(), OssError> {
    let bad = |message: String| OssError::new(StatusCode::BAD_REQUEST, "InvalidArgument", message);
    if s.role_name.as_deref().is_none_or(str::is_empty) {
        return Err(bad("Snapshot RoleName must not be empty.".into()));
    }
    match s.dest_bucket.as_deref() {
        None | Some("") => return Err(bad("Snapshot DestBucket must not be empty.".into())),
        Some(b) if config.bucket(b).is_none() => {
            return Err(bad(format!("Snapshot DestBucket {b:?} is not a bucket of this server.")));
        }
        Some(_) => {}
    }
    match s.notify_topic.as_deref() {
        None | Some("") => Err(bad("Snapshot NotifyTopic must not be empty.".into())),
        Some(t) if config.notify_topic(t).is_none() => {
            Err(bad(format!("Snapshot NotifyTopic {t:?} is not configured ([[notify_topics]]).")))
        }
        Some(_) => Ok(()),
    }
}

async fn existing(ctx: &Context, key: &ChannelKey) -> Result<ChannelRecord, OssError> {
    ctx.meta.get_channel(key.bucket(), key.channel()).await?.ok_or_else(OssError::no_channel)
}

async fn list(
    ctx: &Context,
    at: &Addressed<'_>,
    prefix: Option<&str>,
    marker: Option<&str>,
    max_keys: Option<&str>,
) -> Result<Response<Body>, OssError> {
    let prefix = prefix.unwrap_or("");
    let marker = marker.unwrap_or("");
    let max_keys = match max_keys.filter(|s| !s.is_empty()) {
        None => 100,
        Some(s) => super::int_in(s, 1..=1000).ok_or_else(|| {
            OssError::invalid(format!("max-keys {s:?} must be an integer in [1, 1000]."), "0044-00000101")
        })?,
    };
    let mut channels = ctx.meta.list_channels(&at.bucket.name, prefix, marker, max_keys + 1).await?;
    let truncated = channels.len() > max_keys as usize;
    channels.truncate(max_keys as usize);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListLiveChannelResult>\n  <Prefix>{}</Prefix>\n  <Marker>{}</Marker>\n  <MaxKeys>{max_keys}</MaxKeys>\n  <IsTruncated>{truncated}</IsTruncated>\n",
        escape(prefix),
        escape(marker)
    );
    if truncated && let Some(last) = channels.last() {
        xml.push_str(&format!("  <NextMarker>{}</NextMarker>\n", escape(&last.name)));
    }
    for c in &channels {
        let (publish, play) = urls(ctx, at, &c.name, &c.settings.playlist_name);
        xml.push_str(&format!(
            "  <LiveChannel>\n    <Name>{}</Name>\n    <Description>{}</Description>\n    <Status>{}</Status>\n    <LastModified>{}</LastModified>\n    <PublishUrls>\n      <Url>{}</Url>\n    </PublishUrls>\n    <PlayUrls>\n      <Url>{}</Url>\n    </PlayUrls>\n  </LiveChannel>\n",
            escape(&c.name),
            escape(&c.description),
            c.status.as_str(),
            oss_time(c.last_modified),
            escape(&publish),
            escape(&play)
        ));
    }
    xml.push_str("</ListLiveChannelResult>\n");
    Ok(xml_ok(xml))
}

async fn info_op(ctx: &Context, key: &ChannelKey) -> Result<Response<Body>, OssError> {
    let c = existing(ctx, key).await?;
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LiveChannelConfiguration>\n  <Description>{}</Description>\n  <Status>{}</Status>\n  <Target>\n    <Type>HLS</Type>\n    <FragDuration>{}</FragDuration>\n    <FragCount>{}</FragCount>\n    <PlaylistName>{}</PlaylistName>\n  </Target>\n",
        escape(&c.description),
        c.status.as_str(),
        c.settings.frag_duration,
        c.settings.frag_count,
        escape(&c.settings.playlist_name)
    );
    if let Some(s) = &c.snapshot {
        xml.push_str("  <Snapshot>\n");
        for (name, value) in
            [("RoleName", &s.role_name), ("DestBucket", &s.dest_bucket), ("NotifyTopic", &s.notify_topic)]
        {
            if let Some(v) = value {
                xml.push_str(&format!("    <{name}>{}</{name}>\n", escape(v)));
            }
        }
        xml.push_str(&format!("    <Interval>{}</Interval>\n  </Snapshot>\n", s.interval));
    }
    xml.push_str("</LiveChannelConfiguration>\n");
    Ok(xml_ok(xml))
}

async fn stat(ctx: &Context, key: &ChannelKey) -> Result<Response<Body>, OssError> {
    let c = existing(ctx, key).await?;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LiveChannelStat>\n");
    match ctx.cluster.live(key).await? {
        Some(live) => {
            xml.push_str(&format!(
                "  <Status>Live</Status>\n  <ConnectedTime>{}</ConnectedTime>\n  <RemoteAddr>{}</RemoteAddr>\n",
                oss_time(live.since),
                escape(&live.remote)
            ));
            let stats = live.stats;
            if let Some(v) = stats.video {
                xml.push_str(&format!(
                    "  <Video>\n    <Width>{}</Width>\n    <Height>{}</Height>\n    <FrameRate>{}</FrameRate>\n    <Bandwidth>{}</Bandwidth>\n    <Codec>{}</Codec>\n  </Video>\n",
                    v.width, v.height, v.frame_rate, v.bandwidth, v.codec
                ));
            }
            if let Some(a) = stats.audio {
                xml.push_str(&format!(
                    "  <Audio>\n    <Bandwidth>{}</Bandwidth>\n    <SampleRate>{}</SampleRate>\n    <Codec>{}</Codec>\n  </Audio>\n",
                    a.bandwidth, a.sample_rate, a.codec
                ));
            }
            // Not in OSS: what the recording of this publish managed (SDKs ignore elements they do not know).
            let c = stats.segments;
            xml.push_str(&format!(
                "  <Segments>\n    <Stored>{}</Stored>\n    <Failed>{}</Failed>\n    <Dropped>{}</Dropped>\n",
                c.stored, c.failed, c.dropped
            ));
            if let Some(e) = &stats.store_error {
                xml.push_str(&format!("    <LastError>{}</LastError>\n", escape(e)));
            }
            xml.push_str("  </Segments>\n");
        }
        None if c.status == ChannelStatus::Disabled => xml.push_str("  <Status>Disabled</Status>\n"),
        None => xml.push_str("  <Status>Idle</Status>\n"),
    }
    xml.push_str("</LiveChannelStat>\n");
    Ok(xml_ok(xml))
}

async fn history(ctx: &Context, key: &ChannelKey) -> Result<Response<Body>, OssError> {
    existing(ctx, key).await?;
    let records = ctx.meta.history(key.bucket(), key.channel(), HISTORY_LEN).await?;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LiveChannelHistory>\n");
    for r in records {
        xml.push_str(&format!(
            "  <LiveRecord>\n    <StartTime>{}</StartTime>\n    <EndTime>{}</EndTime>\n    <RemoteAddr>{}</RemoteAddr>\n  </LiveRecord>\n",
            oss_time(r.start),
            oss_time(r.end),
            escape(&r.remote_addr)
        ));
    }
    xml.push_str("</LiveChannelHistory>\n");
    Ok(xml_ok(xml))
}

// ------------------------------------------------------------------------------------------ status, delete

async fn put_status(ctx: &Context, key: &ChannelKey, status: &str) -> Result<Response<Body>, OssError> {
    let status = ChannelStatus::parse(status)
        .ok_or_else(|| OssError::invalid(format!("status {status:?} is not enabled or disabled."), "0017-00000255"))?;
    if !set_channel_status(ctx, key, status).await? {
        return Err(OssError::no_channel());
    }
    Ok(empty_ok(StatusCode::OK))
}

/// Enables or disables a channel (PutLiveChannelStatus, the console): disabling disconnects its live
/// publisher on whichever node; the recording callbacks hear of the pause or resume. False if there
/// is no such channel.
pub(crate) async fn set_channel_status(
    ctx: &Context,
    key: &ChannelKey,
    status: ChannelStatus,
) -> Result<bool, crate::meta::MetaError> {
    let change = ctx.meta.set_status(key.bucket(), key.channel(), status).await?;
    if change == StatusChange::NoSuchChannel {
        return Ok(false);
    }
    if status == ChannelStatus::Disabled && ctx.cluster.kick(key).await? {
        info!(channel = %key, "channel disabled: the live publisher is disconnected");
        ctx.meta.mark_paused(key.bucket(), key.channel()).await?;
        if let StatusChange::Changed { change_id, .. } = change {
            ctx.notifier.record_paused_or_resumed(key.bucket(), key.channel(), true, change_id).await;
        }
    } else {
        info!(channel = %key, status = status.as_str(), ?change, "channel status set");
        if let StatusChange::Changed { resumed: true, change_id } = change {
            ctx.notifier.record_paused_or_resumed(key.bucket(), key.channel(), false, change_id).await;
        }
    }
    Ok(true)
}

async fn delete(ctx: &Context, key: &ChannelKey) -> Result<Response<Body>, OssError> {
    if !ctx.meta.delete_channel(key.bucket(), key.channel()).await? {
        return Err(OssError::no_channel());
    }
    // The record is gone first, so the kicked publisher cannot re-publish into a deleted channel.
    if ctx.cluster.kick(key).await? {
        info!(channel = %key, "channel deleted while live: the publisher is disconnected; stored segments are kept");
    } else {
        info!(channel = %key, "channel deleted; stored segments are kept");
    }
    Ok(empty_ok(StatusCode::NO_CONTENT))
}

// ------------------------------------------------------------------------------------------ VOD

fn vod_window(start: Option<&str>, end: Option<&str>) -> Result<(u64, u64), OssError> {
    let parse = |v: Option<&str>, what: &str| {
        v.and_then(|s| s.parse::<u64>().ok())
            .filter(|s| from_unix_seconds(*s).is_some())
            .ok_or_else(|| OssError::invalid(format!("{what} must be a Unix time in seconds."), "0044-00000402"))
    };
    let (s, e) = (parse(start, "startTime")?, parse(end, "endTime")?);
    if s == 0 || e <= s || e - s > MAX_VOD_SECONDS {
        return Err(OssError::invalid(
            format!("The time range [{s}, {e}] is invalid: endTime must be after startTime and at most one day later."),
            "0044-00000402",
        ));
    }
    Ok((s, e))
}

async fn vod_playlist(
    ctx: &Context,
    key: &ChannelKey,
    (start, end): (u64, u64),
) -> Result<(Vec<u8>, Vec<PlaylistSegment>), OssError> {
    existing(ctx, key).await?;
    // Both were checked by the parser: the fallback is never taken.
    let (from, to) = (from_unix_seconds(start).unwrap_or(UNIX_EPOCH), from_unix_seconds(end).unwrap_or(UNIX_EPOCH));
    let segments = ctx.meta.segments_between(key.bucket(), key.channel(), from, to).await?;
    if segments.is_empty() {
        return Err(OssError::new(StatusCode::BAD_REQUEST, "InvalidRequest", "No ts found in the playlist."));
    }
    let listed: Vec<PlaylistSegment> = segments
        .iter()
        .map(|s| PlaylistSegment {
            seq: s.seq,
            duration_90k: (s.duration_ms as i64).saturating_mul(90),
            discontinuity: s.discontinuity,
            started_at: s.start,
        })
        .collect();
    let text = render_vod(&listed);
    if text.len() > MAX_VOD_PLAYLIST {
        return Err(OssError::new(StatusCode::BAD_REQUEST, "InvalidRequest", "Size of playlist is too big."));
    }
    Ok((text, listed))
}

async fn post_vod(
    ctx: &Context,
    key: &ChannelKey,
    playlist: &str,
    window: (u64, u64),
) -> Result<Response<Body>, OssError> {
    if !playlist.ends_with(".m3u8") {
        return Err(OssError::invalid("Playlist name must ends with \".m3u8\".", "0044-00000403"));
    }
    let path = key
        .object(playlist)
        .map_err(|e| OssError::invalid(format!("Playlist name is invalid: {e}."), "0044-00000403"))?;
    let channel = existing(ctx, key).await?;
    if channel.settings.playlist_name == playlist {
        return Err(OssError::invalid("The VOD playlist name is the channel's live playlist name.", "0044-00000403"));
    }
    let (text, listed) = vod_playlist(ctx, key, window).await?;
    let etag = format!("\"{}\"", &crate::auth::sha256_hex(&text)[..32].to_ascii_uppercase());
    // Two writes of one VOD playlist are two callbacks: a database counter names each, on any node.
    let id = ctx.meta.next_id("vod_playlist").await?;
    ctx.store.put(&path, Bytes::from(text)).await.map_err(|e| OssError::internal("VOD playlist write failed", e))?;
    info!(channel = %key, playlist, start = window.0, end = window.1, "VOD playlist written");
    if let (Some(first), Some(last)) = (listed.first(), listed.last()) {
        let end = last.started_at + std::time::Duration::from_micros((last.duration_90k.max(0) as u64) * 100 / 9);
        let event = crate::notify::PublishEvent {
            bucket: key.bucket().to_owned(),
            channel: key.channel().to_owned(),
            remote: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            user_args: String::new(),
            publish_started: first.started_at,
            session_id: format!("v{id}"),
        };
        let file = crate::notify::StoredFile {
            object_key: path.to_string(),
            url: format!("http://{}/{path}", ctx.endpoint),
            start: first.started_at,
            duration: end.duration_since(first.started_at).unwrap_or_default(),
            bytes: 0,
            width: 0,
            height: 0,
        };
        ctx.notifier.emit(&crate::notify::CallbackEvent::FileCreated { event, file }).await;
    }
    let mut resp = empty_ok(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn get_vod(ctx: &Context, key: &ChannelKey, window: (u64, u64)) -> Result<Response<Body>, OssError> {
    let (text, _) = vod_playlist(ctx, key, window).await?;
    let mut resp = Response::new(full(Bytes::from(text)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-mpegURL"));
    Ok(resp)
}

// ------------------------------------------------------------------------------------------ hls/sign

/// OSS's `x-oss-process=hls/sign` for private buckets: the playlist, fetched with a signed request, comes
/// back with every segment URI presigned (same key; expiring with the request's own presigned URL, or in
/// an hour for a header-signed request), so a player given
/// one signed playlist URL can fetch the segments too.
async fn signed_playlist(
    ctx: &Context,
    key: &ChannelKey,
    file: &str,
    key_id: &str,
    expires: Option<u64>,
    vhost: bool,
) -> Result<Response<Body>, OssError> {
    let secret = ctx.keys.secret(key_id).ok_or_else(|| OssError::denied("The signing key is gone."))?;
    let path = key.object(file).map_err(|_| OssError::no_such_key())?;
    let bytes = match ctx.store.get(&path, Default::default()).await {
        Ok(found) => found.bytes().await.map_err(|e| OssError::internal("playlist read failed", e))?,
        Err(object_store::Error::NotFound { .. }) => return Err(OssError::no_such_key()),
        Err(e) => return Err(OssError::internal("playlist read failed", e)),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| OssError::internal("playlist read failed", "not UTF-8"))?;
    let expires =
        expires.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 3600);
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') || line.contains("://") || line.contains('?') {
            out.push_str(line);
        } else {
            // An absolute path, not a relative URI: oss2 requests the playlist as `/bucket/ch%2Fvod.m3u8`,
            // against which a relative `0.ts` would resolve outside the channel.
            if !vhost {
                out.push('/');
                out.push_str(&crate::auth::uri_encode(key.bucket(), false));
            }
            out.push('/');
            out.push_str(&crate::auth::uri_encode(key.channel(), false));
            out.push('/');
            out.push_str(&presign_get(key, line, key_id, secret, expires));
        }
        out.push('\n');
    }
    let mut resp = Response::new(full(Bytes::from(out)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `file?OSSAccessKeyId=..&Expires=..&Signature=..`: a V1 presigned GET of a file in the channel's folder.
fn presign_get(key: &ChannelKey, file: &str, key_id: &str, secret: &str, expires: u64) -> String {
    let object = format!("{}/{file}", key.channel());
    let headers = hyper::HeaderMap::new();
    let req = crate::auth::oss::Request {
        method: "GET",
        bucket: Some(key.bucket()),
        key: &object,
        query: &[],
        headers: &headers,
    };
    let signature = crate::auth::oss::sign_v1(secret, &crate::auth::oss::string_to_sign_v1(&req, &expires.to_string()));
    format!(
        "{}?OSSAccessKeyId={}&Expires={expires}&Signature={}",
        crate::auth::uri_encode(file, false),
        crate::auth::uri_encode(key_id, false),
        crate::auth::uri_encode(&signature, false)
    )
}

// ------------------------------------------------------------------------------------------ responses

fn xml_response(status: StatusCode, xml: String) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(xml)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

pub(crate) fn xml_ok(xml: String) -> Response<Body> {
    xml_response(StatusCode::OK, xml)
}

fn empty_ok(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vod_windows_past_what_time_can_hold_are_invalid() {
        assert_eq!(vod_window(Some("1736150400"), Some("1736154000")).ok(), Some((1736150400, 1736154000)));
        for (s, e) in [("18446744073709551000", "18446744073709551615"), ("253402300800", "253402300900")] {
            assert_eq!(vod_window(Some(s), Some(e)).unwrap_err().ec, Some("0044-00000402"), "{s} {e}");
        }
    }

    fn parse(body: &str) -> Result<ChannelRecord, OssError> {
        parse_configuration(body.as_bytes(), "ch1", &ChannelSettings::default(), UNIX_EPOCH)
    }

    fn code(body: &str) -> (&'static str, Option<&'static str>) {
        let e = parse(body).unwrap_err();
        (e.code, e.ec)
    }

    const T: &str = "<Target><Type>HLS</Type>";

    #[test]
    fn the_bodies_the_sdks_send_parse() {
        for file in ["oss2_v1.txt", "oss2_v4.txt", "ossv2_v1.txt", "ossv2_v4.txt"] {
            let put =
                crate::auth::captures::load(file).into_iter().find(|c| c.method == "PUT" && c.body.len() > 10).unwrap();
            let c = parse(&put.body).unwrap();
            assert_eq!(
                (c.description.as_str(), c.status, c.settings.frag_duration, c.settings.frag_count),
                ("demo", ChannelStatus::Enabled, 5, 3)
            );
            assert_eq!(c.settings.playlist_name, "playlist.m3u8");
        }
        // oss2's default LiveChannelInfo(): empty Description and PlaylistName.
        let c = parse("<LiveChannelConfiguration><Description /><Status>enabled</Status><Target><Type>HLS</Type><FragDuration>5</FragDuration><FragCount>3</FragCount><PlaylistName /></Target></LiveChannelConfiguration>").unwrap();
        assert_eq!(c.settings.playlist_name, "playlist.m3u8");
        assert_eq!(c.description, "");
        // The seed's example: Snapshot, no PlaylistName, whitespace everywhere.
        let c = parse("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LiveChannelConfiguration>\n <Description/>\n <Status>enabled</Status>\n <Target>\n  <Type>HLS</Type>\n  <FragDuration>2</FragDuration>\n  <FragCount>3</FragCount>\n </Target>\n <Snapshot>\n  <RoleName>role_for_snapshot</RoleName>\n  <DestBucket>snapshotdest</DestBucket>\n  <NotifyTopic>snapshotnotify</NotifyTopic>\n  <Interval>1</Interval>\n </Snapshot>\n</LiveChannelConfiguration>").unwrap();
        assert_eq!(c.settings.frag_duration, 2);
        assert_eq!(c.snapshot.unwrap().dest_bucket.as_deref(), Some("snapshotdest"));
    }

    #[test]
    fn every_validation_rule_gives_its_code() {
        let wrap = |inner: &str| format!("<LiveChannelConfiguration>{inner}</LiveChannelConfiguration>");
        assert_eq!(
            code(&wrap(&format!("<Status>on</Status>{T}</Target>"))),
            ("InvalidArgument", Some("0044-00000002"))
        );
        assert_eq!(
            code(&wrap(&format!("{T}<FragDuration>0</FragDuration><FragCount>3</FragCount></Target>"))),
            ("InvalidArgument", Some("0044-00000014"))
        );
        assert_eq!(
            code(&wrap(&format!("{T}<FragDuration>5</FragDuration><FragCount>101</FragCount></Target>"))),
            ("InvalidArgument", Some("0044-00000015"))
        );
        assert_eq!(
            code(&wrap(&format!("{T}<FragDuration>x</FragDuration><FragCount>3</FragCount></Target>"))).1,
            Some("0044-00000014")
        );
        assert_eq!(code(&wrap(&format!("{T}<FragDuration>5</FragDuration></Target>"))).0, "InvalidArgument");
        assert_eq!(code(&wrap(&format!("{T}<FragCount>5</FragCount></Target>"))).0, "InvalidArgument");
        assert_eq!(
            code(&wrap(&format!("{T}<PlaylistName>a.m3u</PlaylistName></Target>"))),
            ("InvalidArgument", Some("0044-00000017"))
        );
        assert_eq!(
            code(&wrap(&format!("{T}<PlaylistName>a/bc.m3u8</PlaylistName></Target>"))),
            ("InvalidArgument", Some("0044-00000018"))
        );
        assert_eq!(
            code(&wrap(&format!("{T}<PlaylistName>.m3u8</PlaylistName></Target>"))),
            ("InvalidArgument", Some("0044-00000016"))
        );
        assert_eq!(
            code(&wrap(&format!("{T}<PlaylistName>{}.m3u8</PlaylistName></Target>", "x".repeat(124)))).1,
            Some("0044-00000016")
        );
        assert_eq!(
            code(&wrap(&format!("<Description>{}</Description>{T}</Target>", "d".repeat(129)))).0,
            "InvalidArgument"
        );
        assert!(parse(&wrap(&format!("<Description>{}</Description>{T}</Target>", "d".repeat(128)))).is_ok());
        assert_eq!(code(&wrap("<Target><Type>DASH</Type></Target>")).0, "InvalidArgument");
        assert_eq!(code(&wrap("<Status>enabled</Status>")).0, "MalformedXML");
        assert_eq!(
            code(&wrap(&format!("{T}</Target><Snapshot><Interval>0</Interval></Snapshot>"))).0,
            "InvalidArgument"
        );
        assert_eq!(
            code(&wrap(&format!("{T}</Target><Snapshot><RoleName>r</RoleName></Snapshot>"))).0,
            "InvalidArgument"
        );
        for bad in [
            "",
            "not xml",
            "<LiveChannelConfiguration><Target>",
            "<Other><Target><Type>HLS</Type></Target></Other>",
            "\u{0}",
        ] {
            assert_eq!(code(bad).0, "MalformedXML", "{bad:?}");
        }
        let c = parse(&wrap(&format!("<Status>disabled</Status>{T}<FragDuration>100</FragDuration><FragCount>1</FragCount><PlaylistName>abcdef.m3u8</PlaylistName></Target>"))).unwrap();
        assert_eq!((c.status, c.settings.frag_duration, c.settings.frag_count), (ChannelStatus::Disabled, 100, 1));
    }

    #[test]
    fn error_bodies_carry_what_the_sdks_read() {
        let resp = OssError::from(AuthError::Mismatch {
            key_id: "AK".into(),
            string_to_sign: "GET\n".into(),
            provided: "x".into(),
        })
        .into_response("h", "RID");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/xml");
        let resp = OssError::no_channel().into_response("h", "RID");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["x-oss-ec"], "0026-00000021");
    }

    #[test]
    fn a_snapshot_must_name_a_configured_bucket_and_topic() {
        let file: crate::config::ConfigFile = toml::from_str(
            "[[buckets]]\nname = \"live\"\n[[buckets]]\nname = \"shots\"\n\
             [[notify_topics]]\nname = \"snapshotnotify\"\nurl = \"http://127.0.0.1:9000/snapshots\"\n",
        )
        .unwrap();
        let config = crate::config::Config::from_file(file).unwrap();
        let snap = |role: &str, bucket: &str, topic: &str| Snapshot {
            role_name: Some(role.into()),
            dest_bucket: Some(bucket.into()),
            notify_topic: Some(topic.into()),
            interval: 5,
        };
        assert!(check_snapshot(&config, &snap("r", "shots", "snapshotnotify")).is_ok());
        for (s, why) in [
            (snap("", "shots", "snapshotnotify"), "RoleName"),
            (snap("r", "", "snapshotnotify"), "DestBucket must not be empty"),
            (snap("r", "elsewhere", "snapshotnotify"), "not a bucket"),
            (snap("r", "shots", ""), "NotifyTopic must not be empty"),
            (snap("r", "shots", "mns-topic"), "not configured"),
        ] {
            let e = check_snapshot(&config, &s).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "InvalidArgument"));
            assert!(e.message.contains(why), "{why}: {}", e.message);
        }
        let twice = "[[notify_topics]]\nname = \"t\"\nurl = \"http://a/\"\n[[notify_topics]]\nname = \"t\"\nurl = \"http://b/\"\n";
        assert!(crate::config::Config::from_file(toml::from_str(twice).unwrap()).is_err());
        let ftp = "[[notify_topics]]\nname = \"t\"\nurl = \"ftp://a/\"\n";
        assert!(crate::config::Config::from_file(toml::from_str(ftp).unwrap()).is_err());
    }

    #[test]
    fn vod_windows_are_checked() {
        assert!(vod_window(Some("100"), Some("200")).is_ok());
        for (s, e) in [
            (Some("0"), Some("0")),
            (Some("200"), Some("100")),
            (Some("1"), Some("90000")),
            (None, Some("1")),
            (Some("x"), Some("2")),
        ] {
            assert_eq!(vod_window(s, e).unwrap_err().code, "InvalidArgument");
        }
    }
}
