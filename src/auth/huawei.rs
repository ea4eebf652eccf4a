//! Huawei Cloud API signing, `SDK-HMAC-SHA256` (`../spec/huawei-live-notify.md` §3.1), as
//! huaweicloudsdkcore's `Signer` makes it: canonical URI with a trailing `/` that is not on the wire,
//! sorted encoded query, the headers named in `SignedHeaders` with their raw values, and the body hash.

use std::time::SystemTime;

use chrono::{DateTime, NaiveDateTime, Utc};
use hyper::HeaderMap;

use super::{Keys, hmac_sha256, percent_decode, same, sha256_hex, uri_encode};
use crate::auth::oss::MAX_SKEW;

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The parts of a request the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// Decoded query parameters.
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization or X-Auth-Token header")]
    Missing,
    #[error("malformed SDK-HMAC-SHA256 Authorization: {0}")]
    Malformed(String),
    #[error("unknown access key {0}")]
    UnknownKey(String),
    #[error("X-Sdk-Date is more than 15 minutes away from the server's clock")]
    Skewed,
    #[error("signature mismatch; string to sign was {string_to_sign:?}")]
    Mismatch { string_to_sign: String },
    #[error("X-Sdk-Content-Sha256 does not match the request body")]
    BodyMismatch,
}

pub fn canonical_request(req: &Request, signed_headers: &[String]) -> Option<String> {
    let path = percent_decode(req.path)?;
    let mut uri = path.split('/').map(|segment| uri_encode(segment, false)).collect::<Vec<_>>().join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    let mut query: Vec<(String, String)> =
        req.query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut headers = String::new();
    for name in signed_headers {
        let value = req.headers.get(name.as_str()).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())?;
        headers.push_str(&format!("{name}:{value}\n"));
    }
    let payload = if req.body.is_empty() {
        EMPTY_SHA256.to_owned()
    } else if let Some(v) = req.headers.get("x-sdk-content-sha256").and_then(|v| v.to_str().ok()) {
        v.to_owned()
    } else {
        sha256_hex(req.body)
    };
    Some(format!("{}\n{uri}\n{query}\n{headers}\n{}\n{payload}", req.method, signed_headers.join(";")))
}

pub fn string_to_sign(date: &str, canonical_request: &str) -> String {
    format!("SDK-HMAC-SHA256\n{date}\n{}", sha256_hex(canonical_request.as_bytes()))
}

pub fn sign(secret: &str, string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// Verifies an AK/SK-signed request; returns the access key id.
/// What can be checked before the body is read: an SDK-HMAC-SHA256 Authorization with a known access key
/// and a fresh X-Sdk-Date. A request that fails this is refused without waiting for its body; one that
/// passes still gets the full check (`verify`) once the body is in.
pub fn precheck(headers: &HeaderMap, keys: &Keys, now: SystemTime) -> Result<(), AuthError> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
    let rest = auth
        .strip_prefix("SDK-HMAC-SHA256 ")
        .ok_or_else(|| AuthError::Malformed("the scheme is not SDK-HMAC-SHA256".into()))?;
    let access = super::auth_param(rest, "Access").ok_or_else(|| AuthError::Malformed("Access is required".into()))?;
    keys.secret(access).ok_or_else(|| AuthError::UnknownKey(access.to_owned()))?;
    let date = headers
        .get("x-sdk-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AuthError::Malformed("X-Sdk-Date is missing".into()))?;
    check_date(date, now)
}

fn check_date(date: &str, now: SystemTime) -> Result<(), AuthError> {
    let when: DateTime<Utc> = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| AuthError::Malformed(format!("X-Sdk-Date {date:?} is not yyyymmddThhmmssZ")))?
        .and_utc();
    let now: DateTime<Utc> = now.into();
    if (now - when).abs() > chrono::Duration::from_std(MAX_SKEW).unwrap_or_default() {
        return Err(AuthError::Skewed);
    }
    Ok(())
}

