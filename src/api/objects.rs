//! Object reads (the API has addressed and authorized them): playlists, segments, snapshots and any other
//! object of a channel folder, with GET/HEAD, byte ranges, conditional 304s and the cache rules each kind of
//! object allows; plus the virtual-host addressing every dialect uses.

use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use object_store::{GetOptions, ObjectStoreExt};

use super::listing;
use super::oss::OssError;
use super::range;
use crate::config::Config;
use crate::names::ChannelKey;
use crate::reply::{Body, empty, header_value, text};
use crate::service::Context;

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
    let kind = ObjectKind::of(file);
    let path = key.object(file).map_err(|_| OssError::no_such_key())?;
    if super::conditional::is_conditional(req.headers()) {
        // Validators first: a current copy costs a metadata read and no bytes (and no redirect).
        let meta = ctx.store.head(&path).await.map_err(store_error)?;
        if super::conditional::not_modified(req.headers(), meta.e_tag.as_deref(), meta.last_modified.into()) {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            validators(resp.headers_mut(), kind, meta.e_tag.as_deref(), meta.last_modified.into());
            return Ok(resp);
        }
    }
    // Segment bytes straight from the object store, when configured: a presigned URL is per method, so
    // HEAD is still answered here.
    if kind == ObjectKind::Segment
        && req.method() == Method::GET
        && let Some(url) = ctx.store.redirect_url(&path).await
    {
        return Ok(redirect(&url.map_err(|e| OssError::internal("presigning a segment URL failed", e))?, ctx));
    }
    let range_header = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let spec = range_header.and_then(range::parse);
    // One request per read: the range goes to the store as asked, and the object's size comes back with
    // it. Only a range the store refuses costs a second request, to tell 416 from a store failure.
    let options = GetOptions {
        head: req.method() == Method::HEAD,
        range: spec.and_then(range::Spec::get_range),
        ..Default::default()
    };
    let result = match (ctx.store.get(&path, options).await, spec) {
        (Ok(result), _) => result,
        (Err(e @ object_store::Error::NotFound { .. }), _) | (Err(e), None) => return Err(store_error(e)),
        (Err(e), Some(spec)) => {
            let size = ctx.store.head(&path).await.map_err(store_error)?.size;
            return match spec.resolve(size) {
                None => Ok(unsatisfiable(size)),
                Some(_) => Err(store_error(e)),
            };
        }
    };
    let size = result.meta.size;
    let mut status = StatusCode::OK;
    let mut content_range = None;
    if let Some(spec) = spec {
        if spec.resolve(size).is_none() {
            return Ok(unsatisfiable(size));
        }
        status = StatusCode::PARTIAL_CONTENT;
        content_range = Some(format!("bytes {}-{}/{size}", result.range.start, result.range.end.saturating_sub(1)));
    }
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
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.content_type()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    validators(h, kind, etag.as_deref(), modified.into());
    if let Some(cr) = content_range {
        h.insert(header::CONTENT_RANGE, header_value(&cr));
    }
    Ok(resp)
}

