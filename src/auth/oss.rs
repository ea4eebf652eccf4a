//! OSS request signatures, as `../spec/oss-livechannel.md` §6–§8 describe them (and as oss2 2.19 and
//! alibabacloud-oss-v2 1.4 produce them, see the captures in `fixtures/spec/captures/`):
//!
//! - V1: `Authorization: OSS AK:base64(HMAC-SHA1)` over verb, Content-MD5, Content-Type, Date, the `x-oss-*`
//!   headers and the canonical resource with its sub-resources; and the presigned-URL form
//!   (`OSSAccessKeyId`, `Expires`, `Signature` in the query).
//! - V4: `OSS4-HMAC-SHA256` with the canonical request over every query parameter, in both SDKs' header
//!   layouts, and the presigned form (`x-oss-signature-version` and friends in the query).
//! - The signed RTMP URL (`Expires`, `OSSAccessKeyId`, `Signature`, `playlistName`, `security-token`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDateTime, Utc};
use hyper::HeaderMap;

use super::{Keys, Principal, base64, hmac_sha1, hmac_sha256, same, sha256_hex, uri_encode};

/// Largest accepted difference between a request's date and ours.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest lifetime of a V4 presigned URL, as OSS sets it: 7 days.
pub const MAX_V4_EXPIRES: i64 = 7 * 24 * 3600;

/// Query parameters that are part of the V1 canonical resource. Our operations use the first seven (and
/// `continuation-token`); the rest are the documented list, kept so a request for another OSS feature is still verified correctly.
const SUB_RESOURCES: &[&str] = &[
    "live",
    "comp",
    "status",
    "vod",
    "startTime",
    "endTime",
    "security-token",
    "acl",
    "uploads",
    "location",
    "cors",
    "logging",
    "website",
    "referer",
    "lifecycle",
    "delete",
    "append",
    "tagging",
    "objectMeta",
    "uploadId",
    "partNumber",
    "position",
    "img",
    "style",
    "styleName",
    "replication",
    "replicationProgress",
    "replicationLocation",
    "cname",
    "bucketInfo",
    "qos",
    "symlink",
    "x-oss-process",
    // ListObjectsV2 pages and GetObject's response overrides, signed by oss2 and alibabacloud-oss-v2.
    "continuation-token",
    "response-content-type",
    "response-content-language",
    "response-cache-control",
    "response-content-encoding",
    "response-expires",
    "response-content-disposition",
    "versionId",
];

/// The parts of an HTTP request a signature covers. `key` and `query` are already percent-decoded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The bucket, from the Host (virtual-host style) or the first path segment; `None` for service level.
    pub bucket: Option<&'a str>,
    /// The decoded object key (`ch1`, `ch1/vod.m3u8`); empty for a bucket-level request.
    pub key: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Malformed or incomplete credentials, an expired URL: OSS answers `AccessDenied`.
    #[error("{0}")]
    Denied(String),
    #[error("The OSS Access Key Id you provided does not exist in our records.")]
    UnknownKey(String),
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your key and signing method."
    )]
    Mismatch { key_id: String, string_to_sign: String, provided: String },
    #[error("The difference between the request time and the current time is too large.")]
    Skewed,
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `/{bucket}/{key}`, `/{bucket}/` or `/`.
    fn resource_path(&self) -> String {
        match self.bucket {
            None => "/".to_owned(),
            Some(b) => format!("/{b}/{}", self.key),
        }
    }
}

/// Checks a request's credentials. No credentials at all is `Anonymous` (the caller applies the ACL);
/// credentials that are present must be valid.
pub fn verify(req: &Request, keys: &Keys, now: SystemTime) -> Result<Principal, AuthError> {
    if let Some(auth) = req.header("authorization") {
        if let Some(rest) = auth.strip_prefix("OSS4-HMAC-SHA256 ") {
            return verify_v4_header(req, rest, keys, now);
        }
        if let Some(rest) = auth.strip_prefix("OSS ") {
            return verify_v1_header(req, rest, keys, now);
        }
        return Err(AuthError::Denied("Authorization header is not an OSS or OSS4-HMAC-SHA256 signature.".into()));
    }
    if req.param("x-oss-signature-version").is_some() {
        return verify_v4_query(req, keys, now);
    }
    if req.param("OSSAccessKeyId").is_some() || req.param("Signature").is_some() {
        return verify_v1_query(req, keys, now);
    }
    Ok(Principal::Anonymous)
}

fn secret<'k>(keys: &'k Keys, id: &str) -> Result<&'k str, AuthError> {
    keys.secret(id).ok_or_else(|| AuthError::UnknownKey(id.to_owned()))
}

