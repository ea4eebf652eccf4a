//! Alibaba Cloud RPC request signatures (`../spec/aliyun-live-rpc.md` §2–§3): the legacy RPC signature
//! (HMAC-SHA1 over the sorted, doubly percent-encoded parameters, key `secret&`) and ACS3-HMAC-SHA256 (a
//! canonical request over the query and the headers the request lists in `SignedHeaders`). Both reject a
//! timestamp more than 15 minutes off and a nonce seen in the last 15 minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};
use hyper::HeaderMap;

use super::{Keys, base64, hmac_sha1, hmac_sha256, same, sha256_hex, uri_encode};
use crate::auth::oss::MAX_SKEW;

/// Most nonces remembered; beyond it the oldest are forgotten early (bounded memory under a flood).
const MAX_NONCES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Incomplete(String),
    #[error("Specified signature method is not supported: {0}")]
    Method(String),
    #[error("Specified access key is not found.")]
    UnknownKey(String),
    #[error("Specified time stamp or date value is not well formatted.")]
    TimeFormat,
    #[error("Specified time stamp or date value is expired.")]
    Expired,
    #[error("Specified signature nonce was used already.")]
    NonceUsed,
    #[error("The x-acs-content-sha256 header does not match the body.")]
    ContentHash,
    /// The message keeps the `:` the legacy SDK splits on.
    #[error("Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}")]
    Mismatch { string_to_sign: String },
}

/// How long a used nonce must be remembered: a request is accepted while its timestamp is within
/// MAX_SKEW of the server's clock on either side, so one first seen early may come back that much later.
pub const NONCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2 * MAX_SKEW.as_secs());

/// Nonces seen in the last 15 minutes.
#[derive(Debug, Default)]
pub struct Nonces {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Nonces {
    /// Records `nonce`; false if it was already seen within the window.
    pub fn fresh(&self, key_id: &str, nonce: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, t| now.duration_since(*t) < MAX_SKEW);
            if seen.len() >= MAX_NONCES {
                // Still full of fresh nonces: forget the oldest half rather than grow.
                let mut times: Vec<Instant> = seen.values().copied().collect();
                times.sort();
                let cutoff = times[times.len() / 2];
                seen.retain(|_, t| *t > cutoff);
            }
        }
        let key = format!("{key_id}\n{nonce}");
        match seen.get(&key) {
            Some(t) if now.duration_since(*t) < MAX_SKEW => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }
}

/// The parts of a request the signatures cover. `params` are the decoded query (and form) parameters.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub params: &'a [(String, String)],
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Query or form decoding as the Alibaba SDKs encode: `+` is a space, `%XX` a byte.
pub fn parse_form(s: &str) -> Option<Vec<(String, String)>> {
    super::parse_query(&s.replace('+', "%20"))
}

pub fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "Signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let canonical = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}&%2F&{}", uri_encode(&canonical, false))
}

pub fn rpc_sign(secret: &str, string_to_sign: &str) -> String {
    base64(&hmac_sha1(format!("{secret}&").as_bytes(), string_to_sign.as_bytes()))
}

pub fn acs3_canonical_request(req: &Request, signed_headers: &[String], hashed_payload: &str) -> Option<String> {
    // Names are encoded as well as values: with raw names, `A=1&B` = `2` and `A` = `1`, `B` = `2` gave one
    // canonical query, so a signature for one parameter set verified for another.
    let mut query: Vec<(String, String)> =
        req.params.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut headers = String::new();
    for name in signed_headers {
        let mut values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect();
        if values.is_empty() {
            return None;
        }
        values.sort();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Some(format!("{}\n/\n{query}\n{headers}\n{}\n{hashed_payload}", req.method, signed_headers.join(";")))
}

pub fn acs3_string_to_sign(canonical_request: &str) -> String {
    format!("ACS3-HMAC-SHA256\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// Verifies either signature; returns the access key id.
/// A correctly signed, fresh request: who signed it, and the nonce it used up (the caller records it
/// where every node sees it, so a replay to another node is refused too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
    pub nonce: String,
}

impl Verified {
    /// The nonce as the replay table keys it: per access key.
    pub fn replay_key(&self) -> String {
        format!("{}\n{}", self.key_id, self.nonce)
    }
}

/// What can be checked before the body is read, from the query parameters and headers: a known access
/// key and a fresh timestamp, for ACS3 (Authorization header) and for RPC signatures in the query. RPC
/// parameters sent as a form body can only be checked once it is in (`Ok` here). A request that fails
/// this is refused without waiting for its body.
pub fn precheck(
    query: &[(String, String)],
    headers: &HeaderMap,
    keys: &Keys,
    now: SystemTime,
) -> Result<(), AuthError> {
    let known = |id: &str| keys.secret(id).map(|_| ()).ok_or_else(|| AuthError::UnknownKey(id.to_owned()));
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(auth) if auth.starts_with("ACS3-HMAC-SHA256 ") => {
            let id = super::auth_param(&auth[17..], "Credential").ok_or_else(|| {
                AuthError::Incomplete("Authorization needs Credential, SignedHeaders and Signature.".into())
            })?;
            known(id)?;
            let date = headers
                .get("x-acs-date")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| AuthError::Incomplete("x-acs-date is missing.".into()))?;
            check_time(parse_time(date)?, now)
        }
        _ => match (param(query, "AccessKeyId"), param(query, "Timestamp")) {
            (Some(id), Some(at)) => {
                known(id)?;
                check_time(parse_time(at)?, now)
            }
            _ => Ok(()),
        },
    }
}