pub fn verify(req: &Request, keys: &Keys, now: SystemTime) -> Result<String, AuthError> {
    let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
    let rest = auth
        .strip_prefix("SDK-HMAC-SHA256 ")
        .ok_or_else(|| AuthError::Malformed("the scheme is not SDK-HMAC-SHA256".into()))?;
    let field = |name| super::auth_param(rest, name);
    let (Some(access), Some(signed), Some(provided)) = (field("Access"), field("SignedHeaders"), field("Signature"))
    else {
        return Err(AuthError::Malformed("Access, SignedHeaders and Signature are required".into()));
    };
    // The signature covers the body through its hash: a hash header the client sends must be the
    // body's, or any body could be replayed under a captured signature.
    if let Some(claimed) = req.headers.get("x-sdk-content-sha256").and_then(|v| v.to_str().ok())
        && !req.body.is_empty()
        && claimed != "UNSIGNED-PAYLOAD"
        && !claimed.eq_ignore_ascii_case(&sha256_hex(req.body))
    {
        return Err(AuthError::BodyMismatch);
    }
    let signed: Vec<String> = signed.split(';').map(|h| h.trim().to_ascii_lowercase()).collect();
    if !signed.iter().any(|h| h == "host") || !signed.iter().any(|h| h == "x-sdk-date") {
        return Err(AuthError::Malformed("SignedHeaders must include host and x-sdk-date".into()));
    }
    let date = req
        .headers
        .get("x-sdk-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AuthError::Malformed("X-Sdk-Date is missing".into()))?;
    check_date(date, now)?;
    let secret = keys.secret(access).ok_or_else(|| AuthError::UnknownKey(access.to_owned()))?;
    let canonical = canonical_request(req, &signed)
        .ok_or_else(|| AuthError::Malformed("a signed header is missing or the path is malformed".into()))?;
    let sts = string_to_sign(date, &canonical);
    if same(provided, &sign(secret, &sts)) {
        Ok(access.to_owned())
    } else {
        Err(AuthError::Mismatch { string_to_sign: sts })
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderName, HeaderValue};

    use super::*;
    use crate::auth::captures::keys;
    use crate::auth::{captures, parse_query};

    #[test]
    fn the_vector_gives_the_documented_canonical_request_and_signature() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spec/vectors.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let v = &v["huawei"];
        let mut headers = HeaderMap::new();
        for h in v["headers"].as_array().unwrap() {
            headers.insert(
                HeaderName::from_bytes(h[0].as_str().unwrap().as_bytes()).unwrap(),
                HeaderValue::from_str(h[1].as_str().unwrap()).unwrap(),
            );
        }
        let query = parse_query("domain=push.example.com").unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let req = Request {
            method: "PUT",
            path: "/v1/0123456789abcdef0123456789abcdef/notifications/publish",
            query: &query,
            headers: &headers,
            body,
        };
        let signed: Vec<String> = ["content-type", "host", "x-project-id", "x-sdk-date"].map(String::from).to_vec();
        let canonical = canonical_request(&req, &signed).unwrap();
        assert_eq!(canonical, v["canonical_request"].as_str().unwrap());
        assert_eq!(string_to_sign("20250106T080000Z", &canonical), v["string_to_sign"].as_str().unwrap());
        let mut headers = headers.clone();
        headers.insert("authorization", HeaderValue::from_str(v["authorization"].as_str().unwrap()).unwrap());
        let query = parse_query("domain=push.example.com").unwrap();
        let req = Request {
            method: "PUT",
            path: "/v1/0123456789abcdef0123456789abcdef/notifications/publish",
            query: &query,
            headers: &headers,
            body,
        };
        let now = DateTime::parse_from_rfc3339("2025-01-06T08:01:00Z").unwrap().into();
        let k = keys("HWAKEXAMPLE0000", "HWSKEXAMPLE0000000000000000000000000000");
        assert_eq!(verify(&req, &k, now), Ok("HWAKEXAMPLE0000".into()));
        let tampered = Request { body: b"{}", ..req };
        assert!(matches!(verify(&tampered, &k, now), Err(AuthError::Mismatch { .. })));
        // A replay with another body and the original body's hash in the hash header: the signature still
        // matches that hash, so the header must match the body (it once replaced the hash unchecked).
        let mut forged = headers.clone();
        forged.insert("x-sdk-content-sha256", HeaderValue::from_str(&sha256_hex(body)).unwrap());
        assert_eq!(verify(&Request { headers: &forged, ..req }, &k, now), Ok("HWAKEXAMPLE0000".into()));
        let other = Request { headers: &forged, body: b"{\"url\":\"http://evil.example/\"}", ..req };
        assert_eq!(verify(&other, &k, now), Err(AuthError::BodyMismatch));
        let later = DateTime::parse_from_rfc3339("2025-01-06T09:00:00Z").unwrap().into();
        assert_eq!(verify(&req, &k, later), Err(AuthError::Skewed));
        assert_eq!(verify(&req, &keys("other", "x"), now), Err(AuthError::UnknownKey("HWAKEXAMPLE0000".into())));
    }

    /// All nine requests huaweicloudsdklive sent verify from their raw headers (User-Agent included).
    #[test]
    fn every_captured_sdk_request_verifies() {
        let k = keys("HWAKEXAMPLE", "HWSKEXAMPLE");
        let captured = captures::load("huawei.txt");
        assert_eq!(captured.len(), 9);
        for c in captured {
            let query = parse_query(&c.query).unwrap();
            let date = c.headers["x-sdk-date"].to_str().unwrap();
            let now = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ").unwrap().and_utc().into();
            let req = Request {
                method: &c.method,
                path: &c.path,
                query: &query,
                headers: &c.headers,
                body: c.body.as_bytes(),
            };
            assert_eq!(verify(&req, &k, now), Ok("HWAKEXAMPLE".into()), "{} {}", c.method, c.path);
        }
    }
}