// ---------------------------------------------------------------------------------------------- V1

/// The V1 canonical resource: `/{bucket}/{key}` plus sorted sub-resources (`k=v`, or `k` when empty).
pub fn canonical_resource_v1(req: &Request) -> String {
    let mut subs: Vec<&(String, String)> =
        req.query.iter().filter(|(k, _)| SUB_RESOURCES.contains(&k.as_str()) || k.starts_with("response-")).collect();
    subs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = req.resource_path();
    for (i, (k, v)) in subs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// The V1 string to sign; `date` is the Date header, or the `Expires` value of a presigned URL.
pub fn string_to_sign_v1(req: &Request, date: &str) -> String {
    let mut oss_headers: Vec<(String, &str)> = req
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().to_ascii_lowercase();
            (name.starts_with("x-oss-")).then(|| (name, value.to_str().unwrap_or("").trim()))
        })
        .collect();
    oss_headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = format!(
        "{}\n{}\n{}\n{}\n",
        req.method,
        req.header("content-md5").unwrap_or(""),
        req.header("content-type").unwrap_or(""),
        date
    );
    for (name, value) in oss_headers {
        s.push_str(&name);
        s.push(':');
        s.push_str(value);
        s.push('\n');
    }
    s.push_str(&canonical_resource_v1(req));
    s
}

pub fn sign_v1(secret: &str, string_to_sign: &str) -> String {
    base64(&hmac_sha1(secret.as_bytes(), string_to_sign.as_bytes()))
}

fn verify_v1_header(req: &Request, rest: &str, keys: &Keys, now: SystemTime) -> Result<Principal, AuthError> {
    let (id, provided) = rest.trim().rsplit_once(':').ok_or_else(|| {
        AuthError::Denied("Authorization header is not of the form \"OSS AccessKeyId:Signature\".".into())
    })?;
    // oss2 signs x-oss-date in place of Date when a request carries it; neither SDK does in V1 mode.
    let date = req
        .header("date")
        .or_else(|| req.header("x-oss-date"))
        .ok_or_else(|| AuthError::Denied("The request has no Date header.".into()))?;
    let when = DateTime::parse_from_rfc2822(date)
        .map_err(|_| AuthError::Denied(format!("The Date header {date:?} is not an RFC 1123 date.")))?;
    check_skew(when.with_timezone(&Utc), now)?;
    let secret = secret(keys, id)?;
    let string_to_sign = string_to_sign_v1(req, date);
    check(id, provided, &sign_v1(secret, &string_to_sign), string_to_sign)
}

fn verify_v1_query(req: &Request, keys: &Keys, now: SystemTime) -> Result<Principal, AuthError> {
    let (Some(id), Some(expires), Some(provided)) =
        (req.param("OSSAccessKeyId"), req.param("Expires"), req.param("Signature"))
    else {
        return Err(AuthError::Denied("A presigned URL needs OSSAccessKeyId, Expires and Signature.".into()));
    };
    let expires_at: u64 =
        expires.parse().map_err(|_| AuthError::Denied(format!("Expires {expires:?} is not a Unix time.")))?;
    if unix(now) > expires_at {
        return Err(AuthError::Denied("Request has expired.".into()));
    }
    let secret = secret(keys, id)?;
    let string_to_sign = string_to_sign_v1(req, expires);
    check(id, provided, &sign_v1(secret, &string_to_sign), string_to_sign)
}

// ---------------------------------------------------------------------------------------------- V4

/// The V4 canonical request. `exclude` names query parameters left out (the signature of a presigned URL).
pub fn canonical_request_v4(req: &Request, additional: &[String], hashed_payload: &str, exclude: &[&str]) -> String {
    let uri = uri_encode(&req.resource_path(), true);
    let mut query: Vec<(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !exclude.contains(&k.as_str()))
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().to_ascii_lowercase();
            let signed = name.starts_with("x-oss-")
                || name == "content-type"
                || name == "content-md5"
                || additional.contains(&name);
            signed.then(|| (name, value.to_str().unwrap_or("").trim().to_owned()))
        })
        .collect();
    headers.sort();
    let mut canonical_headers = String::new();
    for (name, value) in &headers {
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    format!("{}\n{uri}\n{query}\n{canonical_headers}\n{}\n{hashed_payload}", req.method, additional.join(";"))
}