/// ListObjects (V1) or ListObjectsV2 (`list-type=2`) of a bucket: every object of its channel folders.
/// The store lists under the longest folder the prefix names (a channel's folder for `demo/`, the whole
/// bucket for `de`); the pager keeps only the page in memory, so a bucket of a million segments costs one
/// scan and max-keys rows. OSS's limits: max-keys 1..=1000 (default 100), a prefix or marker of at most
/// 1024 bytes.
pub(crate) async fn list_objects(
    ctx: &Context,
    bucket: &str,
    query: &[(String, String)],
) -> Result<Response<Body>, OssError> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let v2 = param("list-type") == Some("2");
    let prefix = param("prefix").unwrap_or("");
    let delimiter = param("delimiter").unwrap_or("");
    let max_keys = match param("max-keys").filter(|s| !s.is_empty()) {
        None => 100,
        Some(s) => super::int_in(s, 1..=1000).ok_or_else(|| {
            OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("max-keys {s:?} must be an integer in [1, 1000]."),
            )
        })?,
    };
    let encoding = match param("encoding-type") {
        None | Some("") => false,
        Some("url") => true,
        Some(other) => {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("encoding-type {other:?} is not supported; use url."),
            ));
        }
    };
    let version = if v2 {
        listing::Version::V2 {
            continuation_token: param("continuation-token"),
            start_after: param("start-after"),
            fetch_owner: param("fetch-owner") == Some("true"),
        }
    } else {
        listing::Version::V1 { marker: param("marker").unwrap_or("") }
    };
    // V2 resumes after the token (our tokens are plain keys), else after start-after.
    let after = match &version {
        listing::Version::V1 { marker } => *marker,
        listing::Version::V2 { continuation_token, start_after, .. } => {
            continuation_token.or(*start_after).unwrap_or("")
        }
    };
    for (name, value) in [("prefix", prefix), ("marker", after), ("delimiter", delimiter)] {
        if value.len() > 1024 {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("{name} is {} bytes; at most 1024 are allowed.", value.len()),
            ));
        }
    }
    let query = listing::Query { prefix, delimiter, after, max_keys: max_keys as usize };
    let folder = prefix.rsplit_once('/').map_or("", |(folder, _)| folder);
    let mut root = object_store::path::Path::from(bucket);
    for part in folder.split('/').filter(|p| !p.is_empty()) {
        // A folder no channel can have (`..`, `#`, ...) holds no objects.
        if crate::names::validate_component(part, 1024).is_err() {
            return Ok(super::oss::xml_ok(listing::to_xml(
                bucket,
                &query,
                &version,
                encoding,
                &listing::Page::default(),
            )));
        }
        root = root.clone().join(part);
    }
    let mut pager = listing::Pager::new(query.clone());
    let mut listed = ctx.store.objects().list(Some(&root));
    while let Some(meta) = listed.try_next().await.map_err(|e| OssError::internal("listing objects failed", e))? {
        let Some(key) = bucket_key(bucket, &meta.location) else { continue };
        pager.push(listing::Entry { key, size: meta.size, modified: meta.last_modified.into(), etag: meta.e_tag });
    }
    Ok(super::oss::xml_ok(listing::to_xml(bucket, &query, &version, encoding, &pager.finish())))
}

/// DeleteObject of one object of a channel folder. The index row goes first, so a crash between the two
/// leaves an unlisted object, never a VOD playlist naming a missing one. Deleting what does not exist
/// succeeds, as on OSS; the live playlist of a live channel is refused (409), since players need it.
pub(crate) async fn delete_object(ctx: &Context, bucket: &str, key: &str) -> Result<(), OssError> {
    let Some((channel, file)) = key.split_once('/') else { return Ok(()) };
    let (Ok(channel_key), false) = (ChannelKey::new(bucket, channel), file.contains('/')) else { return Ok(()) };
    let Ok(path) = channel_key.object(file) else { return Ok(()) };
    match ObjectKind::of(file) {
        ObjectKind::Playlist => {
            let live = ctx.cluster.live(&channel_key).await?.is_some();
            let record = if live { ctx.meta.get_channel(bucket, channel).await? } else { None };
            if record.is_some_and(|c| c.settings.playlist_name == file) {
                return Err(OssError::new(
                    StatusCode::CONFLICT,
                    "ChannelStillLive",
                    format!("{file} is the live playlist of {channel_key}, which is live; end the publish first."),
                ));
            }
        }
        ObjectKind::Segment => {
            if let Some(seq) = crate::hls::parse_segment_file_name(file) {
                ctx.meta.delete_segment(bucket, channel, seq).await?;
            }
        }
        ObjectKind::Image => {
            // A snapshot's row goes with it, so DescribeLiveStreamSnapshotInfo never lists a deleted one.
            ctx.meta.delete_snapshot_object(bucket, key).await?;
        }
        ObjectKind::Other => {}
    }
    match ctx.store.objects().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
            tracing::info!(channel = %channel_key, file, "object deleted");
            Ok(())
        }
        Err(e) => Err(OssError::internal(&format!("deleting {channel_key}/{file} failed"), e)),
    }
}

