//! The codec-neutral currency between demuxing (`flv`) and muxing (`ts`): frames on one timeline.
//!
//! Timestamps carry their unit in the type. RTMP gives 32-bit milliseconds that wrap; MPEG-TS wants 33-bit
//! 90 kHz ticks that wrap. In between, everything runs on [`Timestamp90k`]: an *unwrapped* signed 90 kHz
//! count, so durations and comparisons never see a wrap. Only `ts` folds it back to 33 bits.

use bytes::Bytes;

/// Ticks per second of the MPEG system clock used for PTS/DTS.
pub const CLOCK_90K: i64 = 90_000;

/// A point on the unwrapped 90 kHz media timeline.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp90k(pub i64);

impl Timestamp90k {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp90k(ms * 90)
    }

    pub const fn from_secs(s: i64) -> Self {
        Timestamp90k(s * CLOCK_90K)
    }

    pub const fn ticks(self) -> i64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / CLOCK_90K as f64
    }

    /// The 33-bit value written into PES headers (wraps every ~26.5 hours, as the standard intends).
    pub const fn wrap33(self) -> u64 {
        self.0.rem_euclid(1 << 33) as u64
    }
}

impl std::ops::Add for Timestamp90k {
    type Output = Timestamp90k;
    fn add(self, rhs: Self) -> Self {
        Timestamp90k(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Timestamp90k {
    type Output = Timestamp90k;
    fn sub(self, rhs: Self) -> Self {
        Timestamp90k(self.0 - rhs.0)
    }
}

/// Unwraps RTMP's 32-bit millisecond timestamps into a monotonic-ish 64-bit timeline.
///
/// Each step is taken as the *signed* 32-bit difference from the previous value, so a wrap at 2^32 ms
/// (~49.7 days) is a small forward step and a genuine backward jump stays visible as a negative step.
#[derive(Debug, Default, Clone)]
pub struct RtmpClock {
    last: Option<(u32, i64)>,
}

impl RtmpClock {
    pub fn unwrap(&mut self, raw_ms: u32) -> Timestamp90k {
        let ms = match self.last {
            None => i64::from(raw_ms),
            Some((last_raw, last_ms)) => last_ms + i64::from(raw_ms.wrapping_sub(last_raw) as i32),
        };
        self.last = Some((raw_ms, ms));
        Timestamp90k::from_millis(ms)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// One access unit of one track, still in its FLV framing (AVCC NAL units or a raw AAC frame).
/// `payload` is a slice of the RTMP message: no copy is made between the socket and the TS muxer.
#[derive(Clone, Debug)]
pub struct Frame {
    pub track: Track,
    pub dts: Timestamp90k,
    pub pts: Timestamp90k,
    pub keyframe: bool,
    pub payload: Bytes,
}

/// H.264 decoder configuration, taken from the AVCDecoderConfigurationRecord.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub level: u8,
    /// Bytes of the big-endian length prefix in front of every NAL unit (1, 2 or 4).
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// AAC configuration, reduced to what an ADTS header needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AacConfig {
    /// MPEG-4 audio object type of the core (1 Main, 2 LC, 3 SSR, 4 LTP); SBR/PS ride on top of it.
    pub object_type: u8,
    pub sample_rate_index: u8,
    pub sample_rate: u32,
    pub channel_config: u8,
}

impl AacConfig {
    /// Duration of one AAC frame (1024 samples) in 90 kHz ticks.
    pub fn frame_ticks(&self) -> i64 {
        1024 * CLOCK_90K / i64::from(self.sample_rate.max(1))
    }
}