pub fn signing_key_v4(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let k = hmac_sha256(format!("aliyun_v4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, b"oss");
    hmac_sha256(&k, b"aliyun_v4_request")
}

pub fn string_to_sign_v4(datetime: &str, scope: &str, canonical_request: &str) -> String {
    format!("OSS4-HMAC-SHA256\n{datetime}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// `AK/yyyymmdd/region/oss/aliyun_v4_request` -> (AK, date, region).
fn parse_credential(credential: &str) -> Result<(&str, &str, &str), AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [id, date, region, "oss", "aliyun_v4_request"] if !id.is_empty() && date.len() == 8 && !region.is_empty() => {
            Ok((id, date, region))
        }
        _ => Err(AuthError::Denied(format!(
            "Credential {credential:?} is not of the form AccessKeyId/yyyymmdd/region/oss/aliyun_v4_request."
        ))),
    }
}

/// When a presigned request's URL expires (Unix seconds), from the parameters its signature covers: V1's
/// `Expires`, or V4's `x-oss-date` + `x-oss-expires`. `None` for a header-signed request (no URL expiry)
/// and for parameters that do not read. Call it only on a request that verified.
pub fn presigned_expiry(query: &[(String, String)]) -> Option<u64> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if param("Signature").is_some() && param("OSSAccessKeyId").is_some() {
        return param("Expires")?.parse().ok();
    }
    if param("x-oss-signature").is_some() {
        let when = parse_v4_datetime(param("x-oss-date")?).ok()?;
        let expires: i64 = param("x-oss-expires")?.parse().ok().filter(|e| (1..=MAX_V4_EXPIRES).contains(e))?;
        return u64::try_from(when.timestamp().checked_add(expires)?).ok();
    }
    None
}

fn parse_v4_datetime(s: &str) -> Result<DateTime<Utc>, AuthError> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc())
        .map_err(|_| AuthError::Denied(format!("x-oss-date {s:?} is not of the form yyyymmddThhmmssZ.")))
}

fn split_additional(list: &str) -> Result<Vec<String>, AuthError> {
    if list.trim().is_empty() {
        return Err(AuthError::Denied("AdditionalHeaders is present but empty.".into()));
    }
    Ok(list.split(';').map(|h| h.trim().to_ascii_lowercase()).collect())
}

fn verify_v4_header(req: &Request, rest: &str, keys: &Keys, now: SystemTime) -> Result<Principal, AuthError> {
    // oss2 writes ", " and puts AdditionalHeaders last; oss-v2 writes "," and puts it before Signature.
    let credential = super::auth_param(rest, "Credential");
    let signature = super::auth_param(rest, "Signature");
    let additional = match super::auth_param(rest, "AdditionalHeaders") {
        Some(list) => split_additional(list)?,
        None => Vec::new(),
    };
    let (Some(credential), Some(provided)) = (credential, signature) else {
        return Err(AuthError::Denied("OSS4-HMAC-SHA256 Authorization needs Credential and Signature.".into()));
    };
    let (id, date, region) = parse_credential(credential)?;
    let datetime = req.header("x-oss-date").ok_or_else(|| AuthError::Denied("V4 requests need x-oss-date.".into()))?;
    let when = parse_v4_datetime(datetime)?;
    if !datetime.starts_with(date) {
        return Err(AuthError::Denied("The Credential date does not match x-oss-date.".into()));
    }
    check_skew(when, now)?;
    let secret = secret(keys, id)?;
    let payload = req.header("x-oss-content-sha256").unwrap_or("UNSIGNED-PAYLOAD");
    let canonical = canonical_request_v4(req, &additional, payload, &[]);
    let scope = format!("{date}/{region}/oss/aliyun_v4_request");
    let string_to_sign = string_to_sign_v4(datetime, &scope, &canonical);
    let expected = hex::encode(hmac_sha256(&signing_key_v4(secret, date, region), string_to_sign.as_bytes()));
    check(id, provided, &expected, string_to_sign)
}

