//! OSS V1/V4 and signed-RTMP verification against the spec vectors and the captured SDK requests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::*;
use crate::auth::captures::{keys, vectors};
use crate::auth::{Principal, captures, parse_query, percent_decode};

const VECTOR_AK: &str = "LTAIEXAMPLEKEYID";
const VECTOR_SK: &str = "ExampleSecretKey1234567890abcdef";

fn headers(pairs: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
        .collect()
}

fn at(rfc1123: &str) -> SystemTime {
    chrono::DateTime::parse_from_rfc2822(rfc1123).unwrap().into()
}

#[test]
fn v1_vectors_give_the_documented_string_to_sign_and_signature_and_verify() {
    let v = vectors();
    for case in v["oss_v1"].as_array().unwrap() {
        let query = pairs(&case["params"]);
        let mut hdrs = headers(&pairs(&case["headers"]));
        let key = case["key"].as_str().unwrap();
        let req = Request {
            method: case["method"].as_str().unwrap(),
            bucket: Some(case["bucket"].as_str().unwrap()),
            key,
            query: &query,
            headers: &hdrs,
        };
        let date = hdrs["date"].to_str().unwrap().to_owned();
        let sts = string_to_sign_v1(&req, &date);
        assert_eq!(sts, case["string_to_sign"].as_str().unwrap(), "{key}");
        let sig = sign_v1(VECTOR_SK, &sts);
        assert_eq!(sig, case["signature"].as_str().unwrap());
        let method = case["method"].as_str().unwrap();
        let bucket = Some(case["bucket"].as_str().unwrap());

        hdrs.insert("authorization", HeaderValue::from_str(&format!("OSS {VECTOR_AK}:{sig}")).unwrap());
        let req = Request { method, bucket, key, query: &query, headers: &hdrs };
        let now = at(&date) + Duration::from_secs(60);
        assert_eq!(verify(&req, &keys(VECTOR_AK, VECTOR_SK), now), Ok(Principal::Key(VECTOR_AK.into())));
        // Wrong secret, unknown key, skewed clock.
        assert!(matches!(verify(&req, &keys(VECTOR_AK, "other"), now), Err(AuthError::Mismatch { .. })));
        assert_eq!(verify(&req, &keys("someone-else", VECTOR_SK), now), Err(AuthError::UnknownKey(VECTOR_AK.into())));
        assert_eq!(
            verify(&req, &keys(VECTOR_AK, VECTOR_SK), now + Duration::from_secs(16 * 60)),
            Err(AuthError::Skewed)
        );
    }
}

#[test]
fn v4_vector_gives_the_documented_canonical_request_signing_key_and_signature() {
    let v = vectors()["oss_v4"].clone();
    let hdrs = headers(&pairs(&v["headers"]));
    let query = parse_query("live=&comp=stat").unwrap();
    let req = Request { method: "GET", bucket: Some("examplebucket"), key: "ch1", query: &query, headers: &hdrs };
    let canonical = canonical_request_v4(&req, &[], "UNSIGNED-PAYLOAD", &[]);
    assert_eq!(canonical, v["canonical_request"].as_str().unwrap());
    let scope = "20250106/cn-hangzhou/oss/aliyun_v4_request";
    let sts = string_to_sign_v4("20250106T080000Z", scope, &canonical);
    assert_eq!(sts, v["string_to_sign"].as_str().unwrap());
    let key = signing_key_v4(VECTOR_SK, "20250106", "cn-hangzhou");
    assert_eq!(hex::encode(key), v["signing_key_hex"].as_str().unwrap());
    assert_eq!(hex::encode(crate::auth::hmac_sha256(&key, sts.as_bytes())), v["signature"].as_str().unwrap());

    let now = at("Mon, 06 Jan 2025 08:05:00 GMT");
    assert_eq!(verify(&req, &keys(VECTOR_AK, VECTOR_SK), now), Ok(Principal::Key(VECTOR_AK.into())));
    // oss2's layout of the same header: ", " separators.
    let mut oss2 = hdrs.clone();
    let auth = v["sdk_authorization"].as_str().unwrap().replace(",Signature", ", Signature");
    oss2.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    let req2 = Request { headers: &oss2, ..req };
    assert_eq!(verify(&req2, &keys(VECTOR_AK, VECTOR_SK), now), Ok(Principal::Key(VECTOR_AK.into())));
    // V4 signs every parameter: adding one breaks it.
    let more = parse_query("live=&comp=stat&max-keys=1").unwrap();
    let req3 = Request { query: &more, ..req };
    assert!(matches!(verify(&req3, &keys(VECTOR_AK, VECTOR_SK), now), Err(AuthError::Mismatch { .. })));
    assert_eq!(verify(&req, &keys(VECTOR_AK, VECTOR_SK), now + Duration::from_secs(3600)), Err(AuthError::Skewed));
}

