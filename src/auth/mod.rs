//! Request authentication for the control plane and for signed pushes: OSS signatures V1 and V4 (header and
//! presigned-URL forms) and the OSS signed RTMP URL (`oss`). Pure functions over the request's parts, with
//! the clock passed in, so every rule is unit-tested against the vectors and captures in `fixtures/spec/`.
//!
//! Not here: deciding what an identity may do (the bucket ACL, in `api`), or mapping failures to a wire
//! format (each shell does that once).

pub mod aliyun;
pub mod huawei;
pub mod oss;

#[cfg(test)]
pub(crate) mod captures;

use crate::config::AccessKey;

/// The access keys of the config, looked up by id.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<AccessKey>,
}

impl Keys {
    pub fn new(keys: Vec<AccessKey>) -> Self {
        Keys { keys }
    }

    pub fn secret(&self, id: &str) -> Option<&str> {
        self.keys.iter().find(|k| k.id == id).map(|k| k.secret.as_str())
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials at all: only what the bucket ACL grants everyone.
    Anonymous,
    /// A valid signature made with this access key.
    Key(String),
}

pub(crate) fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256_hex(msg: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(msg))
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Constant-time equality: a signature check must not tell an attacker how many leading bytes matched.
pub(crate) fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Strict %XX decoding (a `+` stays a `+`: base64 signatures contain it). `None` on a bad escape or bad UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in an Authorization parameter list `A=x, B=y` or `A=x,B=y` (the SDKs differ in
/// the separator and in the order).
pub(crate) fn auth_param<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.split(',').filter_map(|piece| piece.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// `a=1&b&c=` -> decoded pairs in arrival order (`b` and `c=` both give an empty value).
pub fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// RFC 3986 encoding: unreserved characters stay, everything else is %XX with upper-case hex.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