fn verify_v4_query(req: &Request, keys: &Keys, now: SystemTime) -> Result<Principal, AuthError> {
    if req.param("x-oss-signature-version") != Some("OSS4-HMAC-SHA256") {
        return Err(AuthError::Denied("x-oss-signature-version must be OSS4-HMAC-SHA256.".into()));
    }
    let (Some(credential), Some(datetime), Some(expires), Some(provided)) = (
        req.param("x-oss-credential"),
        req.param("x-oss-date"),
        req.param("x-oss-expires"),
        req.param("x-oss-signature"),
    ) else {
        return Err(AuthError::Denied(
            "A V4 presigned URL needs x-oss-credential, x-oss-date, x-oss-expires and x-oss-signature.".into(),
        ));
    };
    let (id, date, region) = parse_credential(credential)?;
    let when = parse_v4_datetime(datetime)?;
    // OSS takes 1 s to 7 days; a longer lifetime would also overflow the date arithmetic below.
    let expires: i64 = expires.parse().ok().filter(|e| (1..=MAX_V4_EXPIRES).contains(e)).ok_or_else(|| {
        AuthError::Denied(format!("x-oss-expires {expires:?} must be 1 to {MAX_V4_EXPIRES} seconds."))
    })?;
    let now_utc: DateTime<Utc> = now.into();
    if now_utc > when + chrono::Duration::seconds(expires) {
        return Err(AuthError::Denied("Request has expired.".into()));
    }
    if when > now_utc + chrono::Duration::from_std(MAX_SKEW).unwrap_or_default() {
        return Err(AuthError::Skewed);
    }
    let additional = match req.param("x-oss-additional-headers") {
        Some(list) => split_additional(list)?,
        None => Vec::new(),
    };
    let secret = secret(keys, id)?;
    let canonical = canonical_request_v4(req, &additional, "UNSIGNED-PAYLOAD", &["x-oss-signature"]);
    let scope = format!("{date}/{region}/oss/aliyun_v4_request");
    let string_to_sign = string_to_sign_v4(datetime, &scope, &canonical);
    let expected = hex::encode(hmac_sha256(&signing_key_v4(secret, date, region), string_to_sign.as_bytes()));
    check(id, provided, &expected, string_to_sign)
}

// ---------------------------------------------------------------------------------------------- RTMP

/// Query parameters of a signed RTMP URL that are not signed themselves.
const RTMP_UNSIGNED: &[&str] = &["OSSAccessKeyId", "Expires", "Signature", "SecurityToken"];

pub fn rtmp_string_to_sign(bucket: &str, channel: &str, params: &[(String, String)], expires: &str) -> String {
    let mut signed: Vec<&(String, String)> =
        params.iter().filter(|(k, _)| !RTMP_UNSIGNED.contains(&k.as_str())).collect();
    signed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut s = format!("{expires}\n");
    for (k, v) in signed {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push_str(&format!("/{bucket}/{channel}"));
    s
}

/// Verifies the signature of an RTMP publish. `params` are the decoded query parameters of the stream key
/// (or tcUrl). `Ok(None)` means the URL carries no signature at all.
pub fn verify_rtmp(
    bucket: &str,
    channel: &str,
    params: &[(String, String)],
    keys: &Keys,
    now: SystemTime,
) -> Result<Option<String>, AuthError> {
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (id, expires, provided) = match (get("OSSAccessKeyId"), get("Expires"), get("Signature")) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(expires), Some(sig)) => (id, expires, sig),
        _ => return Err(AuthError::Denied("a signed RTMP URL needs OSSAccessKeyId, Expires and Signature".into())),
    };
    let expires_at: u64 =
        expires.parse().map_err(|_| AuthError::Denied(format!("Expires {expires:?} is not a Unix time")))?;
    if unix(now) > expires_at {
        return Err(AuthError::Denied("the signed URL has expired".into()));
    }
    let secret = secret(keys, id)?;
    let string_to_sign = rtmp_string_to_sign(bucket, channel, params, expires);
    check(id, provided, &sign_v1(secret, &string_to_sign), string_to_sign).map(|_| Some(id.to_owned()))
}

/// Builds the query of a signed RTMP URL the way oss2's `sign_rtmp_url` does (tests and tools use it).
pub fn sign_rtmp_query(
    bucket: &str,
    channel: &str,
    playlist_name: Option<&str>,
    expires: u64,
    key_id: &str,
    secret: &str,
) -> String {
    let mut params = Vec::new();
    if let Some(p) = playlist_name.filter(|p| !p.is_empty()) {
        params.push(("playlistName".to_owned(), p.to_owned()));
    }
    let sts = rtmp_string_to_sign(bucket, channel, &params, &expires.to_string());
    params.push(("OSSAccessKeyId".into(), key_id.into()));
    params.push(("Expires".into(), expires.to_string()));
    params.push(("Signature".into(), sign_v1(secret, &sts)));
    params
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------------- common

fn check(id: &str, provided: &str, expected: &str, string_to_sign: String) -> Result<Principal, AuthError> {
    if same(provided, expected) {
        Ok(Principal::Key(id.to_owned()))
    } else {
        Err(AuthError::Mismatch { key_id: id.to_owned(), string_to_sign, provided: provided.to_owned() })
    }
}

fn check_skew(when: DateTime<Utc>, now: SystemTime) -> Result<(), AuthError> {
    let now: DateTime<Utc> = now.into();
    let skew = (now - when).abs();
    if skew > chrono::Duration::from_std(MAX_SKEW).unwrap_or_default() { Err(AuthError::Skewed) } else { Ok(()) }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