#[test]
fn rtmp_vector_and_url_match_oss2() {
    let v = vectors()["rtmp"].clone();
    let params = vec![("playlistName".to_owned(), "playlist.m3u8".to_owned())];
    assert_eq!(rtmp_string_to_sign("examplebucket", "ch1", &params, "1736157600"), v["string_to_sign"]);
    let query = sign_rtmp_query("examplebucket", "ch1", Some("playlist.m3u8"), 1736157600, VECTOR_AK, VECTOR_SK);
    let url = format!("rtmp://examplebucket.oss-cn-hangzhou.aliyuncs.com/live/ch1?{query}");
    assert_eq!(url, v["oss2_url"].as_str().unwrap());

    let params = parse_query(&query).unwrap();
    let before = UNIX_EPOCH + Duration::from_secs(1736157000);
    let k = keys(VECTOR_AK, VECTOR_SK);
    assert_eq!(verify_rtmp("examplebucket", "ch1", &params, &k, before), Ok(Some(VECTOR_AK.into())));
    let after = UNIX_EPOCH + Duration::from_secs(1736157601);
    assert!(matches!(verify_rtmp("examplebucket", "ch1", &params, &k, after), Err(AuthError::Denied(_))));
    assert!(matches!(verify_rtmp("examplebucket", "ch2", &params, &k, before), Err(AuthError::Mismatch { .. })));
    // playlistName is signed: changing it breaks the signature.
    let mut changed = params.clone();
    changed[0].1 = "other.m3u8".into();
    assert!(matches!(verify_rtmp("examplebucket", "ch1", &changed, &k, before), Err(AuthError::Mismatch { .. })));
    assert_eq!(verify_rtmp("examplebucket", "ch1", &[], &k, before), Ok(None));
}

/// Every request the real SDKs sent (oss2 and oss-v2, V1 and V4) parses and verifies, with the path decoded
/// first and the bucket taken from it (path-style, as both SDKs address an IP endpoint).
#[test]
fn every_captured_sdk_request_verifies() {
    let k = keys("AKIDEXAMPLE", "SECRETEXAMPLE");
    let mut total = 0;
    for file in ["oss2_v1.txt", "oss2_v4.txt", "ossv2_v1.txt", "ossv2_v4.txt"] {
        let captured = captures::load(file);
        assert!(captured.len() >= 10, "{file}: {} requests", captured.len());
        for c in captured {
            let path = percent_decode(&c.path).unwrap();
            let (bucket, key) = path.trim_start_matches('/').split_once('/').unwrap_or((&path[1..], ""));
            let query = parse_query(&c.query).unwrap();
            let req = Request { method: &c.method, bucket: Some(bucket), key, query: &query, headers: &c.headers };
            let now = match c.headers.get("x-oss-date") {
                Some(d) => chrono::NaiveDateTime::parse_from_str(d.to_str().unwrap(), "%Y%m%dT%H%M%SZ")
                    .unwrap()
                    .and_utc()
                    .into(),
                None => at(c.headers["date"].to_str().unwrap()),
            };
            assert_eq!(
                verify(&req, &k, now),
                Ok(Principal::Key("AKIDEXAMPLE".into())),
                "{file}: {} {}?{}",
                c.method,
                c.path,
                c.query
            );
            // Tampering with the signed resource is caught.
            let tampered = Request { key: "other", ..req };
            assert!(verify(&tampered, &k, now).is_err(), "{file}: tampered {}", c.path);
            total += 1;
        }
    }
    assert_eq!(total, 40);
}