pub fn verify(req: &Request, keys: &Keys, nonces: &Nonces, now: SystemTime) -> Result<Verified, AuthError> {
    match req.headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(auth) if auth.starts_with("ACS3-HMAC-SHA256 ") => verify_acs3(req, &auth[17..], keys, nonces, now),
        Some(other) if !other.is_empty() && param(req.params, "Signature").is_none() => {
            Err(AuthError::Method(other.split(' ').next().unwrap_or("").to_owned()))
        }
        _ => verify_rpc(req, keys, nonces, now),
    }
}

fn check_time(when: DateTime<Utc>, now: SystemTime) -> Result<(), AuthError> {
    let now: DateTime<Utc> = now.into();
    if (now - when).abs() > chrono::Duration::from_std(MAX_SKEW).unwrap_or_default() {
        Err(AuthError::Expired)
    } else {
        Ok(())
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, AuthError> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").map(|t| t.and_utc()).map_err(|_| AuthError::TimeFormat)
}

fn verify_rpc(req: &Request, keys: &Keys, nonces: &Nonces, now: SystemTime) -> Result<Verified, AuthError> {
    let p = |name: &str| param(req.params, name);
    let missing =
        |name: &str| AuthError::Incomplete(format!("The request signature is incomplete: {name} is missing."));
    let id = p("AccessKeyId").ok_or_else(|| missing("AccessKeyId"))?;
    let provided = p("Signature").ok_or_else(|| missing("Signature"))?;
    match p("SignatureMethod") {
        Some("HMAC-SHA1") => {}
        other => return Err(AuthError::Method(other.unwrap_or("").to_owned())),
    }
    check_time(parse_time(p("Timestamp").ok_or_else(|| missing("Timestamp"))?)?, now)?;
    let nonce = p("SignatureNonce").ok_or_else(|| missing("SignatureNonce"))?;
    let secret = keys.secret(id).ok_or_else(|| AuthError::UnknownKey(id.to_owned()))?;
    let string_to_sign = rpc_string_to_sign(req.method, req.params);
    if !same(provided, &rpc_sign(secret, &string_to_sign)) {
        return Err(AuthError::Mismatch { string_to_sign });
    }
    // Only a correctly signed request uses up its nonce: a forged one must not block the real one.
    if !nonces.fresh(id, nonce) {
        return Err(AuthError::NonceUsed);
    }
    Ok(Verified { key_id: id.to_owned(), nonce: nonce.to_owned() })
}

fn verify_acs3(
    req: &Request,
    rest: &str,
    keys: &Keys,
    nonces: &Nonces,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let field = |name| super::auth_param(rest, name);
    let (Some(id), Some(signed), Some(provided)) = (field("Credential"), field("SignedHeaders"), field("Signature"))
    else {
        return Err(AuthError::Incomplete("Authorization needs Credential, SignedHeaders and Signature.".into()));
    };
    let signed: Vec<String> = signed.split(';').map(|h| h.trim().to_ascii_lowercase()).collect();
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    for required in ["host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"] {
        if header(required).is_some() && !signed.iter().any(|h| h == required) {
            return Err(AuthError::Incomplete(format!("SignedHeaders must include {required}.")));
        }
    }
    let date = header("x-acs-date").ok_or_else(|| AuthError::Incomplete("x-acs-date is missing.".into()))?;
    check_time(parse_time(date)?, now)?;
    let nonce = header("x-acs-signature-nonce")
        .ok_or_else(|| AuthError::Incomplete("x-acs-signature-nonce is missing.".into()))?;
    let body_hash = sha256_hex(req.body);
    let declared = header("x-acs-content-sha256").unwrap_or(&body_hash);
    if declared != body_hash {
        return Err(AuthError::ContentHash);
    }
    let secret = keys.secret(id).ok_or_else(|| AuthError::UnknownKey(id.to_owned()))?;
    let canonical = acs3_canonical_request(req, &signed, declared)
        .ok_or_else(|| AuthError::Incomplete("a header listed in SignedHeaders is missing".into()))?;
    let string_to_sign = acs3_string_to_sign(&canonical);
    if !same(provided, &hex::encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))) {
        return Err(AuthError::Mismatch { string_to_sign });
    }
    if !nonces.fresh(id, nonce) {
        return Err(AuthError::NonceUsed);
    }
    Ok(Verified { key_id: id.to_owned(), nonce: nonce.to_owned() })
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderName, HeaderValue};
    use serde_json::Value;

    use super::*;
    use crate::auth::captures::{self, keys, vectors};

    fn pairs(v: &Value) -> Vec<(String, String)> {
        v.as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into())).collect()
    }

    #[test]
    fn rpc_vector() {
        let v = &vectors()["aliyun_rpc"];
        let mut params = pairs(&v["params"]);
        let sts = rpc_string_to_sign("POST", &params);
        assert_eq!(sts, v["string_to_sign"].as_str().unwrap());
        let sig = rpc_sign("testsecret", &sts);
        assert_eq!(sig, v["signature"].as_str().unwrap());
        params.push(("Signature".into(), sig));
        let headers = HeaderMap::new();
        let req = Request { method: "POST", params: &params, headers: &headers, body: b"" };
        let now = DateTime::parse_from_rfc3339("2025-01-06T08:01:00Z").unwrap().into();
        let nonces = Nonces::default();
        assert_eq!(verify(&req, &keys("testid", "testsecret"), &nonces, now).map(|v| v.key_id), Ok("testid".into()));
        assert_eq!(verify(&req, &keys("testid", "testsecret"), &nonces, now), Err(AuthError::NonceUsed));
        let e = verify(&req, &keys("testid", "other"), &Nonces::default(), now).unwrap_err();
        assert!(e.to_string().contains("server string to sign is:POST&%2F&"), "{e}");
        let later = DateTime::parse_from_rfc3339("2025-01-06T09:00:00Z").unwrap().into();
        assert_eq!(verify(&req, &keys("testid", "testsecret"), &Nonces::default(), later), Err(AuthError::Expired));
    }

    #[test]
    fn acs3_vector() {
        let v = &vectors()["acs3"];
        let mut headers = HeaderMap::new();
        for (k, val) in pairs(&v["headers"]) {
            headers.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(&val).unwrap());
        }
        let params = vec![("AppId".to_owned(), "app1".to_owned()), ("SubscribeId".to_owned(), "sub-0001".to_owned())];
        let req = Request { method: "POST", params: &params, headers: &headers, body: b"" };
        let signed: Vec<String> = v["authorization"]
            .as_str()
            .unwrap()
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .split(';')
            .map(String::from)
            .collect();
        let canonical = acs3_canonical_request(&req, &signed, &sha256_hex(b"")).unwrap();
        assert_eq!(canonical, v["canonical_request"].as_str().unwrap());
        assert_eq!(acs3_string_to_sign(&canonical), v["string_to_sign"].as_str().unwrap());
        headers.insert("authorization", HeaderValue::from_str(v["authorization"].as_str().unwrap()).unwrap());
        let req = Request { method: "POST", params: &params, headers: &headers, body: b"" };
        let now = DateTime::parse_from_rfc3339("2025-01-06T08:00:30Z").unwrap().into();
        assert_eq!(
            verify(&req, &keys("testid", "testsecret"), &Nonces::default(), now).map(|v| v.key_id),
            Ok("testid".into())
        );
        let tampered = Request { body: b"x", ..req };
        assert_eq!(
            verify(&tampered, &keys("testid", "testsecret"), &Nonces::default(), now),
            Err(AuthError::ContentHash)
        );
        // Another parameter set whose raw names and values join into the same text does not verify.
        let smuggled = vec![("AppId=app1&SubscribeId".to_owned(), "sub-0001".to_owned())];
        let other = Request { params: &smuggled, ..req };
        assert!(matches!(
            verify(&other, &keys("testid", "testsecret"), &Nonces::default(), now),
            Err(AuthError::Mismatch { .. })
        ));
    }

    /// All 30 captured requests of the three SDK modes verify (legacy RPC, new SDK v2 RPC, new SDK ACS3).
    #[test]
    fn every_captured_sdk_request_verifies() {
        let k = keys("AKIDEXAMPLE", "SECRETEXAMPLE");
        let mut n = 0;
        for file in ["live_legacy.txt", "live_new_v2.txt", "live_new_v3.txt"] {
            let nonces = Nonces::default();
            for c in captures::load(file) {
                let params = parse_form(&c.query).unwrap();
                let when = match param(&params, "Timestamp") {
                    Some(t) => parse_time(t).unwrap(),
                    None => parse_time(c.headers["x-acs-date"].to_str().unwrap()).unwrap(),
                };
                let req = Request { method: &c.method, params: &params, headers: &c.headers, body: c.body.as_bytes() };
                assert_eq!(
                    verify(&req, &k, &nonces, when.into()).map(|v| v.key_id),
                    Ok("AKIDEXAMPLE".into()),
                    "{file}: {} {}",
                    c.method,
                    c.query
                );
                n += 1;
            }
        }
        assert_eq!(n, 30);
    }

    #[test]
    fn the_nonce_cache_stays_bounded() {
        let nonces = Nonces::default();
        for i in 0..(MAX_NONCES + 10) {
            assert!(nonces.fresh("k", &i.to_string()));
        }
        assert!(nonces.seen.lock().unwrap().len() <= MAX_NONCES);
    }
}