/// DeleteMultipleObjects (`POST /<bucket>?delete`): up to 1000 keys, each deleted as DeleteObject does;
/// the reply lists the deleted keys unless `Quiet`. A key that fails is reported in the reply (OSS's
/// `Error` rows) and does not stop the others.
pub(crate) async fn delete_objects(
    ctx: &Context,
    bucket: &str,
    body: &[u8],
    url_encoded: bool,
    content_md5: Option<&str>,
) -> Result<Response<Body>, OssError> {
    use base64::Engine as _;
    use md5::Digest as _;
    let bad = |why: String| OssError::new(StatusCode::BAD_REQUEST, "MalformedXML", why);
    if let Some(sent) = content_md5 {
        let ours = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        if sent.trim() != ours {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                "Content-MD5 does not match the body.",
            ));
        }
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("The body is not UTF-8.".into()))?;
    let request: listing::DeleteRequest =
        quick_xml::de::from_str(text).map_err(|e| bad(format!("The Delete body does not parse: {e}.")))?;
    if request.objects.is_empty() || request.objects.len() > 1000 {
        return Err(bad(format!("A Delete body names 1 to 1000 objects, not {}.", request.objects.len())));
    }
    let mut results = Vec::with_capacity(request.objects.len());
    for object in &request.objects {
        let outcome = delete_object(ctx, bucket, &object.key).await.map_err(|e| (e.code, e.message));
        results.push((object.key.as_str(), outcome));
    }
    Ok(super::oss::xml_ok(listing::delete_result_xml(&results, request.quiet, url_encoded)))
}

/// The key a stored location has inside its bucket, its parts decoded (object_store percent-encodes what
/// a path part may not hold; `%` is never in a name, so decoding is exact).
fn bucket_key(bucket: &str, location: &object_store::path::Path) -> Option<String> {
    let mut parts = location.parts();
    let first = parts.next()?;
    if first.as_ref() != object_store::path::PathPart::from(bucket).as_ref() {
        return None;
    }
    let decoded: Option<Vec<String>> = parts
        .map(|p| percent_encoding::percent_decode_str(p.as_ref()).decode_utf8().ok().map(|s| s.into_owned()))
        .collect();
    decoded.map(|d| d.join("/")).filter(|k| !k.is_empty())
}

/// What a channel folder holds, by file name: it decides the content type and how long caches may keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Playlist,
    Segment,
    Image,
    Other,
}

impl ObjectKind {
    pub(crate) fn of(file: &str) -> Self {
        if file.ends_with(".m3u8") {
            ObjectKind::Playlist
        } else if crate::hls::parse_segment_file_name(file).is_some() {
            ObjectKind::Segment
        } else if file.ends_with(".jpg") || file.ends_with(".jpeg") {
            ObjectKind::Image
        } else {
            ObjectKind::Other
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ObjectKind::Playlist => "application/vnd.apple.mpegurl",
            ObjectKind::Segment => "video/mp2t",
            ObjectKind::Image => "image/jpeg",
            ObjectKind::Other => "application/octet-stream",
        }
    }

    fn cache_control(self) -> &'static str {
        match self {
            // Players poll the live playlist; it must not be cached for longer than a fraction of a segment.
            ObjectKind::Playlist => "max-age=1",
            // A segment name is never reused (sequence numbers only grow), so its bytes never change.
            ObjectKind::Segment => "max-age=86400, immutable",
            // Snapshots include an overwritten "latest"; anything else may be replaced too: revalidate.
            ObjectKind::Image | ObjectKind::Other => "no-cache",
        }
    }
}

/// The headers a 200, 206 and 304 all carry (RFC 9110 §15.4.5: a 304 repeats the validators and caching).
fn validators(h: &mut hyper::HeaderMap, kind: ObjectKind, etag: Option<&str>, modified: std::time::SystemTime) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(kind.cache_control()));
    h.insert(header::LAST_MODIFIED, header_value(&httpdate::fmt_http_date(modified)));
    if let Some(etag) = etag {
        h.insert(header::ETAG, header_value(&super::conditional::quoted(etag)));
    }
}

/// `302 Found` to a presigned URL. Caches may keep the redirect for half the URL's life, so no cached
/// redirect outlives the URL it points to.
fn redirect(url: &str, ctx: &Context) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::FOUND;
    let keep = ctx.store.redirect_expires().map_or(0, |e| e.as_secs() / 2);
    let h = resp.headers_mut();
    h.insert(header::LOCATION, header_value(url));
    h.insert(header::CACHE_CONTROL, header_value(&format!("private, max-age={keep}")));
    resp
}

fn unsatisfiable(size: u64) -> Response<Body> {
    let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
    resp.headers_mut().insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
    resp
}

fn store_error(e: object_store::Error) -> OssError {
    match e {
        object_store::Error::NotFound { .. } => OssError::no_such_key(),
        other => OssError::internal("storage read failed", other),
    }
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
