//! Snapshots (the PutLiveChannel `Snapshot` container), sans-I/O: which keyframes are captured
//! ([`Schedule`]), the keyframe as the H.264 elementary stream a decoder reads ([`annex_b`]), the decoded
//! picture ([`parse_ppm`]) to JPEG ([`encode_jpeg`]), the object names ([`object_keys`]) and the
//! NotifyTopic message ([`message`]).
//!
//! Flow: `publish::Session` sees every keyframe (`Ingest::take_keyframe`), asks its [`Schedule`], and hands
//! the chosen ones (a `Bytes` slice of the RTMP message, no copy) to [`pool::Snapshots`], which runs the
//! decoder child processes, stores the objects, indexes them in `meta` and queues the message. Nothing
//! here waits, so the media path never does.

pub mod pool;

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::flv::avc::nal_units;
use crate::media::{AvcConfig, Timestamp90k};
use crate::wire::utc_millis;

/// Larger pictures are not decoded: 4096 x 2304 RGB is 27 MiB in flight per worker.
pub const MAX_PIXELS: u64 = 4096 * 2304;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("the keyframe's NAL units are malformed: {0}")]
    BadKeyframe(String),
    #[error("the stream's picture size is unknown (no usable SPS)")]
    NoPictureSize,
    #[error("the picture is {width}x{height}, larger than snapshots are taken of ({MAX_PIXELS} pixels)")]
    TooLarge { width: u32, height: u32 },
    #[error("the decoder's picture is not a binary PPM: {0}")]
    BadPicture(&'static str),
    #[error("JPEG encoding failed: {0}")]
    Jpeg(String),
}

/// Which keyframes become snapshots: every `Interval` seconds the most recent keyframe, and none when no
/// keyframe came in the interval (the seed's rule). A keyframe is taken when at least an interval (less a
/// tenth, for encoder jitter) has passed since the last one taken, so a 1 s GOP at Interval 1 gives one
/// per keyframe and a 4 s GOP at Interval 1 one per keyframe, not four.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Timestamp90k,
    last: Option<Timestamp90k>,
}

impl Schedule {
    pub fn new(interval_s: u32) -> Self {
        Schedule { interval: Timestamp90k::from_secs(i64::from(interval_s.max(1))), last: None }
    }

    /// A keyframe with presentation time `pts`: capture it?
    pub fn due(&mut self, pts: Timestamp90k) -> bool {
        let take = match self.last {
            None => true,
            // The timeline went backwards (an encoder restart): start over from here.
            Some(last) if pts < last => true,
            Some(last) => (pts - last).ticks() >= self.interval.ticks() - self.interval.ticks() / 10,
        };
        if take {
            self.last = Some(pts);
        }
        take
    }
}

/// The keyframe as an Annex B elementary stream: the configuration's SPS and PPS, then the access unit's
/// NAL units, each behind a start code. One allocation per snapshot, in the worker, not per frame.
pub fn annex_b(config: &AvcConfig, access_unit: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    const START: [u8; 4] = [0, 0, 0, 1];
    let sets: usize = config.sps.iter().chain(&config.pps).map(|s| s.len() + 4).sum();
    let mut out = Vec::with_capacity(sets + access_unit.len() + 64);
    for set in config.sps.iter().chain(&config.pps) {
        out.extend_from_slice(&START);
        out.extend_from_slice(set);
    }
    let mut slices = 0;
    for nal in nal_units(access_unit, config.nal_length_size) {
        let nal = nal.map_err(|e| SnapshotError::BadKeyframe(e.to_string()))?;
        if nal.is_empty() {
            continue;
        }
        slices += usize::from(matches!(nal[0] & 0x1f, 1 | 5));
        out.extend_from_slice(&START);
        out.extend_from_slice(nal);
    }
    if slices == 0 {
        return Err(SnapshotError::BadKeyframe("no picture slice in the access unit".into()));
    }
    Ok(out)
}

/// May this keyframe share a decoder run with other channels' keyframes? Only when the decoder's output
/// can be attributed beyond doubt: an IDR access unit (it resets the decoder's state, so nothing of the
/// keyframes before it is output after it) holding exactly one picture (one slice that starts at
/// macroblock 0: `first_mb_in_slice`, the first ue(v) of the slice header, is 0 exactly when the top bit
/// of the byte after the NAL header is set) and no slice of any other kind. Then each keyframe gives one
/// picture, in order, and a run whose picture count differs is not trusted (see `pool`).
pub fn batchable(config: &AvcConfig, access_unit: &[u8]) -> bool {
    let mut starts = 0;
    for nal in nal_units(access_unit, config.nal_length_size) {
        let Ok(nal) = nal else { return false };
        match nal.first().map(|b| b & 0x1f) {
            Some(5) => starts += usize::from(nal.get(1).is_some_and(|b| b & 0x80 != 0)),
            // Any other slice (non-IDR, partitioned) could be a picture of its own.
            Some(1..=4) => return false,
            _ => {}
        }
    }
    starts == 1
}