#[test]
fn captured_rtmp_urls_from_sign_rtmp_url_verify() {
    let k = keys("AKIDEXAMPLE", "SECRETEXAMPLE");
    let mut n = 0;
    for note in captures::load("oss2_v1.txt")[0].file_notes.iter().chain(&captures::load("oss2_v4.txt")[0].file_notes) {
        let Some(url) = note.split_once(": rtmp://").map(|(_, u)| u) else { continue };
        let (path, query) = url.split_once('?').unwrap();
        let path = path.split_once('/').unwrap().1;
        assert!(path.starts_with("examplebucket/live/"), "{path}");
        let channel = path.rsplit('/').next().unwrap();
        let params = parse_query(query).unwrap();
        let expires: u64 = params.iter().find(|(k, _)| k == "Expires").unwrap().1.parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(expires - 3600);
        assert_eq!(verify_rtmp("examplebucket", channel, &params, &k, now), Ok(Some("AKIDEXAMPLE".into())), "{url}");
        n += 1;
    }
    assert!(n >= 4, "{n} RTMP URLs");
}

#[test]
fn oss_v2_v1_without_sub_resource_metadata_is_refused() {
    // oss-v2 in V1 mode without op_metadata signs `/examplebucket/ch1` for `?live&comp=stat`.
    let query = parse_query("live=&comp=stat").unwrap();
    let mut hdrs = HeaderMap::new();
    hdrs.insert("date", HeaderValue::from_static("Mon, 06 Jan 2025 08:00:00 GMT"));
    let wrong = sign_v1(VECTOR_SK, "GET\n\n\nMon, 06 Jan 2025 08:00:00 GMT\n/examplebucket/ch1");
    hdrs.insert("authorization", HeaderValue::from_str(&format!("OSS {VECTOR_AK}:{wrong}")).unwrap());
    let req = Request { method: "GET", bucket: Some("examplebucket"), key: "ch1", query: &query, headers: &hdrs };
    let now = at("Mon, 06 Jan 2025 08:00:00 GMT");
    match verify(&req, &keys(VECTOR_AK, VECTOR_SK), now) {
        Err(AuthError::Mismatch { string_to_sign, .. }) => assert!(string_to_sign.ends_with("ch1?comp=stat&live")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn presigned_v1_urls_verify_until_they_expire() {
    let empty = HeaderMap::new();
    let base = parse_query("live=&comp=stat").unwrap();
    let req = Request { method: "GET", bucket: Some("examplebucket"), key: "ch1", query: &base, headers: &empty };
    let sig = sign_v1(VECTOR_SK, &string_to_sign_v1(&req, "1736157600"));
    let mut query = base.clone();
    query.extend([
        ("OSSAccessKeyId".to_owned(), VECTOR_AK.to_owned()),
        ("Expires".to_owned(), "1736157600".to_owned()),
        ("Signature".to_owned(), sig),
    ]);
    let req = Request { query: &query, ..req };
    let k = keys(VECTOR_AK, VECTOR_SK);
    assert_eq!(verify(&req, &k, UNIX_EPOCH + Duration::from_secs(1736157000)), Ok(Principal::Key(VECTOR_AK.into())));
    assert!(matches!(verify(&req, &k, UNIX_EPOCH + Duration::from_secs(1736157601)), Err(AuthError::Denied(_))));
    let none = parse_query("live=").unwrap();
    assert_eq!(verify(&Request { query: &none, ..req }, &k, SystemTime::now()), Ok(Principal::Anonymous));
}

#[test]
fn malformed_credentials_are_denied_not_guessed() {
    let query = Vec::new();
    for auth in [
        "OSS nocolon",
        "Bearer x",
        "OSS4-HMAC-SHA256 Signature=abc",
        "OSS4-HMAC-SHA256 Credential=AK/2025/r/oss/aliyun_v4_request,Signature=x",
        "OSS4-HMAC-SHA256 Credential=AK/20250106/r/oss/aliyun_v4_request,AdditionalHeaders=,Signature=x",
    ] {
        let mut hdrs = HeaderMap::new();
        hdrs.insert("date", HeaderValue::from_static("Mon, 06 Jan 2025 08:00:00 GMT"));
        hdrs.insert("x-oss-date", HeaderValue::from_static("20250106T080000Z"));
        hdrs.insert("authorization", HeaderValue::from_str(auth).unwrap());
        let req = Request { method: "GET", bucket: Some("b"), key: "", query: &query, headers: &hdrs };
        let r = verify(&req, &keys(VECTOR_AK, VECTOR_SK), at("Mon, 06 Jan 2025 08:00:00 GMT"));
        assert!(matches!(r, Err(AuthError::Denied(_))), "{auth}: {r:?}");
    }
}

#[test]
fn extreme_expiry_and_dates_are_denied_not_panicked_on() {
    let empty = HeaderMap::new();
    let k = keys(VECTOR_AK, VECTOR_SK);
    let now = at("Mon, 06 Jan 2025 08:00:00 GMT");
    for (date, expires) in [
        ("20250106T080000Z", "9223372036854775807"),
        ("20250106T080000Z", "604801"),
        ("20250106T080000Z", "0"),
        ("20250106T080000Z", "-9223372036854775808"),
        ("99991231T235959Z", "604800"),
        ("00000101T000000Z", "604800"),
    ] {
        let query = parse_query(&format!(
            "x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-credential={VECTOR_AK}%2F20250106%2Fcn-hangzhou%2Foss%2Faliyun_v4_request&x-oss-date={date}&x-oss-expires={expires}&x-oss-signature=00"
        ))
        .unwrap();
        let req = Request { method: "GET", bucket: Some("examplebucket"), key: "ch1", query: &query, headers: &empty };
        let r = verify(&req, &k, now);
        assert!(matches!(r, Err(AuthError::Denied(_) | AuthError::Skewed)), "{date} {expires}: {r:?}");
    }
    for expires in ["18446744073709551615", "253402300800"] {
        let query = parse_query(&format!("OSSAccessKeyId={VECTOR_AK}&Expires={expires}&Signature=AAAA")).unwrap();
        let req = Request { method: "GET", bucket: Some("examplebucket"), key: "ch1", query: &query, headers: &empty };
        assert!(verify(&req, &k, now).is_err(), "{expires}");
        assert!(verify_rtmp("examplebucket", "ch1", &query, &k, now).is_err(), "RTMP {expires}");
    }
    let mut hdrs = HeaderMap::new();
    hdrs.insert("date", HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT"));
    hdrs.insert("authorization", HeaderValue::from_str(&format!("OSS {VECTOR_AK}:AAAA")).unwrap());
    let query = Vec::new();
    let req = Request { method: "GET", bucket: Some("b"), key: "", query: &query, headers: &hdrs };
    assert_eq!(verify(&req, &k, now), Err(AuthError::Skewed));
}

#[test]
fn a_presigned_urls_expiry_comes_from_its_signed_parameters_only() {
    let q = |s: &str| parse_query(s).unwrap();
    assert_eq!(presigned_expiry(&q("OSSAccessKeyId=AK&Expires=1736157600&Signature=x")), Some(1736157600));
    // V4: date + lifetime; an `Expires` beside it is not covered by the signature and is ignored.
    let v4 = "x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-date=20250106T080000Z&x-oss-expires=60&x-oss-signature=s";
    assert_eq!(presigned_expiry(&q(v4)), Some(1736150460));
    assert_eq!(presigned_expiry(&q(&format!("{v4}&Expires=99999999999"))), Some(1736150460));
    // Header-signed: no URL expiry to keep.
    assert_eq!(presigned_expiry(&q("Expires=99999999999")), None);
    assert_eq!(presigned_expiry(&[]), None);
}
