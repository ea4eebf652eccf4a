//! HLS: when to cut segments (`Segmenter`) and what the live playlist says (`Playlist`). RFC 8216.
//!
//! The cut rules are the OSS LiveChannel semantics in DESIGN.md §2: cut before a keyframe once the open
//! segment reached FragDuration; force a cut after `max(2 × FragDuration, 60 s)` of media time without one;
//! durations from media timestamps only. Sans-I/O: bytes and values in, values out.

pub mod live;
pub mod playlist;
pub mod segmenter;

pub use playlist::{Playlist, PlaylistSegment, render_vod};
pub use segmenter::{Output, Segment, Segmenter, SegmenterConfig};

/// Object name of a segment inside its channel's folder. The one place that knows the naming scheme.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq}.ts")
}

/// The sequence number of a segment from its object name, if it is one of ours.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".ts")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
