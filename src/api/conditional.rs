//! Conditional GET/HEAD (RFC 9110 §13.1.2 and §13.1.3): whether a stored object's validators let the
//! object reads answer `304 Not Modified`. Pure: headers and validators in, a decision out.

use std::time::{Duration, SystemTime};

use hyper::HeaderMap;
use hyper::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};

/// Whether the request carries a validator this module evaluates (the object reads then fetch the
/// object's metadata before its bytes).
pub fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE)
}

/// True when the client's copy is current. `If-None-Match` wins over `If-Modified-Since` when both are
/// sent; ETags compare weakly (a `W/` prefix is ignored), `*` matches any stored object, and an
/// unparsable date is ignored, as the RFC requires.
pub fn not_modified(headers: &HeaderMap, etag: Option<&str>, modified: SystemTime) -> bool {
    if headers.contains_key(IF_NONE_MATCH) {
        let ours = etag.map(opaque);
        let tags = headers.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok());
        return tags
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || ours.is_some_and(|ours| !tag.is_empty() && opaque(tag) == ours));
    }
    let Some(since) = headers.get(IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(since) = httpdate::parse_http_date(since.trim()) else {
        return false;
    };
    // HTTP dates have whole seconds; the stored time has more, so it is compared truncated.
    let modified = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(SystemTime::UNIX_EPOCH, |d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()));
    modified <= since
}

/// A stored ETag as HTTP and OSS's XML carry it: quoted once, whatever quotes the store kept. GET, HEAD,
/// 304s and listings all use this, so oss2 sees one ETag per object.
pub fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

fn opaque(tag: &str) -> &str {
    tag.trim().strip_prefix("W/").unwrap_or(tag.trim()).trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&hyper::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        h
    }

    const T: u64 = 1_764_547_200; // 2025-12-01T00:00:00Z

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn etags_compare_weakly_in_lists_and_with_a_star() {
        let t = at(T, 0);
        assert!(not_modified(&headers(&[(&IF_NONE_MATCH, "\"abc\"")]), Some("abc"), t));
        assert!(not_modified(&headers(&[(&IF_NONE_MATCH, "\"abc\"")]), Some("\"abc\""), t));
        assert!(not_modified(&headers(&[(&IF_NONE_MATCH, "W/\"abc\"")]), Some("abc"), t));
        assert!(not_modified(&headers(&[(&IF_NONE_MATCH, "\"x\", \"abc\"")]), Some("abc"), t));
        assert!(not_modified(&headers(&[(&IF_NONE_MATCH, "\"x\""), (&IF_NONE_MATCH, "\"abc\"")]), Some("abc"), t));
        assert!(not_modified(&headers(&[(&IF_NONE_MATCH, "*")]), None, t));
        assert!(!not_modified(&headers(&[(&IF_NONE_MATCH, "\"abd\"")]), Some("abc"), t));
        assert!(!not_modified(&headers(&[(&IF_NONE_MATCH, "\"abc\"")]), None, t));
        assert!(!not_modified(&headers(&[(&IF_NONE_MATCH, "")]), Some(""), t));
    }

    #[test]
    fn dates_compare_in_whole_seconds_and_bad_dates_are_ignored() {
        let date = httpdate::fmt_http_date(at(T, 0));
        assert!(not_modified(&headers(&[(&IF_MODIFIED_SINCE, &date)]), None, at(T, 900_000_000)));
        assert!(not_modified(&headers(&[(&IF_MODIFIED_SINCE, &date)]), None, at(T - 5, 0)));
        assert!(!not_modified(&headers(&[(&IF_MODIFIED_SINCE, &date)]), None, at(T + 1, 0)));
        assert!(!not_modified(&headers(&[(&IF_MODIFIED_SINCE, "yesterday")]), None, at(T - 5, 0)));
        assert!(!not_modified(&HeaderMap::new(), Some("abc"), at(T, 0)));
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let date = httpdate::fmt_http_date(at(T, 0));
        let h = headers(&[(&IF_NONE_MATCH, "\"old\""), (&IF_MODIFIED_SINCE, &date)]);
        assert!(!not_modified(&h, Some("new"), at(T - 5, 0)));
        assert!(is_conditional(&h));
        assert!(!is_conditional(&HeaderMap::new()));
    }
}