/// The picture size a keyframe of this configuration decodes to, if it may be decoded.
pub fn picture_size(config: &AvcConfig) -> Result<(u32, u32), SnapshotError> {
    let (Some(width), Some(height)) = (config.width, config.height) else { return Err(SnapshotError::NoPictureSize) };
    if width == 0 || height == 0 {
        return Err(SnapshotError::NoPictureSize);
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(SnapshotError::TooLarge { width, height });
    }
    Ok((width, height))
}

/// A decoded picture: 8-bit RGB, row after row.
#[derive(Debug, PartialEq, Eq)]
pub struct Picture<'a> {
    pub width: u32,
    pub height: u32,
    pub rgb: &'a [u8],
}

/// A binary PPM (`P6`, maxval 255), as `ffmpeg -c:v ppm` writes it.
pub fn parse_ppm(data: &[u8]) -> Result<Picture<'_>, SnapshotError> {
    parse_ppm_prefix(data).map(|(picture, _)| picture)
}

/// The PPM at the start of `data` (a decoder writes one after the other) and how many bytes it takes.
pub fn parse_ppm_prefix(data: &[u8]) -> Result<(Picture<'_>, usize), SnapshotError> {
    let bad = SnapshotError::BadPicture;
    let rest = data.strip_prefix(b"P6").ok_or(bad("no P6 magic"))?;
    let mut pos = 0;
    let mut fields = [0u32; 3];
    for field in &mut fields {
        // Whitespace and `#` comments between fields.
        loop {
            match rest.get(pos) {
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                Some(b'#') => {
                    while rest.get(pos).is_some_and(|&b| b != b'\n') {
                        pos += 1;
                    }
                }
                Some(_) => break,
                None => return Err(bad("header ends early")),
            }
        }
        let digits = rest[pos..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(bad("a header field is not a number"));
        }
        *field = std::str::from_utf8(&rest[pos..pos + digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(bad("a header field is not a number"))?;
        pos += digits;
    }
    // Exactly one whitespace byte ends the header.
    if !rest.get(pos).is_some_and(u8::is_ascii_whitespace) {
        return Err(bad("header does not end in whitespace"));
    }
    pos += 1;
    let [width, height, maxval] = fields;
    if maxval != 255 {
        return Err(bad("only 8-bit samples (maxval 255) are read"));
    }
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(bad("picture size is zero or too large"));
    }
    let len = width as usize * height as usize * 3;
    let rgb = rest.get(pos..pos + len).ok_or(bad("fewer samples than the header says"))?;
    // The two magic bytes, the header, the samples.
    Ok((Picture { width, height, rgb }, 2 + pos + len))
}

/// Encodes the picture as a baseline JPEG.
pub fn encode_jpeg(picture: &Picture<'_>, quality: u8) -> Result<Vec<u8>, SnapshotError> {
    let (Ok(width), Ok(height)) = (u16::try_from(picture.width), u16::try_from(picture.height)) else {
        return Err(SnapshotError::Jpeg("picture wider or higher than 65535".into()));
    };
    let mut out = Vec::with_capacity(picture.rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(picture.rgb, width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SnapshotError::Jpeg(e.to_string()))?;
    Ok(out)
}

/// The name of the snapshot taken at `at` in its channel's folder of DestBucket (`<unix_ms>.jpg`).
pub fn file_name(at: SystemTime) -> String {
    format!("{}.jpg", crate::meta::millis(at))
}

/// Object keys inside DestBucket: the snapshot's own (`<channel>/<unix_ms>.jpg`) and the overwritten
/// latest one (`<channel>/latest.jpg`).
pub fn object_keys(channel: &str, at: SystemTime) -> (String, String) {
    (format!("{channel}/{}", file_name(at)), format!("{channel}/{LATEST}"))
}

/// The overwritten object that is always the newest snapshot.
pub const LATEST: &str = "latest.jpg";

/// A stored snapshot, as its NotifyTopic message tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken<'a> {
    pub source_bucket: &'a str,
    pub dest_bucket: &'a str,
    pub channel: &'a str,
    pub object: &'a str,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub media_ms: i64,
    pub at: SystemTime,
}

/// The JSON message of one snapshot (README, "Snapshots").
pub fn message(t: &Taken<'_>) -> Value {
    json!({
        "event": "snapshot", "status": "success",
        "bucket": t.dest_bucket, "channel": t.channel, "source_bucket": t.source_bucket,
        "object": t.object, "latest_object": format!("{}/{LATEST}", t.channel),
        "size": t.size, "width": t.width, "height": t.height,
        "media_timestamp_ms": t.media_ms, "time": utc_millis(t.at), "unix_ms": crate::meta::millis(t.at),
    })
}

/// The JSON message of a publish whose keyframes cannot be snapshotted (sent once per publish).
pub fn failure_message(source_bucket: &str, dest_bucket: &str, channel: &str, why: &str, at: SystemTime) -> Value {
    json!({
        "event": "snapshot", "status": "failed", "code": "SnapshotFailed", "message": why,
        "bucket": dest_bucket, "channel": channel, "source_bucket": source_bucket,
        "time": utc_millis(at), "unix_ms": crate::meta::millis(at),
    })
}

#[cfg(test)]
mod tests;
