//! Single byte ranges (RFC 9110 §14.1.2). Multi-range requests and malformed headers are ignored, which
//! the RFC allows: the client then gets the whole object with 200.

use std::ops::Range;

use object_store::GetRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    From(u64),
    FromTo(u64, u64),
    Suffix(u64),
}

pub fn parse(header: &str) -> Option<Spec> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (false, true) => Some(Spec::From(a.parse().ok()?)),
        (false, false) => {
            let (start, end) = (a.parse().ok()?, b.parse().ok()?);
            (start <= end).then_some(Spec::FromTo(start, end))
        }
        (true, false) => Some(Spec::Suffix(b.parse().ok()?)),
        (true, true) => None,
    }
}

impl Spec {
    /// The range to ask the store for; None when no store read can satisfy it (`bytes=-0`).
    pub fn get_range(self) -> Option<GetRange> {
        match self {
            Spec::From(start) => Some(GetRange::Offset(start)),
            Spec::FromTo(start, end) => Some(GetRange::Bounded(start..end.saturating_add(1))),
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(GetRange::Suffix(n)),
        }
    }

    /// The byte range to send for an object of `size` bytes, or `None` when unsatisfiable (416).
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            Spec::From(start) if start < size => Some(start..size),
            Spec::FromTo(start, end) if start < size => Some(start..end.min(size - 1) + 1),
            Spec::Suffix(n) if n > 0 && size > 0 => Some(size - n.min(size)..size),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_resolve_against_the_object_size() {
        assert_eq!(parse("bytes=0-99").unwrap().resolve(1000), Some(0..100));
        assert_eq!(parse("bytes=900-").unwrap().resolve(1000), Some(900..1000));
        assert_eq!(parse("bytes=-100").unwrap().resolve(1000), Some(900..1000));
        assert_eq!(parse("bytes=990-2000").unwrap().resolve(1000), Some(990..1000));
        assert_eq!(parse("bytes=-5000").unwrap().resolve(1000), Some(0..1000));
        assert_eq!(parse("bytes=1000-").unwrap().resolve(1000), None);
        assert_eq!(parse("bytes=-0").unwrap().resolve(1000), None);
    }

    #[test]
    fn malformed_or_multi_ranges_are_ignored() {
        for h in ["bytes=5-1", "bytes=a-b", "items=0-1", "bytes=0-1,5-6", "bytes=-", "bytes=99999999999999999999999-"] {
            assert_eq!(parse(h), None, "{h}");
        }
    }
}
