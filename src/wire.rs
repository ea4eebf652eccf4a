//! Formats every dialect and callback writes: vendor-style request ids and timestamps. A leaf.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The latest time an API takes, 9999-12-31T23:59:59Z: later values are refused, not added to the epoch
/// (`SystemTime` arithmetic panics on overflow).
pub const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// A Unix time in seconds from outside, if it is one we can represent.
pub fn from_unix_seconds(secs: u64) -> Option<SystemTime> {
    (secs <= MAX_UNIX_SECONDS).then(|| UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// UTC to the second, `yyyy-mm-ddThh:mm:ssZ`, as the Aliyun and Huawei APIs and payloads write it.
pub fn utc_seconds(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The inverse of [`utc_seconds`], for times from outside: None unless it is that format and within
/// 1970..=9999.
pub fn parse_utc_seconds(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").ok()?;
    from_unix_seconds(u64::try_from(t.and_utc().timestamp()).ok()?)
}

/// A request id in the vendor's form: 24 upper-case hex characters, unique in this process and unlikely to
/// repeat across restarts (seconds since the epoch, then a per-process counter mixed with the start time).
pub fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as u32;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{secs:08X}{:016X}", salt.wrapping_add(n))
}

/// RFC 1123 date, as the `Date` header needs it.
pub fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// UTC to the millisecond, `yyyy-mm-ddThh:mm:ss.mmmZ` (RFC 3339), for our own payloads.
pub fn utc_millis(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The only timestamp form oss2 parses: milliseconds always `.000`.
pub fn oss_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_the_vendors_and_do_not_repeat() {
        let a = request_id();
        let b = request_id();
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn times_print_in_the_forms_the_sdks_parse() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_736_150_400_123);
        assert_eq!(oss_time(t), "2025-01-06T08:00:00.000Z");
        assert_eq!(http_date(t), "Mon, 06 Jan 2025 08:00:00 GMT");
    }

    #[test]
    fn utc_seconds_read_back_and_refuse_what_they_cannot_be() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_736_150_400);
        assert_eq!(parse_utc_seconds(&utc_seconds(t)), Some(t));
        assert_eq!(parse_utc_seconds("9999-12-31T23:59:59Z"), from_unix_seconds(MAX_UNIX_SECONDS));
        for bad in ["1969-12-31T23:59:59Z", "+10000-01-01T00:00:00Z", "2025-01-06 08:00:00", "2025-13-01T00:00:00Z", ""]
        {
            assert_eq!(parse_utc_seconds(bad), None, "{bad}");
        }
    }
}
